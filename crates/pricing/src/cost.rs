//! What an anomaly costs: the run rate of what was launched or invoked
//! above the expected level, projected over a day and 30 days.
//!
//! A person deciding whether to wake someone up needs one number they can
//! trust and the assumptions behind it, so every estimate says in words what
//! it took for granted (that the instances keep running, on-demand Linux
//! prices, how instance types were split, how the region was priced) and
//! each line says how its price was found. Only the excess counts: the usual
//! two instances of a CI account are already on the bill.
//!
//! What is priced is decided by the detector's service and feature names,
//! not by its name alone, so a custom detector can be priced too:
//!
//! | service  | feature priced | split by contributor | price |
//! |----------|----------------|----------------------|-------|
//! | `ec2`    | `instances`    | `instance_type`      | on-demand $/h per instance |
//! | `ebs`    | `gib` (+ `iops` when recorded) | `volume_type` | $/GiB-month ÷ 730 h |
//! | `lambda` | `invocations`  | —                    | requests + GB-seconds at an assumed size |
//!
//! (the default detectors `ec2-run-instances` and `lambda-invoke` are priced
//! by their first feature whatever it is called). Drops, unknown services and
//! detectors that count something else (failed calls, say) cost zero, with
//! an assumption saying why. Garbage in the anomaly (NaN, negative or
//! infinite values, shares that add up to more than one) never yields NaN,
//! infinity or a negative cost.

use trailhound_core::insight::CostLine;
use trailhound_core::{Anomaly, AnomalyKind, CostImpact};

use crate::table::{BASE_REGION, PriceTable};

/// What instances are priced as when the window records no instance type.
pub const DEFAULT_INSTANCE_TYPE: &str = "m5.large";
/// CreateVolume's default volume type.
pub const DEFAULT_VOLUME_TYPE: &str = "gp2";
/// The default detectors' interval, used when the window's length is garbage.
const DEFAULT_WINDOW_SECS: f64 = 600.0;
/// gp3 includes this many IOPS per volume in its storage price.
const GP3_INCLUDED_IOPS: f64 = 3000.0;
/// Shares closer to zero than this are rounding, not a missing part.
const SHARE_EPSILON: f64 = 1e-6;

/// The projection assumption every priced estimate carries.
const PROJECTION: &str =
    "per day and per 30 days assume the hourly rate holds around the clock (24 h and 720 h)";

/// What the excess above the expected level costs if it keeps running.
pub fn cost_impact(anomaly: &Anomaly, table: &PriceTable) -> CostImpact {
    let mut c = Costing {
        a: anomaly,
        table,
        region: anomaly.region.trim(),
        lines: Vec::new(),
        assumptions: Vec::new(),
    };
    match what_to_price(anomaly) {
        Err(reason) => c.assumptions.push(reason),
        Ok(Priced::Ec2(f)) => c.ec2(f),
        Ok(Priced::Ebs { gib, volumes, iops }) => c.ebs(gib, volumes, iops),
        Ok(Priced::Lambda(f)) => c.lambda(f),
    }
    c.finish()
}

/// One feature's window value and expectation, cleaned of garbage.
#[derive(Clone, Copy, Debug)]
struct Feature {
    actual: f64,
    expected: f64,
}

enum Priced {
    Ec2(Feature),
    Ebs {
        gib: Feature,
        volumes: Option<Feature>,
        iops: Option<Feature>,
    },
    Lambda(Feature),
}

/// A finite non-negative number, else zero.
fn clean(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 { x } else { 0.0 }
}

fn feature(a: &Anomaly, name: &str) -> Option<Feature> {
    a.features.iter().find(|f| f.name == name).map(|f| Feature {
        actual: clean(f.actual),
        expected: clean(f.expected),
    })
}

/// The anomaly's headline value: its first feature, or the flat fields when
/// the features are missing (an anomaly stored before they existed).
fn first_feature(a: &Anomaly) -> Feature {
    match a.features.first() {
        Some(f) => Feature {
            actual: clean(f.actual),
            expected: clean(f.expected),
        },
        None => Feature {
            actual: clean(a.actual),
            expected: clean(a.expected),
        },
    }
}

fn what_to_price(a: &Anomaly) -> Result<Priced, String> {
    let mut service = a.service.trim().to_ascii_lowercase();
    if service.is_empty() {
        service = match a.detector.as_str() {
            "ec2-run-instances" => "ec2",
            "ebs-create-volume" => "ebs",
            "lambda-invoke" => "lambda",
            _ => "",
        }
        .to_string();
    }
    let names = || {
        let v: Vec<&str> = a.features.iter().map(|f| f.name.as_str()).collect();
        if v.is_empty() {
            "nothing".to_string()
        } else {
            v.join(", ")
        }
    };
    let priced = match service.as_str() {
        "ec2" => feature(a, "instances")
            .or_else(|| (a.detector == "ec2-run-instances").then(|| first_feature(a)))
            .map(Priced::Ec2)
            .ok_or_else(|| {
                format!(
                    "detector {} counts {} for ec2; only instances launched (a feature named `instances`) are priced, so no cost is estimated",
                    a.detector,
                    names()
                )
            })?,
        "ebs" => feature(a, "gib")
            .map(|gib| Priced::Ebs {
                gib,
                volumes: feature(a, "volumes"),
                iops: feature(a, "iops"),
            })
            .ok_or_else(|| {
                format!(
                    "detector {} counts {} for ebs but not the GiB created (a feature named `gib`), so no cost is estimated",
                    a.detector,
                    names()
                )
            })?,
        "lambda" => feature(a, "invocations")
            .or_else(|| (a.detector == "lambda-invoke").then(|| first_feature(a)))
            .map(Priced::Lambda)
            .ok_or_else(|| {
                format!(
                    "detector {} counts {} for lambda; only invocations (a feature named `invocations`) are priced, so no cost is estimated",
                    a.detector,
                    names()
                )
            })?,
        _ => {
            return Err(format!(
                "trailhound has no prices for service {:?} (detector {}), so no cost is estimated",
                a.service, a.detector
            ));
        }
    };
    if a.kind == AnomalyKind::Drop {
        return Err(
            "a drop: usage fell below its usual level, which adds no cost, so none is estimated"
                .to_string(),
        );
    }
    Ok(priced)
}

/// A quantity for people: whole numbers without decimals, others with up to
/// two.
fn num(x: f64) -> String {
    if (x - x.round()).abs() < 0.005 {
        format!("{:.0}", x.round())
    } else if x.abs() < 10.0 {
        let s = format!("{x:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{x:.1}")
    }
}

fn percent(share: f64) -> String {
    let p = share * 100.0;
    if p >= 1.0 || p == 0.0 {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

/// Contributor values of one dimension with their shares: garbage dropped,
/// duplicates merged, largest first. The second value is the share not
/// among them (zero when they cover everything or add up to more).
fn mix(a: &Anomaly, dimension: &str) -> (Vec<(String, f64)>, f64) {
    let mut v: Vec<(String, f64)> = Vec::new();
    for c in a
        .top_contributors
        .iter()
        .filter(|c| c.dimension == dimension)
    {
        let value = c.value.trim();
        let share = clean(c.share);
        if value.is_empty() || share <= 0.0 {
            continue;
        }
        match v.iter_mut().find(|(n, _)| n == value) {
            Some((_, s)) => *s += share,
            None => v.push((value.to_string(), share)),
        }
    }
    let total: f64 = v.iter().map(|(_, s)| s).sum();
    let rest = if total > 1.0 {
        for (_, s) in &mut v {
            *s /= total;
        }
        0.0
    } else {
        1.0 - total
    };
    v.sort_by(|x, y| y.1.total_cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
    (v, if rest < SHARE_EPSILON { 0.0 } else { rest })
}

fn describe_mix(v: &[(String, f64)]) -> String {
    v.iter()
        .map(|(n, s)| format!("{n} {}", percent(*s)))
        .collect::<Vec<_>>()
        .join(", ")
}

struct Costing<'a> {
    a: &'a Anomaly,
    table: &'a PriceTable,
    region: &'a str,
    lines: Vec<CostLine>,
    assumptions: Vec<String>,
}

impl Costing<'_> {
    /// The quantity above the expected level, or why there is none.
    fn excess(&mut self, f: Feature, unit: &str, what: &str) -> Option<f64> {
        let (qty, phrase) = match self.a.kind {
            AnomalyKind::NewRegion => (
                f.actual,
                format!(
                    "first activity in region {}: all {} {unit} count as excess (nothing is usual there), and they {what}",
                    self.region,
                    num(f.actual)
                ),
            ),
            _ => (
                f.actual - f.expected,
                format!(
                    "the {} {unit} above the usual {} {what}",
                    num(f.actual - f.expected),
                    num(f.expected)
                ),
            ),
        };
        if qty > 0.0 && qty.is_finite() {
            self.assumptions.push(phrase);
            Some(qty)
        } else {
            self.assumptions.push(format!(
                "the window's {} {unit} are not above the usual {}: nothing to price",
                num(f.actual),
                num(f.expected)
            ));
            None
        }
    }

    /// "region X priced from us-east-1 × f" when some line used the
    /// multiplier.
    fn region_assumption(&mut self, used_multiplier: bool) {
        if used_multiplier && self.region != BASE_REGION {
            let rf = self.table.region_factor(self.region);
            self.assumptions.push(rf.describe(self.region));
        }
    }

    fn ec2(&mut self, f: Feature) {
        let Some(qty) = self.excess(f, "instances", "keep running") else {
            return;
        };
        self.assumptions.push(
            "on-demand Linux prices, shared tenancy, no pre-installed software: Windows and licensed software cost more; Spot, Savings Plans and Reserved Instances less"
                .to_string(),
        );
        let (types, rest) = mix(self.a, "instance_type");
        let mut used_multiplier = false;
        if types.is_empty() {
            let p = self.table.ec2_hourly(DEFAULT_INSTANCE_TYPE, self.region);
            used_multiplier |= p.estimated;
            self.assumptions.push(format!(
                "the window records no instance types: every instance priced as {DEFAULT_INSTANCE_TYPE}, a common general-purpose type (GPU types cost up to a thousand times more)"
            ));
            self.lines.push(CostLine {
                item: format!("{DEFAULT_INSTANCE_TYPE} (instance types not recorded)"),
                quantity: qty,
                unit: "instances".into(),
                usd_per_hour: qty * p.usd_per_hour,
                estimated: true,
                basis: p.basis,
            });
        } else {
            let mut split = format!(
                "instance types split as in the window's top contributors ({})",
                describe_mix(&types)
            );
            let mut weighted = 0.0;
            for (ty, share) in &types {
                let p = self.table.ec2_hourly(ty, self.region);
                let n = qty * share;
                weighted += share * p.usd_per_hour;
                if p.estimated && !self.table.ec2_on_demand_hourly_us_east_1.contains_key(ty) {
                    self.assumptions.push(format!(
                        "{ty} is not in the price table: estimated from its family and size"
                    ));
                }
                used_multiplier |= p.estimated;
                self.lines.push(CostLine {
                    item: ty.clone(),
                    quantity: n,
                    unit: "instances".into(),
                    usd_per_hour: n * p.usd_per_hour,
                    estimated: p.estimated,
                    basis: p.basis,
                });
            }
            if rest > 0.0 {
                let covered: f64 = types.iter().map(|(_, s)| s).sum();
                let avg = weighted / covered;
                split.push_str(&format!(
                    "; the {} not among them priced at the mix's average",
                    percent(rest)
                ));
                self.lines.push(CostLine {
                    item: "other instance types".into(),
                    quantity: qty * rest,
                    unit: "instances".into(),
                    usd_per_hour: qty * rest * avg,
                    estimated: true,
                    basis: format!(
                        "not among the window's top instance types: the mix's average ${avg:.4}/h"
                    ),
                });
            }
            self.assumptions.push(split);
        }
        self.region_assumption(used_multiplier);
        self.assumptions.push(
            "EBS volumes, data transfer and other charges of the instances not counted".to_string(),
        );
        self.assumptions.push(PROJECTION.to_string());
    }

    fn ebs(&mut self, gib: Feature, volumes: Option<Feature>, iops: Option<Feature>) {
        let Some(qty) = self.excess(gib, "GiB", "stay provisioned") else {
            return;
        };
        let (mut types, mut rest) = mix(self.a, "volume_type");
        if types.is_empty() {
            rest = 0.0;
            self.assumptions.push(format!(
                "the window records no volume types: priced as {DEFAULT_VOLUME_TYPE}, CreateVolume's default"
            ));
            types.push((DEFAULT_VOLUME_TYPE.to_string(), 1.0));
        } else {
            let mut split = format!(
                "GiB split across volume types by their share of the window's volumes ({})",
                describe_mix(&types)
            );
            if rest > 0.0 {
                split.push_str(&format!(
                    "; the {} not among them priced at the mix's average",
                    percent(rest)
                ));
            }
            self.assumptions.push(split);
        }
        let mut used_multiplier = false;
        let mut weighted = 0.0;
        for (vt, share) in &types {
            let p = self.table.ebs_gib_month(vt, self.region);
            let n = qty * share;
            weighted += share * p.usd_per_hour;
            used_multiplier |= p.estimated;
            self.lines.push(CostLine {
                item: format!("{vt} storage"),
                quantity: n,
                unit: "GiB".into(),
                usd_per_hour: n * p.usd_per_hour,
                estimated: p.estimated,
                basis: p.basis,
            });
        }
        if rest > 0.0 {
            let covered: f64 = types.iter().map(|(_, s)| s).sum();
            let avg = weighted / covered;
            self.lines.push(CostLine {
                item: "other volume types storage".into(),
                quantity: qty * rest,
                unit: "GiB".into(),
                usd_per_hour: qty * rest * avg,
                estimated: true,
                basis: format!(
                    "not among the window's top volume types: the mix's average ${:.4}/GiB-month",
                    avg * crate::table::HOURS_PER_MONTH
                ),
            });
        }
        match iops {
            Some(iops) => {
                let excess_iops = match self.a.kind {
                    AnomalyKind::NewRegion => iops.actual,
                    _ => clean(iops.actual - iops.expected),
                };
                let excess_volumes = volumes.map(|v| match self.a.kind {
                    AnomalyKind::NewRegion => v.actual,
                    _ => clean(v.actual - v.expected),
                });
                self.assumptions.push(format!(
                    "the {} provisioned IOPS above the usual {} split across volume types like the GiB; gp3 includes {} IOPS per volume",
                    num(excess_iops),
                    num(iops.expected),
                    num(GP3_INCLUDED_IOPS)
                ));
                for (vt, share) in &types {
                    let key = match vt.as_str() {
                        "io1" | "io2" => vt.as_str(),
                        "gp3" => "gp3_above_3000",
                        _ => continue,
                    };
                    let Some(p) = self.table.ebs_iops_month(key, self.region) else {
                        continue;
                    };
                    let mut n = excess_iops * share;
                    if vt == "gp3" {
                        match excess_volumes {
                            Some(v) => n = clean(n - GP3_INCLUDED_IOPS * v * share),
                            None => self.assumptions.push(
                                "gp3's included IOPS not deducted: the detector does not record the volume count"
                                    .to_string(),
                            ),
                        }
                    }
                    if n <= 0.0 {
                        continue;
                    }
                    used_multiplier |= p.estimated;
                    self.lines.push(CostLine {
                        item: format!("{vt} provisioned IOPS"),
                        quantity: n,
                        unit: "IOPS".into(),
                        usd_per_hour: n * p.usd_per_hour,
                        estimated: p.estimated,
                        basis: p.basis,
                    });
                }
            }
            None => self.assumptions.push(
                "provisioned IOPS and gp3 throughput not counted: the detector does not record them"
                    .to_string(),
            ),
        }
        self.region_assumption(used_multiplier);
        self.assumptions
            .push("snapshots and the instances the volumes attach to not counted".to_string());
        self.assumptions.push(PROJECTION.to_string());
    }

    fn lambda(&mut self, f: Feature) {
        let secs = (self.a.window_end - self.a.window_start).num_milliseconds() as f64 / 1000.0;
        let secs = if secs > 0.0 && secs.is_finite() {
            secs
        } else {
            self.assumptions.push(format!(
                "the window's length is not valid: {} minutes assumed",
                num(DEFAULT_WINDOW_SECS / 60.0)
            ));
            DEFAULT_WINDOW_SECS
        };
        let minutes = num(secs / 60.0);
        let Some(qty) = self.excess(
            f,
            "invocations",
            &format!("per {minutes} minutes go on at that rate"),
        ) else {
            return;
        };
        let per_hour = qty * 3600.0 / secs;
        self.assumptions
            .push(format!("that is {} invocations per hour", num(per_hour)));
        let (rates, region_estimated, region_basis) = self.table.lambda_rates(self.region);
        let l = &self.table.lambda_us_east_1;
        let gb_seconds = l.assumed_memory_mb / 1024.0 * l.assumed_duration_ms / 1000.0;
        self.assumptions.push(format!(
            "Lambda at {} MB for {} ms per invocation on x86 (memory and duration are not in the anomaly)",
            num(l.assumed_memory_mb),
            num(l.assumed_duration_ms)
        ));
        self.lines.push(CostLine {
            item: "Lambda requests".into(),
            quantity: per_hour,
            unit: "invocations per hour".into(),
            usd_per_hour: per_hour * rates.per_million_requests / 1e6,
            estimated: region_estimated,
            basis: format!(
                "${}/million requests; {region_basis}",
                rates.per_million_requests
            ),
        });
        let q = per_hour * gb_seconds;
        self.lines.push(CostLine {
            item: "Lambda duration (x86)".into(),
            quantity: q,
            unit: "GB-seconds per hour".into(),
            usd_per_hour: q * rates.per_gb_second_x86,
            estimated: true,
            basis: format!(
                "{} MB × {} ms per invocation at ${}/GB-second; {region_basis}",
                num(l.assumed_memory_mb),
                num(l.assumed_duration_ms),
                rates.per_gb_second_x86
            ),
        });
        if region_estimated {
            self.assumptions.push(format!(
                "Lambda in {} priced at {BASE_REGION}'s rates (the same in most regions)",
                self.region
            ));
        }
        self.assumptions.push(
            "the free tier, provisioned concurrency and data transfer not counted".to_string(),
        );
        self.assumptions.push(PROJECTION.to_string());
    }

    /// Totals the lines, first making sure nothing in them is NaN, infinite
    /// or negative.
    fn finish(mut self) -> CostImpact {
        let mut out_of_range = false;
        for l in &mut self.lines {
            if !l.quantity.is_finite() || l.quantity < 0.0 {
                l.quantity = 0.0;
                out_of_range = true;
            }
            if !l.usd_per_hour.is_finite() || l.usd_per_hour < 0.0 {
                l.usd_per_hour = 0.0;
                out_of_range = true;
            }
        }
        let total: f64 = self.lines.iter().map(|l| l.usd_per_hour).sum();
        if !(total * 24.0 * 30.0).is_finite() {
            for l in &mut self.lines {
                l.usd_per_hour = 0.0;
            }
            out_of_range = true;
        }
        if out_of_range {
            self.assumptions.push(
                "some quantities are too large to price and count as zero: the anomaly's values are out of range"
                    .to_string(),
            );
        }
        CostImpact::from_lines(self.lines, self.assumptions, &self.table.as_of)
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;
    use trailhound_core::{AccountMetadata, Contributor, Environment, FeatureValue};

    use super::*;

    fn anomaly(detector: &str, service: &str, kind: AnomalyKind, region: &str) -> Anomaly {
        let start = Utc.with_ymd_and_hms(2026, 1, 8, 4, 20, 0).unwrap();
        Anomaly {
            id: "x".into(),
            detector: detector.into(),
            service: service.into(),
            kind,
            account_id: "111122223333".into(),
            account_name: "sandbox-1".into(),
            environment: Environment::Sandbox,
            ou_path: vec![],
            region: region.into(),
            entity: vec![],
            window_start: start,
            window_end: start + chrono::Duration::minutes(10),
            observed_until: start + chrono::Duration::minutes(10),
            actual: 0.0,
            expected: 0.0,
            features: vec![],
            grade: 0.9,
            confidence: 0.5,
            score: 3.0,
            event_count: 1,
            top_contributors: vec![],
            detected_at: start,
            account: AccountMetadata::external("111122223333"),
        }
    }

    fn feat(name: &str, actual: f64, expected: f64) -> FeatureValue {
        FeatureValue {
            name: name.into(),
            actual,
            expected,
        }
    }

    fn contrib(dimension: &str, value: &str, share: f64) -> Contributor {
        Contributor {
            dimension: dimension.into(),
            value: value.into(),
            count: 1,
            share,
            baseline_count: 0,
            is_new: true,
        }
    }

    fn ec2(actual: f64, expected: f64, types: &[(&str, f64)], region: &str) -> Anomaly {
        let mut a = anomaly("ec2-run-instances", "ec2", AnomalyKind::Spike, region);
        a.actual = actual;
        a.expected = expected;
        a.features = vec![feat("instances", actual, expected)];
        a.top_contributors = types
            .iter()
            .map(|(t, s)| contrib("instance_type", t, *s))
            .collect();
        a.top_contributors
            .push(contrib("principal", "arn:aws:iam::1:user/x", 1.0));
        a
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    fn table() -> PriceTable {
        PriceTable::builtin().unwrap()
    }

    #[test]
    fn excess_gpu_instances_are_priced_from_the_table() {
        let t = table();
        let price = t.ec2_on_demand_hourly_us_east_1["p4d.24xlarge"];
        let c = cost_impact(&ec2(40.0, 2.0, &[("p4d.24xlarge", 1.0)], "us-east-1"), &t);
        assert!(close(c.usd_per_hour, 38.0 * price), "{c:?}");
        assert!(close(c.usd_per_day, 38.0 * price * 24.0));
        assert!(close(c.usd_per_30_days, 38.0 * price * 720.0));
        assert!(!c.estimated);
        assert_eq!(c.lines.len(), 1);
        let l = &c.lines[0];
        assert_eq!(
            (l.item.as_str(), l.quantity, l.unit.as_str()),
            ("p4d.24xlarge", 38.0, "instances")
        );
        assert!(l.basis.contains("p4d.24xlarge") && !l.estimated, "{l:?}");
        assert_eq!(c.price_table_as_of, t.as_of);
        let text = c.assumptions.join("\n");
        assert!(
            text.contains("the 38 instances above the usual 2 keep running"),
            "{text}"
        );
        assert!(
            text.contains("on-demand Linux prices, shared tenancy"),
            "{text}"
        );
        assert!(text.contains("p4d.24xlarge 100%"), "{text}");
        assert!(!text.contains("priced from us-east-1 ×"), "{text}");
    }

    #[test]
    fn the_mix_is_split_and_the_rest_priced_at_its_average() {
        let t = table();
        let a = ec2(
            22.0,
            2.0,
            &[("p4d.24xlarge", 0.5), ("g5.xlarge", 0.45)],
            "us-east-1",
        );
        let c = cost_impact(&a, &t);
        let p4d = t.ec2_on_demand_hourly_us_east_1["p4d.24xlarge"];
        let g5 = t.ec2_on_demand_hourly_us_east_1["g5.xlarge"];
        let avg = (0.5 * p4d + 0.45 * g5) / 0.95;
        let want = 20.0 * 0.5 * p4d + 20.0 * 0.45 * g5 + 20.0 * 0.05 * avg;
        assert!(close(c.usd_per_hour, want), "{} vs {want}", c.usd_per_hour);
        assert_eq!(c.lines.len(), 3);
        assert!(c.lines[2].estimated && c.estimated);
        assert!(close(c.lines[2].quantity, 1.0));
        let text = c.assumptions.join("\n");
        assert!(
            text.contains("instance types split as in the window's top contributors (p4d.24xlarge 50%, g5.xlarge 45%); the 5% not among them priced at the mix's average"),
            "{text}"
        );
    }

    #[test]
    fn unknown_types_are_estimated_and_flagged() {
        let t = table();
        let c = cost_impact(&ec2(10.0, 0.0, &[("m5.48xlarge", 1.0)], "us-east-1"), &t);
        assert!(c.estimated && c.lines[0].estimated);
        assert!(close(c.usd_per_hour, 10.0 * 0.096 * 96.0), "{c:?}");
        assert!(c.lines[0].basis.contains("family m5"), "{:?}", c.lines[0]);
        assert!(
            c.assumptions.iter().any(|s| s
                == "m5.48xlarge is not in the price table: estimated from its family and size"),
            "{:?}",
            c.assumptions
        );
    }

    #[test]
    fn other_regions_say_how_they_were_priced() {
        let t = table();
        let c = cost_impact(&ec2(10.0, 0.0, &[("c6i.large", 1.0)], "ap-southeast-1"), &t);
        assert!(close(c.usd_per_hour, 10.0 * 0.085 * 1.25), "{c:?}");
        assert!(c.estimated);
        assert!(
            c.assumptions
                .iter()
                .any(|s| s == "region ap-southeast-1 priced from us-east-1 × 1.25"),
            "{:?}",
            c.assumptions
        );

        let c = cost_impact(&ec2(10.0, 0.0, &[("c6i.large", 1.0)], "zz-fictional-1"), &t);
        assert!(
            c.assumptions
                .iter()
                .any(|s| s.contains("not in the price table") && s.contains("median")),
            "{:?}",
            c.assumptions
        );

        // With exact regional prices there is no multiplier to mention.
        let mut t = table();
        t.ec2_on_demand_hourly_by_region
            .entry("eu-west-1".into())
            .or_default()
            .insert("c6i.large".into(), 0.0952);
        let c = cost_impact(&ec2(10.0, 0.0, &[("c6i.large", 1.0)], "eu-west-1"), &t);
        assert!(close(c.usd_per_hour, 0.952) && !c.estimated, "{c:?}");
        assert!(
            !c.assumptions
                .iter()
                .any(|s| s.contains("priced from us-east-1")),
            "{:?}",
            c.assumptions
        );
    }

    #[test]
    fn a_new_region_counts_everything_as_excess() {
        let t = table();
        let mut a = ec2(14.0, 0.0, &[("g4dn.xlarge", 1.0)], "sa-east-1");
        a.kind = AnomalyKind::NewRegion;
        let c = cost_impact(&a, &t);
        let want = 14.0
            * t.ec2_on_demand_hourly_us_east_1["g4dn.xlarge"]
            * t.regional_multipliers["sa-east-1"];
        assert!(close(c.usd_per_hour, want), "{c:?}");
        assert!(
            c.assumptions[0].starts_with(
                "first activity in region sa-east-1: all 14 instances count as excess"
            ),
            "{:?}",
            c.assumptions
        );
    }

    #[test]
    fn no_recorded_types_are_priced_as_the_default_and_flagged() {
        let t = table();
        let c = cost_impact(&ec2(5.0, 1.0, &[], "us-east-1"), &t);
        assert!(close(c.usd_per_hour, 4.0 * 0.096) && c.estimated, "{c:?}");
        assert!(
            c.assumptions
                .iter()
                .any(|s| s.contains("records no instance types")),
            "{:?}",
            c.assumptions
        );
    }

    #[test]
    fn ebs_storage_is_priced_per_gib_month() {
        let t = table();
        let mut a = anomaly("ebs-create-volume", "ebs", AnomalyKind::Spike, "us-east-1");
        a.features = vec![feat("volumes", 12.0, 2.0), feat("gib", 6000.0, 1000.0)];
        a.top_contributors = vec![
            contrib("volume_type", "gp3", 0.75),
            contrib("volume_type", "io2", 0.25),
        ];
        let c = cost_impact(&a, &t);
        let want = (5000.0 * 0.75 * 0.08 + 5000.0 * 0.25 * 0.125) / 730.0;
        assert!(close(c.usd_per_hour, want), "{c:?}");
        assert!(close(c.usd_per_30_days, want * 720.0));
        assert_eq!(c.lines[0].item, "gp3 storage");
        assert_eq!(c.lines[0].unit, "GiB");
        assert!(close(c.lines[0].quantity, 3750.0));
        let text = c.assumptions.join("\n");
        assert!(
            text.contains("the 5000 GiB above the usual 1000 stay provisioned"),
            "{text}"
        );
        assert!(
            text.contains(
                "provisioned IOPS and gp3 throughput not counted: the detector does not record them"
            ),
            "{text}"
        );
        assert!(
            text.contains("by their share of the window's volumes (gp3 75%, io2 25%)"),
            "{text}"
        );
    }

    #[test]
    fn ebs_iops_are_priced_when_recorded() {
        let t = table();
        let mut a = anomaly("ebs-iops", "ebs", AnomalyKind::Spike, "us-east-1");
        a.features = vec![
            feat("volumes", 2.0, 0.0),
            feat("gib", 200.0, 0.0),
            feat("iops", 20000.0, 0.0),
        ];
        a.top_contributors = vec![
            contrib("volume_type", "io1", 0.5),
            contrib("volume_type", "gp3", 0.5),
        ];
        let c = cost_impact(&a, &t);
        let io1 = c
            .lines
            .iter()
            .find(|l| l.item == "io1 provisioned IOPS")
            .unwrap();
        assert!(
            close(io1.quantity, 10000.0) && close(io1.usd_per_hour, 10000.0 * 0.065 / 730.0),
            "{io1:?}"
        );
        // gp3: 10000 IOPS over one volume, 3000 included.
        let gp3 = c
            .lines
            .iter()
            .find(|l| l.item == "gp3 provisioned IOPS")
            .unwrap();
        assert!(
            close(gp3.quantity, 7000.0) && close(gp3.usd_per_hour, 7000.0 * 0.005 / 730.0),
            "{gp3:?}"
        );
        assert!(
            !c.assumptions
                .iter()
                .any(|s| s.contains("not counted: the detector"))
        );
    }

    #[test]
    fn ebs_without_volume_types_is_priced_as_gp2() {
        let t = table();
        let mut a = anomaly("ebs-create-volume", "ebs", AnomalyKind::Spike, "eu-west-1");
        a.features = vec![feat("volumes", 3.0, 0.0), feat("gib", 730.0, 0.0)];
        let c = cost_impact(&a, &t);
        assert!(close(c.usd_per_hour, 0.10 * 1.11), "{c:?}");
        assert!(c.assumptions.iter().any(|s| s.contains("priced as gp2")));
        assert!(
            c.assumptions
                .iter()
                .any(|s| s == "region eu-west-1 priced from us-east-1 × 1.11"),
            "{:?}",
            c.assumptions
        );
    }

    #[test]
    fn lambda_is_priced_per_request_and_gb_second() {
        let t = table();
        let mut a = anomaly("lambda-invoke", "lambda", AnomalyKind::Spike, "us-east-1");
        a.features = vec![feat("invocations", 60_100.0, 100.0)];
        let c = cost_impact(&a, &t);
        let l = &t.lambda_us_east_1;
        let per_hour = 60_000.0 * 6.0;
        let gbs = per_hour * l.assumed_memory_mb / 1024.0 * l.assumed_duration_ms / 1000.0;
        let want = per_hour * l.per_million_requests / 1e6 + gbs * l.per_gb_second_x86;
        assert!(close(c.usd_per_hour, want), "{} vs {want}", c.usd_per_hour);
        assert_eq!(c.lines.len(), 2);
        assert!(close(c.lines[0].quantity, per_hour) && !c.lines[0].estimated);
        assert!(close(c.lines[1].quantity, gbs) && c.lines[1].estimated);
        assert!(c.estimated);
        let text = c.assumptions.join("\n");
        assert!(
            text.contains(
                "the 60000 invocations above the usual 100 per 10 minutes go on at that rate"
            ),
            "{text}"
        );
        assert!(
            text.contains("that is 360000 invocations per hour"),
            "{text}"
        );
        assert!(text.contains("Lambda at 512 MB for 200 ms per invocation on x86 (memory and duration are not in the anomaly)"), "{text}");
    }

    #[test]
    fn lambda_with_a_broken_window_assumes_ten_minutes() {
        let t = table();
        let mut a = anomaly("lambda-invoke", "lambda", AnomalyKind::Spike, "eu-west-1");
        a.window_end = a.window_start;
        a.features = vec![feat("invocations", 1000.0, 0.0)];
        let c = cost_impact(&a, &t);
        assert!(close(c.lines[0].quantity, 6000.0), "{c:?}");
        assert!(
            c.assumptions
                .iter()
                .any(|s| s.contains("10 minutes assumed"))
        );
        assert!(
            c.assumptions
                .iter()
                .any(|s| s.contains("priced at us-east-1's rates"))
        );
    }

    #[test]
    fn drops_and_unknown_detectors_cost_nothing_and_say_why() {
        let t = table();
        let mut a = ec2(0.0, 30.0, &[], "us-east-1");
        a.kind = AnomalyKind::Drop;
        let c = cost_impact(&a, &t);
        assert_eq!((c.usd_per_hour, c.lines.len()), (0.0, 0));
        assert!(c.assumptions[0].contains("drop"), "{:?}", c.assumptions);

        let mut a = anomaly("access-denied", "iam", AnomalyKind::Spike, "us-east-1");
        a.features = vec![feat("failed_calls", 500.0, 3.0)];
        let c = cost_impact(&a, &t);
        assert_eq!(c.usd_per_hour, 0.0);
        assert!(
            c.assumptions[0].contains("no prices for service \"iam\""),
            "{:?}",
            c.assumptions
        );

        let mut a = anomaly("ec2-failures", "ec2", AnomalyKind::Spike, "us-east-1");
        a.features = vec![feat("failed_calls", 500.0, 3.0)];
        let c = cost_impact(&a, &t);
        assert_eq!(c.usd_per_hour, 0.0);
        assert!(
            c.assumptions[0].contains("counts failed_calls for ec2"),
            "{:?}",
            c.assumptions
        );

        // A spike in volumes with no more GiB than usual.
        let mut a = anomaly("ebs-create-volume", "ebs", AnomalyKind::Spike, "us-east-1");
        a.features = vec![feat("volumes", 4.0, 0.1), feat("gib", 8.0, 10.0)];
        let c = cost_impact(&a, &t);
        assert_eq!(c.usd_per_hour, 0.0);
        assert!(
            c.assumptions[0].contains("not above the usual 10"),
            "{:?}",
            c.assumptions
        );
    }

    #[test]
    fn old_anomalies_without_features_use_the_flat_values() {
        let t = table();
        let mut a = ec2(0.0, 0.0, &[("t3.micro", 1.0)], "us-east-1");
        a.features.clear();
        a.actual = 12.0;
        a.expected = 2.0;
        let c = cost_impact(&a, &t);
        assert!(close(c.usd_per_hour, 10.0 * 0.0104), "{c:?}");
    }

    #[test]
    fn garbage_never_makes_nan() {
        let t = table();
        for (actual, expected) in [
            (f64::NAN, 0.0),
            (f64::INFINITY, 0.0),
            (f64::MAX, 0.0),
            (5.0, f64::NAN),
            (-5.0, -10.0),
            (0.0, 0.0),
        ] {
            let a = ec2(
                actual,
                expected,
                &[("p5.48xlarge", f64::NAN), ("p4d.24xlarge", 7.0), ("", 0.5)],
                "",
            );
            let c = cost_impact(&a, &t);
            for v in [c.usd_per_hour, c.usd_per_day, c.usd_per_30_days] {
                assert!(v.is_finite() && v >= 0.0, "{actual} {expected}: {c:?}");
            }
        }
    }

    fn any_kind() -> impl Strategy<Value = AnomalyKind> {
        prop_oneof![
            Just(AnomalyKind::Spike),
            Just(AnomalyKind::Drop),
            Just(AnomalyKind::NewRegion)
        ]
    }

    fn any_f64() -> impl Strategy<Value = f64> {
        prop_oneof![
            4 => 0.0..1e4f64,
            1 => proptest::num::f64::ANY,
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
            1 => Just(-1.0),
        ]
    }

    proptest! {
        #[test]
        fn costs_are_always_finite_and_non_negative(
            kind in any_kind(),
            which in 0usize..4,
            actual in any_f64(),
            expected in any_f64(),
            second in any_f64(),
            shares in proptest::collection::vec((0usize..6, any_f64()), 0..5),
            region in prop_oneof![Just("us-east-1"), Just("eu-west-1"), Just(""), Just("zz-9")],
            window_minutes in -20i64..120,
        ) {
            let t = table();
            let (detector, service, names, dim) = [
                ("ec2-run-instances", "ec2", ["instances", "x"], "instance_type"),
                ("ebs-create-volume", "ebs", ["gib", "iops"], "volume_type"),
                ("lambda-invoke", "lambda", ["invocations", "x"], "function"),
                ("custom", "s3", ["objects", "x"], "bucket"),
            ][which];
            let values = ["p4d.24xlarge", "m5.48xlarge", "gp3", "io2", "zz.9xlarge", "f"];
            let mut a = anomaly(detector, service, kind, region);
            a.window_end = a.window_start + chrono::Duration::minutes(window_minutes);
            a.features = vec![feat(names[0], actual, expected), feat(names[1], second, expected)];
            a.top_contributors = shares.iter().map(|(i, s)| contrib(dim, values[*i], *s)).collect();
            let c = cost_impact(&a, &t);
            for v in [c.usd_per_hour, c.usd_per_day, c.usd_per_30_days] {
                prop_assert!(v.is_finite() && v >= 0.0, "{:?}", c);
            }
            for l in &c.lines {
                prop_assert!(l.quantity.is_finite() && l.quantity >= 0.0, "{:?}", l);
                prop_assert!(l.usd_per_hour.is_finite() && l.usd_per_hour >= 0.0, "{:?}", l);
            }
            prop_assert!(!c.assumptions.is_empty());
            if kind == AnomalyKind::Drop {
                prop_assert_eq!(c.usd_per_hour, 0.0);
            }
        }
    }
}
