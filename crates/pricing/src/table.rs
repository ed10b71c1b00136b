//! The price table: what launched or invoked resources cost per hour.
//!
//! The table ships as `data/prices.json` (source and date inside) and can be
//! replaced by a file of the same shape (`trailhound prices update` writes
//! one from the AWS Price List). It is keyed on us-east-1 because that is
//! the region every AWS price page leads with and the one a person can check
//! by hand; other regions are us-east-1 times a per-region multiplier unless
//! the table carries exact per-region prices (the `*_by_region` maps, which
//! `prices update` fills). Every price says how it was found, so a cost
//! estimate can state its basis instead of pretending to be exact.
//!
//! Unknown instance types are estimated from their family and size and
//! flagged as estimates, never silently priced at zero: an attacker's
//! favourite GPU type is often newer than the table.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The table as shipped.
pub const BUILTIN: &str = include_str!("../../../data/prices.json");

/// The region all `*_us_east_1` prices are for.
pub const BASE_REGION: &str = "us-east-1";

/// Hours in the month AWS bills storage by (365 × 24 / 12).
pub const HOURS_PER_MONTH: f64 = 730.0;

/// Lambda prices in one region.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LambdaRates {
    pub per_million_requests: f64,
    pub per_gb_second_x86: f64,
    pub per_gb_second_arm: f64,
}

/// Lambda prices in us-east-1 and what an invocation is assumed to use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LambdaPrices {
    pub per_million_requests: f64,
    pub per_gb_second_x86: f64,
    pub per_gb_second_arm: f64,
    /// Used when the anomaly does not say: most functions run far below the
    /// maximum, so the estimate is stated with these assumptions.
    pub assumed_memory_mb: f64,
    pub assumed_duration_ms: f64,
}

impl LambdaPrices {
    pub fn rates(&self) -> LambdaRates {
        LambdaRates {
            per_million_requests: self.per_million_requests,
            per_gb_second_x86: self.per_gb_second_x86,
            per_gb_second_arm: self.per_gb_second_arm,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    pub source: String,
    pub as_of: String,
    pub currency: String,
    /// Region → price relative to us-east-1, for regions without exact
    /// prices.
    pub regional_multipliers: BTreeMap<String, f64>,
    /// Instance type → $/hour, on-demand Linux, shared tenancy.
    pub ec2_on_demand_hourly_us_east_1: BTreeMap<String, f64>,
    /// Volume type (`volumeApiName`) → $/GiB-month.
    pub ebs_gib_month_us_east_1: BTreeMap<String, f64>,
    /// `io1`, `io2` (first tier) and `gp3_above_3000` → $/IOPS-month.
    pub ebs_provisioned_iops_month_us_east_1: BTreeMap<String, f64>,
    /// gp3 throughput above the included 125 MiB/s, $/(MiB/s)-month.
    pub ebs_gp3_throughput_mibps_month_us_east_1: f64,
    pub lambda_us_east_1: LambdaPrices,
    /// Exact per-region EC2 prices (from `prices update`); region → type → $/h.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ec2_on_demand_hourly_by_region: BTreeMap<String, BTreeMap<String, f64>>,
    /// Exact per-region EBS storage prices; region → volume type → $/GiB-month.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ebs_gib_month_by_region: BTreeMap<String, BTreeMap<String, f64>>,
    /// Exact per-region provisioned IOPS prices; region → key → $/IOPS-month.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ebs_provisioned_iops_month_by_region: BTreeMap<String, BTreeMap<String, f64>>,
    /// Exact per-region gp3 throughput prices; region → $/(MiB/s)-month.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ebs_gp3_throughput_mibps_month_by_region: BTreeMap<String, f64>,
    /// Exact per-region Lambda prices.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lambda_by_region: BTreeMap<String, LambdaRates>,
}

#[derive(Debug, thiserror::Error)]
pub enum PriceError {
    #[error("failed to read price table {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("price table {path} is not valid: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error(
        "price table {path}: {table} row {key:?} has price {value}, which is not a finite non-negative number"
    )]
    BadRow {
        path: String,
        table: &'static str,
        key: String,
        value: f64,
    },
    #[error("price table {path}: {field} is {value}, which is not a finite positive number")]
    BadAssumption {
        path: String,
        field: &'static str,
        value: f64,
    },
}

/// How a price was found. For EC2 the price is per instance-hour; for EBS
/// storage per GiB-hour; for provisioned IOPS per IOPS-hour.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HourlyPrice {
    pub usd_per_hour: f64,
    /// False when exact for the type and region.
    pub estimated: bool,
    /// How it was derived, for the assumptions list.
    pub basis: String,
}

/// How a region's prices relate to us-east-1's.
#[derive(Clone, Debug, PartialEq)]
pub struct RegionFactor {
    pub factor: f64,
    /// False when the region is not in the table and the median of the known
    /// regions stands in for it.
    pub known: bool,
}

impl RegionFactor {
    /// Words for the assumptions list ("region ap-southeast-1 priced from
    /// us-east-1 × 1.25").
    pub fn describe(&self, region: &str) -> String {
        if self.known {
            format!(
                "region {region} priced from {BASE_REGION} × {:.2}",
                self.factor
            )
        } else {
            format!(
                "region {region:?} is not in the price table: priced from {BASE_REGION} × {:.2}, the median regional factor",
                self.factor
            )
        }
    }
}

/// Size units relative to `large` (2 vCPU on most families): `xlarge` is 2,
/// `24xlarge` 48, `48xlarge` 96. None for bare metal, whose size the name
/// does not tell (`metal-24xl` and `metal-48xl` do).
pub fn size_units(size: &str) -> Option<f64> {
    Some(match size {
        "nano" => 0.0625,
        "micro" => 0.125,
        "small" => 0.25,
        "medium" => 0.5,
        "large" => 1.0,
        "xlarge" => 2.0,
        s => {
            if let Some(n) = s.strip_prefix("metal-").and_then(|s| s.strip_suffix("xl")) {
                return n.parse::<f64>().ok().map(|n| 2.0 * n);
            }
            let n: f64 = s.strip_suffix("xlarge")?.parse().ok()?;
            if !n.is_finite() || n <= 0.0 {
                return None;
            }
            2.0 * n
        }
    })
}

fn split_type(t: &str) -> Option<(&str, &str)> {
    t.split_once('.')
}

/// The class letters of a family: `p` for `p4d`, `inf` for `inf2`.
fn class_of(family: &str) -> &str {
    let end = family
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(family.len());
    &family[..end]
}

fn check_map(path: &str, table: &'static str, m: &BTreeMap<String, f64>) -> Result<(), PriceError> {
    for (k, v) in m {
        check_value(path, table, k, *v)?;
    }
    Ok(())
}

fn check_value(path: &str, table: &'static str, key: &str, v: f64) -> Result<(), PriceError> {
    if !v.is_finite() || v < 0.0 {
        return Err(PriceError::BadRow {
            path: path.to_string(),
            table,
            key: key.to_string(),
            value: v,
        });
    }
    Ok(())
}

impl PriceTable {
    pub fn builtin() -> Result<Self, PriceError> {
        Self::parse(BUILTIN, "builtin data/prices.json")
    }

    pub fn load(path: &Path) -> Result<Self, PriceError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PriceError::Read {
            path: p.clone(),
            source,
        })?;
        Self::parse(&text, &p)
    }

    /// Parses and validates a table; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Self, PriceError> {
        let t: PriceTable = serde_json::from_str(text).map_err(|source| PriceError::Parse {
            path: path.to_string(),
            source,
        })?;
        t.validate(path)?;
        Ok(t)
    }

    /// Checks that every price is a finite non-negative number and that the
    /// Lambda assumptions are positive. JSON has no NaN, but a table built in
    /// code (or a number too large for f64) can still be wrong.
    pub fn validate(&self, path: &str) -> Result<(), PriceError> {
        check_map(path, "regional_multipliers", &self.regional_multipliers)?;
        check_map(
            path,
            "ec2_on_demand_hourly_us_east_1",
            &self.ec2_on_demand_hourly_us_east_1,
        )?;
        check_map(
            path,
            "ebs_gib_month_us_east_1",
            &self.ebs_gib_month_us_east_1,
        )?;
        check_map(
            path,
            "ebs_provisioned_iops_month_us_east_1",
            &self.ebs_provisioned_iops_month_us_east_1,
        )?;
        check_value(
            path,
            "ebs_gp3_throughput_mibps_month_us_east_1",
            "gp3",
            self.ebs_gp3_throughput_mibps_month_us_east_1,
        )?;
        let l = &self.lambda_us_east_1;
        for (k, v) in [
            ("per_million_requests", l.per_million_requests),
            ("per_gb_second_x86", l.per_gb_second_x86),
            ("per_gb_second_arm", l.per_gb_second_arm),
        ] {
            check_value(path, "lambda_us_east_1", k, v)?;
        }
        for (field, v) in [
            ("lambda_us_east_1.assumed_memory_mb", l.assumed_memory_mb),
            (
                "lambda_us_east_1.assumed_duration_ms",
                l.assumed_duration_ms,
            ),
        ] {
            if !v.is_finite() || v <= 0.0 {
                return Err(PriceError::BadAssumption {
                    path: path.to_string(),
                    field,
                    value: v,
                });
            }
        }
        for (region, m) in &self.ec2_on_demand_hourly_by_region {
            for (k, v) in m {
                check_value(
                    path,
                    "ec2_on_demand_hourly_by_region",
                    &format!("{region}/{k}"),
                    *v,
                )?;
            }
        }
        for (region, m) in &self.ebs_gib_month_by_region {
            for (k, v) in m {
                check_value(
                    path,
                    "ebs_gib_month_by_region",
                    &format!("{region}/{k}"),
                    *v,
                )?;
            }
        }
        for (region, m) in &self.ebs_provisioned_iops_month_by_region {
            for (k, v) in m {
                check_value(
                    path,
                    "ebs_provisioned_iops_month_by_region",
                    &format!("{region}/{k}"),
                    *v,
                )?;
            }
        }
        check_map(
            path,
            "ebs_gp3_throughput_mibps_month_by_region",
            &self.ebs_gp3_throughput_mibps_month_by_region,
        )?;
        for (region, r) in &self.lambda_by_region {
            for (k, v) in [
                ("per_million_requests", r.per_million_requests),
                ("per_gb_second_x86", r.per_gb_second_x86),
                ("per_gb_second_arm", r.per_gb_second_arm),
            ] {
                check_value(path, "lambda_by_region", &format!("{region}/{k}"), v)?;
            }
        }
        Ok(())
    }

    /// The table as pretty JSON, the shape `parse` reads.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    /// The regions the table knows a multiplier or exact prices for.
    pub fn regions(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .regional_multipliers
            .keys()
            .chain(self.ec2_on_demand_hourly_by_region.keys())
            .cloned()
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// The regional multiplier, and whether the region was known.
    pub fn region_factor(&self, region: &str) -> RegionFactor {
        if region == BASE_REGION {
            return RegionFactor {
                factor: 1.0,
                known: true,
            };
        }
        match self.regional_multipliers.get(region) {
            Some(f) => RegionFactor {
                factor: *f,
                known: true,
            },
            None => {
                // Unknown (new, or fictional as in anonymised trails): the
                // median of known regions, flagged.
                let mut v: Vec<f64> = self.regional_multipliers.values().copied().collect();
                v.sort_by(f64::total_cmp);
                RegionFactor {
                    factor: v.get(v.len() / 2).copied().unwrap_or(1.0),
                    known: false,
                }
            }
        }
    }

    /// $/hour of one on-demand Linux instance of `instance_type` in `region`.
    ///
    /// Exact when the table has the type for the region (or for us-east-1
    /// when the region is us-east-1); otherwise us-east-1 times the regional
    /// multiplier; for a type not in the table, the family's price per size
    /// unit (else the class's, else all types') times the size.
    pub fn ec2_hourly(&self, instance_type: &str, region: &str) -> HourlyPrice {
        if let Some(p) = self
            .ec2_on_demand_hourly_by_region
            .get(region)
            .and_then(|m| m.get(instance_type))
        {
            return HourlyPrice {
                usd_per_hour: *p,
                estimated: false,
                basis: format!("{instance_type} in {region}: ${p}/h (price list)"),
            };
        }
        let rf = self.region_factor(region);
        let factor = rf.factor;
        let region_note = if region == BASE_REGION {
            String::new()
        } else if rf.known {
            format!(" × {factor:.2} for {region}")
        } else {
            format!(" × {factor:.2} (median regional factor: region {region:?} unknown)")
        };
        if let Some(p) = self.ec2_on_demand_hourly_us_east_1.get(instance_type) {
            return HourlyPrice {
                usd_per_hour: p * factor,
                estimated: region != BASE_REGION,
                basis: format!("{instance_type}: ${p}/h in {BASE_REGION}{region_note}"),
            };
        }
        let (family, size) = split_type(instance_type).unwrap_or((instance_type, "large"));
        // Price per size unit in the same family, else the same class
        // letters (p, g, m, c, r ...), else all types.
        let per_unit = |pred: &dyn Fn(&str) -> bool| -> Option<f64> {
            let v: Vec<f64> = self
                .ec2_on_demand_hourly_us_east_1
                .iter()
                .filter_map(|(t, p)| {
                    let (f, s) = split_type(t)?;
                    pred(f).then_some(())?;
                    Some(p / size_units(s)?)
                })
                .collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        let class = class_of(family);
        let (rate, how) = per_unit(&|f| f == family)
            .map(|r| (r, format!("family {family}")))
            .or_else(|| {
                per_unit(&|f| !class.is_empty() && class_of(f) == class)
                    .map(|r| (r, format!("class {class}")))
            })
            .or_else(|| per_unit(&|_| true).map(|r| (r, "all families".to_string())))
            .unwrap_or((0.1, "a default".to_string()));
        let units = size_units(size).unwrap_or_else(|| {
            // Bare metal is the family's largest size; 24xlarge when the
            // family is unknown.
            self.ec2_on_demand_hourly_us_east_1
                .keys()
                .filter_map(|t| {
                    split_type(t)
                        .filter(|(f, _)| *f == family)
                        .and_then(|(_, s)| size_units(s))
                })
                .reduce(f64::max)
                .unwrap_or(48.0)
        });
        HourlyPrice {
            usd_per_hour: rate * units * factor,
            estimated: true,
            basis: format!(
                "{instance_type} not in the price table: estimated from {how} at ${rate:.4}/h per size unit (large = 1) × {units} units{region_note}"
            ),
        }
    }

    /// $/GiB-hour of an EBS volume type in a region (gp2 when unknown).
    pub fn ebs_gib_month(&self, volume_type: &str, region: &str) -> HourlyPrice {
        if let Some(p) = self
            .ebs_gib_month_by_region
            .get(region)
            .and_then(|m| m.get(volume_type))
        {
            return HourlyPrice {
                usd_per_hour: p / HOURS_PER_MONTH,
                estimated: false,
                basis: format!("{volume_type} in {region}: ${p}/GiB-month (price list) ÷ 730 h"),
            };
        }
        let rf = self.region_factor(region);
        let region_note = if region == BASE_REGION {
            String::new()
        } else {
            format!(" × {:.2} for {region}", rf.factor)
        };
        match self.ebs_gib_month_us_east_1.get(volume_type) {
            Some(p) => HourlyPrice {
                usd_per_hour: p * rf.factor / HOURS_PER_MONTH,
                estimated: region != BASE_REGION,
                basis: format!(
                    "{volume_type}: ${p}/GiB-month in {BASE_REGION}{region_note} ÷ 730 h"
                ),
            },
            None => {
                let p = self
                    .ebs_gib_month_us_east_1
                    .get("gp2")
                    .copied()
                    .unwrap_or(0.10);
                HourlyPrice {
                    usd_per_hour: p * rf.factor / HOURS_PER_MONTH,
                    estimated: true,
                    basis: format!(
                        "volume type {volume_type:?} unknown: priced as gp2 at ${p}/GiB-month{region_note} ÷ 730 h"
                    ),
                }
            }
        }
    }

    /// $/IOPS-hour of provisioned IOPS (`io1`, `io2`, `gp3_above_3000`) in a
    /// region; None for a key the table does not price.
    pub fn ebs_iops_month(&self, key: &str, region: &str) -> Option<HourlyPrice> {
        if let Some(p) = self
            .ebs_provisioned_iops_month_by_region
            .get(region)
            .and_then(|m| m.get(key))
        {
            return Some(HourlyPrice {
                usd_per_hour: p / HOURS_PER_MONTH,
                estimated: false,
                basis: format!("{key} in {region}: ${p}/IOPS-month (price list) ÷ 730 h"),
            });
        }
        let p = self.ebs_provisioned_iops_month_us_east_1.get(key)?;
        let rf = self.region_factor(region);
        let region_note = if region == BASE_REGION {
            String::new()
        } else {
            format!(" × {:.2} for {region}", rf.factor)
        };
        Some(HourlyPrice {
            usd_per_hour: p * rf.factor / HOURS_PER_MONTH,
            estimated: region != BASE_REGION,
            basis: format!("{key}: ${p}/IOPS-month in {BASE_REGION}{region_note} ÷ 730 h"),
        })
    }

    /// Lambda prices in a region: exact when the table has the region, else
    /// us-east-1's (Lambda is priced the same in most regions, unlike EC2, so
    /// no multiplier), flagged as estimated. The string is the basis.
    pub fn lambda_rates(&self, region: &str) -> (LambdaRates, bool, String) {
        if let Some(r) = self.lambda_by_region.get(region) {
            return (
                r.clone(),
                false,
                format!("Lambda prices for {region} (price list)"),
            );
        }
        let r = self.lambda_us_east_1.rates();
        if region == BASE_REGION {
            (r, false, format!("Lambda prices for {BASE_REGION}"))
        } else {
            (
                r,
                true,
                format!(
                    "Lambda prices for {region} taken from {BASE_REGION} (the same in most regions)"
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_table_loads_and_has_the_families() {
        let t = PriceTable::builtin().unwrap();
        for ty in [
            "m5.large",
            "m6i.xlarge",
            "m7i.2xlarge",
            "m6g.large",
            "m7g.large",
            "t3.micro",
            "t4g.small",
            "c5.large",
            "c6i.xlarge",
            "c7i.2xlarge",
            "c6g.large",
            "c7g.xlarge",
            "r5.2xlarge",
            "r6i.large",
            "r7i.large",
            "r6g.large",
            "x2idn.16xlarge",
            "p3.2xlarge",
            "p4d.24xlarge",
            "p5.48xlarge",
            "g4dn.xlarge",
            "g5.12xlarge",
            "g6.xlarge",
            "inf2.xlarge",
            "trn1.32xlarge",
        ] {
            assert!(t.ec2_on_demand_hourly_us_east_1.contains_key(ty), "{ty}");
        }
        for v in ["gp2", "gp3", "io1", "io2", "st1", "sc1", "standard"] {
            assert!(t.ebs_gib_month_us_east_1.contains_key(v), "{v}");
        }
        for r in [
            "us-east-1",
            "us-east-2",
            "us-west-2",
            "eu-west-1",
            "eu-central-1",
            "ap-southeast-1",
            "ap-northeast-1",
        ] {
            assert!(t.regional_multipliers.contains_key(r), "{r}");
        }
        assert!(!t.source.is_empty() && !t.as_of.is_empty());
    }

    #[test]
    fn sizes_within_a_family_are_proportional_in_the_shipped_table() {
        // A typo in a hand-transcribed row shows up as a size whose price per
        // unit strays from its family's. GPU families are not linear (g5.12xlarge
        // has four GPUs, g5.16xlarge one), so only CPU families are checked.
        let t = PriceTable::builtin().unwrap();
        let mut by_family: BTreeMap<&str, Vec<(&str, f64)>> = BTreeMap::new();
        for (ty, p) in &t.ec2_on_demand_hourly_us_east_1 {
            let (f, s) = split_type(ty).unwrap();
            if let Some(u) = size_units(s) {
                by_family.entry(f).or_default().push((ty, p / u));
            }
        }
        for f in [
            "m5", "m6i", "m7i", "m6g", "m7g", "c5", "c6i", "c7i", "c6g", "c7g", "r5", "r6i", "r7i",
            "r6g", "r7g",
        ] {
            let v = &by_family[f];
            let first = v[0].1;
            for (ty, per) in v {
                assert!(
                    (per / first - 1.0).abs() < 0.02,
                    "{ty}: {per} per unit vs {first}"
                );
            }
        }
    }

    #[test]
    fn known_types_are_exact_in_us_east_1_and_scaled_elsewhere() {
        let t = PriceTable::builtin().unwrap();
        let base = t.ec2_on_demand_hourly_us_east_1["p4d.24xlarge"];
        let p = t.ec2_hourly("p4d.24xlarge", "us-east-1");
        assert!(
            (p.usd_per_hour - base).abs() < 1e-9 && !p.estimated,
            "{p:?}"
        );
        let p = t.ec2_hourly("p4d.24xlarge", "ap-southeast-1");
        let f = t.regional_multipliers["ap-southeast-1"];
        assert!(
            (p.usd_per_hour - base * f).abs() < 1e-9 && p.estimated,
            "{p:?}"
        );
        assert!(p.basis.contains("× 1.25 for ap-southeast-1"), "{p:?}");
    }

    #[test]
    fn exact_regional_prices_win_over_the_multiplier() {
        let mut t = PriceTable::builtin().unwrap();
        t.ec2_on_demand_hourly_by_region
            .entry("eu-west-1".into())
            .or_default()
            .insert("m5.large".into(), 0.107);
        let p = t.ec2_hourly("m5.large", "eu-west-1");
        assert_eq!(p.usd_per_hour, 0.107);
        assert!(!p.estimated && p.basis.contains("price list"), "{p:?}");
    }

    #[test]
    fn unknown_types_are_estimated_from_family_and_size() {
        let t = PriceTable::builtin().unwrap();
        // Sizes count in units of `large`: 48xlarge is 96 units (192 vCPU),
        // twice a 24xlarge and 24 times a 2xlarge. m5 costs $0.096/h per unit
        // (m5.large), so a hypothetical m5.48xlarge is 96 × 0.096 = 0.384 × 24.
        let p = t.ec2_hourly("m5.48xlarge", "us-east-1");
        assert!(p.estimated);
        assert!((p.usd_per_hour - 0.096 * 96.0).abs() < 0.01, "{p:?}");
        assert!((p.usd_per_hour - 0.384 * 24.0).abs() < 0.01, "{p:?}");
        assert!(p.basis.contains("family m5"), "{p:?}");
        // An unknown GPU family is priced like other p-class GPUs, not like a t3.
        let p = t.ec2_hourly("p9.24xlarge", "us-east-1");
        assert!(
            p.usd_per_hour > 10.0 && p.basis.contains("class p"),
            "{p:?}"
        );
        // Bare metal is the family's largest known size.
        let p = t.ec2_hourly("c7i.metal", "us-east-1");
        let largest = t.ec2_on_demand_hourly_us_east_1["c7i.48xlarge"];
        assert!(
            p.estimated && (p.usd_per_hour - largest).abs() < 0.01,
            "{p:?}"
        );
        // Nonsense still gets a finite, flagged price.
        for ty in [
            "",
            ".",
            "zz",
            "zz.huge",
            "m5.0xlarge",
            "m5.-1xlarge",
            "m5.NaNxlarge",
            "m5.infxlarge",
        ] {
            let p = t.ec2_hourly(ty, "nowhere-1");
            assert!(
                p.usd_per_hour.is_finite() && p.usd_per_hour >= 0.0 && p.estimated,
                "{ty}: {p:?}"
            );
        }
    }

    #[test]
    fn unknown_regions_use_the_median_factor_and_say_so() {
        let t = PriceTable::builtin().unwrap();
        let rf = t.region_factor("xx-nowhere-9");
        assert!(!rf.known && rf.factor >= 1.0);
        assert!(rf.describe("xx-nowhere-9").contains("median"));
        let p = t.ec2_hourly("m5.large", "xx-nowhere-9");
        assert!(p.estimated && p.basis.contains("median"), "{p:?}");
    }

    #[test]
    fn ebs_and_lambda_lookups() {
        let t = PriceTable::builtin().unwrap();
        let p = t.ebs_gib_month("gp3", "us-east-1");
        assert!((p.usd_per_hour - 0.08 / 730.0).abs() < 1e-12 && !p.estimated);
        let p = t.ebs_gib_month("gp9", "us-east-1");
        assert!(p.estimated && p.basis.contains("gp2"));
        assert!(t.ebs_iops_month("io2", "us-east-1").is_some());
        assert!(t.ebs_iops_month("st1", "us-east-1").is_none());
        let (r, est, _) = t.lambda_rates("us-east-1");
        assert!(!est && r.per_million_requests > 0.0);
        let (_, est, basis) = t.lambda_rates("eu-west-1");
        assert!(est && basis.contains("us-east-1"));
    }

    #[test]
    fn a_bad_row_is_a_clear_error() {
        let mut v: serde_json::Value = serde_json::from_str(BUILTIN).unwrap();
        v["ec2_on_demand_hourly_us_east_1"]["m5.large"] = serde_json::json!(-1.0);
        let err = PriceTable::parse(&v.to_string(), "x.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("m5.large")
                && err.contains("x.json")
                && err.contains("ec2_on_demand_hourly_us_east_1"),
            "{err}"
        );

        // A string where a number belongs: serde names the place.
        let mut v: serde_json::Value = serde_json::from_str(BUILTIN).unwrap();
        v["ebs_gib_month_us_east_1"]["gp3"] = serde_json::json!("0.08");
        let err = PriceTable::parse(&v.to_string(), "y.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("y.json") && err.contains("invalid type"),
            "{err}"
        );

        // JSON has no NaN; a number too large for f64 is refused by the
        // parser, with the place.
        let text = BUILTIN.replacen("\"gp3\": 0.08", "\"gp3\": 1e999", 1);
        assert_ne!(text, BUILTIN);
        let err = PriceTable::parse(&text, "z.json").unwrap_err().to_string();
        assert!(
            err.contains("z.json") && err.contains("out of range") && err.contains("line"),
            "{err}"
        );

        // A table built in code is checked the same way.
        let mut t = PriceTable::builtin().unwrap();
        t.ec2_on_demand_hourly_by_region
            .entry("eu-west-1".into())
            .or_default()
            .insert("m5.large".into(), f64::NAN);
        let err = t.validate("built").unwrap_err().to_string();
        assert!(
            err.contains("eu-west-1/m5.large") && err.contains("ec2_on_demand_hourly_by_region"),
            "{err}"
        );

        let mut t = PriceTable::builtin().unwrap();
        t.lambda_us_east_1.assumed_memory_mb = 0.0;
        let err = t.validate("built").unwrap_err().to_string();
        assert!(err.contains("assumed_memory_mb"), "{err}");

        let err = PriceTable::parse(
            &BUILTIN.replacen("\"currency\"", "\"currencyy\"", 1),
            "w.json",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("currencyy"), "{err}");
    }

    #[test]
    fn the_table_round_trips_through_json() {
        let mut t = PriceTable::builtin().unwrap();
        t.lambda_by_region.insert(
            "eu-west-1".into(),
            LambdaRates {
                per_million_requests: 0.2,
                per_gb_second_x86: 0.0000166667,
                per_gb_second_arm: 0.0000133334,
            },
        );
        let back = PriceTable::parse(&t.to_json().unwrap(), "round trip").unwrap();
        assert_eq!(back, t);
    }
}
