//! `trailhound-ingest`: the ingest service alone.

fn main() -> anyhow::Result<()> {
    trailhound_runtime::main("trailhound-ingest", |common, args, shutdown| async move {
        trailhound_ingest::run(&common, &args, shutdown).await
    })
}
