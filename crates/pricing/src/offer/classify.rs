//! Which Price List products trailhound prices, and at what unit price:
//! the attributes read leniently and each SKU's on-demand dimensions.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::RegionSet;

/// An attribute value: a string, or None for anything else (so one odd value
/// never fails the whole file).
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Lenient(pub(super) Option<String>);

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
pub(super) struct Attributes {
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
pub(super) struct Product {
    #[serde(rename = "productFamily")]
    product_family: Lenient,
    attributes: Attributes,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct RegionEntry {
    #[serde(rename = "currentVersionUrl", default)]
    pub(super) current_version_url: Lenient,
}

/// What a kept SKU prices.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Item {
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

pub(super) fn region_of(a: &Attributes) -> Option<String> {
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
pub(super) fn classify(p: &Product, regions: &RegionSet) -> Result<Item, &'static str> {
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
pub(super) struct Dim {
    unit: String,
    first_tier: bool,
    usd: Option<f64>,
}

/// The dimensions of a SKU's on-demand terms, read leniently from the
/// (small) JSON value of that SKU.
pub(super) fn dims_of(v: &serde_json::Value) -> Vec<Dim> {
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
pub(super) fn price_of(item: &Item, dims: &[Dim]) -> Option<f64> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
