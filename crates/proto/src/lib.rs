//! trailhound's gRPC contracts: one module per `trailhound.<service>.v1`
//! package, generated from `proto/` at build time, plus the encoded file
//! descriptor set that every server hands to gRPC reflection.
//!
//! Re-exports `tonic` and `prost` so every crate uses the same versions.

pub use prost;
pub use prost_types;
pub use tonic;

/// The encoded `FileDescriptorSet` of every trailhound proto, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/trailhound_descriptor.bin"));

#[allow(clippy::all, missing_docs)]
pub mod common {
    pub mod v1 {
        tonic::include_proto!("trailhound.common.v1");
    }
}
#[allow(clippy::all, missing_docs)]
pub mod ingest {
    pub mod v1 {
        tonic::include_proto!("trailhound.ingest.v1");
    }
}
#[allow(clippy::all, missing_docs)]
pub mod enrich {
    pub mod v1 {
        tonic::include_proto!("trailhound.enrich.v1");
    }
}
#[allow(clippy::all, missing_docs)]
pub mod detect {
    pub mod v1 {
        tonic::include_proto!("trailhound.detect.v1");
    }
}
#[allow(clippy::all, missing_docs)]
pub mod insights {
    pub mod v1 {
        tonic::include_proto!("trailhound.insights.v1");
    }
}
#[allow(clippy::all, missing_docs)]
pub mod notify {
    pub mod v1 {
        tonic::include_proto!("trailhound.notify.v1");
    }
}
#[allow(clippy::all, missing_docs)]
pub mod health {
    pub mod v1 {
        tonic::include_proto!("trailhound.health.v1");
    }
}

/// Converts between protobuf timestamps and chrono-free unix nanoseconds.
pub mod time {
    use prost_types::Timestamp;

    /// A timestamp from milliseconds since the Unix epoch.
    pub fn from_millis(ms: i64) -> Timestamp {
        Timestamp {
            seconds: ms.div_euclid(1000),
            nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn to_millis(ts: &Timestamp) -> i64 {
        ts.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(ts.nanos) / 1_000_000)
    }
}
