//! `trailhound-insights`: the insights service alone.

fn main() -> anyhow::Result<()> {
    trailhound_runtime::main("trailhound-insights", |common, args, shutdown| async move {
        trailhound_insights::run(&common, &args, shutdown).await
    })
}
