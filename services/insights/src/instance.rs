//! What an instance type says about an anomaly. Severity, correlation and
//! recommendations all ask; it lives apart so none imports another for it.

/// Instance families that carry GPUs or ML accelerators: what cryptominers
/// launch.
pub fn is_accelerated(instance_type: &str) -> bool {
    let family = instance_type.split('.').next().unwrap_or("");
    ["p", "g", "inf", "trn", "dl", "vt", "f"].iter().any(|p| {
        family
            .strip_prefix(p)
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
    })
}
