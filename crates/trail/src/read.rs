//! Reading a delivery group's files into events in time order: what
//! ingest, the replay and the tests all do with a trail on disk.

use trailhound_core::Event;
use trailhound_core::Rejection;
use trailhound_core::cloudtrail::{self, Collect, ParseLimits};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Parses a delivery group's files and sorts their events by time.
pub fn parse_group(files: &[std::path::PathBuf], limits: &ParseLimits) -> Collect {
    let mut sink = Collect::default();
    parse_files_into(files, limits, &mut Vec::new(), &mut sink);
    sort_by_time(&mut sink.events);
    sink
}

/// Parses a delivery group's files into `sink`, after what it holds, in
/// file order ([`time_order`] sorts them). `bytes` is the read buffer: a
/// caller parsing many groups keeps it, and `sink`, so their memory is
/// reused rather than allocated (and faulted in) again for every group.
pub fn parse_files_into(
    files: &[std::path::PathBuf],
    limits: &ParseLimits,
    bytes: &mut Vec<u8>,
    sink: &mut Collect,
) {
    let wall = now_ms();
    for f in files {
        let source = f.display().to_string();
        let now = crate::files::receiving_clock(&source, wall);
        bytes.clear();
        match std::fs::File::open(f).and_then(|mut file| {
            use std::io::Read;
            file.read_to_end(bytes)
        }) {
            Ok(_) => {
                cloudtrail::parse_file_bytes(bytes, &source, limits, now, sink);
            }
            Err(e) => sink.rejections.push(Rejection::new(
                source,
                format!("failed to read file: {e}"),
                "",
            )),
        }
    }
}

/// The positions of `events` in time order, equal times keeping their
/// order (a stable sort); None when they are in order already.
pub fn time_order(events: &[Event]) -> Option<Vec<usize>> {
    if events.is_sorted_by_key(|e| e.event_time_ms) {
        return None;
    }
    let mut order: Vec<(i64, usize)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (e.event_time_ms, i))
        .collect();
    // Positions are distinct, so this is the stable order by time.
    order.sort_unstable();
    Some(order.into_iter().map(|(_, i)| i).collect())
}

/// Sorts events by time, keeping the order of equal times (a stable sort).
/// Events are large, and a merge sort moves each one several times: this
/// sorts (time, position) pairs and then moves each event once.
pub fn sort_by_time(events: &mut Vec<Event>) {
    let Some(order) = time_order(events) else {
        return;
    };
    let mut slots: Vec<Option<Event>> = events.drain(..).map(Some).collect();
    events.extend(order.iter().filter_map(|&i| slots[i].take()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorting_by_time_is_stable() {
        let event = |id: usize, t: i64| Event {
            event_id: id.to_string(),
            event_time_ms: t,
            event_source: String::new(),
            event_name: String::new(),
            aws_region: String::new(),
            recipient_account_id: String::new(),
            user_identity: Default::default(),
            source_ip_address: String::new(),
            user_agent: String::new(),
            error_code: String::new(),
            error_message: String::new(),
            read_only: None,
            management_event: None,
            event_category: String::new(),
            event_type: String::new(),
            event_version: String::new(),
            request_parameters: String::new(),
            response_elements: String::new(),
            raw: String::new(),
        };
        let times = [5, 3, 5, 1, 3, 3, 9, 0, 5, 1];
        let mut events: Vec<Event> = times
            .iter()
            .enumerate()
            .map(|(i, &t)| event(i, t))
            .collect();
        let mut expected = events.clone();
        expected.sort_by_key(|e| e.event_time_ms);
        sort_by_time(&mut events);
        assert_eq!(events, expected);
        sort_by_time(&mut events);
        assert_eq!(events, expected);
    }
}
