//! Putting concurrent pushes of history back in delivery order.
//!
//! A replay reads a trail one delivery period at a time (the
//! `YYYYMMDDTHHMMZ` in CloudTrail's file names) and sorts each period's
//! events by time, so detection sees time move forward evenly. Shippers
//! pushing the same trail over gRPC send files in delivery order too, but
//! several at once run at their own speeds: one may be a day ahead of
//! another. The sequencer merges them: a stream's events wait in the
//! buffer of their delivery period until every open stream has moved past
//! that period (or gone quiet for `idle`), and then the period is sorted
//! and forwarded, periods in order, one at a time. Whatever the number of
//! shippers, detection then sees exactly what a replay of the same files
//! would.
//!
//! Shippers started together do not connect in the same instant: when the
//! first stream opens after a quiet spell, nothing is forwarded for
//! `gather` (2 s by default), so the others register before the first one
//! could run ahead of them.
//!
//! A stream that runs ahead waits (its gRPC stream is not read, so the
//! client is held back) once `max_buffered` events are waiting, unless it
//! is the one holding the oldest period. Records without a delivery period
//! (single records, files without CloudTrail's name) are not held.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use trailhound_core::Event;
use trailhound_core::pipeline::SinkError;

use std::collections::HashMap;

/// Shared by every stream of one ingest.
#[derive(Debug)]
pub struct Sequencer {
    state: Mutex<State>,
    /// Woken whenever a stream moves, ends, or a period is forwarded.
    changed: tokio::sync::Notify,
    idle: Duration,
    gather: Duration,
    max_buffered: usize,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    streams: HashMap<u64, StreamState>,
    /// Delivery period → its events so far, and how many each stream gave.
    periods: BTreeMap<String, Period>,
    buffered: usize,
    /// Whether the task that forwards periods runs.
    releasing: bool,
    /// When the first stream opened after none was open.
    gathering_since: Option<Instant>,
}

#[derive(Debug)]
struct StreamState {
    /// The delivery period the stream is filling.
    period: String,
    last_seen: Instant,
    /// A message arrived and is being parsed: the stream is not quiet,
    /// however long that takes.
    busy: bool,
    open: bool,
    /// Periods holding this stream's events, not yet forwarded.
    pending: usize,
    accepted: u64,
    error: Option<SinkError>,
    /// Dropped without `finish` (its call was cancelled).
    abandoned: bool,
}

#[derive(Debug, Default)]
struct Period {
    events: Vec<Event>,
    /// Stream id → its events in this period.
    from: HashMap<u64, u64>,
}

impl Sequencer {
    pub fn new(idle: Duration, gather: Duration, max_buffered: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            changed: tokio::sync::Notify::new(),
            idle,
            gather,
            max_buffered: max_buffered.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Events waiting for their period to be forwarded.
    pub fn buffered(&self) -> usize {
        self.lock().buffered
    }

    /// Streams open now.
    pub fn streams(&self) -> usize {
        self.lock().streams.values().filter(|s| s.open).count()
    }
}

/// What the sequencer forwards through: ingest, seen only as far as the
/// sequencer needs it (its sequencer, and forwarding a period's events in
/// time order), so this module does not depend on the rest of ingest.
#[async_trait::async_trait]
pub trait Sequenced: Send + Sync + 'static {
    fn sequencer(&self) -> &Sequencer;
    async fn forward_sorted(&self, events: Vec<Event>) -> Result<u64, SinkError>;

    /// To a pipelined downstream: sorts and queues the period's batches
    /// now, behind every period queued before, and returns the wait for
    /// their acknowledgements, so the next period is queued meanwhile.
    /// Err(events) when downstream takes one batch at a time.
    fn queue_sorted(self: Arc<Self>, events: Vec<Event>) -> Result<Settle, Vec<Event>> {
        Err(events)
    }
}

/// The acknowledgements of a queued period (see [`Sequenced::queue_sorted`]).
pub type Settle =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<u64, SinkError>> + Send>>;

/// Periods queued to a pipelined downstream and not yet acknowledged.
const PERIODS_IN_FLIGHT: usize = 8;

/// One push stream's handle.
pub struct Stream {
    id: u64,
    ingest: Arc<dyn Sequenced>,
}

trailhound_core::debug_fields!(Stream { id });

impl Stream {
    pub fn open(ingest: Arc<dyn Sequenced>) -> Self {
        let id = Self::register(ingest.sequencer());
        Self { id, ingest }
    }

    /// Adds an open stream to the sequencer's state; its id.
    fn register(seq: &Sequencer) -> u64 {
        let mut st = seq.lock();
        let id = st.next_id;
        st.next_id += 1;
        if !st.streams.values().any(|s| s.open) {
            st.gathering_since = Some(Instant::now());
        }
        st.streams.insert(
            id,
            StreamState {
                period: String::new(),
                last_seen: Instant::now(),
                busy: false,
                open: true,
                pending: 0,
                accepted: 0,
                error: None,
                abandoned: false,
            },
        );
        id
    }

    /// Adds fresh (deduplicated, valid) events of delivery `period`.
    /// Returns once they are buffered; waits first while the buffer is
    /// full and this stream is not the one the oldest period waits for.
    pub async fn add(&self, period: &str, events: Vec<Event>) {
        let seq = self.ingest.sequencer();
        loop {
            let notified = seq.changed.notified();
            {
                let mut st = seq.lock();
                let oldest = st.periods.keys().next().cloned();
                if let Some(s) = st.streams.get_mut(&self.id) {
                    s.last_seen = Instant::now();
                    s.busy = false;
                    if period > s.period.as_str() {
                        s.period = period.to_string();
                    }
                }
                let holds_oldest = oldest.is_none_or(|o| period <= o.as_str());
                if st.buffered + events.len() <= seq.max_buffered || holds_oldest {
                    st.buffered += events.len();
                    let p = st.periods.entry(period.to_string()).or_default();
                    let first = !p.from.contains_key(&self.id);
                    *p.from.entry(self.id).or_default() += events.len() as u64;
                    p.events.extend(events);
                    if first && let Some(s) = st.streams.get_mut(&self.id) {
                        s.pending += 1;
                    }
                    self.start_releasing(&mut st);
                    break;
                }
            }
            // The buffer is full: wait for the oldest period to go.
            let _ = tokio::time::timeout(seq.idle, notified).await;
        }
        seq.changed.notify_waiters();
    }

    /// Notes that a message of `period` arrived (its events follow with
    /// `add`, or `done` if it had none worth adding).
    pub fn touch(&self, period: &str) {
        let seq = self.ingest.sequencer();
        let mut st = seq.lock();
        if let Some(s) = st.streams.get_mut(&self.id) {
            s.last_seen = Instant::now();
            s.busy = true;
            if period > s.period.as_str() {
                s.period = period.to_string();
            }
        }
        drop(st);
        seq.changed.notify_waiters();
    }

    /// Ends the stream: returns once every period holding its events was
    /// forwarded, with how many were accepted downstream, or the first
    /// error forwarding them met.
    pub async fn finish(self) -> Result<u64, SinkError> {
        let seq = self.ingest.sequencer();
        {
            let mut st = seq.lock();
            if let Some(s) = st.streams.get_mut(&self.id) {
                s.open = false;
            }
            self.start_releasing(&mut st);
        }
        seq.changed.notify_waiters();
        loop {
            let notified = seq.changed.notified();
            {
                let mut st = seq.lock();
                let done = st.streams.get(&self.id).is_none_or(|s| s.pending == 0);
                if done {
                    let s = st.streams.remove(&self.id);
                    drop(st);
                    seq.changed.notify_waiters();
                    return match s {
                        Some(StreamState { error: Some(e), .. }) => Err(e),
                        Some(s) => Ok(s.accepted),
                        None => Ok(0),
                    };
                }
            }
            let _ = tokio::time::timeout(seq.idle, notified).await;
        }
    }

    fn start_releasing(&self, st: &mut State) {
        if !st.releasing {
            st.releasing = true;
            let ingest = self.ingest.clone();
            tokio::spawn(async move { release(ingest).await });
        }
    }
}

impl Drop for Stream {
    /// A stream dropped without `finish` (its call was cancelled) holds
    /// nothing back; its buffered events are still forwarded.
    fn drop(&mut self) {
        let seq = self.ingest.sequencer();
        let mut st = seq.lock();
        if let Some(s) = st.streams.get_mut(&self.id) {
            s.open = false;
            s.abandoned = true;
            if s.pending == 0 {
                st.streams.remove(&self.id);
            }
        }
        drop(st);
        seq.changed.notify_waiters();
    }
}

/// The oldest period, if no open stream can still add to it.
fn ready(st: &mut State, idle: Duration, gather: Duration) -> Option<(String, Period)> {
    let oldest = st.periods.keys().next()?.clone();
    // Streams that finished are done: gathering only waits for others to
    // join the open ones.
    if st.streams.values().any(|s| s.open)
        && st.gathering_since.is_some_and(|t| t.elapsed() < gather)
    {
        return None;
    }
    let held = st.streams.values().any(|s| {
        s.open && s.period.as_str() <= oldest.as_str() && (s.busy || s.last_seen.elapsed() < idle)
    });
    if held {
        return None;
    }
    let p = st.periods.remove(&oldest)?;
    st.buffered = st.buffered.saturating_sub(p.events.len());
    Some((oldest, p))
}

/// Forwards ready periods in order, until none is buffered; then stops
/// (the next `add` starts it again). To a pipelined downstream up to
/// [`PERIODS_IN_FLIGHT`] periods are queued before the oldest is waited
/// for; otherwise one at a time.
async fn release(ingest: Arc<dyn Sequenced>) {
    let seq = ingest.sequencer();
    let mut in_flight: std::collections::VecDeque<InFlight> = Default::default();
    loop {
        let notified = seq.changed.notified();
        let next = {
            let mut st = seq.lock();
            if st.periods.is_empty() && in_flight.is_empty() {
                st.releasing = false;
                return;
            }
            ready(&mut st, seq.idle, seq.gather)
        };
        let Some((period, p)) = next else {
            // Nothing to queue now: settle what is on the way first.
            if let Some((from, settle)) = in_flight.pop_front() {
                settled(seq, from, joined(settle.await));
                continue;
            }
            // Someone still fills the oldest period: wait for a change, or
            // for it to go quiet.
            let wait = seq.idle.min(seq.gather).max(Duration::from_millis(50));
            let _ = tokio::time::timeout(wait, notified).await;
            continue;
        };
        tracing::debug!(
            period,
            events = p.events.len(),
            streams = p.from.len(),
            "forwarding a delivery period"
        );
        match ingest.clone().queue_sorted(p.events) {
            Ok(settle) => {
                in_flight.push_back((p.from, tokio::spawn(settle)));
                if in_flight.len() >= PERIODS_IN_FLIGHT
                    && let Some((from, settle)) = in_flight.pop_front()
                {
                    settled(seq, from, joined(settle.await));
                }
            }
            Err(events) => {
                let result = ingest.forward_sorted(events).await;
                settled(seq, p.from, result);
            }
        }
    }
}

/// A queued period: the streams that gave its events, and the wait for
/// its acknowledgements.
type InFlight = (
    HashMap<u64, u64>,
    tokio::task::JoinHandle<Result<u64, SinkError>>,
);

fn joined(r: Result<Result<u64, SinkError>, tokio::task::JoinError>) -> Result<u64, SinkError> {
    r.unwrap_or_else(|e| {
        Err(SinkError {
            downstream: "enrich".into(),
            message: format!("forwarding failed: {e}"),
            retryable: true,
        })
    })
}

/// Credits a forwarded period to the streams that gave its events.
fn settled(seq: &Sequencer, from: HashMap<u64, u64>, result: Result<u64, SinkError>) {
    {
        let mut st = seq.lock();
        for (id, n) in from {
            let Some(s) = st.streams.get_mut(&id) else {
                continue;
            };
            s.pending = s.pending.saturating_sub(1);
            match &result {
                Ok(_) => s.accepted += n,
                Err(e) => {
                    s.error.get_or_insert_with(|| e.clone());
                }
            }
        }
        // A stream abandoned mid-call: nobody will read its figures.
        st.streams.retain(|_, s| !(s.abandoned && s.pending == 0));
    }
    seq.changed.notify_waiters();
}

/// The delivery period a pushed file's source names, if any.
pub fn period_of(source: &str) -> Option<&str> {
    trailhound_trail::files::delivery_key(source.rsplit('/').next().unwrap_or(source))
}
