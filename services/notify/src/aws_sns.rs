//! The SNS [`Publisher`] over aws-sdk-sns, and the loader that plugs it in
//! when the configuration has an `sns` channel. Credentials, region,
//! endpoint override, retries and the concurrency cap come from the shared
//! `[aws]` section (`trailhound_aws`), as for every other AWS backend.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_sns::Client;
use aws_sdk_sns::types::MessageAttributeValue;
use tokio::sync::Semaphore;
use trailhound_aws::{Aws, AwsConfig};

use crate::channel::{Publisher, SendError, SnsMessage};
use crate::config::{ChannelKind, NotifyConfig};
use crate::notifier::Backends;

/// Publishes with `MessageStructure=json` (see [`SnsMessage::body`]).
pub struct SnsPublisher {
    client: Client,
    limit: Arc<Semaphore>,
}

impl SnsPublisher {
    pub fn new(aws: &Aws) -> Self {
        Self {
            client: Client::new(&aws.sdk_config("sns")),
            limit: aws.limiter(),
        }
    }
}

#[async_trait]
impl Publisher for SnsPublisher {
    async fn publish(&self, m: &SnsMessage) -> Result<(), SendError> {
        m.check_size()?;
        let _slot = self
            .limit
            .acquire()
            .await
            .map_err(|_| SendError::retryable("SNS publisher is shutting down"))?;
        let mut req = self
            .client
            .publish()
            .topic_arn(&m.topic_arn)
            .subject(&m.subject)
            .message(m.body());
        if m.json.is_some() {
            req = req.message_structure("json");
        }
        for (k, v) in &m.attributes {
            // SNS refuses empty attribute values; an unset field is absent.
            if v.is_empty() {
                continue;
            }
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .map_err(|e| SendError::permanent(format!("attribute {k}: {e}")))?;
            req = req.message_attributes(k, value);
        }
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let why = trailhound_aws::explain(&e, "sns:Publish", &m.topic_arn);
                if trailhound_aws::is_retryable(&e) {
                    Err(SendError::retryable(why))
                } else {
                    Err(SendError::permanent(why))
                }
            }
        }
    }
}

/// The backends `config` needs: an SNS client when a channel is `sns`,
/// built from `aws` (the `[aws]` section). Fails with the reason when AWS
/// cannot be set up (no region, a bad profile).
pub async fn backends(config: &NotifyConfig, aws: &AwsConfig) -> anyhow::Result<Backends> {
    let mut b = Backends::default();
    if config
        .channels
        .iter()
        .any(|c| c.kind == Some(ChannelKind::Sns))
    {
        let aws = Aws::load(aws).await.map_err(|e| {
            anyhow::anyhow!("failed to load the [aws] configuration for notify's SNS channels: {e}")
        })?;
        b.sns = Some(Arc::new(SnsPublisher::new(&aws)));
    }
    Ok(b)
}
