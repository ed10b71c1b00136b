//! Judging one closed (or still open) entity window: the residuals, the forest's verdict, and the suppressions that explain a spike away.

#[allow(unused_imports)]
use super::*;

/// What judging one entity's window works out before its forest runs.
pub(super) struct Judging {
    pub(super) values: Vec<f64>,
    pub(super) exp: Vec<Expectation>,
    pub(super) z: Vec<f64>,
    /// The forest's input.
    pub(super) rounded: Vec<f64>,
    pub(super) history: u64,
    pub(super) first_use: FirstUse,
    /// Threshold factor of the entity's environment.
    pub(super) sensitivity: f64,
    /// Expected total of the silent run including this window.
    pub(super) silent_total: f64,
    pub(super) silence: Silence,
    pub(super) sustained: Sustained,
    /// Whether the forest's grade can matter (see `evaluate_before`).
    pub(super) needed: bool,
}

/// Evaluates one closed window of one entity, up to its forest: the window
/// against the baseline, and what the forest is to be given.
#[allow(clippy::too_many_arguments)]
pub(super) fn evaluate_before(
    cfg: &EngineConfig,
    spec: &DetectorSpec,
    sums: &[bool],
    ent: &mut EntityState,
    agg: &WindowAgg,
    hist: Option<&AccountHistory>,
    start: i64,
    interval: i64,
) -> Judging {
    let nfeat = spec.features.len();
    let mut exp = Vec::with_capacity(nfeat);
    let values = if agg.values.is_empty() {
        vec![0.0; nfeat]
    } else {
        agg.values.clone()
    };
    if let Some(a) = &agg.account {
        ent.account = a.clone();
    }
    ent.baseline.expect(start, &mut exp);
    let z: Vec<f64> = values
        .iter()
        .zip(&exp)
        .map(|(x, e)| ((x - e.expected) / e.scale).clamp(-50.0, 50.0))
        .collect();
    // The forest sees residuals rounded to 0.05 noise units: finer detail is
    // noise, and an idle entity then repeats the same shingle exactly, which
    // the forest recognises and skips (most entities are idle most windows).
    let res = cfg.forest_resolution.max(1e-6);
    let rounded: Vec<f64> = z.iter().map(|v| (v / res).round() * res).collect();
    let history = ent.baseline.windows();
    let first_use = first_seen(
        cfg,
        spec,
        hist,
        &ent.region,
        agg,
        start,
        interval,
        history,
        &values,
    );
    let sensitivity = sensitivity(cfg, spec, &ent.account);
    let silent_total = if agg.events == 0 {
        ent.silent_expected + exp.first().map_or(0.0, |e| e.expected.max(0.0))
    } else {
        0.0
    };
    let silence = Silence {
        crossed: silent_total >= cfg.drop_min_total && ent.silent_expected < cfg.drop_min_total,
        active_share: ent.baseline.active_share(),
    };
    // Judged against at least four earlier days, when the rule is on.
    // Not in development and sandbox accounts: a day busier than the last
    // few is the swing those environments are known for.
    let sustained = if cfg.sustained_z > 0.0 && sensitivity <= 1.0 {
        let window = start.div_euclid(interval.max(1));
        Sustained::of(
            &ent.counts,
            window,
            agg.events as f64,
            interval,
            cfg.sustained_ratio,
            |w| is_weekend_day((w * interval).div_euclid(86_400_000)),
        )
    } else {
        Sustained::default()
    };
    // The forest's grade can only turn a window anomalous (or suppressed,
    // which must be told apart from quiet) that would be so at the highest
    // grade: for every other window (nearly all) its verdict cannot
    // matter, and the forest just learns the step.
    let w = Window {
        values: &values,
        exp: &exp,
        z: &z,
        sums,
    };
    let needed = matches!(
        judge(
            cfg,
            &w,
            1.0,
            history,
            interval,
            ent.active_streak,
            first_use,
            sensitivity,
            silence,
            sustained,
        ),
        Verdict::Raise(..)
            | Verdict::Suppressed(
                Suppression::Environment | Suppression::Weekly | Suppression::Bursts
            )
    );
    Judging {
        values,
        exp,
        z,
        rounded,
        history,
        first_use,
        sensitivity,
        silent_total,
        silence,
        sustained,
        needed,
    }
}

/// The factor an account's thresholds are multiplied by.
pub(super) fn sensitivity(
    cfg: &EngineConfig,
    spec: &DetectorSpec,
    account: &AccountMetadata,
) -> f64 {
    if !spec.ignore_quiet_environments && cfg.quiet_environments.contains(&account.environment) {
        cfg.quiet_factor.max(1.0)
    } else {
        1.0
    }
}

/// The heaviest of `values` (ties: the smallest value, for determinism).
pub(super) fn heaviest<'a>(
    values: impl Iterator<Item = (&'a String, &'a (u64, f64))>,
) -> Option<(&'a String, &'a (u64, f64))> {
    values.max_by(|a, b| a.1.1.total_cmp(&b.1.1).then_with(|| b.0.cmp(a.0)))
}

/// The value of dimension `dim` behind at least 40% of the window's weight.
pub(super) fn dominant(agg: &WindowAgg, dim: u8, total: f64) -> Option<&str> {
    heaviest(agg.contributors.0.get(usize::from(dim))?.iter())
        .filter(|(_, (_, w))| *w >= 0.4 * total)
        .map(|(v, _)| v.as_str())
}

/// Evaluates one closed window of one entity, given what its forest said
/// about `judging.rounded`: the window's result, why it was not raised if
/// it stood out, and whether the account is rising (for coordination).
#[allow(clippy::too_many_arguments)]
pub(super) fn evaluate_after(
    cfg: &EngineConfig,
    spec: &DetectorSpec,
    sums: &[bool],
    key: &str,
    ent: &mut EntityState,
    agg: WindowAgg,
    hist: Option<&AccountHistory>,
    start: i64,
    interval: i64,
    judging: Judging,
    detection: Detection,
) -> (WindowResult, Option<Suppression>, Option<Rising>) {
    let Judging {
        values,
        exp,
        z,
        rounded: _,
        history,
        first_use,
        sensitivity,
        silent_total,
        silence,
        sustained,
        needed,
    } = judging;
    let w = Window {
        values: &values,
        exp: &exp,
        z: &z,
        sums,
    };
    let verdict = judge(
        cfg,
        &w,
        if needed { detection.grade } else { 0.0 },
        history,
        interval,
        ent.active_streak,
        first_use,
        sensitivity,
        silence,
        sustained,
    );
    ent.silent_expected = silent_total;
    // What only the sustained rule reads is kept only when it is on.
    if cfg.sustained_z > 0.0 {
        ent.counts
            .record(start.div_euclid(interval.max(1)), agg.events, interval);
    }
    let (grade, kind, suppressed) = match verdict {
        Verdict::Raise(g, k) => (g, k, None),
        Verdict::Suppressed(why) => (0.0, AnomalyKind::Spike, Some(why)),
        Verdict::Quiet => (0.0, AnomalyKind::Spike, None),
    };
    let grade = if grade < spec.min_grade { 0.0 } else { grade };
    let subject = Subject {
        entity: &ent.entity,
        account_id: &ent.account_id,
        region: &ent.region,
        account: &ent.account,
        seen: Some(&ent.seen),
    };
    let anomaly = (grade > 0.0).then(|| {
        build_anomaly(
            cfg,
            spec,
            &subject,
            hist,
            &agg,
            start,
            interval,
            &values,
            &exp,
            grade,
            match kind {
                // The forest of a new entity knows nothing yet; what makes
                // "never used this region" trustworthy is how long the
                // account has been watched.
                AnomalyKind::NewRegion => hist
                    .map(|h| {
                        let hours = (start - h.first_seen_ms).max(0) as f64 / 3_600_000.0;
                        1.0 - (-hours / 48.0).exp()
                    })
                    .unwrap_or(0.0),
                _ => detection.confidence,
            },
            detection.score,
            kind,
        )
    });
    // Accounts rising together: each only somewhat above its own normal,
    // together unmistakable (see `Engine::coordinate`).
    let total = values.first().copied().unwrap_or(0.0);
    let e0 = exp.first().map_or(0.0, |e| e.expected);
    let rises = cfg.coordinated_min_accounts >= 2
        && (history * interval.max(1) as u64) >= cfg.min_history_hours * 3_600_000
        && ent.account_id != FOLDED_ACCOUNT
        && z.first().copied().unwrap_or(0.0) >= cfg.coordinated_z
        && total - e0 >= cfg.min_excess
        && total - e0 >= cfg.min_relative_excess * e0;
    // An address the account has never seen acting in it: one intruder
    // working through several accounts is new in each.
    let horizon = cfg.new_after_hours as i64 * 3_600_000;
    // It must do something of note there: a CI role launching one test
    // instance in each account from a runner's fresh address is routine.
    let new_ip = (cfg.coordinated_min_accounts >= 2
        && ent.account_id != FOLDED_ACCOUNT
        && total - e0 >= cfg.min_excess)
        .then(|| {
            let h = hist?;
            heaviest(agg.contributors.0.get(1)?.iter().filter(|(ip, _)| {
                ip.parse::<std::net::IpAddr>().is_ok() && h.is_new(1, ip, start, horizon)
            }))
            .map(|(ip, _)| ip.clone())
        })
        .flatten();
    let rising = (rises || new_ip.is_some())
        .then(|| {
            // An AWS service acting in every account (Auto Scaling under
            // its service-linked role) is no one's coordination: the
            // window must come from an address, a person's or a tool's.
            let ip = dominant(&agg, 1, total)
                .filter(|ip| ip.parse::<std::net::IpAddr>().is_ok())
                .unwrap_or("");
            let principal = if ip.is_empty() {
                ""
            } else {
                dominant(&agg, 0, total).map(principal_name).unwrap_or("")
            };
            let mut keys = Vec::new();
            if rises {
                if !principal.is_empty() {
                    keys.push(format!("principal:{principal}"));
                }
                if !ip.is_empty() {
                    keys.push(format!("ip:{ip}"));
                }
            }
            if let Some(addr) = &new_ip {
                // The principal behind the new address's calls.
                let who = agg
                    .contributors
                    .0
                    .first()
                    .and_then(|m| heaviest(m.iter()))
                    .map(|(p, _)| role_name(principal_name(p)))
                    .unwrap_or("");
                keys.push(format!("actor:{who}@{addr}"));
            }
            Rising {
                window_start: start,
                account_id: ent.account_id.clone(),
                entity_key: key.to_string(),
                keys,
                candidate: anomaly.is_none().then(|| {
                    let mut a = build_anomaly(
                        cfg,
                        spec,
                        &subject,
                        hist,
                        &agg,
                        start,
                        interval,
                        &values,
                        &exp,
                        0.5,
                        detection.confidence,
                        detection.score,
                        AnomalyKind::Coordinated,
                    );
                    a.id.push_str(":coordinated");
                    a
                }),
            }
        })
        .filter(|r| !r.keys.is_empty());
    // An anomalous window enters the history clipped to the band
    // around what was expected: a lasting change is still learned,
    // step by step, but one storm or outage cannot skew the next
    // days' expectations. Its real values are kept aside for the weekly
    // comparison: a weekly job is expected at its real size next week.
    let recorded: Vec<f64> = if anomaly.is_some() {
        ent.baseline.record_anomalous_raw(start, &values);
        values
            .iter()
            .zip(&exp)
            .map(|(x, e)| {
                x.clamp(
                    (e.expected - cfg.spike_z * e.scale).max(0.0),
                    e.expected + cfg.spike_z * e.scale,
                )
            })
            .collect()
    } else {
        values.clone()
    };
    ent.baseline
        .note_window(start, &values, &exp, agg.events, anomaly.is_some());
    ent.baseline
        .record_events(start, &recorded, agg.events, &exp, anomaly.is_some());
    ent.active_streak = if agg.events > 0 {
        ent.last_active_ms = start;
        ent.active_streak.saturating_add(1)
    } else {
        0
    };
    if ent.seen.len() < cfg.max_seen_values {
        for (dim, v, (n, _)) in agg.contributors.iter() {
            match ent.seen.get_mut(&(dim, v.clone())) {
                Some(seen) => *seen += n,
                None => {
                    ent.seen.insert((dim, v.clone()), *n);
                }
            }
        }
    }
    let result = WindowResult {
        detector: spec.name.clone(),
        entity_key: key.to_string(),
        window_start_ms: start,
        lower: exp
            .iter()
            .map(|e| (e.expected - cfg.spike_z * e.scale).max(0.0))
            .collect(),
        upper: exp
            .iter()
            .map(|e| e.expected + cfg.spike_z * e.scale)
            .collect(),
        expected: exp.iter().map(|e| e.expected).collect(),
        actual: values,
        grade,
        anomaly,
        extra: false,
    };
    (result, suppressed, rising)
}

/// Per feature, whether it is a sum (heavy-tailed: needs `strong_z`).
pub(super) fn sums_of(spec: &DetectorSpec) -> Vec<bool> {
    spec.features
        .iter()
        .map(|f| f.aggregation == trailhound_core::Aggregation::Sum)
        .collect()
}

/// The grade of an open window of an entity with a rhythm, if what has
/// arrived already passes the strong residual (and is no weekly repeat
/// or habitual burst).
pub(super) fn early_spike_grade(
    cfg: &EngineConfig,
    spec: &DetectorSpec,
    account: &AccountMetadata,
    values: &[f64],
    exp: &[Expectation],
) -> Option<f64> {
    let z: Vec<f64> = values
        .iter()
        .zip(exp)
        .map(|(x, e)| ((x - e.expected) / e.scale).clamp(-50.0, 50.0))
        .collect();
    let sums = sums_of(spec);
    let w = Window {
        values,
        exp,
        z: &z,
        sums: &sums,
    };
    let k = sensitivity(cfg, spec, account);
    let spiking = w.spiking(cfg, k);
    let zmax = spiking.iter().map(|(_, z)| *z).reduce(f64::max)?;
    if zmax < k * cfg.strong_z
        || w.repeats_last_week(cfg, &spiking)
        || w.within_usual_bursts(&spiking)
    {
        return None;
    }
    Some(magnitude(cfg, zmax / k))
}

/// The anomaly an open window already is, if it is unmistakable: a strong
/// residual on what has arrived so far (the rest of the window can only
/// add to it, so its close raises it too), or a significant first use of a
/// region. `t` is the event time the window has been seen up to.
#[allow(clippy::too_many_arguments)]
pub(super) fn early_anomaly(
    cfg: &EngineConfig,
    spec: &DetectorSpec,
    ent: Option<&EntityState>,
    key: &str,
    agg: &WindowAgg,
    hist: Option<&AccountHistory>,
    window: i64,
    t: i64,
) -> Option<Anomaly> {
    let interval = spec.interval_ms();
    let account = agg.account.as_ref()?;
    let watched = |h: Option<&AccountHistory>| {
        h.map(|h| {
            let hours = (window - h.first_seen_ms).max(0) as f64 / 3_600_000.0;
            1.0 - (-hours / 48.0).exp()
        })
        .unwrap_or(0.0)
    };
    let mut a = match ent {
        Some(ent) => {
            let history = ent.baseline.windows();
            let mut exp = Vec::with_capacity(agg.values.len());
            ent.baseline.expect(window, &mut exp);
            let grade = if (history * interval.max(1) as u64) < cfg.min_history_hours * 3_600_000 {
                // Too young for a rhythm: only a large burst by someone new.
                let young = first_seen(
                    cfg,
                    spec,
                    hist,
                    &ent.region,
                    agg,
                    window,
                    interval,
                    history,
                    &agg.values,
                );
                if young != FirstUse::Activity {
                    return None;
                }
                let total = agg.values.first().copied().unwrap_or(0.0);
                first_seen_grade(AnomalyKind::Spike, total)
            } else {
                early_spike_grade(cfg, spec, account, &agg.values, &exp)?
            };
            let subject = Subject {
                entity: &ent.entity,
                account_id: &ent.account_id,
                region: &ent.region,
                account,
                seen: Some(&ent.seen),
            };
            build_anomaly(
                cfg,
                spec,
                &subject,
                hist,
                agg,
                window,
                interval,
                &agg.values,
                &exp,
                grade,
                watched(hist),
                0.0,
                AnomalyKind::Spike,
            )
        }
        None => {
            let entity = entity_of(spec, key);
            let field = |name: &str| entity_field(&entity, name);
            let region = field("awsRegion");
            let kind = match first_seen(
                cfg,
                spec,
                hist,
                region,
                agg,
                window,
                interval,
                0,
                &agg.values,
            ) {
                FirstUse::Significant => AnomalyKind::NewRegion,
                FirstUse::Activity => AnomalyKind::Spike,
                _ => return None,
            };
            let account_id = match field("recipientAccountId") {
                "" => account.account_id.as_str(),
                id => id,
            };
            let total = agg.values.first().copied().unwrap_or(0.0);
            let exp = vec![
                Expectation {
                    expected: 0.0,
                    scale: 1.0,
                    weekly: 0.0,
                    usual_peak: 0.0,
                    dispersion: 0.0,
                };
                agg.values.len()
            ];
            let subject = Subject {
                entity: &entity,
                account_id,
                region,
                account,
                seen: None,
            };
            build_anomaly(
                cfg,
                spec,
                &subject,
                hist,
                agg,
                window,
                interval,
                &agg.values,
                &exp,
                first_seen_grade(kind, total),
                watched(hist),
                0.0,
                kind,
            )
        }
    };
    a.observed_until = ts(t.clamp(window, window + interval));
    Some(a)
}

/// A grade from a residual: 0.3 at `spike_z`, rising to 1 at 4.4 times it.
pub(super) fn magnitude(cfg: &EngineConfig, z: f64) -> f64 {
    ((z.abs() - cfg.spike_z) / (2.0 * cfg.spike_z) + 0.3).clamp(0.05, 1.0)
}

/// Why a window that stood out was not raised (counted in the stats).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Suppression {
    /// Within the swings of a development or sandbox account.
    Environment,
    /// No more than the same weekday's slot had one or two weeks before.
    Weekly,
    /// A first use of a region with nothing notable about it.
    NewRegion,
    /// A burst no larger than the entity's bursts on other days.
    Bursts,
}

/// What judging one window of one entity decided.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Verdict {
    Raise(f64, AnomalyKind),
    Suppressed(Suppression),
    Quiet,
}

/// One window's figures as judged.
pub(super) struct Window<'a> {
    pub(super) values: &'a [f64],
    pub(super) exp: &'a [Expectation],
    pub(super) z: &'a [f64],
    /// Per feature, whether it is a sum (heavy-tailed: needs `strong_z`).
    pub(super) sums: &'a [bool],
}

impl Window<'_> {
    /// Features that spike at thresholds scaled by `k`, with their residual;
    /// none unless the first rises too: more than one event's worth, and
    /// above expected by at least one and by the relative excess a spike
    /// needs. The first feature is what the detector counts (volumes,
    /// instances, calls); the others describe it (GiB): one large volume
    /// where none was expected is a size, not a burst, but four huge ones
    /// where one was expected are.
    pub(super) fn spiking(&self, cfg: &EngineConfig, k: f64) -> Vec<(usize, f64)> {
        let spiking: Vec<(usize, f64)> = self
            .values
            .iter()
            .zip(self.exp)
            .zip(self.z)
            .enumerate()
            .filter(|(i, ((x, e), zz))| {
                let sum = self.sums.get(*i).copied().unwrap_or(false);
                **zz >= k * if sum { cfg.strong_z } else { cfg.spike_z }
                    && *x - e.expected >= k * cfg.min_excess
                    && *x - e.expected >= k * cfg.min_relative_excess * e.expected
            })
            .map(|(i, (_, zz))| (i, *zz))
            .collect();
        // Only a spike of the other features alone needs the check: the
        // first feature spiking rises by more than it asks.
        if spiking.first().is_none_or(|(i, _)| *i == 0) {
            return spiking;
        }
        let primary_rises = self
            .values
            .first()
            .zip(self.exp.first())
            .is_some_and(|(x, e)| {
                *x >= 2.0
                    && x - e.expected >= 1.0
                    && x - e.expected >= k * cfg.min_relative_excess * e.expected
            });
        if primary_rises { spiking } else { Vec::new() }
    }

    /// Whether every spiking feature stays within the excess the entity's
    /// bursts reached on other days (see `Expectation::usual_peak`).
    pub(super) fn within_usual_bursts(&self, spiking: &[(usize, f64)]) -> bool {
        !spiking.is_empty()
            && spiking.iter().all(|(i, _)| {
                let Some(e) = self.exp.get(*i) else {
                    return false;
                };
                let x = self.values.get(*i).copied().unwrap_or(0.0);
                e.usual_peak > 0.0 && x - e.expected < 1.5 * e.usual_peak
            })
    }

    /// Whether every spiking feature stays within what the same weekday's
    /// slot had a week or two before: a weekly job seen once.
    pub(super) fn repeats_last_week(&self, cfg: &EngineConfig, spiking: &[(usize, f64)]) -> bool {
        !spiking.is_empty()
            && spiking.iter().all(|(i, _)| {
                let weekly = self.exp.get(*i).map_or(0.0, |e| e.weekly);
                let x = self.values.get(*i).copied().unwrap_or(0.0);
                weekly > 0.0 && x - weekly < cfg.min_excess.max(cfg.min_relative_excess * weekly)
            })
    }
}

/// Decides whether a window is anomalous, and how badly. `sensitivity`
/// (≥ 1) scales every threshold: an account whose swings are normal needs
/// a larger one.
#[allow(clippy::too_many_arguments)]
pub(super) fn judge(
    cfg: &EngineConfig,
    w: &Window<'_>,
    forest_grade: f64,
    history: u64,
    interval_ms: i64,
    active_streak: u32,
    first_use: FirstUse,
    sensitivity: f64,
    silence: Silence,
    sustained: Sustained,
) -> Verdict {
    match first_use {
        FirstUse::Significant => {
            let total: f64 = w.values.first().copied().unwrap_or(0.0);
            let kind = AnomalyKind::NewRegion;
            return Verdict::Raise(first_seen_grade(kind, total), kind);
        }
        FirstUse::Insignificant => return Verdict::Suppressed(Suppression::NewRegion),
        FirstUse::Activity => {
            let total: f64 = w.values.first().copied().unwrap_or(0.0);
            let kind = AnomalyKind::Spike;
            return Verdict::Raise(first_seen_grade(kind, total), kind);
        }
        FirstUse::No => {}
    }
    if (history * interval_ms.max(1) as u64) < cfg.min_history_hours * 3_600_000 {
        return Verdict::Quiet;
    }
    let magnitude = |zz: f64| magnitude(cfg, zz);
    // Spike: any feature far above expected, in noise units and in
    // absolute and relative terms. Sums of sizes (GiB, instances per call)
    // are heavy-tailed: one large but ordinary request must not pass for a
    // burst, so a sum needs the strong residual; counts the spike residual.
    let k = sensitivity.max(1.0);
    let spiking = w.spiking(cfg, k);
    if let Some(zmax) = spiking.iter().map(|(_, z)| *z).reduce(f64::max)
        && (forest_grade > 0.0 || zmax >= k * cfg.strong_z)
    {
        if w.repeats_last_week(cfg, &spiking) {
            return Verdict::Suppressed(Suppression::Weekly);
        }
        if w.within_usual_bursts(&spiking) {
            return Verdict::Suppressed(Suppression::Bursts);
        }
        return Verdict::Raise(forest_grade.max(magnitude(zmax / k)), AnomalyKind::Spike);
    }
    if k > 1.0
        && let Some(zmax) = w.spiking(cfg, 1.0).iter().map(|(_, z)| *z).reduce(f64::max)
        && (forest_grade > 0.0 || zmax >= cfg.strong_z)
    {
        return Verdict::Suppressed(Suppression::Environment);
    }
    // A rise over two hours no window alone shows, still going on, judged
    // only against a rhythm known for days (weekdays and weekends apart).
    if cfg.sustained_z > 0.0
        && (history * interval_ms.max(1) as u64) >= 4 * 86_400_000
        && sustained.z >= k * cfg.sustained_z
        && sustained.excess >= 2.0 * k * cfg.min_excess
        && sustained.largest <= 0.4 * sustained.total
        && w.values.first().is_some_and(|x| *x > 0.0)
    {
        return Verdict::Raise(
            magnitude(sustained.z / k * cfg.spike_z / cfg.sustained_z),
            AnomalyKind::Spike,
        );
    }
    // Drop: a steadily active entity fell to (nearly) nothing.
    let primary = w.values.first().copied().unwrap_or(0.0);
    let expected = w.exp.first().map(|e| e.expected).unwrap_or(0.0);
    let zp = w.z.first().copied().unwrap_or(0.0);
    if expected >= cfg.drop_min_expected
        && primary <= 0.1 * expected
        && zp <= -cfg.spike_z * 0.8
        && (active_streak >= 6 || forest_grade > 0.0)
    {
        return Verdict::Raise(forest_grade.max(magnitude(zp)), AnomalyKind::Drop);
    }
    // Or a steady entity silent for long enough that chance cannot
    // explain it: raised once, when the silence crosses the line.
    if silence.crossed && silence.active_share >= 0.75 {
        return Verdict::Raise(0.6, AnomalyKind::Drop);
    }
    Verdict::Quiet
}

/// A run of silent windows as judged for a drop.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Silence {
    /// This window took the run's expected total past `drop_min_total`.
    pub(super) crossed: bool,
    /// The entity's share of recent windows with events.
    pub(super) active_share: f64,
}
