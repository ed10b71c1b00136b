//! File bodies: gzip recognised by its magic number and inflated within a
//! bound, then parsed as a document.

use std::io::Read;

use super::{ParseLimits, RecordSink, Rejection, parse_document};

/// Decompresses gzip input (by magic number, so a mislabelled file still
/// works), refusing to inflate past `limit` bytes. Plain input is returned
/// as is.
pub fn maybe_gunzip(bytes: Vec<u8>, limit: usize) -> Result<Vec<u8>, String> {
    if !is_gzip(&bytes) {
        if bytes.len() > limit {
            return Err(format!(
                "document is {} bytes, over the {limit} byte limit",
                bytes.len()
            ));
        }
        return Ok(bytes);
    }
    let mut out = Vec::new();
    let len = gunzip_into(&bytes, limit, &mut out)?;
    out.truncate(len);
    Ok(out)
}

fn is_gzip(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b
}

/// Decompresses into `out`, refusing more than `limit` bytes of output, and
/// returns the length of the output, which is `out[..len]`. `out` is grown
/// (zero-filled) only when it is too short and never shrunk, so a buffer
/// reused across files is not cleared again for each one.
fn gunzip_into(bytes: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<usize, String> {
    // `bytes` is already in memory: the `bufread` decoder reads it in place.
    let mut decoder = flate2::bufread::MultiGzDecoder::new(bytes).take(limit as u64 + 1);
    let mut filled = 0;
    loop {
        if filled == out.len() {
            let grow = out.len().clamp(32 << 10, 16 << 20);
            out.resize(out.len() + grow, 0);
        }
        match decoder.read(&mut out[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("corrupt or truncated gzip: {e}")),
        }
    }
    if filled > limit {
        return Err(format!(
            "decompressed document exceeds the {limit} byte limit"
        ));
    }
    Ok(filled)
}

thread_local! {
    /// Decompressed text of the file being parsed, reused across files: a
    /// fresh multi-megabyte buffer per file costs more in page faults than
    /// the decompression itself.
    static BODY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Parses a whole file body (gzip or plain) as a CloudTrail document.
pub fn parse_file_bytes<S: RecordSink>(
    bytes: &[u8],
    source: &str,
    limits: &ParseLimits,
    now_ms: i64,
    sink: &mut S,
) -> usize {
    if !is_gzip(bytes) {
        if bytes.len() > limits.max_document_bytes {
            sink.reject(Rejection::new(
                source,
                format!(
                    "document is {} bytes, over the {} byte limit",
                    bytes.len(),
                    limits.max_document_bytes
                ),
                "",
            ));
            return 0;
        }
        return parse_text(bytes, source, limits, now_ms, sink);
    }
    BODY.with(|cell| {
        // Taken out for the parse, so a nested call (none today) could not
        // find the buffer borrowed.
        let mut body = std::mem::take(&mut *cell.borrow_mut());
        let n = match gunzip_into(bytes, limits.max_document_bytes, &mut body) {
            Ok(len) => parse_text(&body[..len], source, limits, now_ms, sink),
            Err(reason) => {
                sink.reject(Rejection::new(source, reason, ""));
                0
            }
        };
        // A rare huge file should not pin its buffer for ever.
        if body.capacity() <= 64 << 20 {
            *cell.borrow_mut() = body;
        }
        n
    })
}

fn parse_text<S: RecordSink>(
    body: &[u8],
    source: &str,
    limits: &ParseLimits,
    now_ms: i64,
    sink: &mut S,
) -> usize {
    match std::str::from_utf8(body) {
        Ok(text) => parse_document(text, source, limits, now_ms, sink),
        Err(e) => {
            sink.reject(Rejection::new(source, format!("not UTF-8 text: {e}"), ""));
            0
        }
    }
}
