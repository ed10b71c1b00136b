//! What AWS usage costs: the price table shipped with trailhound
//! (`data/prices.json`, source and date inside), cost estimates for
//! anomalies, and refreshing the table from the AWS Price List.
//!
//! Pricing is its own crate so that insights (which explains anomalies),
//! notify (which shows the figure) and the CLI (which refreshes the table)
//! share one table and one way of estimating, and none of them needs the
//! others to do it.

pub mod cost;
pub mod offer;
pub mod table;

pub use cost::cost_impact;
pub use offer::{
    OfferError, OfferFile, OfferPrices, RegionIndex, RegionSet, from_offer_files, merge_offers,
    read_offer, read_offer_file,
};
pub use table::{HourlyPrice, LambdaPrices, LambdaRates, PriceError, PriceTable, RegionFactor};
