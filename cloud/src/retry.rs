//! Deadlines, bounded retries and jittered exponential backoff for EC2 calls.
//!
//! The SDK's own retry loop is turned off: the agent needs to know how many attempts each call
//! took, needs one time budget shared by all calls of a claim (a failover must end, even when
//! the endpoint swallows requests), and must stop at once on errors that no retry can heal.
//! The decision (`verdict`) and the backoff are pure functions so they can be tested alone.

use std::future::Future;
use std::time::{Duration, Instant};

use tdsvip_backoff::Backoff;

use crate::config::CloudConfig;
use crate::error::CloudError;
use crate::report::{CallRecord, CallResult, Operation};

/// Attempts with less time than this left are not started: they could only time out.
const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub call_timeout: Duration,
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
}

impl RetryPolicy {
    pub fn from_config(cfg: &CloudConfig) -> Self {
        RetryPolicy {
            call_timeout: cfg.call_timeout(),
            max_attempts: cfg.max_attempts.max(1),
            backoff_base: Duration::from_millis(cfg.backoff_base_ms),
            backoff_cap: Duration::from_millis(cfg.backoff_cap_ms.max(cfg.backoff_base_ms)),
        }
    }

    fn doubling(&self) -> Backoff {
        Backoff::new(self.backoff_base, self.backoff_cap)
    }

    /// The longest pause before retry number `retry` (1 = the pause after the first attempt).
    pub fn backoff_ceiling(&self, retry: u32) -> Duration {
        self.doubling().delay(retry)
    }

    /// "Equal jitter" (`unit` in [0, 1)): nodes retrying together spread out, yet every retry
    /// still waits a little.
    pub fn backoff(&self, retry: u32, unit: f64) -> Duration {
        self.doubling().jittered(retry, unit)
    }

    /// Worst-case duration of one call that uses every attempt: the time budget of a claim or
    /// an observation, shared by all the calls it makes for one route table.
    pub fn budget(&self) -> Duration {
        let pauses: Duration = (1..self.max_attempts)
            .map(|retry| self.backoff_ceiling(retry))
            .sum();
        self.call_timeout.saturating_mul(self.max_attempts) + pauses
    }
}

/// What went wrong with one attempt, reduced to what the retry decision needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    /// AWS's error code, when AWS answered with one.
    pub code: Option<String>,
    pub message: String,
    pub status: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// AWS answered with an error document.
    Service,
    /// No answer within the per-call deadline.
    Timeout,
    /// Connection refused, reset or closed before an answer.
    Transport,
    /// An answer that could not be read (bad body, cut-off stream).
    UnreadableResponse,
    /// The request could not be built or sent (a bug or a bad argument).
    Request,
}

impl Failure {
    pub fn timeout(after: Duration) -> Self {
        Failure {
            kind: FailureKind::Timeout,
            code: None,
            message: format!("no answer within {} ms", after.as_millis()),
            status: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Might heal: retry after a backoff; the result says why, for reports and metrics.
    Retry(CallResult),
    /// Cannot heal; `config_problem` when the fix is in the config, IAM policy or setup.
    Stop { config_problem: bool },
}

/// Codes AWS uses for "slow down"; EC2 uses `RequestLimitExceeded`, other services the rest.
const THROTTLING_CODES: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "SlowDown",
    "EC2ThrottledException",
];

/// Codes for AWS-side trouble that AWS documents as transient.
const TRANSIENT_SERVER_CODES: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "Unavailable",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// Codes whose fix is in the config, the IAM policy or the credentials.
const CONFIG_PROBLEM_CODES: &[&str] = &[
    "UnauthorizedOperation",
    "AuthFailure",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "OptInRequired",
    "Blocked",
    "InvalidParameterValue",
    "InvalidParameterCombination",
    "InvalidIPAddress.InUse",
];

pub fn verdict(failure: &Failure) -> Verdict {
    match failure.kind {
        FailureKind::Timeout => Verdict::Retry(CallResult::Timeout),
        FailureKind::Transport => Verdict::Retry(CallResult::Transport),
        FailureKind::Request => Verdict::Stop {
            config_problem: false,
        },
        FailureKind::Service | FailureKind::UnreadableResponse => {
            let code = failure.code.as_deref().unwrap_or_default();
            let status = failure.status.unwrap_or_default();
            if THROTTLING_CODES.contains(&code) || status == 429 {
                Verdict::Retry(CallResult::Throttled)
            } else if TRANSIENT_SERVER_CODES.contains(&code) || (500..600).contains(&status) {
                Verdict::Retry(CallResult::ServerError)
            } else if failure.kind == FailureKind::UnreadableResponse && code.is_empty() {
                // A garbled 2xx/4xx without a code: most likely a cut connection, so retry.
                Verdict::Retry(CallResult::Transport)
            } else {
                Verdict::Stop {
                    config_problem: CONFIG_PROBLEM_CODES.contains(&code)
                        || code.ends_with(".NotFound")
                        || code.ends_with(".Malformed"),
                }
            }
        }
    }
}

/// One call's identity and clock, for the record every outcome ends with.
struct Call<'a> {
    operation: Operation,
    resource: &'a str,
    started: Instant,
}

impl Call<'_> {
    fn record(&self, result: CallResult, attempts: u32, code: Option<String>) -> CallRecord {
        CallRecord {
            operation: self.operation,
            resource: self.resource.to_owned(),
            result,
            elapsed: self.started.elapsed(),
            attempts,
            code,
        }
    }

    /// Out of attempts or time: the last failure (or "budget used up" when none ran).
    fn give_up<T>(
        &self,
        attempts: u32,
        last: Option<(Failure, CallResult)>,
    ) -> (Result<T, CloudError>, CallRecord) {
        let (failure, result) = last.unwrap_or_else(|| {
            (
                Failure {
                    kind: FailureKind::Timeout,
                    code: None,
                    message: "the time budget was used up before this call could start".into(),
                    status: None,
                },
                CallResult::BudgetExhausted,
            )
        });
        let record = self.record(result, attempts, failure.code.clone());
        let error = CloudError::GaveUp {
            operation: self.operation,
            resource: self.resource.to_owned(),
            attempts,
            result,
            code: failure.code,
            last: failure.message,
        };
        (Err(error), record)
    }

    /// A failure that retrying cannot fix.
    fn rejected<T>(
        &self,
        attempts: u32,
        failure: Failure,
        config_problem: bool,
    ) -> (Result<T, CloudError>, CallRecord) {
        let record = self.record(CallResult::Rejected, attempts, failure.code.clone());
        let error = match failure.code {
            Some(code) => CloudError::Rejected {
                operation: self.operation,
                resource: self.resource.to_owned(),
                code,
                message: failure.message,
                config_problem,
            },
            None => CloudError::GaveUp {
                operation: self.operation,
                resource: self.resource.to_owned(),
                attempts,
                result: CallResult::Rejected,
                code: None,
                last: failure.message,
            },
        };
        (Err(error), record)
    }
}

/// Runs `attempt` until it succeeds, fails for good, uses `policy.max_attempts`, or would
/// overrun `deadline`. Each attempt gets the per-call timeout (or what is left of the deadline).
/// Returns the outcome and the record that reports and metrics are built from.
pub async fn call_with_retry<T, F, Fut>(
    policy: &RetryPolicy,
    deadline: Instant,
    operation: Operation,
    resource: &str,
    mut attempt: F,
) -> (Result<T, CloudError>, CallRecord)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let call = Call {
        operation,
        resource,
        started: Instant::now(),
    };
    let mut attempts = 0u32;
    let mut last: Option<(Failure, CallResult)> = None;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining < MIN_ATTEMPT_TIME {
            return call.give_up(attempts, last);
        }
        attempts += 1;
        let limit = policy.call_timeout.min(remaining);
        let failure = match tokio::time::timeout(limit, attempt()).await {
            Ok(Ok(value)) => return (Ok(value), call.record(CallResult::Ok, attempts, None)),
            Ok(Err(failure)) => failure,
            Err(_elapsed) => Failure::timeout(limit),
        };
        let result = match verdict(&failure) {
            Verdict::Stop { config_problem } => {
                return call.rejected(attempts, failure, config_problem);
            }
            Verdict::Retry(result) => result,
        };
        tracing::debug!(%operation, resource, attempts, %result, message = %failure.message, "EC2 call failed; may retry");
        last = Some((failure, result));
        if attempts >= policy.max_attempts {
            return call.give_up(attempts, last);
        }
        let pause = policy.backoff(attempts, rand::random::<f64>());
        if pause + MIN_ATTEMPT_TIME > deadline.saturating_duration_since(Instant::now()) {
            return call.give_up(attempts, last);
        }
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn policy(timeout_ms: u64, attempts: u32, base_ms: u64, cap_ms: u64) -> RetryPolicy {
        RetryPolicy {
            call_timeout: Duration::from_millis(timeout_ms),
            max_attempts: attempts,
            backoff_base: Duration::from_millis(base_ms),
            backoff_cap: Duration::from_millis(cap_ms),
        }
    }

    fn service(code: &str, status: u16) -> Failure {
        Failure {
            kind: FailureKind::Service,
            code: Some(code.into()),
            message: format!("{code} happened"),
            status: Some(status),
        }
    }

    #[test]
    fn budget_is_every_attempt_plus_every_pause() {
        let p = policy(2000, 4, 100, 1000);
        assert_eq!(
            p.budget(),
            Duration::from_millis(4 * 2000 + 100 + 200 + 400)
        );
        assert_eq!(
            policy(500, 1, 100, 1000).budget(),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn throttling_5xx_and_timeouts_are_retried() {
        for code in ["RequestLimitExceeded", "Throttling", "ThrottlingException"] {
            assert_eq!(
                verdict(&service(code, 503)),
                Verdict::Retry(CallResult::Throttled),
                "{code}"
            );
        }
        assert_eq!(
            verdict(&service("InternalError", 500)),
            Verdict::Retry(CallResult::ServerError)
        );
        assert_eq!(
            verdict(&service("SomethingNew", 502)),
            Verdict::Retry(CallResult::ServerError)
        );
        assert_eq!(
            verdict(&Failure::timeout(Duration::from_secs(2))),
            Verdict::Retry(CallResult::Timeout)
        );
        let reset = Failure {
            kind: FailureKind::Transport,
            code: None,
            message: "connection reset".into(),
            status: None,
        };
        assert_eq!(verdict(&reset), Verdict::Retry(CallResult::Transport));
    }

    #[test]
    fn errors_that_cannot_heal_stop_at_once() {
        for code in [
            "InvalidRouteTableID.NotFound",
            "InvalidNetworkInterfaceID.NotFound",
            "InvalidRouteTableId.Malformed",
            "UnauthorizedOperation",
            "AuthFailure",
        ] {
            assert_eq!(
                verdict(&service(code, 400)),
                Verdict::Stop {
                    config_problem: true
                },
                "{code}"
            );
        }
        assert_eq!(
            verdict(&service("RouteAlreadyExists", 400)),
            Verdict::Stop {
                config_problem: false
            }
        );
        let bad_request = Failure {
            kind: FailureKind::Request,
            code: None,
            message: "missing field".into(),
            status: None,
        };
        assert_eq!(
            verdict(&bad_request),
            Verdict::Stop {
                config_problem: false
            }
        );
    }

    #[tokio::test]
    async fn retries_throttling_then_succeeds() {
        let p = policy(1000, 4, 5, 20);
        let tries = AtomicU32::new(0);
        let deadline = Instant::now() + p.budget();
        let (out, record) = call_with_retry(&p, deadline, Operation::ReplaceRoute, "rtb-1", || {
            let n = tries.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    Err(service("RequestLimitExceeded", 503))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(out.unwrap(), 2);
        assert_eq!(record.attempts, 3);
        assert_eq!(record.result, CallResult::Ok);
    }

    #[tokio::test]
    async fn stops_on_not_found_after_one_attempt() {
        let p = policy(1000, 4, 5, 20);
        let tries = AtomicU32::new(0);
        let deadline = Instant::now() + p.budget();
        let (out, record) = call_with_retry(&p, deadline, Operation::ReplaceRoute, "rtb-1", || {
            tries.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(service("InvalidRouteTableID.NotFound", 400)) }
        })
        .await;
        let err = out.unwrap_err();
        assert_eq!(tries.load(Ordering::SeqCst), 1);
        assert_eq!(record.result, CallResult::Rejected);
        assert_eq!(record.code.as_deref(), Some("InvalidRouteTableID.NotFound"));
        assert!(err.is_config_problem());
        let text = err.to_string();
        assert!(
            text.contains("rtb-1") && text.contains("InvalidRouteTableID.NotFound"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts_with_the_last_code() {
        let p = policy(1000, 3, 1, 4);
        let tries = AtomicU32::new(0);
        let deadline = Instant::now() + p.budget();
        let (out, record) = call_with_retry(&p, deadline, Operation::CreateRoute, "rtb-2", || {
            tries.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(service("RequestLimitExceeded", 503)) }
        })
        .await;
        assert_eq!(tries.load(Ordering::SeqCst), 3);
        assert_eq!(record.attempts, 3);
        assert_eq!(record.result, CallResult::Throttled);
        assert_eq!(out.unwrap_err().code(), Some("RequestLimitExceeded"));
    }

    #[tokio::test]
    async fn a_hanging_call_is_cut_at_the_call_timeout() {
        let p = policy(60, 2, 1, 2);
        let started = Instant::now();
        let deadline = started + p.budget();
        let (out, record) = call_with_retry(
            &p,
            deadline,
            Operation::DescribeRouteTables,
            "rtb-3",
            std::future::pending::<Result<(), Failure>>,
        )
        .await;
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(120), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(600), "{elapsed:?}");
        assert_eq!(record.attempts, 2);
        assert_eq!(record.result, CallResult::Timeout);
        assert!(matches!(out, Err(CloudError::GaveUp { .. })));
    }

    #[tokio::test]
    async fn no_attempt_starts_after_the_deadline() {
        let p = policy(1000, 4, 1, 2);
        let tries = AtomicU32::new(0);
        let (out, record) =
            call_with_retry(&p, Instant::now(), Operation::ReplaceRoute, "rtb-4", || {
                tries.fetch_add(1, Ordering::SeqCst);
                async { Ok::<(), Failure>(()) }
            })
            .await;
        assert!(out.is_err());
        assert_eq!(tries.load(Ordering::SeqCst), 0);
        assert_eq!(record.result, CallResult::BudgetExhausted);
    }
}
