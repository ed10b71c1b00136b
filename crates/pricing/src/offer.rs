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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io::{BufReader, Read};
use std::path::Path;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::table::{BASE_REGION, LambdaRates, PriceError, PriceTable};

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

// ---- streaming parser ----

/// An attribute value: a string, or None for anything else (so one odd value
/// never fails the whole file).
#[derive(Clone, Debug, Default, PartialEq)]
struct Lenient(Option<String>);

impl Lenient {
    fn as_deref(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl<'de> Deserialize<'de> for Lenient {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Lenient;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Lenient, E> {
                Ok(Lenient(Some(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Lenient, E> {
                Ok(Lenient(Some(v)))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Lenient, E> {
                Ok(Lenient(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Lenient, E> {
                Ok(Lenient(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Lenient, E> {
                Ok(Lenient(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Lenient, E> {
                Ok(Lenient(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Lenient, E> {
                Ok(Lenient(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Lenient, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Lenient(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Lenient, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Lenient(None))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Attributes {
    #[serde(rename = "instanceType")]
    instance_type: Lenient,
    #[serde(rename = "regionCode")]
    region_code: Lenient,
    location: Lenient,
    #[serde(rename = "operatingSystem")]
    operating_system: Lenient,
    tenancy: Lenient,
    #[serde(rename = "preInstalledSw")]
    pre_installed_sw: Lenient,
    capacitystatus: Lenient,
    #[serde(rename = "licenseModel")]
    license_model: Lenient,
    marketoption: Lenient,
    #[serde(rename = "volumeApiName")]
    volume_api_name: Lenient,
    usagetype: Lenient,
    group: Lenient,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Product {
    #[serde(rename = "productFamily")]
    product_family: Lenient,
    attributes: Attributes,
}

#[derive(Debug, Default, Deserialize)]
struct RegionEntry {
    #[serde(rename = "currentVersionUrl", default)]
    current_version_url: Lenient,
}

/// What a kept SKU prices.
#[derive(Clone, Debug, PartialEq)]
enum Item {
    Ec2 {
        region: String,
        instance_type: String,
    },
    EbsStorage {
        region: String,
        volume_type: String,
    },
    EbsIops {
        region: String,
        key: &'static str,
    },
    Gp3Throughput {
        region: String,
    },
    LambdaRequests {
        region: String,
        arm: bool,
    },
    LambdaDuration {
        region: String,
        arm: bool,
    },
}

/// Region codes of the Price List's location names, for files that predate
/// the `regionCode` attribute.
const LOCATIONS: &[(&str, &str)] = &[
    ("US East (N. Virginia)", "us-east-1"),
    ("US East (Ohio)", "us-east-2"),
    ("US West (N. California)", "us-west-1"),
    ("US West (Oregon)", "us-west-2"),
    ("Canada (Central)", "ca-central-1"),
    ("South America (Sao Paulo)", "sa-east-1"),
    ("EU (Ireland)", "eu-west-1"),
    ("EU (London)", "eu-west-2"),
    ("EU (Paris)", "eu-west-3"),
    ("EU (Frankfurt)", "eu-central-1"),
    ("EU (Stockholm)", "eu-north-1"),
    ("EU (Milan)", "eu-south-1"),
    ("Asia Pacific (Singapore)", "ap-southeast-1"),
    ("Asia Pacific (Sydney)", "ap-southeast-2"),
    ("Asia Pacific (Tokyo)", "ap-northeast-1"),
    ("Asia Pacific (Seoul)", "ap-northeast-2"),
    ("Asia Pacific (Osaka)", "ap-northeast-3"),
    ("Asia Pacific (Mumbai)", "ap-south-1"),
    ("Asia Pacific (Hong Kong)", "ap-east-1"),
    ("Middle East (Bahrain)", "me-south-1"),
    ("Africa (Cape Town)", "af-south-1"),
];

fn region_of(a: &Attributes) -> Option<String> {
    if let Some(r) = a.region_code.as_deref().filter(|r| !r.is_empty()) {
        return Some(r.to_string());
    }
    let loc = a.location.as_deref()?;
    LOCATIONS
        .iter()
        .find(|(l, _)| *l == loc)
        .map(|(_, r)| r.to_string())
}

/// Whether a product is one trailhound prices, and what, or why not.
fn classify(p: &Product, regions: &RegionSet) -> Result<Item, &'static str> {
    let a = &p.attributes;
    let family = p.product_family.as_deref().unwrap_or("");
    let usage = a.usagetype.as_deref().unwrap_or("");
    let volume = a.volume_api_name.as_deref().filter(|v| !v.is_empty());
    enum Kind<'a> {
        Ec2(&'a str),
        Storage(&'a str),
        Iops(&'static str),
        Throughput,
        Lambda { duration: bool, arm: bool },
    }
    let kind = if family.starts_with("Compute Instance") {
        let ty = a
            .instance_type
            .as_deref()
            .filter(|t| !t.is_empty())
            .ok_or("without an instance type")?;
        if a.operating_system.as_deref() != Some("Linux") {
            return Err("not Linux");
        }
        if a.tenancy.as_deref() != Some("Shared") {
            return Err("not shared tenancy");
        }
        if !matches!(a.pre_installed_sw.as_deref(), None | Some("NA")) {
            return Err("with pre-installed software");
        }
        if !matches!(a.capacitystatus.as_deref(), None | Some("Used")) {
            return Err("capacity reservations");
        }
        if !matches!(
            a.license_model.as_deref(),
            None | Some("No License required")
        ) {
            return Err("with a license");
        }
        if !matches!(a.marketoption.as_deref(), None | Some("OnDemand")) {
            return Err("not on-demand");
        }
        Kind::Ec2(ty)
    } else if usage.contains("EBS:VolumeUsage") {
        Kind::Storage(volume.ok_or("EBS storage without a volume type")?)
    } else if usage.contains("EBS:VolumeP-IOPS") {
        if usage.contains("tier") {
            return Err("io2 IOPS beyond the first tier");
        }
        let key = match volume {
            Some("io1") => "io1",
            Some("io2") => "io2",
            Some("gp3") => "gp3_above_3000",
            _ if usage.ends_with(".piops") => "io1",
            _ => return Err("other EBS IOPS"),
        };
        Kind::Iops(key)
    } else if usage.contains("EBS:VolumeP-Throughput") {
        if volume != Some("gp3") && !usage.ends_with(".gp3") {
            return Err("other EBS throughput");
        }
        Kind::Throughput
    } else {
        match a.group.as_deref() {
            Some("AWS-Lambda-Requests") => Kind::Lambda {
                duration: false,
                arm: false,
            },
            Some("AWS-Lambda-Requests-ARM") => Kind::Lambda {
                duration: false,
                arm: true,
            },
            Some("AWS-Lambda-Duration") => Kind::Lambda {
                duration: true,
                arm: false,
            },
            Some("AWS-Lambda-Duration-ARM") => Kind::Lambda {
                duration: true,
                arm: true,
            },
            _ => return Err("products trailhound does not price"),
        }
    };
    let region = region_of(a).ok_or("without a region")?;
    if !regions.is_empty() && !regions.contains(&region) {
        return Err("in other regions");
    }
    Ok(match kind {
        Kind::Ec2(ty) => Item::Ec2 {
            region,
            instance_type: ty.to_string(),
        },
        Kind::Storage(v) => Item::EbsStorage {
            region,
            volume_type: v.to_string(),
        },
        Kind::Iops(key) => Item::EbsIops { region, key },
        Kind::Throughput => Item::Gp3Throughput { region },
        Kind::Lambda {
            duration: false,
            arm,
        } => Item::LambdaRequests { region, arm },
        Kind::Lambda {
            duration: true,
            arm,
        } => Item::LambdaDuration { region, arm },
    })
}

/// One price dimension of an on-demand term.
#[derive(Clone, Debug)]
struct Dim {
    unit: String,
    first_tier: bool,
    usd: Option<f64>,
}

/// The dimensions of a SKU's on-demand terms, read leniently from the
/// (small) JSON value of that SKU.
fn dims_of(v: &serde_json::Value) -> Vec<Dim> {
    let mut out = Vec::new();
    let Some(terms) = v.as_object() else {
        return out;
    };
    for term in terms.values() {
        let Some(dims) = term.get("priceDimensions").and_then(|d| d.as_object()) else {
            continue;
        };
        for d in dims.values() {
            let unit = d
                .get("unit")
                .and_then(|u| u.as_str())
                .unwrap_or("")
                .to_string();
            let first_tier = match d.get("beginRange").and_then(|b| b.as_str()) {
                None => true,
                Some(b) => b.trim().parse::<f64>().is_ok_and(|x| x == 0.0),
            };
            let usd = d
                .get("pricePerUnit")
                .and_then(|p| p.get("USD"))
                .and_then(|u| u.as_str())
                .and_then(|u| u.trim().parse::<f64>().ok())
                .filter(|x| x.is_finite() && *x >= 0.0);
            out.push(Dim {
                unit,
                first_tier,
                usd,
            });
        }
    }
    out
}

/// The price of an item in the unit trailhound stores, from its dimensions.
fn price_of(item: &Item, dims: &[Dim]) -> Option<f64> {
    let unit_ok = |u: &str| -> Option<f64> {
        let u = u.to_ascii_lowercase();
        match item {
            Item::Ec2 { .. } => (u.starts_with("hr") || u.starts_with("hour")).then_some(1.0),
            Item::EbsStorage { .. } => {
                (u.starts_with("gb-mo") || u.starts_with("gb-month")).then_some(1.0)
            }
            Item::EbsIops { .. } => u.starts_with("iops").then_some(1.0),
            Item::Gp3Throughput { .. } => {
                if u.starts_with("gibps") {
                    Some(1.0 / 1024.0)
                } else if u.starts_with("mibps") || u.starts_with("mbps") {
                    Some(1.0)
                } else {
                    None
                }
            }
            Item::LambdaRequests { .. } => u.starts_with("request").then_some(1.0),
            Item::LambdaDuration { .. } => {
                (u.contains("gb-second") || u.contains("gb-s")).then_some(1.0)
            }
        }
    };
    dims.iter()
        .filter(|d| d.first_tier)
        .filter_map(|d| Some(d.usd? * unit_ok(&d.unit)?))
        // A zero price would make an anomaly look free: not a usable price.
        .filter(|p| *p > 0.0)
        .reduce(f64::min)
}

struct State<'r> {
    regions: &'r RegionSet,
    format_version: String,
    offer_code: String,
    publication_date: String,
    saw_products: bool,
    wanted: HashMap<String, Item>,
    /// On-demand dimensions of wanted SKUs (of all SKUs while products are
    /// not yet known).
    dims: HashMap<String, Vec<Dim>>,
    index: Option<BTreeMap<String, String>>,
    stats: OfferStats,
}

impl<'r> State<'r> {
    fn new(regions: &'r RegionSet) -> Self {
        State {
            regions,
            format_version: String::new(),
            offer_code: String::new(),
            publication_date: String::new(),
            saw_products: false,
            wanted: HashMap::new(),
            dims: HashMap::new(),
            index: None,
            stats: OfferStats::default(),
        }
    }

    fn finish(mut self, name: &str) -> OfferPrices {
        let mut o = OfferPrices {
            name: name.to_string(),
            offer_code: std::mem::take(&mut self.offer_code),
            publication_date: std::mem::take(&mut self.publication_date),
            ..OfferPrices::default()
        };
        let mut wanted: Vec<(String, Item)> = self.wanted.into_iter().collect();
        wanted.sort_by(|a, b| a.0.cmp(&b.0));
        for (sku, item) in wanted {
            let Some(price) = self.dims.get(&sku).and_then(|d| price_of(&item, d)) else {
                self.stats.unpriced += 1;
                continue;
            };
            let mut dup = false;
            let mut put = |m: &mut BTreeMap<String, f64>, k: &str| {
                let e = m.entry(k.to_string()).or_insert(f64::INFINITY);
                dup = e.is_finite();
                *e = e.min(price);
            };
            match &item {
                Item::Ec2 {
                    region,
                    instance_type,
                } => put(
                    o.ec2_hourly.entry(region.clone()).or_default(),
                    instance_type,
                ),
                Item::EbsStorage {
                    region,
                    volume_type,
                } => put(
                    o.ebs_gib_month.entry(region.clone()).or_default(),
                    volume_type,
                ),
                Item::EbsIops { region, key } => {
                    put(o.ebs_iops_month.entry(region.clone()).or_default(), key)
                }
                Item::Gp3Throughput { region } => put(&mut o.gp3_throughput_mibps_month, region),
                Item::LambdaRequests { region, arm } | Item::LambdaDuration { region, arm } => {
                    let l = o.lambda.entry(region.clone()).or_default();
                    let slot = match (&item, arm) {
                        (Item::LambdaRequests { .. }, false) => &mut l.per_request,
                        (Item::LambdaRequests { .. }, true) => &mut l.per_request_arm,
                        (_, false) => &mut l.per_gb_second_x86,
                        (_, true) => &mut l.per_gb_second_arm,
                    };
                    dup = slot.is_some();
                    *slot = Some(slot.map_or(price, |p: f64| p.min(price)));
                }
            }
            if dup {
                self.stats.duplicates += 1;
            }
        }
        o.stats = self.stats;
        o
    }
}

/// The whole file: metadata, products, terms, or a region index.
struct Top<'a, 'r>(&'a mut State<'r>);

impl<'de> DeserializeSeed<'de> for Top<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Top<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an AWS Price List offer file (a JSON object)")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let s = self.0;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "formatVersion" => {
                    s.format_version = map.next_value::<Lenient>()?.0.unwrap_or_default()
                }
                "offerCode" => s.offer_code = map.next_value::<Lenient>()?.0.unwrap_or_default(),
                "publicationDate" => {
                    s.publication_date = map.next_value::<Lenient>()?.0.unwrap_or_default()
                }
                "products" => {
                    map.next_value_seed(Products(&mut *s))?;
                    s.saw_products = true;
                    // Terms read before the products were kept whole; now
                    // only the wanted ones matter.
                    let wanted = &s.wanted;
                    s.dims.retain(|sku, _| wanted.contains_key(sku));
                }
                "terms" => map.next_value_seed(Terms(&mut *s))?,
                "regions" => {
                    let r: BTreeMap<String, RegionEntry> = map.next_value()?;
                    s.index = Some(
                        r.into_iter()
                            .filter_map(|(k, v)| Some((k, v.current_version_url.0?)))
                            .collect(),
                    );
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

struct Products<'a, 'r>(&'a mut State<'r>);

impl<'de> DeserializeSeed<'de> for Products<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Products<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("products: an object of SKU → product")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let s = self.0;
        while let Some(sku) = map.next_key::<String>()? {
            let p: Product = map.next_value()?;
            s.stats.products += 1;
            match classify(&p, s.regions) {
                Ok(item) => {
                    s.stats.kept += 1;
                    s.wanted.insert(sku, item);
                }
                Err(reason) => s.stats.skip(reason),
            }
        }
        Ok(())
    }
}

struct Terms<'a, 'r>(&'a mut State<'r>);

impl<'de> DeserializeSeed<'de> for Terms<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Terms<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("terms: an object of term type → SKU → term")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let s = self.0;
        while let Some(kind) = map.next_key::<String>()? {
            if kind == "OnDemand" {
                map.next_value_seed(OnDemand(&mut *s))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

struct OnDemand<'a, 'r>(&'a mut State<'r>);

impl<'de> DeserializeSeed<'de> for OnDemand<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for OnDemand<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("on-demand terms: an object of SKU → term code → term")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let s = self.0;
        while let Some(sku) = map.next_key::<String>()? {
            if s.saw_products && !s.wanted.contains_key(&sku) {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let v: serde_json::Value = map.next_value()?;
            let dims = dims_of(&v);
            if !dims.is_empty() {
                s.dims.entry(sku).or_default().extend(dims);
            }
        }
        Ok(())
    }
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
    fn units_and_tiers_pick_the_right_dimension() {
        let ec2 = Item::Ec2 {
            region: "r".into(),
            instance_type: "t".into(),
        };
        let d = |unit: &str, first: bool, usd: f64| Dim {
            unit: unit.into(),
            first_tier: first,
            usd: Some(usd),
        };
        assert_eq!(price_of(&ec2, &[d("Hrs", true, 0.5)]), Some(0.5));
        assert_eq!(price_of(&ec2, &[d("Quantity", true, 99.0)]), None);
        assert_eq!(price_of(&ec2, &[d("Hrs", true, 0.0)]), None);
        let tp = Item::Gp3Throughput { region: "r".into() };
        assert_eq!(price_of(&tp, &[d("GiBps-mo", true, 40.96)]), Some(0.04));
        let dur = Item::LambdaDuration {
            region: "r".into(),
            arm: false,
        };
        assert_eq!(
            price_of(
                &dur,
                &[
                    d("Lambda-GB-Second", false, 0.000015),
                    d("Lambda-GB-Second", true, 0.0000166667)
                ]
            ),
            Some(0.0000166667)
        );
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
