//! `trailhound-enrich`: the enrich service alone.

fn main() -> anyhow::Result<()> {
    trailhound_runtime::main("trailhound-enrich", |common, args, shutdown| async move {
        trailhound_enrich::run(&common, &args, shutdown).await
    })
}
