//! The streaming reader: a file's products, terms and metadata visited one
//! at a time, keeping only the SKUs trailhound prices.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::classify::{Dim, Item, Lenient, Product, RegionEntry, classify, dims_of, price_of};
use super::{OfferPrices, OfferStats, RegionSet};

pub(super) struct State<'r> {
    regions: &'r RegionSet,
    format_version: String,
    offer_code: String,
    pub(super) publication_date: String,
    pub(super) saw_products: bool,
    wanted: HashMap<String, Item>,
    /// On-demand dimensions of wanted SKUs (of all SKUs while products are
    /// not yet known).
    dims: HashMap<String, Vec<Dim>>,
    pub(super) index: Option<BTreeMap<String, String>>,
    stats: OfferStats,
}

impl<'r> State<'r> {
    pub(super) fn new(regions: &'r RegionSet) -> Self {
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

    pub(super) fn finish(mut self, name: &str) -> OfferPrices {
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
pub(super) struct Top<'a, 'r>(pub(super) &'a mut State<'r>);

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
