//! detect's write-ahead log: what changed the engine since its last
//! checkpoint, one entry per change, so a restart (SIGKILL included) can
//! rebuild exactly the state detect had acknowledged.
//!
//! An entry is a batch of enriched events, a wall-clock advance of the
//! watermark (the idle close), a flush, a new detector set, or the rising
//! accounts other replicas reported (`detect --shard`). Batches are
//! postcard: the accounts once each, then every event without its raw
//! record (the engine never reads it). The first byte says which kind and
//! which format; an entry this build cannot read is skipped with an error
//! in the log (its events are then missing from the counts, nothing else).
//!
//! Each batch also has a fingerprint (its event ids, in order): a batch
//! detect acknowledged whose answer was lost on the way (a kill between the
//! commit and the reply) is sent again by enrich or ingest, and is then
//! recognised and acknowledged without being counted twice.
//!
//! `restore` rebuilds the engine from the checkpoint and the log on start.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use trailhound_core::{AccountMetadata, DetectorSpec, EnrichedEvent, Event, UserIdentity};

mod restore;

pub use restore::{REMEMBERED_BATCHES, WalOptions};
pub(crate) use restore::{WalState, restore};

const BATCH_V1: u8 = 1;
const ADVANCE: u8 = 2;
const FLUSH: u8 = 3;
const DETECTORS: u8 = 4;
const SHARED: u8 = 5;

/// One change to the engine, as replayed.
#[derive(Clone, Debug, PartialEq)]
pub enum WalEntry {
    Batch(Vec<EnrichedEvent>),
    /// The idle close moved the watermark to this time (ms).
    Advance(i64),
    /// Every open window was closed.
    Flush,
    /// The detector set became this.
    Detectors(Vec<DetectorSpec>),
    /// Other replicas' rising accounts were counted.
    Shared(Vec<crate::engine::SharedRising>),
}

#[derive(Debug, thiserror::Error)]
#[error("write-ahead log entry: {0}")]
pub struct WalError(String);

#[derive(Serialize)]
struct BatchRef<'a> {
    accounts: Vec<&'a AccountMetadata>,
    events: Vec<EventRef<'a>>,
}

/// [`Event`] without `raw`, borrowed for encoding. Field order is the
/// format: it must match [`EventOwned`].
#[derive(Serialize)]
struct EventRef<'a> {
    account: u32,
    event_id: &'a str,
    event_time_ms: i64,
    event_source: &'a str,
    event_name: &'a str,
    aws_region: &'a str,
    recipient_account_id: &'a str,
    user_identity: [&'a str; 8],
    source_ip_address: &'a str,
    user_agent: &'a str,
    error_code: &'a str,
    error_message: &'a str,
    read_only: Option<bool>,
    management_event: Option<bool>,
    event_category: &'a str,
    event_type: &'a str,
    event_version: &'a str,
    request_parameters: &'a str,
    response_elements: &'a str,
}

#[derive(Deserialize)]
struct BatchOwned {
    accounts: Vec<AccountMetadata>,
    events: Vec<EventOwned>,
}

#[derive(Deserialize)]
struct EventOwned {
    account: u32,
    event_id: String,
    event_time_ms: i64,
    event_source: String,
    event_name: String,
    aws_region: String,
    recipient_account_id: String,
    user_identity: [String; 8],
    source_ip_address: String,
    user_agent: String,
    error_code: String,
    error_message: String,
    read_only: Option<bool>,
    management_event: Option<bool>,
    event_category: String,
    event_type: String,
    event_version: String,
    request_parameters: String,
    response_elements: String,
}

/// Encodes a batch of events (each account once).
pub fn encode_batch(events: &[EnrichedEvent]) -> Result<Vec<u8>, WalError> {
    let mut accounts: Vec<&AccountMetadata> = Vec::new();
    let mut last: Option<usize> = None;
    let mut refs = Vec::with_capacity(events.len());
    for e in events {
        let a: &AccountMetadata = &e.account;
        // Consecutive events mostly share an account; else a short scan
        // (a batch names few accounts).
        let idx = match last.filter(|&i| std::ptr::eq(accounts[i], a) || *accounts[i] == *a) {
            Some(i) => i,
            None => match accounts
                .iter()
                .position(|x| std::ptr::eq(*x, a) || **x == *a)
            {
                Some(i) => i,
                None => {
                    accounts.push(a);
                    accounts.len() - 1
                }
            },
        };
        last = Some(idx);
        let ev = &e.event;
        let u = &ev.user_identity;
        refs.push(EventRef {
            account: idx as u32,
            event_id: &ev.event_id,
            event_time_ms: ev.event_time_ms,
            event_source: &ev.event_source,
            event_name: &ev.event_name,
            aws_region: &ev.aws_region,
            recipient_account_id: &ev.recipient_account_id,
            user_identity: [
                &u.kind,
                &u.arn,
                &u.account_id,
                &u.invoked_by,
                &u.principal_id,
                &u.user_name,
                &u.access_key_id,
                &u.session_issuer_arn,
            ],
            source_ip_address: &ev.source_ip_address,
            user_agent: &ev.user_agent,
            error_code: &ev.error_code,
            error_message: &ev.error_message,
            read_only: ev.read_only,
            management_event: ev.management_event,
            event_category: &ev.event_category,
            event_type: &ev.event_type,
            event_version: &ev.event_version,
            request_parameters: &ev.request_parameters,
            response_elements: &ev.response_elements,
        });
    }
    let mut out = vec![BATCH_V1];
    let body = postcard::to_stdvec(&BatchRef {
        accounts,
        events: refs,
    })
    .map_err(|e| WalError(e.to_string()))?;
    out.extend_from_slice(&body);
    Ok(out)
}

pub fn encode_advance(watermark_ms: i64) -> Vec<u8> {
    let mut out = vec![ADVANCE];
    out.extend_from_slice(&watermark_ms.to_le_bytes());
    out
}

pub fn encode_flush() -> Vec<u8> {
    vec![FLUSH]
}

pub fn encode_detectors(specs: &[DetectorSpec]) -> Result<Vec<u8>, WalError> {
    let mut out = vec![DETECTORS];
    serde_json::to_writer(&mut out, specs).map_err(|e| WalError(e.to_string()))?;
    Ok(out)
}

pub fn encode_shared(rising: &[crate::engine::SharedRising]) -> Result<Vec<u8>, WalError> {
    let mut out = vec![SHARED];
    out.extend(postcard::to_stdvec(rising).map_err(|e| WalError(e.to_string()))?);
    Ok(out)
}

pub fn decode(bytes: &[u8]) -> Result<WalEntry, WalError> {
    let Some((&kind, body)) = bytes.split_first() else {
        return Err(WalError("empty".into()));
    };
    match kind {
        BATCH_V1 => {
            let b: BatchOwned = postcard::from_bytes(body).map_err(|e| WalError(e.to_string()))?;
            let accounts: Vec<Arc<AccountMetadata>> =
                b.accounts.into_iter().map(Arc::new).collect();
            b.events
                .into_iter()
                .map(|e| {
                    let account = accounts.get(e.account as usize).cloned().ok_or_else(|| {
                        WalError(format!("event {} names no account", e.event_id))
                    })?;
                    let [
                        kind,
                        arn,
                        account_id,
                        invoked_by,
                        principal_id,
                        user_name,
                        access_key_id,
                        session_issuer_arn,
                    ] = e.user_identity;
                    Ok(EnrichedEvent {
                        event: Event {
                            event_id: e.event_id,
                            event_time_ms: e.event_time_ms,
                            event_source: e.event_source,
                            event_name: e.event_name,
                            aws_region: e.aws_region,
                            recipient_account_id: e.recipient_account_id,
                            user_identity: UserIdentity {
                                kind,
                                arn,
                                account_id,
                                invoked_by,
                                principal_id,
                                user_name,
                                access_key_id,
                                session_issuer_arn,
                            },
                            source_ip_address: e.source_ip_address,
                            user_agent: e.user_agent,
                            error_code: e.error_code,
                            error_message: e.error_message,
                            read_only: e.read_only,
                            management_event: e.management_event,
                            event_category: e.event_category,
                            event_type: e.event_type,
                            event_version: e.event_version,
                            request_parameters: e.request_parameters,
                            response_elements: e.response_elements,
                            raw: String::new(),
                        },
                        account,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(WalEntry::Batch)
        }
        ADVANCE => {
            let b: [u8; 8] = body
                .try_into()
                .map_err(|_| WalError(format!("advance of {} bytes", body.len())))?;
            Ok(WalEntry::Advance(i64::from_le_bytes(b)))
        }
        FLUSH => Ok(WalEntry::Flush),
        DETECTORS => serde_json::from_slice(body)
            .map(WalEntry::Detectors)
            .map_err(|e| WalError(e.to_string())),
        SHARED => postcard::from_bytes(body)
            .map(WalEntry::Shared)
            .map_err(|e| WalError(e.to_string())),
        other => Err(WalError(format!("unknown kind {other}"))),
    }
}

/// A batch's identity: its event ids in order (FNV-1a, 128 bits, stable
/// across builds and platforms).
pub fn fingerprint(events: &[EnrichedEvent]) -> u128 {
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013B;
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    let mut eat = |b: u8| {
        h ^= u128::from(b);
        h = h.wrapping_mul(PRIME);
    };
    for b in (events.len() as u64).to_le_bytes() {
        eat(b);
    }
    for e in events {
        for b in e.event.event_id.bytes() {
            eat(b);
        }
        // Not a byte of any id: "ab","c" differs from "a","bc".
        eat(0xff);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_replicas_reports_survive_the_log() {
        let rising = vec![crate::engine::SharedRising {
            detector: "ec2-run-instances".into(),
            window_start_ms: 1_767_571_200_000,
            account_id: "111111111111".into(),
            keys: vec!["principal:assumed-role/Ops".into(), "ip:203.0.113.9".into()],
        }];
        let entry = encode_shared(&rising).expect("encode");
        assert_eq!(decode(&entry).expect("decode"), WalEntry::Shared(rising));
    }

    fn event(id: &str, acct: &Arc<AccountMetadata>) -> EnrichedEvent {
        EnrichedEvent {
            event: Event {
                event_id: id.into(),
                event_time_ms: 1_767_571_200_000,
                event_source: "ec2.amazonaws.com".into(),
                event_name: "RunInstances".into(),
                aws_region: "us-east-1".into(),
                recipient_account_id: acct.account_id.clone(),
                user_identity: UserIdentity {
                    kind: "IAMUser".into(),
                    arn: "arn:aws:iam::111122223333:user/a".into(),
                    ..Default::default()
                },
                source_ip_address: "203.0.113.1".into(),
                user_agent: "ua".into(),
                error_code: String::new(),
                error_message: "m".into(),
                read_only: Some(false),
                management_event: None,
                event_category: "Management".into(),
                event_type: "AwsApiCall".into(),
                event_version: "1.09".into(),
                request_parameters: r#"{"a":1}"#.into(),
                response_elements: String::new(),
                raw: String::new(),
            },
            account: acct.clone(),
        }
    }

    #[test]
    fn entries_round_trip() {
        let a = Arc::new(AccountMetadata::external("111122223333"));
        let b = Arc::new(AccountMetadata::external("444455556666"));
        let batch = vec![event("1", &a), event("2", &b), event("3", &a)];
        let bytes = encode_batch(&batch).unwrap_or_default();
        match decode(&bytes) {
            Ok(WalEntry::Batch(back)) => {
                assert_eq!(back, batch);
                // Accounts are shared again, as enrich shares them.
                assert!(Arc::ptr_eq(&back[0].account, &back[2].account));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            decode(&encode_advance(-5)).ok(),
            Some(WalEntry::Advance(-5))
        );
        assert_eq!(decode(&encode_flush()).ok(), Some(WalEntry::Flush));
        let specs = trailhound_core::detector::default_detectors();
        let bytes = encode_detectors(&specs).unwrap_or_default();
        assert_eq!(decode(&bytes).ok(), Some(WalEntry::Detectors(specs)));
        assert!(decode(&[]).is_err() && decode(&[99]).is_err() && decode(&[BATCH_V1, 7]).is_err());
    }

    #[test]
    fn fingerprints_follow_the_ids_in_order() {
        let a = Arc::new(AccountMetadata::external("111122223333"));
        let x = vec![event("ab", &a), event("c", &a)];
        let y = vec![event("a", &a), event("bc", &a)];
        let z = vec![event("c", &a), event("ab", &a)];
        assert_eq!(fingerprint(&x), fingerprint(&x.clone()));
        assert_ne!(fingerprint(&x), fingerprint(&y));
        assert_ne!(fingerprint(&x), fingerprint(&z));
        assert_ne!(fingerprint(&[]), fingerprint(&x[..1]));
    }
}
