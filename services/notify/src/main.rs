//! `trailhound-notify`: the notify service alone.

fn main() -> anyhow::Result<()> {
    trailhound_runtime::main("trailhound-notify", |common, args, shutdown| async move {
        trailhound_notify::run(&common, &args, shutdown).await
    })
}
