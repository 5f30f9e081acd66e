//! etcd leases with honest timing. The holder of a lease may act on it only until the lease
//! could have expired, measured on its own clock: etcd resets a lease's expiry when it
//! receives a keep-alive, which is no earlier than the instant the client sent it. So each
//! renewal is one keep-alive with nothing else outstanding, its `sent` taken immediately
//! before the request is handed to the connection, and the lease holds until `sent + ttl` at
//! the earliest. An answer with TTL ≤ 0 means the lease is already gone.
//!
//! etcd-client opens a keep-alive stream with a first request whose answer it reads but does
//! not return (only "TTL > 0"). A `Lease` therefore keeps its stream open between renewals;
//! when one has to be opened (first renewal, after a failure), that opening round trip is
//! followed by the measured one. After any failure or timeout the stream is dropped, so a late
//! answer can never be taken for the next renewal's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper};
use tokio::sync::Mutex;

use crate::{Etcd, EtcdError};

/// A lease granted by etcd. Clones share the keep-alive stream (and so its one-at-a-time rule).
#[derive(Debug, Clone)]
pub struct Lease {
    pub id: i64,
    /// The TTL etcd granted (etcd raises a TTL below its minimum, 1.5 election timeouts).
    pub ttl: Duration,
    /// Taken immediately before the grant request was sent: the lease holds until `sent + ttl`.
    pub sent: Instant,
    pub answered: Instant,
    keep_alive: Arc<Mutex<Option<KeepAlive>>>,
}

/// One renewal: etcd restarted the lease's TTL at some instant in `sent..=answered`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renewal {
    pub sent: Instant,
    pub answered: Instant,
    pub ttl: Duration,
}

impl Lease {
    /// The earliest instant the lease can expire after its grant.
    pub fn holds_until(&self) -> Instant {
        self.sent + self.ttl
    }
}

impl Renewal {
    /// The earliest instant the lease can expire after this renewal.
    pub fn holds_until(&self) -> Instant {
        self.sent + self.ttl
    }
}

#[derive(Debug)]
struct KeepAlive {
    keeper: LeaseKeeper,
    answers: LeaseKeepAliveStream,
    /// The member the stream goes to: once the client moved on, it is not used again.
    member: usize,
}

/// etcd TTLs are whole seconds, at least 1.
pub(crate) fn ttl_seconds(ttl: Duration) -> Result<i64, EtcdError> {
    match i64::try_from(ttl.as_secs()) {
        Ok(seconds) if seconds >= 1 && ttl.subsec_nanos() == 0 => Ok(seconds),
        _ => Err(EtcdError::InvalidTtl { ttl }),
    }
}

fn positive_ttl(seconds: i64) -> Option<Duration> {
    u64::try_from(seconds)
        .ok()
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
}

impl Etcd {
    /// Grants a lease of `ttl` (whole seconds, ≥ 1 s).
    pub async fn grant(&self, ttl: Duration) -> Result<Lease, EtcdError> {
        let seconds = ttl_seconds(ttl)?;
        let operation = format!("grant a lease of {seconds} s");
        let sent = Instant::now();
        let answer = self
            .bounded(&operation, |c| async move {
                c.lease_client().grant(seconds, None).await
            })
            .await?;
        let answered = Instant::now();
        if !answer.error().is_empty() {
            return Err(EtcdError::Answered {
                endpoints: self.target.endpoints.clone(),
                operation,
                detail: answer.error().to_owned(),
            });
        }
        let granted = positive_ttl(answer.ttl())
            .filter(|_| answer.id() != 0)
            .ok_or_else(|| {
                let detail = format!("lease {:x} with TTL {}", answer.id(), answer.ttl());
                self.target.unexpected(&operation, detail)
            })?;
        Ok(Lease {
            id: answer.id(),
            ttl: granted,
            sent,
            answered,
            keep_alive: Arc::default(),
        })
    }

    /// One keep-alive round trip for `lease`, within `request_timeout` (including the wait for
    /// a renewal of the same lease by a clone).
    pub async fn renew(&self, lease: &Lease) -> Result<Renewal, EtcdError> {
        let member = self.members.pinned();
        let renewal = async {
            let mut slot = lease.keep_alive.lock().await;
            // Taken out while in use: if this is dropped (timeout) or fails, the slot stays
            // empty and the next renewal opens a fresh stream.
            let open = slot.take().filter(|k| k.member == member);
            let (keep_alive, renewal) = self.renew_on(open, lease.id, member).await?;
            *slot = Some(keep_alive);
            Ok(renewal)
        };
        let result = match tokio::time::timeout(self.request_timeout, renewal).await {
            Ok(result) => result,
            Err(_) => {
                let operation = format!("renew lease {:x}", lease.id);
                Err(self.target.no_answer(&operation, self.request_timeout))
            }
        };
        self.judge(member, result)
    }

    async fn renew_on(
        &self,
        open: Option<KeepAlive>,
        id: i64,
        member: usize,
    ) -> Result<(KeepAlive, Renewal), EtcdError> {
        let mut keep_alive = match open {
            Some(open) => open,
            None => self.open_keep_alive(id, member).await?,
        };
        let operation = format!("renew lease {id:x}");
        let failed = |e| self.target.failure(&operation, e);
        let sent = Instant::now();
        keep_alive.keeper.keep_alive().await.map_err(failed)?;
        let answer = keep_alive.answers.message().await.map_err(failed)?;
        let answered = Instant::now();
        let answer = answer.ok_or_else(|| self.target.unexpected(&operation, "stream closed"))?;
        if answer.id() != id {
            let detail = format!("answer for lease {:x}", answer.id());
            return Err(self.target.unexpected(&operation, detail));
        }
        let ttl = positive_ttl(answer.ttl()).ok_or_else(|| self.target.lease_expired(id))?;
        let renewal = Renewal {
            sent,
            answered,
            ttl,
        };
        Ok((keep_alive, renewal))
    }

    async fn open_keep_alive(&self, id: i64, member: usize) -> Result<KeepAlive, EtcdError> {
        let operation = format!("open keep-alive for lease {id:x}");
        let client = self
            .members
            .client(member)
            .await
            .map_err(|e| self.target.failure(&operation, e))?;
        match client.lease_client().keep_alive(id).await {
            Ok((keeper, answers)) => Ok(KeepAlive {
                keeper,
                answers,
                member,
            }),
            // etcd-client's only use of this variant when opening: the first answer had TTL ≤ 0.
            Err(etcd_client::Error::LeaseKeepAliveError(_)) => Err(self.target.lease_expired(id)),
            Err(e) => Err(self.target.failure(&operation, e)),
        }
    }

    /// Revokes `lease`, deleting every key attached to it. A lease etcd no longer knows is
    /// `EtcdError::LeaseExpired`.
    pub async fn revoke(&self, lease: &Lease) -> Result<(), EtcdError> {
        let operation = format!("revoke lease {:x}", lease.id);
        let id = lease.id;
        let result = self
            .bounded_with_lease(&operation, id, |c| async move {
                c.lease_client().revoke(id).await
            })
            .await
            .map(drop);
        if let Ok(mut stream) = lease.keep_alive.try_lock() {
            *stream = None;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_seconds_of_at_least_one_are_lease_ttls() {
        assert_eq!(ttl_seconds(Duration::from_secs(1)).unwrap(), 1);
        assert_eq!(ttl_seconds(Duration::from_secs(30)).unwrap(), 30);
        for bad in [
            Duration::ZERO,
            Duration::from_millis(500),
            Duration::from_millis(1500),
            Duration::from_secs(2) + Duration::from_nanos(1),
            Duration::from_secs(u64::MAX),
        ] {
            let err = ttl_seconds(bad).unwrap_err();
            assert!(
                matches!(err, EtcdError::InvalidTtl { ttl } if ttl == bad),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_renewal_holds_from_when_it_was_sent_not_answered() {
        let sent = Instant::now();
        let renewal = Renewal {
            sent,
            answered: sent + Duration::from_millis(40),
            ttl: Duration::from_secs(2),
        };
        assert_eq!(renewal.holds_until(), sent + Duration::from_secs(2));
    }

    #[test]
    fn a_ttl_of_zero_or_less_is_no_ttl() {
        assert_eq!(positive_ttl(0), None);
        assert_eq!(positive_ttl(-1), None);
        assert_eq!(positive_ttl(3), Some(Duration::from_secs(3)));
    }
}
