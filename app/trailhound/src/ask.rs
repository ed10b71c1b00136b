//! `trailhound ask "…"`: a question in plain English to a running insights
//! service, the answer in words (or the whole response as JSON).

use trailhound_core::convert::insight_from_pb;
use trailhound_proto::insights::v1::AskRequest;
use trailhound_proto::insights::v1::insights_service_client::InsightsServiceClient;

#[derive(Clone, Debug, clap::Args)]
pub struct AskArgs {
    /// The question, e.g. "What accounts had the highest cost impact this week?"
    pub question: String,
    /// insights' endpoint.
    #[arg(
        long,
        env = "TRAILHOUND_INSIGHTS_ENDPOINT",
        default_value = "http://127.0.0.1:50054"
    )]
    pub insights: String,
    /// Most results.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Print the structured results as JSON Lines after the answer.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: trailhound_runtime::args::ClientArgs,
}

pub async fn run(args: &AskArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let channel = trailhound_runtime::client::connect_with(
        &args.insights,
        std::time::Duration::from_secs(120),
        &args.client.security()?,
    )
    .map_err(|e| anyhow::anyhow!("bad endpoint {}: {e}", args.insights))?;
    let mut client = InsightsServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let r = client
        .ask(AskRequest {
            question: args.question.clone(),
            limit: args.limit,
        })
        .await
        .map_err(|s| anyhow::anyhow!("{}", s.message()))?
        .into_inner();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", r.answer)?;
    writeln!(
        out,
        "\n(understood: {}{}; answered by {})",
        r.understood,
        if r.fully_understood {
            ""
        } else {
            " — partly"
        },
        r.backend
    )?;
    if args.json {
        for i in r.results {
            let i = insight_from_pb(i)
                .map_err(|e| anyhow::anyhow!("bad insight from insights: {e}"))?;
            writeln!(out, "{}", serde_json::to_string(&i)?)?;
        }
    }
    Ok(())
}
