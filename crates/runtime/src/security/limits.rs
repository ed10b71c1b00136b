//! Per-caller limits: the request-rate buckets and the open-stream counts,
//! and whose budget a request spends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Security;
use crate::auth::{Principal, PrincipalKind, Requirement};

impl Security {
    /// Takes one request from `who`'s bucket; on refusal, the limit's name.
    pub(super) fn take(&self, who: &str, service: bool) -> Result<(), String> {
        let (rate, burst) = if service {
            (
                self.limits.service_requests_per_second,
                self.limits.service_burst,
            )
        } else {
            (self.limits.requests_per_second, self.limits.burst)
        };
        let Ok(mut b) = self.buckets.lock() else {
            return Ok(());
        };
        if b.len() > 50_000 {
            // Only full buckets are dropped: a caller over its limit keeps
            // its state.
            let now = Instant::now();
            b.retain(|_, (tokens, t)| {
                *tokens + t.saturating_duration_since(now).as_secs_f64() * rate < f64::from(burst)
                    && now.duration_since(*t) < Duration::from_secs(600)
            });
        }
        let now = Instant::now();
        let entry = b.entry(who.to_string()).or_insert((f64::from(burst), now));
        let refill = now.duration_since(entry.1).as_secs_f64() * rate;
        entry.0 = (entry.0 + refill).min(f64::from(burst));
        entry.1 = now;
        if entry.0 >= 1.0 {
            entry.0 -= 1.0;
            Ok(())
        } else {
            let key = if service {
                "service_requests_per_second"
            } else {
                "requests_per_second"
            };
            Err(format!(
                "rate limit exceeded: {rate} requests/s (burst {burst}) per caller ([limits] {key})"
            ))
        }
    }

    /// Opens one stream for `who`; on refusal, the limit's name.
    pub(super) fn open_stream(
        self: &Arc<Self>,
        who: &str,
        service: bool,
    ) -> Result<StreamPermit, String> {
        let max = if service {
            self.limits.service_streams
        } else {
            self.limits.streams
        };
        let Ok(mut s) = self.streams.lock() else {
            return Err("stream accounting unavailable".into());
        };
        let n = s.entry(who.to_string()).or_insert(0);
        if *n >= max {
            let key = if service {
                "service_streams"
            } else {
                "streams"
            };
            return Err(format!(
                "too many open streams: {max} per caller ([limits] {key})"
            ));
        }
        *n += 1;
        Ok(StreamPermit {
            security: self.clone(),
            who: who.to_string(),
        })
    }
}

/// An open stream, counted until dropped.
pub(super) struct StreamPermit {
    security: Arc<Security>,
    who: String,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        if let Ok(mut s) = self.security.streams.lock()
            && let Some(n) = s.get_mut(&self.who)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.remove(&self.who);
            }
        }
    }
}

/// Whose budget a request spends, and whether it is a service's.
///
/// Identified callers are limited by who they are. Anonymous callers (auth
/// off) are told apart by their IP address, so one client hammering a port
/// cannot starve the others; the pipeline's hops (the methods that need a
/// service identity when auth is on) get the service budget under a key of
/// their own, because with auth off a service calling from that address
/// cannot be told from a person.
pub(super) fn limit_key(
    principal: &Principal,
    requirement: Requirement,
    remote: Option<SocketAddr>,
) -> (String, bool) {
    if principal.kind != PrincipalKind::Anonymous {
        return (
            format!("{:?}:{}", principal.kind, principal.subject),
            principal.is_service(),
        );
    }
    let address = remote.map_or_else(|| "unknown".to_string(), |a| a.ip().to_string());
    let pipeline = matches!(
        requirement,
        Requirement::Service | Requirement::ServiceOrAdmin
    );
    let key = if pipeline {
        format!("anonymous-pipeline:{address}")
    } else {
        format!("anonymous:{address}")
    };
    (key, pipeline)
}
