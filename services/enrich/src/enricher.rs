//! The enrichment logic: metadata lookups through two cache layers.
//!
//! A lookup tries memory (entries live `memory_ttl`), then the persistent
//! store, then the source, one lookup per account at a time. A store entry
//! younger than `store_ttl` is fresh. One older, but younger than
//! `store_max_age`, is still served at once while a background task asks
//! the source again (stale-while-revalidate): events never wait on
//! Organizations for an account enrich already knows. Older entries are
//! refetched in line and kept only as the fallback when the source fails.
//!
//! A failing source never fails enrichment: the last known entry is used,
//! else the account is marked `LOOKUP_FAILED` with the reason. Either is
//! kept in memory only briefly ([`FAILURE_TTL`] at most), so an outage or
//! throttling is retried soon without hammering the source with every
//! event.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use trailhound_core::pipeline::{Ack, EnrichedSink, EventSink, SinkError};
use trailhound_core::{AccountMetadata, EnrichedEvent, EnvironmentRules, Event};

use crate::source::{AccountSource, SourceError};
use crate::store::{CachedEntry, MetadataStore};

/// The longest a failed lookup's fallback is served from memory before the
/// source is asked again.
pub const FAILURE_TTL: Duration = Duration::from_secs(30);

/// Accounts the memory layer holds by default: a large organization's
/// members with room to spare, at a few hundred bytes each.
pub const DEFAULT_MEMORY_MAX_ENTRIES: usize = 100_000;

/// ingest → enrich → `downstream` in one process (`trailhound up`): the
/// same [`Enricher::process`] the gRPC adapter serves.
pub struct EnrichSink {
    pub enricher: Arc<Enricher>,
    pub downstream: Arc<dyn EnrichedSink>,
}

#[async_trait::async_trait]
impl EventSink for EnrichSink {
    async fn send(&self, events: Vec<Event>) -> Result<u64, SinkError> {
        self.enricher.process(events, &*self.downstream).await
    }
}

/// Counters since start.
#[derive(Debug, Default)]
pub struct EnrichStats {
    pub events: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    /// Memory entries dropped to stay within `memory_max_entries`.
    pub evictions: AtomicU64,
    /// Fresh entries served from the persistent store.
    pub store_hits: AtomicU64,
    /// Entries past `store_ttl` served from the store while a refresh runs.
    pub stale_hits: AtomicU64,
    /// Background refreshes started.
    pub refreshes: AtomicU64,
    pub backend_calls: AtomicU64,
    pub backend_errors: AtomicU64,
    pub unknown_accounts: AtomicU64,
}

/// Figures beyond the counters: latencies, rates, throttles and the
/// batches in hand, for the `Stats` RPC. The hand-off downstream (gRPC or
/// in process) records into `forward`, `forwarded` and `pending`.
#[derive(Debug)]
pub struct EnrichFigures {
    pub common: trailhound_runtime::stats::Common,
    /// One batch from arrival to accepted downstream.
    pub batch: trailhound_runtime::stats::Histogram,
    /// One lookup at the account source.
    pub backend: trailhound_runtime::stats::Histogram,
    pub throttles: AtomicU64,
    /// Events accepted downstream.
    pub forwarded: AtomicU64,
    pub forward_errors: AtomicU64,
    /// Batches received and not yet accepted downstream.
    pub pending: trailhound_runtime::stats::Pending,
}

impl Default for EnrichFigures {
    fn default() -> Self {
        Self {
            common: trailhound_runtime::stats::Common::new("enrich"),
            batch: Default::default(),
            backend: Default::default(),
            throttles: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            forward_errors: AtomicU64::new(0),
            pending: Default::default(),
        }
    }
}

type Slot = (Arc<AccountMetadata>, i64);

/// Looks up account metadata: memory, then the persistent store, then the
/// source. One lookup per account at a time, however many callers ask.
pub struct Enricher {
    inner: Arc<Inner>,
}

struct Inner {
    source: Arc<dyn AccountSource>,
    store: Option<Arc<dyn MetadataStore>>,
    rules: EnvironmentRules,
    memory_ttl_ms: i64,
    store_ttl_ms: i64,
    store_max_age_ms: i64,
    /// Entries the memory layer holds at most.
    memory_max_entries: usize,
    memory: RwLock<HashMap<String, Slot>>,
    inflight: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    refreshing: Mutex<HashSet<String>>,
    stats: EnrichStats,
    figures: EnrichFigures,
}

impl std::fmt::Debug for Enricher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enricher")
            .field("source", &self.inner.source.name())
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Enricher {
    /// An enricher whose store entries are refetched in line once older than
    /// `store_ttl`; see [`Enricher::with_store_max_age`] to serve them while
    /// refreshing in the background instead.
    pub fn new(
        source: Arc<dyn AccountSource>,
        store: Option<Arc<dyn MetadataStore>>,
        rules: EnvironmentRules,
        memory_ttl: Duration,
        store_ttl: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                source,
                store,
                rules,
                memory_ttl_ms: millis(memory_ttl),
                store_ttl_ms: millis(store_ttl),
                store_max_age_ms: millis(store_ttl),
                memory_max_entries: DEFAULT_MEMORY_MAX_ENTRIES,
                memory: RwLock::new(HashMap::new()),
                inflight: tokio::sync::Mutex::new(HashMap::new()),
                refreshing: Mutex::new(HashSet::new()),
                stats: EnrichStats::default(),
                figures: EnrichFigures::default(),
            }),
        }
    }

    /// Serves store entries up to `max_age` old, refreshing those past
    /// `store_ttl` in the background. Set before the first lookup.
    pub fn with_store_max_age(mut self, max_age: Duration) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.store_max_age_ms = millis(max_age).max(inner.store_ttl_ms);
        }
        self
    }

    /// Bounds the memory layer (default [`DEFAULT_MEMORY_MAX_ENTRIES`]).
    pub fn with_memory_max_entries(mut self, max: usize) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.memory_max_entries = max.max(1);
        }
        self
    }

    /// Accounts held in memory now.
    pub fn memory_entries(&self) -> usize {
        self.inner
            .memory
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub fn stats(&self) -> &EnrichStats {
        &self.inner.stats
    }

    pub fn figures(&self) -> &EnrichFigures {
        &self.inner.figures
    }

    /// The figures every service reports alike (the `Stats` RPC).
    pub fn service_stats(&self) -> trailhound_proto::common::v1::ServiceStats {
        let s = &self.inner.stats;
        let f = &self.inner.figures;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = f.common.stats(load(&s.events), load(&f.forwarded));
        out.queues = vec![trailhound_runtime::stats::queue(
            "batches_pending",
            f.pending.depth(),
            0,
        )];
        out.batch_latency = Some(f.batch.summary());
        out.backend_latency = Some(f.backend.summary());
        out.backend_calls = load(&s.backend_calls);
        out.backend_throttles = load(&f.throttles);
        out.errors.insert("backend".into(), load(&s.backend_errors));
        out.errors.insert("forward".into(), load(&f.forward_errors));
        let hits = load(&s.cache_hits);
        let lookups = hits + load(&s.cache_misses);
        out.cache_hit_rate = (lookups > 0).then(|| hits as f64 / lookups as f64);
        out.lag_seconds = f.pending.oldest_age_seconds();
        out.gauges
            .insert("unknown_accounts".into(), load(&s.unknown_accounts) as f64);
        out.gauges
            .insert("store_hits".into(), load(&s.store_hits) as f64);
        out.gauges
            .insert("memory_entries".into(), self.memory_entries() as f64);
        out.gauges
            .insert("memory_evictions".into(), load(&s.evictions) as f64);
        out
    }

    /// The account source's name ("snapshot", "organizations").
    pub fn source_name(&self) -> &str {
        self.inner.source.name()
    }

    /// Metadata for one account. Never fails: an account outside the
    /// organization is external, and a failing source falls back to the
    /// last known entry, else to external with the reason.
    pub async fn account(&self, account_id: &str) -> Arc<AccountMetadata> {
        self.inner.account(account_id).await
    }

    /// Enriches a batch and hands it to `downstream` (detect), counting
    /// what went on, what failed and how long it took: the one way a batch
    /// goes through enrich, whether ingest calls `Process` over gRPC or
    /// sends in process ([`EnrichSink`]).
    #[tracing::instrument(name = "trailhound.enrich/Process", skip_all, fields(events = events.len()))]
    pub async fn process(
        &self,
        events: Vec<Event>,
        downstream: &dyn EnrichedSink,
    ) -> Result<u64, SinkError> {
        let f = self.figures();
        let _pending = f.pending.begin();
        let started = std::time::Instant::now();
        let enriched = self.enrich(events).await;
        match downstream.send(enriched).await {
            Ok(n) => {
                f.forwarded.fetch_add(n, Ordering::Relaxed);
                f.batch.record(started.elapsed());
                Ok(n)
            }
            Err(e) => {
                f.forward_errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// [`Self::process`] for a stream of batches: enriches now and, when
    /// downstream is pipelined, queues the batch and returns its
    /// acknowledgement without waiting for it, so the next batch is
    /// enriched meanwhile; otherwise sends it and returns the outcome.
    /// Its span is [`Self::process`]'s: the same work on every path.
    // The acknowledgement is returned unawaited on purpose: awaiting it
    // here would take the overlap away.
    #[allow(clippy::async_yields_async)]
    #[tracing::instrument(name = "trailhound.enrich/Process", skip_all, fields(events = events.len()))]
    pub async fn process_queued(
        self: &Arc<Self>,
        events: Vec<Event>,
        downstream: &dyn EnrichedSink,
    ) -> Ack {
        let started = std::time::Instant::now();
        let enriched = self.enrich(events).await;
        match downstream.queue(&enriched) {
            Some(ack) => {
                let me = self.clone();
                Box::pin(async move {
                    let r = ack.await;
                    me.note_forward(&r, started);
                    r
                })
            }
            None => {
                let r = downstream.send(enriched).await;
                self.note_forward(&r, started);
                Box::pin(std::future::ready(r))
            }
        }
    }

    fn note_forward(&self, r: &Result<u64, SinkError>, started: std::time::Instant) {
        let f = self.figures();
        match r {
            Ok(n) => {
                f.forwarded.fetch_add(*n, Ordering::Relaxed);
                f.batch.record(started.elapsed());
            }
            Err(_) => {
                f.forward_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Enriches a batch, looking each distinct account up once.
    pub async fn enrich(&self, events: Vec<Event>) -> Vec<EnrichedEvent> {
        let mut out = Vec::with_capacity(events.len());
        self.enrich_each(events, |e| out.push(e)).await;
        out
    }

    /// Enriches events one by one into `each`, looking each distinct
    /// account up once: [`Self::enrich`] for a caller that keeps its own
    /// buffers (the replay reuses them across batches).
    pub async fn enrich_each(
        &self,
        events: impl IntoIterator<Item = Event>,
        mut each: impl FnMut(EnrichedEvent),
    ) {
        let mut accounts: HashMap<String, Arc<AccountMetadata>> = HashMap::new();
        let mut n = 0u64;
        for event in events {
            n += 1;
            let account = match accounts.get(&event.recipient_account_id) {
                Some(a) => a.clone(),
                None => {
                    let a = self.account(&event.recipient_account_id).await;
                    accounts.insert(event.recipient_account_id.clone(), a.clone());
                    a
                }
            };
            each(EnrichedEvent { event, account });
        }
        self.inner.stats.events.fetch_add(n, Ordering::Relaxed);
    }

    /// Every account of the source, classified.
    pub async fn accounts(&self) -> Result<Vec<AccountMetadata>, SourceError> {
        let inner = &self.inner;
        let accounts = inner.source.accounts().await?;
        // Read the id after the call: a lazy source learns it there.
        let org = inner.source.organization_id().to_string();
        Ok(accounts
            .iter()
            .map(|a| inner.rules.metadata(&org, a))
            .collect())
    }
}

impl Inner {
    /// Keeps `meta` in memory until `expires`. The map is bounded: when
    /// full, expired entries go, and if that is not enough, the tenth that
    /// expire soonest (a flood of made-up account ids cannot grow it).
    fn remember_until(&self, meta: Arc<AccountMetadata>, expires: i64) {
        let mut mem = self.memory.write().unwrap_or_else(|p| p.into_inner());
        if mem.len() >= self.memory_max_entries && !mem.contains_key(&meta.account_id) {
            let now = now_ms();
            mem.retain(|_, (_, e)| *e > now);
            if mem.len() >= self.memory_max_entries {
                let drop = (self.memory_max_entries / 10).max(1);
                let mut by_expiry: Vec<(i64, String)> =
                    mem.iter().map(|(k, (_, e))| (*e, k.clone())).collect();
                let nth = drop.min(by_expiry.len()) - 1;
                by_expiry.select_nth_unstable(nth);
                for (_, k) in by_expiry.into_iter().take(drop) {
                    mem.remove(&k);
                }
                self.stats
                    .evictions
                    .fetch_add(drop as u64, Ordering::Relaxed);
            }
        }
        mem.insert(meta.account_id.clone(), (meta, expires));
    }

    fn remember(&self, meta: Arc<AccountMetadata>, now: i64) {
        self.remember_until(meta, now.saturating_add(self.memory_ttl_ms));
    }

    /// Keeps a fallback briefly, so the source is asked again soon.
    fn remember_failure(&self, meta: Arc<AccountMetadata>, now: i64) {
        let ttl = self.memory_ttl_ms.min(millis(FAILURE_TTL));
        self.remember_until(meta, now.saturating_add(ttl));
    }

    fn cached_in_memory(&self, account_id: &str, now: i64) -> Option<Arc<AccountMetadata>> {
        let mem = self.memory.read().unwrap_or_else(|p| p.into_inner());
        mem.get(account_id)
            .filter(|(_, expires)| *expires > now)
            .map(|(m, _)| m.clone())
    }

    async fn account(self: &Arc<Self>, account_id: &str) -> Arc<AccountMetadata> {
        if let Some(m) = self.cached_in_memory(account_id, now_ms()) {
            self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
            return m;
        }
        let lock = {
            let mut map = self.inflight.lock().await;
            map.entry(account_id.to_string()).or_default().clone()
        };
        let _guard = lock.lock().await;
        if let Some(m) = self.cached_in_memory(account_id, now_ms()) {
            // Another caller fetched it while we waited.
            self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
            return m;
        }
        self.stats.cache_misses.fetch_add(1, Ordering::Relaxed);
        let meta = self.fetch(account_id).await;
        self.inflight.lock().await.remove(account_id);
        meta
    }

    async fn fetch(self: &Arc<Self>, account_id: &str) -> Arc<AccountMetadata> {
        let now = now_ms();
        let mut stale = None;
        if let Some(store) = &self.store {
            match store.get(account_id).await {
                Ok(Some(entry)) => {
                    let age = now.saturating_sub(entry.fetched_at_ms);
                    let meta = Arc::new(entry.metadata);
                    if age < self.store_ttl_ms {
                        self.stats.store_hits.fetch_add(1, Ordering::Relaxed);
                        self.remember(meta.clone(), now);
                        return meta;
                    }
                    if age < self.store_max_age_ms {
                        self.stats.stale_hits.fetch_add(1, Ordering::Relaxed);
                        self.remember(meta.clone(), now);
                        self.spawn_refresh(account_id, meta.clone());
                        return meta;
                    }
                    stale = Some(meta);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "failed to read metadata store"),
            }
        }
        match self.lookup(account_id, now).await {
            Ok(meta) => meta,
            Err(e) => {
                // Keep the pipeline moving: use what we knew, and do not
                // persist the failure so a later lookup tries again.
                let meta = stale.unwrap_or_else(|| {
                    let mut m = AccountMetadata::external(account_id);
                    m.status = "LOOKUP_FAILED".into();
                    m.environment_reason = format!("lookup failed: {e}");
                    Arc::new(m)
                });
                self.remember_failure(meta.clone(), now);
                meta
            }
        }
    }

    /// Asks the source, then persists and remembers the answer.
    async fn lookup(
        &self,
        account_id: &str,
        now: i64,
    ) -> Result<Arc<AccountMetadata>, SourceError> {
        self.stats.backend_calls.fetch_add(1, Ordering::Relaxed);
        let answer = self
            .figures
            .backend
            .time(self.source.account(account_id))
            .await;
        let meta = match answer {
            Ok(Some(a)) => self.rules.metadata(self.source.organization_id(), &a),
            Ok(None) => {
                self.stats.unknown_accounts.fetch_add(1, Ordering::Relaxed);
                AccountMetadata::external(account_id)
            }
            Err(e) => {
                self.stats.backend_errors.fetch_add(1, Ordering::Relaxed);
                let m = e.message.to_ascii_lowercase();
                if m.contains("throttl") || m.contains("toomanyrequests") {
                    self.figures.throttles.fetch_add(1, Ordering::Relaxed);
                }
                tracing::warn!(account_id, error = %e, "failed to look up account");
                return Err(e);
            }
        };
        // Only members are persisted: an account outside the organization
        // is cheap to recognise again, and a flood of made-up ids must not
        // become a flood of durable writes (or fill the store).
        if let Some(store) = self.store.as_ref().filter(|_| meta.known) {
            let entry = CachedEntry {
                metadata: meta.clone(),
                fetched_at_ms: now,
            };
            if let Err(e) = store.put(&entry).await {
                tracing::warn!(error = %e, "failed to write metadata store");
            }
        }
        let meta = Arc::new(meta);
        self.remember(meta.clone(), now);
        Ok(meta)
    }

    /// Refreshes a stale entry in the background, once per account at a
    /// time. Outside a Tokio runtime the stale entry is simply served.
    fn spawn_refresh(self: &Arc<Self>, account_id: &str, stale: Arc<AccountMetadata>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        {
            let mut refreshing = self.refreshing.lock().unwrap_or_else(|p| p.into_inner());
            if !refreshing.insert(account_id.to_string()) {
                return;
            }
        }
        self.stats.refreshes.fetch_add(1, Ordering::Relaxed);
        let inner = self.clone();
        let account_id = account_id.to_string();
        runtime.spawn(async move {
            let now = now_ms();
            if inner.lookup(&account_id, now).await.is_err() {
                // Serve the stale entry a little longer, then try again.
                inner.remember_failure(stale, now);
            }
            let mut refreshing = inner.refreshing.lock().unwrap_or_else(|p| p.into_inner());
            refreshing.remove(&account_id);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{SnapshotSource, SourceError};
    use crate::store::RedbStore;
    use async_trait::async_trait;
    use std::collections::BTreeMap;
    use trailhound_core::Environment;
    use trailhound_core::account::{OrgAccount, OrgSnapshot};

    fn snapshot() -> OrgSnapshot {
        OrgSnapshot {
            organization_id: "o-test".into(),
            accounts: vec![OrgAccount {
                id: "111122223333".into(),
                name: "payments-prod".into(),
                email: "p@example.com".into(),
                status: "ACTIVE".into(),
                ou_path: vec!["Root".into(), "Workloads".into()],
                tags: BTreeMap::from([("Team".to_string(), "payments".to_string())]),
            }],
        }
    }

    /// Counts calls and can be told to fail, to observe the cache layers.
    struct Counting {
        inner: SnapshotSource,
        calls: AtomicU64,
        fail: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl AccountSource for Counting {
        fn name(&self) -> &str {
            "counting"
        }
        fn organization_id(&self) -> &str {
            self.inner.organization_id()
        }
        async fn account(&self, id: &str) -> Result<Option<OrgAccount>, SourceError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            if self.fail.load(Ordering::SeqCst) {
                return Err(SourceError {
                    source_name: "counting".into(),
                    message: "throttled".into(),
                    retryable: true,
                });
            }
            self.inner.account(id).await
        }
        async fn accounts(&self) -> Result<Vec<OrgAccount>, SourceError> {
            self.inner.accounts().await
        }
    }

    fn counting() -> Arc<Counting> {
        Arc::new(Counting {
            inner: SnapshotSource::from_snapshot(snapshot()),
            calls: AtomicU64::new(0),
            fail: Default::default(),
        })
    }

    /// An enricher over `src` whose store is the redb file at `path`, with
    /// these memory and store TTLs.
    fn on_redb(
        src: &Arc<Counting>,
        path: &std::path::Path,
        memory_ttl: Duration,
        store_ttl: Duration,
    ) -> Enricher {
        let store: Arc<dyn MetadataStore> = Arc::new(RedbStore::open(path).unwrap());
        Enricher::new(
            src.clone(),
            Some(store),
            EnvironmentRules::default(),
            memory_ttl,
            store_ttl,
        )
    }

    #[tokio::test]
    async fn concurrent_lookups_make_one_backend_call() {
        let src = counting();
        let e = Arc::new(Enricher::new(
            src.clone(),
            None,
            EnvironmentRules::default(),
            Duration::from_secs(60),
            Duration::from_secs(60),
        ));
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let e = e.clone();
                tokio::spawn(async move { e.account("111122223333").await })
            })
            .collect();
        for t in tasks {
            let m = t.await.unwrap();
            assert_eq!(m.environment, Environment::Production);
            assert_eq!(m.team, "payments");
        }
        assert_eq!(src.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn unknown_accounts_are_external_not_errors() {
        let e = Enricher::new(
            counting(),
            None,
            EnvironmentRules::default(),
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
        let m = e.account("999999999999").await;
        assert!(!m.known);
        assert_eq!(m.environment, Environment::Unknown);
        assert_eq!(e.stats().unknown_accounts.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_flood_of_made_up_accounts_stays_within_the_memory_bound() {
        let e = Enricher::new(
            Arc::new(SnapshotSource::from_snapshot(snapshot())),
            None,
            EnvironmentRules::default(),
            Duration::from_secs(3600),
            Duration::from_secs(3600),
        )
        .with_memory_max_entries(100);
        for i in 0..1000u64 {
            let m = e.account(&format!("{:012}", 500_000_000_000 + i)).await;
            assert!(!m.known);
        }
        assert!(e.memory_entries() <= 100, "{}", e.memory_entries());
        assert!(e.stats().evictions.load(Ordering::Relaxed) >= 900);
        // The organization's own account is still answered right.
        assert!(e.account("111122223333").await.known);
    }

    #[tokio::test]
    async fn memory_ttl_expires_and_the_store_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.redb");
        let src = counting();
        {
            let e = on_redb(
                &src,
                &path,
                Duration::from_millis(50),
                Duration::from_secs(3600),
            );
            e.account("111122223333").await;
            e.account("111122223333").await;
            assert_eq!(src.calls.load(Ordering::SeqCst), 1);
            tokio::time::sleep(Duration::from_millis(80)).await;
            // Memory expired; the store answers without the backend.
            e.account("111122223333").await;
            assert_eq!(src.calls.load(Ordering::SeqCst), 1);
            assert_eq!(e.stats().store_hits.load(Ordering::Relaxed), 1);
        }
        // A new process: same file, no refetch.
        let e = on_redb(
            &src,
            &path,
            Duration::from_secs(60),
            Duration::from_secs(3600),
        );
        assert_eq!(e.account("111122223333").await.name, "payments-prod");
        assert_eq!(src.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failing_source_falls_back_to_stale_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let src = counting();
        let e = on_redb(
            &src,
            &dir.path().join("c.redb"),
            Duration::from_millis(1),
            Duration::from_millis(1),
        );
        assert!(e.account("111122223333").await.known);
        src.fail.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let m = e.account("111122223333").await;
        assert!(m.known, "stale metadata beats none");
        assert_eq!(m.name, "payments-prod");
        let unknown = e.account("444455556666").await;
        assert_eq!(unknown.status, "LOOKUP_FAILED");
        assert!(unknown.environment_reason.contains("throttled"));
    }

    #[tokio::test]
    async fn stale_entries_are_served_while_a_failing_refresh_retries_later() {
        async fn until(f: impl Fn() -> bool) -> bool {
            for _ in 0..500 {
                if f() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            false
        }
        let dir = tempfile::tempdir().unwrap();
        let src = counting();
        let e = on_redb(
            &src,
            &dir.path().join("c.redb"),
            Duration::from_millis(10),
            Duration::from_millis(10),
        )
        .with_store_max_age(Duration::from_secs(3600));
        assert!(e.account("111122223333").await.known);
        src.fail.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(30)).await;
        // Past store_ttl: served from the store, refreshed behind (the
        // source fails, so a lookup in line would count an error first).
        let m = e.account("111122223333").await;
        assert_eq!(m.name, "payments-prod");
        assert_eq!(e.stats().stale_hits.load(Ordering::Relaxed), 1);
        assert_eq!(e.stats().refreshes.load(Ordering::Relaxed), 1);
        // Askers meanwhile do not start a second refresh.
        for _ in 0..5 {
            e.account("111122223333").await;
        }
        assert!(until(|| e.stats().backend_errors.load(Ordering::Relaxed) == 1).await);
        assert_eq!(e.stats().refreshes.load(Ordering::Relaxed), 1);
        assert_eq!(src.calls.load(Ordering::SeqCst), 2, "one failed refresh");
        // The failed refresh kept the stale entry briefly; the next one
        // succeeds once the source is back.
        src.fail.store(false, Ordering::SeqCst);
        let mut refreshed = false;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert!(e.account("111122223333").await.known);
            // Later refreshes may follow under a slow scheduler: at least.
            if src.calls.load(Ordering::SeqCst) >= 3
                && e.stats().backend_errors.load(Ordering::Relaxed) == 1
            {
                refreshed = true;
                break;
            }
        }
        assert!(refreshed, "a second refresh reached the recovered source");
        assert!(e.stats().refreshes.load(Ordering::Relaxed) >= 2);
    }
}
