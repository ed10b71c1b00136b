//! `trailhound prices update`: rewrites the price table from the AWS Price
//! List bulk offer files.
//!
//! The bulk files are public (no AWS credentials, no SDK), published at
//! `https://pricing.us-east-1.amazonaws.com/offers/v1.0/aws/<offer>/current/…`.
//! EC2's are large, so a URL is downloaded in chunks to a temporary file and
//! then parsed as a stream on a blocking thread (see
//! `trailhound_pricing::offer`); each file is deleted as soon as it is read.
//! EC2's region index (`…/AmazonEC2/current/region_index.json`) may be given
//! instead of the per-region files: the files of the regions asked for are
//! then fetched from it. The table written has the shape of
//! `data/prices.json`, with `source` and `as_of` taken from the files.
//!
//! The Price List Query API (aws-sdk-pricing) will come with AWS access; the
//! bulk files stay the way that needs none.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::AsyncWriteExt;
use trailhound_pricing::PriceTable;
use trailhound_pricing::offer::{self, OfferFile, OfferPrices, PRICE_LIST_ORIGIN, RegionSet};

/// Commands that manage the price table cost estimates use.
#[derive(Clone, Debug, clap::Args)]
pub struct PricesArgs {
    #[command(subcommand)]
    pub command: PricesCommand,
}

#[derive(Clone, Debug, clap::Subcommand)]
pub enum PricesCommand {
    /// Rewrites the price table from AWS Price List bulk offer files (public,
    /// no AWS credentials needed), e.g.
    /// --offer https://pricing.us-east-1.amazonaws.com/offers/v1.0/aws/AmazonEC2/current/region_index.json
    /// --offer https://pricing.us-east-1.amazonaws.com/offers/v1.0/aws/AWSLambda/current/index.json
    Update(UpdateArgs),
}

#[derive(Clone, Debug, clap::Args)]
pub struct UpdateArgs {
    /// An offer file, as a local path or an http(s) URL; repeat for each:
    /// EC2 per-region offers (…/AmazonEC2/current/<region>/index.json), EC2's
    /// region index (…/AmazonEC2/current/region_index.json: the files of
    /// --regions are fetched from it), the AWSLambda offer.
    #[arg(long = "offer", value_name = "PATH_OR_URL", required = true)]
    pub offers: Vec<String>,
    /// Regions to price, comma-separated. Default: the regions of the table
    /// being replaced.
    #[arg(long, value_delimiter = ',', value_name = "REGION,...")]
    pub regions: Vec<String>,
    /// Where to write the table.
    #[arg(long, default_value = "data/prices.json")]
    pub out: PathBuf,
    /// The table to start from (its figures stay for what the files lack).
    /// Default: --out when it exists, else the table built into trailhound.
    #[arg(long)]
    pub base: Option<PathBuf>,
}

/// What an update did.
#[derive(Clone, Debug)]
pub struct UpdateSummary {
    pub out: PathBuf,
    /// One line per offer file read.
    pub offers: Vec<String>,
    pub regions: Vec<String>,
    pub as_of: String,
}

pub async fn run(args: &PricesArgs) -> anyhow::Result<()> {
    match &args.command {
        PricesCommand::Update(u) => {
            let s = update(u).await?;
            for line in &s.offers {
                eprintln!("{line}");
            }
            eprintln!(
                "wrote {} (prices as of {}; regions {})",
                s.out.display(),
                s.as_of,
                s.regions.join(", ")
            );
            Ok(())
        }
    }
}

fn is_url(s: &str) -> bool {
    s.starts_with("https://") || s.starts_with("http://")
}

/// Loads the table to start from.
fn base_table(args: &UpdateArgs) -> anyhow::Result<PriceTable> {
    let path = match &args.base {
        Some(p) => Some(p.clone()),
        None => args.out.exists().then(|| args.out.clone()),
    };
    Ok(match path {
        Some(p) => PriceTable::load(&p)?,
        None => PriceTable::builtin()?,
    })
}

/// Downloads `url` into a new temporary file in `dir`, chunk by chunk.
async fn download(
    client: &reqwest::Client,
    url: &str,
    dir: &Path,
) -> anyhow::Result<tempfile::NamedTempFile> {
    let mut resp = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("failed to fetch {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        bail!("failed to fetch {url}: HTTP {status}");
    }
    let tmp = tempfile::NamedTempFile::new_in(dir).context("failed to create a temporary file")?;
    let mut file =
        tokio::fs::File::from_std(tmp.reopen().context("failed to open the temporary file")?);
    while let Some(chunk) = resp
        .chunk()
        .await
        .with_context(|| format!("failed to fetch {url}"))?
    {
        file.write_all(&chunk)
            .await
            .with_context(|| format!("failed to save {url} to {}", tmp.path().display()))?;
    }
    file.flush().await?;
    Ok(tmp)
}

/// Reads one offer file (local, or fetched) on a blocking thread.
async fn read(
    client: &reqwest::Client,
    source: &str,
    regions: &RegionSet,
    dir: &Path,
) -> anyhow::Result<OfferFile> {
    let (path, _tmp) = if is_url(source) {
        let tmp = download(client, source, dir).await?;
        (tmp.path().to_path_buf(), Some(tmp))
    } else {
        (PathBuf::from(source), None)
    };
    let regions = regions.clone();
    let name = source.to_string();
    let parsed = tokio::task::spawn_blocking(move || -> anyhow::Result<OfferFile> {
        let file = std::fs::File::open(&path)
            .with_context(|| format!("failed to read offer file {name}"))?;
        Ok(offer::read_offer(file, &regions, &name)?)
    })
    .await
    .context("the offer parser stopped")??;
    // `_tmp` drops here: the downloaded copy is deleted once read.
    Ok(parsed)
}

/// Reads the offer files, following region indexes, and writes the table.
pub async fn update(args: &UpdateArgs) -> anyhow::Result<UpdateSummary> {
    let base = base_table(args)?;
    let regions: RegionSet = if args.regions.is_empty() {
        base.regions().into_iter().collect()
    } else {
        args.regions
            .iter()
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .collect()
    };
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(120))
        .user_agent(concat!("trailhound/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("failed to build the HTTP client")?;
    let out_dir = args
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("failed to create {}", out_dir.display()))?;
    let tmp_dir = tempfile::tempdir().context("failed to create a temporary directory")?;

    // (source, came from a region index): an index may list offer files,
    // not further indexes.
    let mut queue: VecDeque<(String, bool)> =
        args.offers.iter().map(|o| (o.clone(), false)).collect();
    let mut offers: Vec<OfferPrices> = Vec::new();
    let mut lines = Vec::new();
    while let Some((source, from_index)) = queue.pop_front() {
        match read(&client, &source, &regions, tmp_dir.path()).await? {
            OfferFile::Prices(o) => {
                lines.push(o.summary());
                offers.push(o);
            }
            OfferFile::RegionIndex(_) if from_index => {
                bail!("{source} is a region index listed by another region index")
            }
            OfferFile::RegionIndex(idx) => {
                let origin = offer::url_origin(&source).unwrap_or(PRICE_LIST_ORIGIN);
                let (urls, missing) = idx.urls_for(&regions, origin);
                lines.push(format!(
                    "{source} (region index, published {}): fetching {} region(s){}",
                    idx.publication_date,
                    urls.len(),
                    if missing.is_empty() {
                        String::new()
                    } else {
                        format!("; not listed: {}", missing.join(", "))
                    }
                ));
                queue.extend(urls.into_iter().map(|(_, u)| (u, true)));
            }
        }
    }
    let table = offer::merge_offers(&base, &offers, &regions)?;
    let json = table
        .to_json()
        .context("failed to serialize the price table")?;
    // Written beside the target and renamed, so a failed run never leaves
    // half a table where insights will read it.
    let mut tmp = tempfile::NamedTempFile::new_in(out_dir)
        .with_context(|| format!("failed to create a file in {}", out_dir.display()))?;
    std::io::Write::write_all(&mut tmp, format!("{json}\n").as_bytes())
        .with_context(|| format!("failed to write {}", args.out.display()))?;
    tmp.persist(&args.out)
        .with_context(|| format!("failed to write {}", args.out.display()))?;
    Ok(UpdateSummary {
        out: args.out.clone(),
        offers: lines,
        regions: regions.into_iter().collect(),
        as_of: table.as_of,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        format!(
            "{}/../../crates/pricing/tests/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        )
    }

    fn args(offers: Vec<String>, regions: &[&str], out: PathBuf) -> UpdateArgs {
        UpdateArgs {
            offers,
            regions: regions.iter().map(|s| s.to_string()).collect(),
            out,
            base: None,
        }
    }

    #[tokio::test]
    async fn update_from_local_files_writes_a_table() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("nested/prices.json");
        let a = args(
            vec![fixture("ec2-us-east-1.json"), fixture("lambda.json")],
            &["us-east-1"],
            out.clone(),
        );
        let s = update(&a).await.unwrap();
        assert_eq!(s.as_of, "2025-06-15");
        assert_eq!(s.offers.len(), 2);
        let t = PriceTable::load(&out).unwrap();
        assert_eq!(t.ec2_on_demand_hourly_us_east_1["p4d.24xlarge"], 21.9576);
        assert!(
            t.source.contains("AWS Price List bulk offer files"),
            "{}",
            t.source
        );

        // A second run starts from the table it wrote.
        let a = args(
            vec![fixture("ec2-regions-terms-first.json")],
            &["eu-west-1"],
            out.clone(),
        );
        update(&a).await.unwrap();
        let t = PriceTable::load(&out).unwrap();
        assert_eq!(t.ec2_on_demand_hourly_us_east_1["p4d.24xlarge"], 21.9576);
        assert_eq!(
            t.ec2_on_demand_hourly_by_region["eu-west-1"]["m5.large"],
            0.107
        );
    }

    #[tokio::test]
    async fn update_fails_cleanly_and_leaves_the_table_alone() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("prices.json");
        std::fs::write(&out, trailhound_pricing::table::BUILTIN).unwrap();
        let a = args(
            vec![fixture("ec2-us-east-1.json")],
            &["xx-none-1"],
            out.clone(),
        );
        let err = update(&a).await.unwrap_err().to_string();
        assert!(
            err.contains("priced nothing") && err.contains("xx-none-1"),
            "{err}"
        );
        let a = args(vec![fixture("nope.json")], &[], out.clone());
        let err = format!("{:#}", update(&a).await.unwrap_err());
        assert!(err.contains("nope.json"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            trailhound_pricing::table::BUILTIN
        );
    }

    /// Serves the fixtures as the Price List does: the region index at
    /// `…/current/region_index.json`, the region files where it points.
    async fn serve() -> (String, tokio::task::JoinHandle<()>) {
        use axum::routing::get;
        let file = |name: &'static str| {
            let body = std::fs::read(fixture(name)).unwrap();
            move || {
                let body = body.clone();
                async move { body }
            }
        };
        let app = axum::Router::new()
            .route(
                "/offers/v1.0/aws/AmazonEC2/current/region_index.json",
                get(file("region_index.json")),
            )
            .route(
                "/offers/v1.0/aws/AmazonEC2/20250620182248/us-east-1/index.json",
                get(file("ec2-us-east-1.json")),
            )
            .route(
                "/offers/v1.0/aws/AmazonEC2/20250620182248/eu-west-1/index.json",
                get(file("ec2-regions-terms-first.json")),
            )
            .route(
                "/offers/v1.0/aws/AWSLambda/current/index.json",
                get(file("lambda.json")),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (format!("http://{addr}"), task)
    }

    #[tokio::test]
    async fn update_follows_a_region_index_over_http() {
        let (origin, server) = serve().await;
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("prices.json");
        let a = args(
            vec![
                format!("{origin}/offers/v1.0/aws/AmazonEC2/current/region_index.json"),
                format!("{origin}/offers/v1.0/aws/AWSLambda/current/index.json"),
            ],
            &["us-east-1", "eu-west-1", "xx-none-1"],
            out.clone(),
        );
        let s = update(&a).await.unwrap();
        assert!(
            s.offers[0].contains("region index") && s.offers[0].contains("not listed: xx-none-1"),
            "{:?}",
            s.offers
        );
        assert_eq!(s.offers.len(), 4, "{:?}", s.offers);
        let t = PriceTable::load(&out).unwrap();
        assert_eq!(t.ec2_on_demand_hourly_us_east_1["m8g.large"], 0.08976);
        assert_eq!(
            t.ec2_on_demand_hourly_by_region["eu-west-1"]["r5.large"],
            0.141
        );
        assert!(t.lambda_by_region.contains_key("eu-west-1"));

        let a = args(vec![format!("{origin}/missing.json")], &[], out.clone());
        let err = format!("{:#}", update(&a).await.unwrap_err());
        assert!(err.contains("missing.json") && err.contains("404"), "{err}");
        server.abort();
    }

    #[test]
    fn the_command_line_parses() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            command: Top,
        }
        #[derive(clap::Subcommand)]
        enum Top {
            Prices(PricesArgs),
        }
        let cli = Cli::try_parse_from([
            "trailhound",
            "prices",
            "update",
            "--offer",
            "a.json",
            "--offer",
            "https://x/b.json",
            "--regions",
            "us-east-1,eu-west-1",
        ])
        .unwrap();
        let Top::Prices(PricesArgs {
            command: PricesCommand::Update(u),
        }) = cli.command;
        assert_eq!(u.offers, vec!["a.json", "https://x/b.json"]);
        assert_eq!(u.regions, vec!["us-east-1", "eu-west-1"]);
        assert_eq!(u.out, PathBuf::from("data/prices.json"));
        assert!(Cli::try_parse_from(["trailhound", "prices", "update"]).is_err());
    }
}
