//! One way for every trailhound backend to reach AWS.
//!
//! Credentials come from the standard provider chain (environment,
//! profiles, SSO, web identity, ECS/IMDS), optionally exchanged for a role
//! in the management or delegated-administrator account; the region from
//! configuration or the environment; an endpoint override per service for
//! emulators (moto, LocalStack); retries with backoff on throttling and
//! 5xx from the SDK's standard retry strategy; and a concurrency cap per
//! backend. Every backend crate builds its client from [`Aws::sdk_config`],
//! so these decisions are made once.
//!
//! [`explain`] turns SDK failures into messages that name the action, the
//! resource and the likely fix, because "service error" helps no one at
//! 3 a.m.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use serde::{Deserialize, Serialize};

/// How to reach AWS: the `[aws]` section of the config file, shared by all
/// services.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AwsConfig {
    /// Region; default from AWS_REGION / the profile.
    pub region: Option<String>,
    /// Named profile; default from AWS_PROFILE.
    pub profile: Option<String>,
    /// One endpoint for every service: an emulator such as moto or
    /// LocalStack (`http://127.0.0.1:5000`).
    pub endpoint_url: Option<String>,
    /// Endpoints per service, winning over `endpoint_url`: keys
    /// "organizations", "sts", "dynamodb", "sns", "s3", "sqs", "logs",
    /// "qbusiness".
    pub endpoints: BTreeMap<String, String>,
    /// A role to assume first, e.g. a read-only role in the management or
    /// delegated-administrator account.
    pub assume_role_arn: Option<String>,
    pub external_id: Option<String>,
    pub session_name: String,
    /// Attempts per call, the first included (throttling and 5xx are
    /// retried with exponential backoff and jitter).
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Longest one call may take, retries included.
    #[serde(with = "humantime_serde")]
    pub operation_timeout: Duration,
    /// Calls in flight per backend at once.
    pub max_concurrency: usize,
    /// Talking to a local emulator (moto, LocalStack): sign with fixed
    /// dummy credentials instead of looking for real ones. Refused unless
    /// an endpoint is set, so it can never send to AWS.
    pub emulator: bool,
}

impl Default for AwsConfig {
    fn default() -> Self {
        Self {
            region: None,
            profile: None,
            endpoint_url: None,
            endpoints: BTreeMap::new(),
            assume_role_arn: None,
            external_id: None,
            session_name: "trailhound".into(),
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            operation_timeout: Duration::from_secs(60),
            max_concurrency: 8,
            emulator: false,
        }
    }
}

impl AwsConfig {
    /// The endpoint override for `service`: its own entry in `endpoints`,
    /// else `endpoint_url`.
    pub fn endpoint(&self, service: &str) -> Option<&str> {
        self.endpoints
            .get(service)
            .or(self.endpoint_url.as_ref())
            .map(String::as_str)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    #[error(
        "no AWS region: set [aws] region in the config file, AWS_REGION, or a region in the AWS profile"
    )]
    NoRegion,
    #[error("invalid [aws] configuration: {0}")]
    Config(String),
}

/// A loaded AWS configuration.
#[derive(Clone, Debug)]
pub struct Aws {
    sdk: SdkConfig,
    config: AwsConfig,
}

const SERVICES: [&str; 8] = [
    "organizations",
    "sts",
    "dynamodb",
    "sns",
    "s3",
    "sqs",
    "logs",
    "qbusiness",
];

impl Aws {
    /// Resolves region, credentials (and the assumed role) and retry and
    /// timeout settings. Credentials are resolved lazily by the SDK: a
    /// missing or wrong one surfaces on the first call, explained there.
    pub async fn load(config: &AwsConfig) -> Result<Self, AwsError> {
        for key in config.endpoints.keys() {
            if !SERVICES.contains(&key.as_str()) {
                return Err(AwsError::Config(format!(
                    "endpoints.{key}: not a service trailhound calls ({})",
                    SERVICES.join(", ")
                )));
            }
        }
        if config.emulator && config.endpoint_url.is_none() && config.endpoints.is_empty() {
            return Err(AwsError::Config(
                "emulator = true needs endpoint_url (or endpoints): emulator credentials never go to AWS".into(),
            ));
        }
        if config.max_attempts == 0 || config.max_concurrency == 0 {
            return Err(AwsError::Config(
                "max_attempts and max_concurrency must be at least 1".into(),
            ));
        }
        let loader = || {
            let mut loader = aws_config::defaults(BehaviorVersion::latest())
                .retry_config(
                    RetryConfig::standard()
                        .with_max_attempts(config.max_attempts)
                        .with_initial_backoff(config.initial_backoff),
                )
                .timeout_config(
                    TimeoutConfig::builder()
                        .operation_timeout(config.operation_timeout)
                        .connect_timeout(Duration::from_secs(5))
                        .build(),
                );
            if let Some(r) = &config.region {
                loader = loader.region(Region::new(r.clone()));
            }
            if let Some(p) = &config.profile {
                loader = loader.profile_name(p);
            }
            if config.emulator {
                loader = loader.test_credentials();
            }
            loader
        };
        let mut sdk = loader().load().await;
        if sdk.region().is_none() {
            return Err(AwsError::NoRegion);
        }
        if let Some(role) = &config.assume_role_arn {
            // The base credentials sign the AssumeRole call; everything
            // else runs as the role. STS honours the endpoint override too,
            // so an emulator (or a VPC endpoint) serves the call.
            let sts = match config.endpoint("sts") {
                Some(url) => sdk.to_builder().endpoint_url(url).build(),
                None => sdk.clone(),
            };
            let mut b = aws_config::sts::AssumeRoleProvider::builder(role.clone())
                .session_name(config.session_name.clone())
                .configure(&sts);
            if let Some(id) = &config.external_id {
                b = b.external_id(id.clone());
            }
            let provider = b.build().await;
            sdk = loader().credentials_provider(provider).load().await;
        }
        Ok(Self {
            sdk,
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &AwsConfig {
        &self.config
    }

    pub fn region(&self) -> String {
        self.sdk.region().map(|r| r.to_string()).unwrap_or_default()
    }

    /// The endpoint a service is called at, when overridden.
    pub fn endpoint(&self, service: &str) -> Option<&str> {
        self.config.endpoint(service)
    }

    /// The SDK configuration for one service, its endpoint override
    /// applied.
    pub fn sdk_config(&self, service: &str) -> SdkConfig {
        match self.endpoint(service) {
            Some(url) => self.sdk.to_builder().endpoint_url(url).build(),
            None => self.sdk.clone(),
        }
    }

    /// A fresh concurrency cap for one backend.
    pub fn limiter(&self) -> Arc<tokio::sync::Semaphore> {
        Arc::new(tokio::sync::Semaphore::new(self.config.max_concurrency))
    }
}

/// Whether a failure may pass if the same call is made later: throttling,
/// 5xx, timeouts and connection failures.
pub fn is_retryable<E, R>(e: &SdkError<E, R>) -> bool
where
    E: ProvideErrorMetadata,
{
    match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or("");
            code.contains("Throttl")
                || code.contains("TooManyRequests")
                || code == "ServiceUnavailable"
                || code == "InternalFailure"
                || code == "InternalError"
                || code == "RequestLimitExceeded"
                || code == "ProvisionedThroughputExceededException"
                || code == "ConcurrentModificationException"
        }
        _ => false,
    }
}

/// A failed call, explained: what was attempted, on what, what AWS said,
/// and what usually fixes it.
pub fn explain<E, R>(e: &SdkError<E, R>, action: &str, resource: &str) -> String
where
    E: ProvideErrorMetadata + StdError + 'static,
    R: std::fmt::Debug + 'static,
{
    let chain = |mut err: &(dyn StdError + 'static)| {
        let mut parts = vec![err.to_string()];
        while let Some(next) = err.source() {
            parts.push(next.to_string());
            err = next;
        }
        parts.join(": ")
    };
    match e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            let code = err.code().unwrap_or("ServiceError");
            let message = err.message().unwrap_or("");
            let hint = hint(code, action);
            format!("{action} on {resource} failed: {code}: {message}{hint}")
        }
        SdkError::DispatchFailure(d) => {
            let detail = d
                .as_connector_error()
                .map(|c| chain(c))
                .unwrap_or_else(|| format!("{d:?}"));
            let hint = if detail.contains("credentials") || detail.contains("Credentials") {
                ". No AWS credentials were found: set AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run where a role is attached"
            } else {
                ". Check the endpoint, the region and network access"
            };
            format!("{action} on {resource}: could not send the request: {detail}{hint}")
        }
        SdkError::TimeoutError(_) => format!(
            "{action} on {resource} timed out (after retries); AWS or the endpoint is slow or unreachable"
        ),
        SdkError::ConstructionFailure(_) => {
            let detail = StdError::source(e).map(chain).unwrap_or_default();
            let hint = if detail.contains("credentials") || detail.contains("Credentials") {
                ". No AWS credentials were found: set AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run where a role is attached"
            } else {
                ""
            };
            format!("{action} on {resource}: could not build the request: {detail}{hint}")
        }
        other => format!("{action} on {resource} failed: {}", chain(other)),
    }
}

fn hint(code: &str, action: &str) -> String {
    match code {
        "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation" | "AuthorizationError" => {
            format!(". The credentials in use lack permission for {action}: grant it to the role or user trailhound runs as")
        }
        "AWSOrganizationsNotInUseException" => {
            ". This account is not in an organization: run against the management account or a delegated administrator".into()
        }
        "UnrecognizedClientException" | "InvalidClientTokenId" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "ExpiredToken" | "ExpiredTokenException" => {
            ". The credentials are invalid or expired: refresh them (aws sso login, new keys)".into()
        }
        "ResourceNotFoundException" | "NoSuchBucket" | "NoSuchKey" | "AWS.SimpleQueueService.NonExistentQueue" | "NotFound" | "NotFoundException" => {
            ". It does not exist in this account and region: check the name and the region".into()
        }
        c if c.contains("Throttl") || c.contains("TooManyRequests") => {
            ". AWS is throttling: lower [aws] max_concurrency or raise the service quota".into()
        }
        _ => String::new(),
    }
}
