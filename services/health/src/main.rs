//! `trailhound-health`: the health service alone.

fn main() -> anyhow::Result<()> {
    trailhound_runtime::main("trailhound-health", |common, args, shutdown| async move {
        trailhound_health::run(&common, &args, shutdown).await
    })
}
