//! The one EC2 client the executors share, and the translation of SDK errors into `Failure`s.
//!
//! The client is built once at start with the lean HTTP stack (hyper 1 + rustls/ring, passed
//! explicitly), the SDK's own retries off (`retry.rs` does them, visibly) and its connect
//! timeout set to our per-call deadline. Its connection pool is what makes later calls fast:
//! keep the executor alive rather than reconnecting per claim.

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_ec2::config::Region;
use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};

pub use aws_sdk_ec2::config::Credentials;

use crate::config::CloudConfig;
use crate::error::CloudError;
use crate::retry::{Failure, FailureKind, RetryPolicy};

/// A connected EC2 client plus the retry policy every call through it follows.
#[derive(Debug, Clone)]
pub struct Ec2Api {
    client: aws_sdk_ec2::Client,
    policy: RetryPolicy,
}

impl Ec2Api {
    /// Credentials and (when `cloud.region` is absent) region from the SDK's standard chain:
    /// environment, profile, then the instance profile through IMDS in production.
    pub async fn connect(cfg: &CloudConfig) -> Result<Self, CloudError> {
        Self::build(cfg, None).await
    }

    /// Fixed credentials instead of the chain: for tests against moto and for tools.
    pub async fn connect_with_credentials(
        cfg: &CloudConfig,
        credentials: Credentials,
    ) -> Result<Self, CloudError> {
        Self::build(cfg, Some(credentials)).await
    }

    async fn build(
        cfg: &CloudConfig,
        credentials: Option<Credentials>,
    ) -> Result<Self, CloudError> {
        let problems = cfg.validate();
        if !problems.is_empty() {
            return Err(CloudError::Config(problems));
        }
        let policy = RetryPolicy::from_config(cfg);
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http_client)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(policy.call_timeout)
                    .build(),
            );
        if let Some(region) = &cfg.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(url) = &cfg.endpoint_url {
            loader = loader.endpoint_url(url.clone());
        }
        if let Some(credentials) = credentials {
            loader = loader.credentials_provider(credentials);
        }
        let sdk_config = loader.load().await;
        if sdk_config.region().is_none() {
            return Err(CloudError::NoRegion);
        }
        Ok(Ec2Api {
            client: aws_sdk_ec2::Client::new(&sdk_config),
            policy,
        })
    }

    /// The SDK client, for callers that need an EC2 call this crate does not wrap.
    pub fn client(&self) -> &aws_sdk_ec2::Client {
        &self.client
    }

    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }
}

/// Reduces an SDK error to what the retry decision and the report need.
pub(crate) fn failure_from_sdk<E>(err: SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let message = DisplayErrorContext(&err).to_string();
    match &err {
        SdkError::ServiceError(context) => Failure {
            kind: FailureKind::Service,
            code: context.err().code().map(str::to_owned),
            message: context
                .err()
                .message()
                .map_or_else(|| message.clone(), str::to_owned),
            status: Some(context.raw().status().as_u16()),
        },
        SdkError::TimeoutError(_) => Failure {
            kind: FailureKind::Timeout,
            code: None,
            message,
            status: None,
        },
        SdkError::DispatchFailure(dispatch) => Failure {
            kind: if dispatch.is_timeout() {
                FailureKind::Timeout
            } else if dispatch.is_user() {
                FailureKind::Request
            } else {
                FailureKind::Transport
            },
            code: None,
            message,
            status: None,
        },
        SdkError::ResponseError(context) => Failure {
            kind: FailureKind::UnreadableResponse,
            code: None,
            message,
            status: Some(context.raw().status().as_u16()),
        },
        _ => Failure {
            kind: FailureKind::Request,
            code: None,
            message,
            status: None,
        },
    }
}
