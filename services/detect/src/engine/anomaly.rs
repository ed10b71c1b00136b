//! The anomaly record a verdict becomes, and entity keys.

#[allow(unused_imports)]
use super::*;

/// Who an anomaly is about: an entity, or one about to be (an early raise
/// of a first window).
pub(super) struct Subject<'a> {
    pub(super) entity: &'a [(String, String)],
    pub(super) account_id: &'a str,
    pub(super) region: &'a str,
    pub(super) account: &'a Arc<AccountMetadata>,
    pub(super) seen: Option<&'a HashMap<(u8, String), u64>>,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn build_anomaly(
    cfg: &EngineConfig,
    spec: &DetectorSpec,
    ent: &Subject<'_>,
    hist: Option<&AccountHistory>,
    agg: &WindowAgg,
    start: i64,
    interval: i64,
    values: &[f64],
    exp: &[Expectation],
    grade: f64,
    confidence: f64,
    score: f64,
    kind: AnomalyKind,
) -> Anomaly {
    let account = ent.account.clone();
    let mut service = spec.service.clone();
    let horizon = cfg.new_after_hours as i64 * 3_600_000;
    let total_weight: f64 = values.first().copied().unwrap_or(0.0).max(1e-9);
    let mut by_dim: BTreeMap<u8, Vec<(&String, u64, f64)>> = BTreeMap::new();
    for (dim, v, (n, w)) in agg.contributors.iter() {
        by_dim.entry(dim).or_default().push((v, *n, *w));
    }
    let mut contributors = Vec::new();
    for (dim, mut list) in by_dim {
        list.sort_by(|a, b| b.2.total_cmp(&a.2).then(b.1.cmp(&a.1)).then(a.0.cmp(b.0)));
        let name = match BUILTIN_DIMS.get(dim as usize) {
            Some(n) => n.to_string(),
            None => spec
                .contributors
                .get(dim as usize - BUILTIN_DIMS.len())
                .map(|c| c.name.clone())
                .unwrap_or_default(),
        };
        for (v, n, w) in list.into_iter().take(cfg.contributors_per_dimension) {
            let is_new = match (dim, hist) {
                (0..=2, Some(h)) => h.is_new(usize::from(dim), v, start, horizon),
                _ => false,
            };
            contributors.push(Contributor {
                dimension: name.clone(),
                value: v.clone(),
                count: n,
                share: if spec.features.is_empty() {
                    0.0
                } else {
                    (w / total_weight).min(1.0)
                },
                baseline_count: ent
                    .seen
                    .and_then(|s| s.get(&(dim, v.clone())).copied())
                    .unwrap_or(0),
                is_new,
            });
        }
    }
    if service == "*" {
        // A detector of any service: the one most of the window came from.
        service = contributors
            .iter()
            .find(|c| c.dimension == "service")
            .map(|c| c.value.trim_end_matches(".amazonaws.com").to_string())
            .unwrap_or_else(|| "aws".into());
    }
    let entity = ent.entity.to_vec();
    Anomaly {
        id: Anomaly::make_id(&spec.name, &entity, start),
        detector: spec.name.clone(),
        service,
        kind,
        account_id: ent.account_id.to_string(),
        account_name: account.name.clone(),
        environment: account.environment,
        ou_path: account.ou_path.clone(),
        region: ent.region.to_string(),
        entity,
        window_start: ts(start),
        window_end: ts(start + interval),
        observed_until: ts(start + interval),
        actual: values.first().copied().unwrap_or(0.0),
        expected: exp.first().map(|e| e.expected).unwrap_or(0.0),
        features: spec
            .features
            .iter()
            .zip(values.iter().zip(exp))
            .map(|(f, (a, e))| FeatureValue {
                name: f.name.clone(),
                actual: *a,
                expected: e.expected,
            })
            .collect(),
        grade,
        // A forest that has not seen enough to score gives NaN: JSON has
        // no NaN, and a stored anomaly that cannot be read back is lost
        // to every reader (coordinated anomalies were, before this).
        confidence: finite(confidence),
        score: finite(score),
        event_count: agg.events,
        top_contributors: contributors,
        detected_at: now(),
        account: (*account).clone(),
    }
}

/// The entity an entity key (category values joined by '/') stands for.
pub(super) fn entity_of(spec: &DetectorSpec, key: &str) -> Vec<(String, String)> {
    spec.category_fields
        .iter()
        .zip(key.split('/'))
        .map(|(f, v)| (f.to_string(), v.to_string()))
        .collect()
}

/// One field's value in an entity, empty when it has none.
pub(super) fn entity_field<'a>(entity: &'a [(String, String)], name: &str) -> &'a str {
    entity
        .iter()
        .find(|(f, _)| f == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_default()
}

/// `key` (category values joined by '/') with the account and region
/// fields replaced by the folds `account` and `region`.
pub(super) fn fold_key(spec: &DetectorSpec, key: &str, account: &str, region: &str) -> String {
    spec.category_fields
        .iter()
        .zip(key.split('/'))
        .map(|(field, value)| match field.to_string().as_str() {
            "recipientAccountId" => account,
            "awsRegion" => region,
            _ => value,
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn finite(v: f64) -> f64 {
    if v.is_finite() { v } else { 0.0 }
}
