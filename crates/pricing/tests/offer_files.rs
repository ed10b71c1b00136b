//! The offer-file parser and the table it builds, on small fixture files in
//! the AWS Price List's documented format (see fixtures/README.md).

use std::collections::BTreeSet;
use std::path::PathBuf;

use trailhound_pricing::offer::{OfferError, OfferFile, OfferPrices, PRICE_LIST_ORIGIN, RegionSet};
use trailhound_pricing::{PriceTable, from_offer_files, read_offer, read_offer_file};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn regions(list: &[&str]) -> RegionSet {
    list.iter().map(|s| s.to_string()).collect()
}

fn prices(name: &str, r: &RegionSet) -> OfferPrices {
    match read_offer_file(&fixture(name), r).unwrap_or_else(|e| panic!("{e}")) {
        OfferFile::Prices(o) => o,
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn a_region_offer_keeps_only_plain_linux_on_demand() {
    let o = prices("ec2-us-east-1.json", &regions(&["us-east-1"]));
    assert_eq!(o.offer_code, "AmazonEC2");
    assert_eq!(o.publication_date, "2025-06-20T18:22:48Z");
    let ec2 = &o.ec2_hourly["us-east-1"];
    // Windows, RHEL, dedicated, host, SQL, capacity reservations, capacity
    // blocks, zero prices and reserved-only SKUs are all left out: m5.large
    // is priced once, at the Linux price.
    assert_eq!(ec2.len(), 4, "{ec2:?}");
    assert_eq!(ec2["m5.large"], 0.096);
    assert_eq!(ec2["p4d.24xlarge"], 21.9576);
    assert_eq!(ec2["m8g.large"], 0.08976);
    assert_eq!(ec2["m5.metal"], 4.608);
    assert!(!o.ec2_hourly.contains_key("us-west-2"));
    let s = &o.stats;
    assert_eq!(s.skipped["not Linux"], 2, "{s:?}");
    assert_eq!(s.skipped["not shared tenancy"], 2, "{s:?}");
    assert_eq!(s.skipped["with pre-installed software"], 1, "{s:?}");
    assert_eq!(s.skipped["capacity reservations"], 2, "{s:?}");
    assert_eq!(s.skipped["not on-demand"], 1, "{s:?}");
    assert_eq!(s.skipped["in other regions"], 1, "{s:?}");
    assert_eq!(s.skipped["io2 IOPS beyond the first tier"], 1, "{s:?}");
    assert_eq!(s.skipped["products trailhound does not price"], 2, "{s:?}");
    // c5.large has a zero price, r5.large only a reserved one.
    assert_eq!(s.unpriced, 2, "{s:?}");
    assert_eq!(s.duplicates, 0);

    assert_eq!(o.ebs_gib_month["us-east-1"]["gp3"], 0.08);
    assert_eq!(o.ebs_gib_month["us-east-1"]["io1"], 0.125);
    assert_eq!(o.ebs_gib_month["us-east-1"]["io2"], 0.125);
    let iops = &o.ebs_iops_month["us-east-1"];
    assert_eq!(
        (iops["io1"], iops["io2"], iops["gp3_above_3000"]),
        (0.065, 0.065, 0.005)
    );
    // GiBps-month → MiB/s-month.
    assert!((o.gp3_throughput_mibps_month["us-east-1"] - 0.04).abs() < 1e-12);
    let line = o.summary();
    assert!(
        line.contains("4 instance types in us-east-1") && line.contains("2 not Linux"),
        "{line}"
    );
}

#[test]
fn without_a_region_filter_every_region_is_kept() {
    let o = prices("ec2-us-east-1.json", &RegionSet::new());
    assert_eq!(o.ec2_hourly["us-west-2"]["m5.large"], 0.096);
}

#[test]
fn terms_before_products_and_location_names_are_understood() {
    let o = prices(
        "ec2-regions-terms-first.json",
        &regions(&["eu-west-1", "us-east-1"]),
    );
    let eu = &o.ec2_hourly["eu-west-1"];
    assert_eq!(eu["m5.large"], 0.107);
    assert_eq!(eu["c5.large"], 0.096);
    assert_eq!(eu["t3.micro"], 0.0114);
    // No regionCode: "EU (Ireland)" names the region.
    assert_eq!(eu["r5.large"], 0.141);
    assert_eq!(eu.len(), 4);
    // ap-southeast-1 was not asked for; a Local Zone is not a region.
    assert_eq!(o.ec2_hourly.len(), 1, "{:?}", o.ec2_hourly.keys());
    assert_eq!(o.stats.skipped["in other regions"], 2, "{:?}", o.stats);
    assert_eq!(o.ebs_gib_month["eu-west-1"]["gp3"], 0.088);
}

#[test]
fn the_lambda_offer_gives_first_tier_prices_per_region() {
    let o = prices("lambda.json", &regions(&["us-east-1", "eu-west-1"]));
    assert_eq!(o.offer_code, "AWSLambda");
    let us = &o.lambda["us-east-1"];
    assert_eq!(us.per_request, Some(0.0000002));
    assert_eq!(us.per_gb_second_x86, Some(0.0000166667));
    assert_eq!(us.per_gb_second_arm, Some(0.0000133334));
    let eu = &o.lambda["eu-west-1"];
    assert_eq!(
        (eu.per_request, eu.per_gb_second_arm),
        (Some(0.0000002), None)
    );
    // Provisioned concurrency and Lambda@Edge are other products; "Any" is
    // no region.
    assert_eq!(
        o.stats.skipped["products trailhound does not price"], 2,
        "{:?}",
        o.stats
    );
    assert_eq!(o.stats.skipped["without a region"], 1, "{:?}", o.stats);
}

#[test]
fn offer_files_make_a_table_with_exact_regional_prices() {
    let base = PriceTable::builtin().unwrap();
    let r = regions(&["us-east-1", "eu-west-1"]);
    let t = from_offer_files(
        &[
            fixture("ec2-us-east-1.json"),
            fixture("ec2-regions-terms-first.json"),
            fixture("lambda.json"),
        ],
        &r,
        &base,
    )
    .unwrap();
    // us-east-1 replaces the base figures and adds new types.
    assert_eq!(t.ec2_on_demand_hourly_us_east_1["p4d.24xlarge"], 21.9576);
    assert_eq!(t.ec2_on_demand_hourly_us_east_1["m8g.large"], 0.08976);
    // Types the files lack keep the base table's price.
    assert_eq!(
        t.ec2_on_demand_hourly_us_east_1["g5.xlarge"],
        base.ec2_on_demand_hourly_us_east_1["g5.xlarge"]
    );
    assert!(!t.ec2_on_demand_hourly_by_region.contains_key("us-east-1"));
    assert_eq!(
        t.ec2_on_demand_hourly_by_region["eu-west-1"]["m5.large"],
        0.107
    );
    let p = t.ec2_hourly("c5.large", "eu-west-1");
    assert!(p.usd_per_hour == 0.096 && !p.estimated, "{p:?}");
    // eu-west-1's multiplier is the median ratio to us-east-1 (m5 1.115,
    // c5 1.129, t3 1.096, r5 1.119).
    assert_eq!(t.regional_multipliers["eu-west-1"], 1.117);
    let p = t.ec2_hourly("p4d.24xlarge", "eu-west-1");
    assert!(
        p.estimated && (p.usd_per_hour - 21.9576 * 1.117).abs() < 1e-9,
        "{p:?}"
    );
    // EBS and Lambda.
    assert_eq!(t.ebs_gib_month_by_region["eu-west-1"]["gp3"], 0.088);
    assert!(!t.ebs_gib_month("gp3", "eu-west-1").estimated);
    assert!((t.ebs_gp3_throughput_mibps_month_us_east_1 - 0.04).abs() < 1e-12);
    assert!((t.lambda_us_east_1.per_million_requests - 0.2).abs() < 1e-9);
    assert_eq!(
        t.lambda_us_east_1.assumed_memory_mb,
        base.lambda_us_east_1.assumed_memory_mb
    );
    let eu = &t.lambda_by_region["eu-west-1"];
    assert_eq!(eu.per_gb_second_arm, eu.per_gb_second_x86);
    let (_, estimated, _) = t.lambda_rates("eu-west-1");
    assert!(!estimated);
    // Where it came from, dated by the oldest file.
    assert_eq!(t.as_of, "2025-06-15");
    assert!(
        t.source
            .contains("AmazonEC2 published 2025-06-20T18:22:48Z (us-east-1)"),
        "{}",
        t.source
    );
    assert!(
        t.source
            .contains("AWSLambda published 2025-06-15T12:00:00Z (eu-west-1, us-east-1)"),
        "{}",
        t.source
    );
    assert!(t.source.contains("Linux, shared tenancy"), "{}", t.source);
    // The written table reads back as the same table.
    let back = PriceTable::parse(&t.to_json().unwrap(), "written").unwrap();
    assert_eq!(back, t);
}

#[test]
fn a_region_index_lists_the_files_to_fetch() {
    let all = regions(&["us-east-1", "eu-west-1", "xx-none-1"]);
    let OfferFile::RegionIndex(idx) = read_offer_file(&fixture("region_index.json"), &all).unwrap()
    else {
        panic!("not an index")
    };
    assert_eq!(idx.publication_date, "2025-06-20T18:22:48Z");
    let (urls, missing) = idx.urls_for(&all, PRICE_LIST_ORIGIN);
    assert_eq!(
        urls,
        vec![
            (
                "eu-west-1".to_string(),
                "https://pricing.us-east-1.amazonaws.com/offers/v1.0/aws/AmazonEC2/20250620182248/eu-west-1/index.json".to_string()
            ),
            (
                "us-east-1".to_string(),
                "https://pricing.us-east-1.amazonaws.com/offers/v1.0/aws/AmazonEC2/20250620182248/us-east-1/index.json".to_string()
            ),
        ]
    );
    assert_eq!(missing, vec!["xx-none-1".to_string()]);
    // from_offer_files wants offers, and says what to do instead.
    let err = from_offer_files(
        &[fixture("region_index.json")],
        &all,
        &PriceTable::builtin().unwrap(),
    )
    .unwrap_err();
    assert!(matches!(err, OfferError::RegionIndex { .. }), "{err}");
    assert!(err.to_string().contains("region_index.json"), "{err}");
}

#[test]
fn nothing_in_the_regions_asked_for_is_an_error() {
    let err = from_offer_files(
        &[fixture("ec2-us-east-1.json")],
        &regions(&["xx-none-1"]),
        &PriceTable::builtin().unwrap(),
    )
    .unwrap_err();
    assert!(
        matches!(err, OfferError::Empty { .. }) && err.to_string().contains("xx-none-1"),
        "{err}"
    );
}

#[test]
fn broken_files_are_clear_errors_naming_the_file() {
    let err = read_offer_file(&fixture("missing.json"), &RegionSet::new()).unwrap_err();
    assert!(
        matches!(err, OfferError::Read { .. }) && err.to_string().contains("missing.json"),
        "{err}"
    );
    let text = std::fs::read_to_string(fixture("ec2-us-east-1.json")).unwrap();
    let cut = &text[..text.len() / 2];
    let err = read_offer(cut.as_bytes(), &RegionSet::new(), "half.json").unwrap_err();
    assert!(err.to_string().contains("half.json"), "{err}");
    let bad_price = text.replace("\"0.0960000000\"", "\"not a number\"");
    let OfferFile::Prices(o) =
        read_offer(bad_price.as_bytes(), &regions(&["us-east-1"]), "p.json").unwrap()
    else {
        panic!("not prices")
    };
    // A price that is not a number loses that SKU, not the file.
    assert!(!o.ec2_hourly["us-east-1"].contains_key("m5.large"));
    assert!(o.ec2_hourly["us-east-1"].contains_key("p4d.24xlarge"));
}

#[test]
fn a_large_offer_streams() {
    // 100,000 products and their terms generated on the fly (about 60 MB
    // never held in memory at once); only the wanted SKUs are kept.
    struct Gen {
        i: usize,
        n: usize,
        phase: u8,
        buf: Vec<u8>,
        pos: usize,
    }
    impl std::io::Read for Gen {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            while self.pos == self.buf.len() {
                self.buf.clear();
                self.pos = 0;
                let i = self.i;
                match self.phase {
                    0 => {
                        self.buf.extend_from_slice(br#"{"formatVersion":"v1.0","offerCode":"AmazonEC2","publicationDate":"2025-06-20T00:00:00Z","products":{"#);
                        self.phase = 1;
                    }
                    1 if i < self.n => {
                        let os = if i.is_multiple_of(10) {
                            "Linux"
                        } else {
                            "Windows"
                        };
                        self.buf.extend_from_slice(format!(
                            r#"{}"S{i}":{{"sku":"S{i}","productFamily":"Compute Instance","attributes":{{"instanceType":"x{i}.large","operatingSystem":"{os}","tenancy":"Shared","preInstalledSw":"NA","capacitystatus":"Used","regionCode":"us-east-1","padding":"{}"}}}}"#,
                            if i == 0 { "" } else { "," },
                            "p".repeat(200)
                        ).as_bytes());
                        self.i += 1;
                    }
                    1 => {
                        self.buf.extend_from_slice(br#"},"terms":{"OnDemand":{"#);
                        self.phase = 2;
                        self.i = 0;
                    }
                    2 if i < self.n => {
                        self.buf.extend_from_slice(format!(
                            r#"{}"S{i}":{{"S{i}.JRTCKXETXF":{{"priceDimensions":{{"S{i}.JRTCKXETXF.6YS6EN2CT7":{{"unit":"Hrs","beginRange":"0","pricePerUnit":{{"USD":"0.{:04}"}}}}}}}}}}"#,
                            if i == 0 { "" } else { "," },
                            i % 9000 + 1
                        ).as_bytes());
                        self.i += 1;
                    }
                    2 => {
                        self.buf.extend_from_slice(b"}}}");
                        self.phase = 3;
                    }
                    _ => return Ok(0),
                }
            }
            let n = out.len().min(self.buf.len() - self.pos);
            out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }
    let g = Gen {
        i: 0,
        n: 100_000,
        phase: 0,
        buf: Vec::new(),
        pos: 0,
    };
    let OfferFile::Prices(o) = read_offer(g, &BTreeSet::new(), "generated").unwrap() else {
        panic!("not prices")
    };
    assert_eq!(o.stats.products, 100_000);
    assert_eq!(o.ec2_hourly["us-east-1"].len(), 10_000);
    assert_eq!(o.stats.skipped["not Linux"], 90_000);
}
