//! `trailhound-detect`: the detect service alone.

fn main() -> anyhow::Result<()> {
    trailhound_runtime::main("trailhound-detect", |common, args, shutdown| async move {
        trailhound_detect::run(&common, &args, shutdown).await
    })
}
