//! Refreshing the price table from the AWS Price List bulk offer files.
//!
//! The bulk files are public JSON at
//! `https://pricing.us-east-1.amazonaws.com/offers/v1.0/aws/<offer>/current/…`
//! and need no AWS credentials, which is why trailhound reads them rather
//! than the Price List Query API. Their documented shape:
//!
//! ```text
//! { "formatVersion", "offerCode", "version", "publicationDate",
//!   "products": { sku: { "productFamily", "attributes": { "instanceType",
//!       "regionCode" (or "location"), "operatingSystem", "tenancy",
//!       "preInstalledSw", "capacitystatus", "licenseModel", "volumeApiName",
//!       "usagetype", "group", … } } },
//!   "terms": { "OnDemand": { sku: { "<sku>.<offerTermCode>": {
//!       "priceDimensions": { rateCode: { "unit", "beginRange",
//!           "pricePerUnit": { "USD": "0.0960000000" } } } } } },
//!              "Reserved": { … } } }
//! ```
//!
//! A region's EC2 file is hundreds of MB and the all-regions one several
//! GB, so the file is read as a stream: products are classified one at a
//! time and only the SKUs trailhound prices are remembered; terms of other
//! SKUs and the whole `Reserved` section are skipped without being built.
//! Memory stays at a few thousand SKUs whatever the file's size. (If a file
//! ever lists terms before products, the on-demand terms are kept until the
//! products say which matter.)
//!
//! EC2 prices are those of "Linux, shared tenancy, no pre-installed software,
//! no license, Used capacity, on-demand" — the price of a plain
//! `RunInstances`; the `Used` capacity status excludes the capacity
//! reservation SKUs. EBS storage comes from `EBS:VolumeUsage*` SKUs by
//! `volumeApiName`, provisioned IOPS from `EBS:VolumeP-IOPS*` (io2's first
//! tier), gp3 throughput from `EBS:VolumeP-Throughput.gp3`, and Lambda from
//! the `AWS-Lambda-Requests` and `AWS-Lambda-Duration` groups (and their
//! `-ARM` twins).
//!
//! A region index (`region_index.json`, `{"regions": {region:
//! {"regionCode", "currentVersionUrl"}}}`) is recognised too: it lists the
//! per-region files to fetch.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Read};
use std::path::Path;

use serde::de::DeserializeSeed;

use crate::table::PriceError;

mod classify;
mod merge;
mod stream;

pub use merge::{from_offer_files, merge_offers};
use stream::{State, Top};

/// Where the bulk offer files live; relative URLs in a region index are
/// resolved against it.
pub const PRICE_LIST_ORIGIN: &str = "https://pricing.us-east-1.amazonaws.com";

#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    #[error("failed to read offer file {name}: {source}")]
    Read {
        name: String,
        source: std::io::Error,
    },
    #[error("offer file {name} is not an AWS Price List offer file: {source}")]
    Parse {
        name: String,
        source: serde_json::Error,
    },
    #[error(
        "{name} is neither an AWS Price List offer file nor a region index: it has no \"products\" and no \"regions\""
    )]
    NotAnOffer { name: String },
    #[error(
        "{name} is a region index, not an offer file: pass the per-region offer files it lists (`trailhound prices update` fetches them)"
    )]
    RegionIndex { name: String },
    #[error(
        "the offer files priced nothing in the regions asked for ({regions}): check --regions and that the files are AmazonEC2 or AWSLambda offers"
    )]
    Empty { regions: String },
    #[error("the updated price table is not valid: {0}")]
    Table(#[from] PriceError),
}

/// Which regions to keep; empty keeps all.
pub type RegionSet = BTreeSet<String>;

/// Lambda prices found for one region; any may be missing from a file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LambdaFound {
    pub per_request: Option<f64>,
    pub per_request_arm: Option<f64>,
    pub per_gb_second_x86: Option<f64>,
    pub per_gb_second_arm: Option<f64>,
}

/// How many products of a file were kept or left out, and why.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OfferStats {
    pub products: u64,
    pub kept: u64,
    /// Reason → products left out for it.
    pub skipped: BTreeMap<&'static str, u64>,
    /// Kept products with no usable on-demand price.
    pub unpriced: u64,
    /// Products priced twice for the same region and item (the lower price
    /// is kept).
    pub duplicates: u64,
}

impl OfferStats {
    fn skip(&mut self, reason: &'static str) {
        *self.skipped.entry(reason).or_default() += 1;
    }
}

/// The prices trailhound uses from one offer file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OfferPrices {
    /// The path or URL it was read from.
    pub name: String,
    pub offer_code: String,
    pub publication_date: String,
    /// Region → instance type → $/hour.
    pub ec2_hourly: BTreeMap<String, BTreeMap<String, f64>>,
    /// Region → volume type → $/GiB-month.
    pub ebs_gib_month: BTreeMap<String, BTreeMap<String, f64>>,
    /// Region → `io1` / `io2` / `gp3_above_3000` → $/IOPS-month.
    pub ebs_iops_month: BTreeMap<String, BTreeMap<String, f64>>,
    /// Region → gp3 $/(MiB/s)-month.
    pub gp3_throughput_mibps_month: BTreeMap<String, f64>,
    pub lambda: BTreeMap<String, LambdaFound>,
    pub stats: OfferStats,
}

impl OfferPrices {
    pub fn is_empty(&self) -> bool {
        self.ec2_hourly.is_empty()
            && self.ebs_gib_month.is_empty()
            && self.ebs_iops_month.is_empty()
            && self.gp3_throughput_mibps_month.is_empty()
            && self.lambda.is_empty()
    }

    /// One line for people: what was found and what was left out.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for (region, m) in &self.ec2_hourly {
            parts.push(format!("{} instance types in {region}", m.len()));
        }
        for (region, m) in &self.ebs_gib_month {
            parts.push(format!("{} EBS volume types in {region}", m.len()));
        }
        if !self.lambda.is_empty() {
            let r: Vec<&str> = self.lambda.keys().map(String::as_str).collect();
            parts.push(format!("Lambda in {}", r.join(", ")));
        }
        if parts.is_empty() {
            parts.push("nothing trailhound prices".to_string());
        }
        let skipped: Vec<String> = self
            .stats
            .skipped
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        format!(
            "{} ({}, published {}): {} of {} products kept: {}; left out: {}",
            self.name,
            if self.offer_code.is_empty() {
                "unknown offer"
            } else {
                &self.offer_code
            },
            if self.publication_date.is_empty() {
                "unknown"
            } else {
                &self.publication_date
            },
            self.stats.kept,
            self.stats.products,
            parts.join(", "),
            if skipped.is_empty() {
                "none".to_string()
            } else {
                skipped.join(", ")
            }
        )
    }
}

/// A region index: which per-region offer file is current for each region.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RegionIndex {
    pub name: String,
    pub publication_date: String,
    /// Region → `currentVersionUrl` (relative to the Price List's origin).
    pub regions: BTreeMap<String, String>,
}

impl RegionIndex {
    /// The absolute URLs of the offer files for `regions` (all when empty),
    /// resolved against `origin`, and the regions the index does not list.
    pub fn urls_for(
        &self,
        regions: &RegionSet,
        origin: &str,
    ) -> (Vec<(String, String)>, Vec<String>) {
        let mut found = Vec::new();
        let mut missing = Vec::new();
        let wanted: Vec<&String> = if regions.is_empty() {
            self.regions.keys().collect()
        } else {
            regions.iter().collect()
        };
        for r in wanted {
            match self.regions.get(r) {
                Some(u) => found.push((r.clone(), resolve_url(origin, u))),
                None => missing.push(r.clone()),
            }
        }
        (found, missing)
    }
}

/// What a Price List file turned out to be.
#[derive(Clone, Debug, PartialEq)]
pub enum OfferFile {
    Prices(OfferPrices),
    RegionIndex(RegionIndex),
}

/// `scheme://host[:port]` of an absolute URL; None for anything else.
pub fn url_origin(url: &str) -> Option<&str> {
    let after = url.find("://")? + 3;
    let end = url[after..].find('/').map_or(url.len(), |i| after + i);
    (end > after).then(|| &url[..end])
}

/// Resolves a region index's `currentVersionUrl` (absolute, or relative to
/// the origin).
pub fn resolve_url(origin: &str, url: &str) -> String {
    if url.contains("://") {
        url.to_string()
    } else if url.starts_with('/') {
        format!("{}{url}", origin.trim_end_matches('/'))
    } else {
        format!("{}/{url}", origin.trim_end_matches('/'))
    }
}

/// Reads an offer file or region index from disk, streaming.
pub fn read_offer_file(path: &Path, regions: &RegionSet) -> Result<OfferFile, OfferError> {
    let name = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| OfferError::Read {
        name: name.clone(),
        source,
    })?;
    read_offer(file, regions, &name)
}

/// Reads an offer file or region index from any reader, streaming; `name`
/// names it in errors.
pub fn read_offer<R: Read>(
    reader: R,
    regions: &RegionSet,
    name: &str,
) -> Result<OfferFile, OfferError> {
    let reader = BufReader::with_capacity(1 << 20, reader);
    let mut de = serde_json::Deserializer::from_reader(reader);
    let mut state = State::new(regions);
    let res = Top(&mut state).deserialize(&mut de).and_then(|()| de.end());
    if let Err(source) = res {
        if source.is_io() {
            return Err(OfferError::Read {
                name: name.to_string(),
                source: source.into(),
            });
        }
        return Err(OfferError::Parse {
            name: name.to_string(),
            source,
        });
    }
    if let Some(index) = state.index.take()
        && !state.saw_products
    {
        return Ok(OfferFile::RegionIndex(RegionIndex {
            name: name.to_string(),
            publication_date: state.publication_date,
            regions: index,
        }));
    }
    if !state.saw_products {
        return Err(OfferError::NotAnOffer {
            name: name.to_string(),
        });
    }
    Ok(OfferFile::Prices(state.finish(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_resolve_against_the_origin() {
        assert_eq!(
            url_origin(
                "https://pricing.us-east-1.amazonaws.com/offers/v1.0/aws/AmazonEC2/current/region_index.json"
            ),
            Some("https://pricing.us-east-1.amazonaws.com")
        );
        assert_eq!(
            url_origin("http://127.0.0.1:8080"),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(url_origin("/local/path.json"), None);
        assert_eq!(
            resolve_url(
                PRICE_LIST_ORIGIN,
                "/offers/v1.0/aws/AmazonEC2/20250101000000/us-east-1/index.json"
            ),
            "https://pricing.us-east-1.amazonaws.com/offers/v1.0/aws/AmazonEC2/20250101000000/us-east-1/index.json"
        );
        assert_eq!(
            resolve_url("http://h:1/", "a/b.json"),
            "http://h:1/a/b.json"
        );
        assert_eq!(
            resolve_url("http://h:1", "https://x/y.json"),
            "https://x/y.json"
        );
    }

    #[test]
    fn lenient_attributes_never_fail_the_file() {
        let text = r#"{"products": {"A": {"productFamily": 7, "attributes": {"instanceType": ["x"], "tenancy": {"a": 1}, "regionCode": null}}}, "terms": {}}"#;
        let OfferFile::Prices(o) = read_offer(text.as_bytes(), &RegionSet::new(), "t").unwrap()
        else {
            panic!("not prices")
        };
        assert_eq!(o.stats.products, 1);
        assert!(o.is_empty());
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let e = read_offer(&b"[1, 2]"[..], &RegionSet::new(), "bad.json").unwrap_err();
        assert!(
            matches!(e, OfferError::Parse { .. }) && e.to_string().contains("bad.json"),
            "{e}"
        );
        let e = read_offer(&b"{\"products\": {"[..], &RegionSet::new(), "cut.json").unwrap_err();
        assert!(e.to_string().contains("cut.json"), "{e}");
        let e = read_offer(&b"{\"hello\": 1}"[..], &RegionSet::new(), "other.json").unwrap_err();
        assert!(matches!(e, OfferError::NotAnOffer { .. }), "{e}");
        let e = read_offer(&b"{} trailing"[..], &RegionSet::new(), "t.json").unwrap_err();
        assert!(matches!(e, OfferError::Parse { .. }), "{e}");
    }
}
