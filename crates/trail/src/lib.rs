//! The trail reader: CloudTrail files on disk (`.json`, `.json.gz`, whole
//! `AWSLogs/...` trees) found and grouped in delivery order ([`files`]),
//! each group parsed and sorted by event time ([`read`]), and duplicate
//! events dropped ([`dedupe`]). ingest, the replay, `push`, the demo and
//! the tests read trails through it, so they all see the same events in
//! the same order. Parsing one file's bytes (gzip included) is
//! `trailhound_core::cloudtrail`'s.

pub mod dedupe;
pub mod files;
pub mod read;
