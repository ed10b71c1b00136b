//! `trailhound push`: sends CloudTrail files to a running ingest service
//! over gRPC, in delivery order — what a shipper of an S3 export would do,
//! and how the services path is benchmarked.
//!
//! Memory stays bounded whatever the files hold: one file is read at a
//! time, decompressed up to the document limit, and a large one is sent
//! in pieces of whole records. A file that cannot be read is reported at
//! the end, not fatal: the rest are sent.

use std::path::PathBuf;
use std::time::Instant;

use trailhound_core::reasons::ReasonTally;
use trailhound_proto::detect::v1::detect_service_client::DetectServiceClient;
use trailhound_proto::detect::v1::{FlushRequest, ObserveRequest};
use trailhound_proto::ingest::v1::PushEventsRequest;
use trailhound_proto::ingest::v1::ingest_service_client::IngestServiceClient;

#[derive(Clone, Debug, clap::Args)]
pub struct PushArgs {
    /// CloudTrail file or AWSLogs tree to send.
    #[arg(long)]
    pub input: PathBuf,
    /// ingest's endpoint.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub ingest: String,
    /// detect's endpoint: when given, detect closes its open windows once
    /// everything is sent (the end of a replay), and the time includes it.
    /// Sharded detect (--shard I/N): every replica, comma-separated; the
    /// accounts each saw rising in its last windows are handed to the
    /// others, as enrich does for every batch.
    #[arg(long)]
    pub flush_detect: Option<String>,
    #[command(flatten)]
    pub client: trailhound_runtime::args::ClientArgs,
    /// Largest decompressed file read, bytes (as ingest's default).
    #[arg(long, default_value_t = 128 << 20)]
    pub max_document_bytes: usize,
}

/// What a push did.
#[derive(Clone, Debug, Default)]
pub struct PushSummary {
    pub files: usize,
    pub accepted: u64,
    pub rejected: u64,
    pub duplicates: u64,
    pub seconds: f64,
    /// Files that could not be read or sent: (path, why).
    pub failed_files: Vec<(String, String)>,
    /// Digest and Insights files, not sent.
    pub skipped_files: usize,
    /// Why ingest rejected records, by kind.
    pub reasons: ReasonTally,
}

/// Largest message sent: a file's records go in pieces of at most this.
const MAX_MESSAGE: usize = 8 << 20;

pub async fn run(args: &PushArgs) -> anyhow::Result<PushSummary> {
    let (groups, skipped) = trailhound_trail::files::trail_files(&args.input)
        .map_err(|e| anyhow::anyhow!("failed to read {}: {e}", args.input.display()))?;
    let files: Vec<PathBuf> = groups.into_iter().flat_map(|g| g.files).collect();
    let security = args.client.security()?;
    let channel = |endpoint: &str| {
        trailhound_runtime::client::connect_with(
            endpoint,
            std::time::Duration::from_secs(3600),
            &security,
        )
        .map_err(|e| anyhow::anyhow!("bad endpoint {endpoint}: {e}"))
    };
    let mut ingest =
        IngestServiceClient::new(channel(&args.ingest)?).max_encoding_message_size(2 * MAX_MESSAGE);
    let started = Instant::now();
    // A few messages ahead of the network, no more: memory stays bounded.
    let (tx, rx) = tokio::sync::mpsc::channel::<PushEventsRequest>(4);
    let count = files.len();
    let limit = args.max_document_bytes;
    // Files are read and decompressed on a blocking thread while the
    // stream sends.
    let reader = tokio::task::spawn_blocking(move || {
        let mut failed = Vec::new();
        for f in files {
            let source = f.display().to_string();
            let messages = match read_file(&f, limit) {
                Ok(m) => m,
                Err(why) => {
                    failed.push((source, why));
                    continue;
                }
            };
            for json in messages {
                let msg = PushEventsRequest {
                    json,
                    source: source.clone(),
                };
                if tx.blocking_send(msg).is_err() {
                    return failed;
                }
            }
        }
        failed
    });
    let response = ingest
        .push_events(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|e| anyhow::anyhow!("ingest refused the stream: {e}"))?
        .into_inner();
    let failed_files = reader.await?;
    if let Some(endpoints) = &args.flush_detect {
        let mut replicas = Vec::new();
        for e in endpoints
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            replicas
                .push(DetectServiceClient::new(channel(e)?).max_decoding_message_size(64 << 20));
        }
        flush(&mut replicas).await?;
    }
    let mut reasons = ReasonTally::default();
    for r in &response.reasons {
        reasons.add_n(&r.example, r.count);
    }
    Ok(PushSummary {
        files: count,
        accepted: response.accepted,
        rejected: response.rejected,
        duplicates: response.duplicates,
        seconds: started.elapsed().as_secs_f64(),
        failed_files,
        skipped_files: skipped.total(),
        reasons,
    })
}

/// Closes every replica's open windows, then hands each the accounts the
/// others saw rising in them (nothing, with one replica).
async fn flush(
    replicas: &mut [DetectServiceClient<trailhound_runtime::TracedChannel>],
) -> anyhow::Result<()> {
    let mut rising = Vec::new();
    for (i, r) in replicas.iter_mut().enumerate() {
        let answer = r
            .flush(FlushRequest {})
            .await
            .map_err(|e| anyhow::anyhow!("detect flush failed: {e}"))?
            .into_inner();
        rising.push((i, answer.rising));
    }
    for (j, r) in replicas.iter_mut().enumerate() {
        let peer_rising: Vec<_> = rising
            .iter()
            .filter(|(i, _)| *i != j)
            .flat_map(|(_, list)| list.iter().cloned())
            .collect();
        if peer_rising.is_empty() {
            continue;
        }
        r.observe(ObserveRequest {
            events: Vec::new(),
            peer_rising,
            traceparent: String::new(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("handing rising accounts to detect failed: {e}"))?;
    }
    Ok(())
}

/// A file as the messages to send: its text, or, when larger than
/// [`MAX_MESSAGE`], its records in pieces (JSON arrays of whole records).
fn read_file(path: &std::path::Path, limit: usize) -> Result<Vec<String>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("failed to read: {e}"))?;
    let body = trailhound_core::cloudtrail::maybe_gunzip(bytes, limit)?;
    let text = String::from_utf8(body).map_err(|e| format!("not UTF-8 text: {e}"))?;
    if text.len() <= MAX_MESSAGE {
        return Ok(vec![text]);
    }
    let records = records_of(&text).ok_or_else(|| {
        format!(
            "{} bytes, more than one message holds ({MAX_MESSAGE}), and not a {{\"Records\":[...]}} document or an array that could be sent in pieces",
            text.len()
        )
    })?;
    let mut out = Vec::new();
    let mut piece = String::from("[");
    for r in records {
        if piece.len() > 1 && piece.len() + r.len() + 2 > MAX_MESSAGE {
            piece.push(']');
            out.push(std::mem::replace(&mut piece, String::from("[")));
        }
        if piece.len() > 1 {
            piece.push(',');
        }
        piece.push_str(r);
    }
    if piece.len() > 1 {
        piece.push(']');
        out.push(piece);
    }
    Ok(out)
}

/// The records of `{"Records":[...]}` or of an array, as their JSON text.
fn records_of(text: &str) -> Option<Vec<&str>> {
    use serde_json::value::RawValue;
    #[derive(serde::Deserialize)]
    struct Doc<'a> {
        #[serde(rename = "Records", borrow)]
        records: Vec<&'a RawValue>,
    }
    let t = text.trim_start_matches('\u{feff}').trim_start();
    let raws: Vec<&RawValue> = if t.starts_with('[') {
        serde_json::from_str(t).ok()?
    } else {
        serde_json::from_str::<Doc<'_>>(t).ok()?.records
    };
    Some(raws.into_iter().map(RawValue::get).collect())
}

impl PushSummary {
    /// The end-of-push report: totals, then why records were rejected and
    /// which files could not be read.
    pub fn report(&self) -> String {
        let mut out = format!(
            "pushed {} files in {:.2}s: {} accepted, {} rejected, {} duplicates ({:.0} events/s)\n",
            self.files - self.failed_files.len(),
            self.seconds,
            self.accepted,
            self.rejected,
            self.duplicates,
            (self.accepted + self.rejected + self.duplicates) as f64 / self.seconds.max(1e-9)
        );
        if self.skipped_files > 0 {
            out.push_str(&format!(
                "skipped {} CloudTrail digest and Insights files (not event records)\n",
                self.skipped_files
            ));
        }
        if !self.reasons.is_empty() {
            out.push_str(&format!(
                "why {} records were rejected, most frequent first (every one is in ingest's dead letters):\n{}",
                self.reasons.total(),
                self.reasons.report(5)
            ));
        }
        if !self.failed_files.is_empty() {
            out.push_str(&format!(
                "{} files could not be read and were not sent:\n",
                self.failed_files.len()
            ));
            for (path, why) in self.failed_files.iter().take(10) {
                out.push_str(&format!("  {path}: {why}\n"));
            }
            if self.failed_files.len() > 10 {
                out.push_str(&format!("  … and {} more\n", self.failed_files.len() - 10));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_file_goes_in_pieces_of_whole_records() {
        let dir = tempfile::tempdir().unwrap();
        let record = format!(r#"{{"eventID":"x","pad":"{}"}}"#, "a".repeat(1 << 20));
        let records: Vec<String> = (0..20).map(|_| record.clone()).collect();
        let doc = format!(r#"{{"Records":[{}]}}"#, records.join(","));
        let path = dir.path().join("big.json");
        std::fs::write(&path, &doc).unwrap();
        let pieces = read_file(&path, 128 << 20).unwrap();
        assert!(pieces.len() >= 3, "{}", pieces.len());
        let mut n = 0;
        for p in &pieces {
            assert!(p.len() <= MAX_MESSAGE);
            let v: Vec<serde_json::Value> = serde_json::from_str(p).unwrap();
            n += v.len();
        }
        assert_eq!(n, 20);
    }

    #[test]
    fn a_bomb_or_a_broken_file_is_an_error_for_that_file() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let bomb = dir.path().join("bomb.json.gz");
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&bomb).unwrap(),
            flate2::Compression::best(),
        );
        let zeros = vec![b' '; 1 << 20];
        for _ in 0..64 {
            gz.write_all(&zeros).unwrap();
        }
        gz.finish().unwrap();
        let err = read_file(&bomb, 16 << 20).unwrap_err();
        assert!(err.contains("limit"), "{err}");
        let truncated = dir.path().join("cut.json.gz");
        let bytes = std::fs::read(&bomb).unwrap();
        std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        let err = read_file(&truncated, 128 << 20).unwrap_err();
        assert!(err.contains("gzip"), "{err}");
    }
}
