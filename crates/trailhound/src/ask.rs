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
}

pub async fn run(args: &AskArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let mut client = InsightsServiceClient::connect(args.insights.clone())
        .await
        .map_err(|e| anyhow::anyhow!("failed to connect to insights at {}: {e}", args.insights))?
        .max_decoding_message_size(64 << 20);
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
