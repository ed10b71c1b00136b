//! Signed-in dashboard sessions and the cookie that carries them.

use std::time::{Duration, Instant};

use super::{Security, random_id};
use crate::auth::Principal;

/// A signed-in dashboard session.
#[derive(Clone, Debug)]
pub(super) struct Session {
    pub(super) principal: Principal,
    pub(super) expires: Instant,
}

impl Security {
    /// Starts a dashboard session for `principal`; returns its id (the
    /// cookie's value).
    pub fn start_session(&self, principal: Principal, ttl: Duration) -> String {
        let id = random_id();
        if let Ok(mut s) = self.sessions.lock() {
            let now = Instant::now();
            s.retain(|_, v| v.expires > now);
            s.insert(
                id.clone(),
                Session {
                    principal,
                    expires: now + ttl,
                },
            );
        }
        id
    }

    /// Ends a session (logout).
    pub fn end_session(&self, id: &str) {
        if let Ok(mut s) = self.sessions.lock() {
            s.remove(id);
        }
    }

    pub(super) fn session(&self, id: &str) -> Option<Principal> {
        let s = self.sessions.lock().ok()?;
        s.get(id)
            .filter(|v| v.expires > Instant::now())
            .map(|v| v.principal.clone())
    }

    /// Whether the dashboard signs people in through the OIDC provider.
    pub fn sign_in_enabled(&self) -> bool {
        let c = self.auth.config();
        c.mode == crate::auth::AuthMode::Oidc && c.public_url.is_some()
    }
}

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "trailhound_session";

/// A cookie's value from the request.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}
