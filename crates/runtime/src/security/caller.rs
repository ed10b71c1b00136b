//! What a handler learns of its caller: the principal, the scope to filter
//! by, and a service's read on behalf of a narrower scope.

use crate::auth::Principal;

/// The metadata key a service narrows a read with, on behalf of the
/// person it serves (health's dashboard reads insights and series with
/// its own identity for a signed-in viewer): a JSON [`trailhound_core::Scope`].
/// Honoured from service identities only, where it can only narrow (a
/// service may read everything); others cannot widen their scope with it.
pub const ON_BEHALF_SCOPE: &str = "trailhound-on-behalf-scope";

/// Asks the server to filter `req`'s reads by `scope`, as if the person
/// it is read for had called (see [`ON_BEHALF_SCOPE`]). Nothing is added
/// for an unrestricted scope.
pub fn on_behalf<T>(
    req: &mut tonic::Request<T>,
    scope: &trailhound_core::Scope,
) -> Result<(), String> {
    if scope.is_unrestricted() {
        return Ok(());
    }
    let json = serde_json::to_string(scope).map_err(|e| format!("scope: {e}"))?;
    // Metadata is ASCII: non-ASCII (only inside JSON strings) as \u escapes.
    let mut ascii = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            ascii.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                ascii.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    let value = tonic::metadata::MetadataValue::try_from(ascii.as_str())
        .map_err(|e| format!("scope: {e}"))?;
    req.metadata_mut().insert(ON_BEHALF_SCOPE, value);
    Ok(())
}

/// The caller of a request, as the security layer identified it. Absent
/// only for requests that bypass the layer (in-process tests): those are
/// treated as unrestricted.
pub fn principal<T>(req: &tonic::Request<T>) -> Option<&Principal> {
    req.extensions().get::<Principal>()
}

/// The scope a handler must filter by.
pub fn scope_of<T>(req: &tonic::Request<T>) -> trailhound_core::Scope {
    principal(req).map(|p| p.scope.clone()).unwrap_or_default()
}

/// The caller's scope ([`scope_of`]) and the message: what a read takes.
pub fn scoped<T>(req: tonic::Request<T>) -> (trailhound_core::Scope, T) {
    (scope_of(&req), req.into_inner())
}
