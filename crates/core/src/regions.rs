//! The AWS regions trailhound knows by name.
//!
//! Detection keeps state per account × region, so a region name is a key
//! an attacker could mint by the thousand (`awsRegion` is only checked for
//! its shape at parse time: fake names are legal input, the public
//! detonation logs are full of them). Events in a region not listed here
//! still count, under one `unlisted` region; `[detect.engine]
//! extra_regions` lists regions launched after this build.

/// Every commercial, GovCloud, China, European Sovereign Cloud and ISO
/// region, sorted (binary search).
pub const REGIONS: &[&str] = &[
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "cn-north-1",
    "cn-northwest-1",
    "eu-central-1",
    "eu-central-2",
    "eu-isoe-west-1",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "eusc-de-east-1",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-gov-east-1",
    "us-gov-west-1",
    "us-iso-east-1",
    "us-iso-west-1",
    "us-isob-east-1",
    "us-isof-east-1",
    "us-isof-south-1",
    "us-west-1",
    "us-west-2",
];

/// Whether `name` is a region in [`REGIONS`].
pub fn is_listed(name: &str) -> bool {
    REGIONS.binary_search(&name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_sorted_and_answers() {
        assert!(REGIONS.is_sorted());
        assert!(is_listed("us-east-1") && is_listed("ap-southeast-7"));
        assert!(!is_listed("ca-south-3r") && !is_listed("") && !is_listed("US-EAST-1"));
    }
}
