//! Putting the offers' prices into a copy of the price table, exact where
//! the files cover a region and scaled from us-east-1 where they do not.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::{OfferError, OfferFile, OfferPrices, RegionSet, read_offer_file};
use crate::table::{BASE_REGION, LambdaRates, PriceTable};

/// Builds a price table from offer files on disk, starting from `base`
/// (the shipped table, or the one being replaced): exact prices for every
/// region in `regions` (all in the files when empty) that the files cover.
pub fn from_offer_files<P: AsRef<Path>>(
    paths: &[P],
    regions: &RegionSet,
    base: &PriceTable,
) -> Result<PriceTable, OfferError> {
    let mut offers = Vec::new();
    for p in paths {
        match read_offer_file(p.as_ref(), regions)? {
            OfferFile::Prices(o) => offers.push(o),
            OfferFile::RegionIndex(i) => return Err(OfferError::RegionIndex { name: i.name }),
        }
    }
    merge_offers(base, &offers, regions)
}

fn extend_prices(into: &mut BTreeMap<String, f64>, from: &BTreeMap<String, f64>) {
    for (k, v) in from {
        into.insert(k.clone(), *v);
    }
}

/// The median of `region`'s prices relative to us-east-1's over the types
/// both have; None with fewer than 3 in common.
fn median_ratio(base: &BTreeMap<String, f64>, region: &BTreeMap<String, f64>) -> Option<f64> {
    let mut r: Vec<f64> = region
        .iter()
        .filter_map(|(k, v)| base.get(k).filter(|b| **b > 0.0).map(|b| v / b))
        .filter(|x| x.is_finite() && *x > 0.0)
        .collect();
    if r.len() < 3 {
        return None;
    }
    r.sort_by(f64::total_cmp);
    let mid = r.len() / 2;
    let m = if r.len().is_multiple_of(2) {
        (r[mid - 1] + r[mid]) / 2.0
    } else {
        r[mid]
    };
    Some((m * 1000.0).round() / 1000.0)
}

/// Puts the offers' prices into a copy of `base`: us-east-1 prices replace
/// the base table's, other regions become exact per-region prices, the
/// regional multipliers of those regions are recomputed from them (for
/// types a region's file lacks), and `source` and `as_of` say where it all
/// came from (`as_of` is the oldest publication date).
pub fn merge_offers(
    base: &PriceTable,
    offers: &[OfferPrices],
    regions: &RegionSet,
) -> Result<PriceTable, OfferError> {
    if offers.iter().all(OfferPrices::is_empty) {
        return Err(OfferError::Empty {
            regions: if regions.is_empty() {
                "all".to_string()
            } else {
                regions.iter().cloned().collect::<Vec<_>>().join(", ")
            },
        });
    }
    let mut t = base.clone();
    for o in offers {
        for (region, m) in &o.ec2_hourly {
            if region == BASE_REGION {
                extend_prices(&mut t.ec2_on_demand_hourly_us_east_1, m);
            } else {
                extend_prices(
                    t.ec2_on_demand_hourly_by_region
                        .entry(region.clone())
                        .or_default(),
                    m,
                );
            }
        }
        for (region, m) in &o.ebs_gib_month {
            if region == BASE_REGION {
                extend_prices(&mut t.ebs_gib_month_us_east_1, m);
            } else {
                extend_prices(
                    t.ebs_gib_month_by_region.entry(region.clone()).or_default(),
                    m,
                );
            }
        }
        for (region, m) in &o.ebs_iops_month {
            if region == BASE_REGION {
                extend_prices(&mut t.ebs_provisioned_iops_month_us_east_1, m);
            } else {
                extend_prices(
                    t.ebs_provisioned_iops_month_by_region
                        .entry(region.clone())
                        .or_default(),
                    m,
                );
            }
        }
        for (region, v) in &o.gp3_throughput_mibps_month {
            if region == BASE_REGION {
                t.ebs_gp3_throughput_mibps_month_us_east_1 = *v;
            } else {
                t.ebs_gp3_throughput_mibps_month_by_region
                    .insert(region.clone(), *v);
            }
        }
        for (region, l) in &o.lambda {
            // A region needs the request and x86 duration prices; ARM, when
            // missing, is priced as x86 (never cheaper, so never understated).
            let (Some(req), Some(x86)) = (l.per_request.or(l.per_request_arm), l.per_gb_second_x86)
            else {
                continue;
            };
            let rates = LambdaRates {
                // $0.0000002 × 1e6 is 0.19999999999999998 in binary.
                per_million_requests: (req * 1e6 * 1e6).round() / 1e6,
                per_gb_second_x86: x86,
                per_gb_second_arm: l.per_gb_second_arm.unwrap_or(x86),
            };
            if region == BASE_REGION {
                t.lambda_us_east_1.per_million_requests = rates.per_million_requests;
                t.lambda_us_east_1.per_gb_second_x86 = rates.per_gb_second_x86;
                t.lambda_us_east_1.per_gb_second_arm = rates.per_gb_second_arm;
            } else {
                t.lambda_by_region.insert(region.clone(), rates);
            }
        }
    }
    let mut recomputed = Vec::new();
    for (region, m) in &t.ec2_on_demand_hourly_by_region {
        if let Some(f) = median_ratio(&t.ec2_on_demand_hourly_us_east_1, m) {
            t.regional_multipliers.insert(region.clone(), f);
            recomputed.push(region.clone());
        }
    }
    let mut described = Vec::new();
    let mut dates: Vec<&str> = Vec::new();
    for o in offers.iter().filter(|o| !o.is_empty()) {
        let mut covered: BTreeSet<&str> = BTreeSet::new();
        covered.extend(o.ec2_hourly.keys().map(String::as_str));
        covered.extend(o.ebs_gib_month.keys().map(String::as_str));
        covered.extend(o.lambda.keys().map(String::as_str));
        described.push(format!(
            "{} published {} ({})",
            if o.offer_code.is_empty() {
                "offer"
            } else {
                &o.offer_code
            },
            if o.publication_date.is_empty() {
                "on an unknown date"
            } else {
                &o.publication_date
            },
            covered.into_iter().collect::<Vec<_>>().join(", ")
        ));
        if o.publication_date.len() >= 10 {
            dates.push(&o.publication_date[..10]);
        }
    }
    dates.sort();
    t.as_of = dates
        .first()
        .map_or_else(|| base.as_of.clone(), |d| d.to_string());
    t.source = format!(
        "AWS Price List bulk offer files: {}. On-demand prices for Linux, shared tenancy, no pre-installed software, no license, Used capacity (EC2); EBS storage, provisioned IOPS (io2 first tier) and gp3 throughput; Lambda requests and duration. {} Regions and types the files lack keep the previous table's figures (as of {}).",
        described.join("; "),
        if recomputed.is_empty() {
            "No regional multiplier recomputed: no region but us-east-1 has exact EC2 prices."
                .to_string()
        } else {
            format!(
                "Regional multipliers of {} recomputed as the median ratio of the region's EC2 prices to us-east-1's (for types a region's file lacks).",
                recomputed.join(", ")
            )
        },
        base.as_of
    );
    t.validate("the updated table")?;
    Ok(t)
}
