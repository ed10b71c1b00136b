//! Compiles every .proto under proto/ with protox (pure Rust), so building
//! trailhound never needs `protoc` on the machine.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "trailhound/common/v1/common.proto",
        "trailhound/ingest/v1/ingest.proto",
        "trailhound/enrich/v1/enrich.proto",
        "trailhound/detect/v1/detect.proto",
        "trailhound/insights/v1/insights.proto",
        "trailhound/notify/v1/notify.proto",
        "trailhound/health/v1/health.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("trailhound_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
