//! The synthetic organization: accounts, OUs, tags, regions, principals.

use std::collections::BTreeMap;

use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Env {
    Production,
    Staging,
    Development,
    Testing,
    Sandbox,
}

/// How busy an account is relative to production.
impl Env {
    pub fn scale(self) -> f64 {
        match self {
            Env::Production => 1.0,
            Env::Staging => 0.3,
            Env::Development => 0.2,
            Env::Testing => 0.15,
            Env::Sandbox => 0.08,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub email: String,
    pub env: Env,
    pub ou_path: Vec<String>,
    pub tags: BTreeMap<String, String>,
    pub status: &'static str,
    /// Regions with activity; the first is home.
    pub regions: Vec<&'static str>,
    pub roles: Vec<String>,
    pub users: Vec<String>,
    pub functions: Vec<String>,
}

pub const REGIONS: [&str; 8] = [
    "us-east-1",
    "us-west-2",
    "eu-west-1",
    "eu-central-1",
    "ap-southeast-1",
    "ap-northeast-1",
    "ap-south-1",
    "sa-east-1",
];

const TEAMS: [&str; 6] = ["payments", "search", "data", "platform", "mobile", "ml"];

#[derive(Serialize)]
struct SnapshotAccount<'a> {
    id: &'a str,
    name: &'a str,
    email: &'a str,
    status: &'a str,
    ou_path: &'a [String],
    tags: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct Snapshot<'a> {
    organization_id: &'a str,
    accounts: Vec<SnapshotAccount<'a>>,
}

pub fn snapshot_json(org_id: &str, accounts: &[Account]) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(&Snapshot {
        organization_id: org_id,
        accounts: accounts
            .iter()
            .map(|a| SnapshotAccount {
                id: &a.id,
                name: &a.name,
                email: &a.email,
                status: a.status,
                ou_path: &a.ou_path,
                tags: &a.tags,
            })
            .collect(),
    })
}

fn digits(rng: &mut ChaCha8Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

/// Builds `n` active accounts (plus one suspended), covering every
/// environment and every way trailhound can discover one.
pub fn build(rng: &mut ChaCha8Rng, n: u32) -> (String, Vec<Account>) {
    let org_id = format!(
        "o-{}",
        (0..10)
            .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
            .collect::<String>()
    );
    let cycle = [
        Env::Production,
        Env::Staging,
        Env::Development,
        Env::Sandbox,
        Env::Production,
        Env::Testing,
        Env::Development,
        Env::Sandbox,
        Env::Production,
        Env::Staging,
        Env::Production,
        Env::Sandbox,
    ];
    let mut accounts = Vec::new();
    for i in 0..n.max(4) as usize {
        let env = cycle[i % cycle.len()];
        let team = TEAMS[i % TEAMS.len()];
        let (suffix, ou) = match env {
            Env::Production => ("prod", vec!["Root", "Workloads", "Production"]),
            Env::Staging => ("staging", vec!["Root", "Workloads", "NonProd"]),
            Env::Development => ("dev", vec!["Root", "Workloads", "NonProd"]),
            Env::Testing => ("qa", vec!["Root", "Workloads", "NonProd"]),
            Env::Sandbox => ("sandbox", vec!["Root", "Sandbox"]),
        };
        let mut tags = BTreeMap::new();
        tags.insert("Team".to_string(), team.to_string());
        tags.insert("CostCenter".to_string(), format!("CC-{}", 1000 + i * 7));
        // Vary how the environment is discoverable.
        let name = match i % 4 {
            0 | 1 => {
                let v = match env {
                    Env::Production => ["production", "prod", "Production"][i % 3],
                    Env::Staging => ["staging", "stg"][i % 2],
                    Env::Development => ["development", "dev"][i % 2],
                    Env::Testing => "testing",
                    Env::Sandbox => "sandbox",
                };
                tags.insert("Environment".to_string(), v.to_string());
                format!("{team}-{}", ["core", "api", "workloads"][i % 3])
            }
            2 => {
                tags.insert("Type".to_string(), suffix.to_string());
                format!("{team}-services-{i}")
            }
            _ => {
                if env == Env::Sandbox {
                    // Only the OU says so.
                    format!("{team}-experiments-{i}")
                } else {
                    format!("{team}-{suffix}")
                }
            }
        };
        let mut regions = vec![REGIONS[i % 3]];
        let extra = rng.random_range(0..3);
        for r in REGIONS.iter().take(4) {
            if regions.len() > extra {
                break;
            }
            if !regions.contains(r) {
                regions.push(r);
            }
        }
        let id = format!(
            "{}{}",
            ["1", "2", "3", "4", "5", "6", "7", "8", "9"][i % 9],
            digits(rng, 11)
        );
        let roles = ["app", "ci-deployer", "etl", "admin-automation"]
            .iter()
            .map(|r| format!("arn:aws:iam::{id}:role/{r}"))
            .collect();
        let users = ["alice", "bob", "carol", "dave"].iter().map(|u| format!("arn:aws:sts::{id}:assumed-role/AWSReservedSSO_AdministratorAccess_0a1b2c3d4e5f6a7b/{u}@example.com")).collect();
        let functions = (0..3)
            .map(|f| {
                format!(
                    "{team}-{}",
                    ["api-handler", "queue-worker", "thumbnailer"][f]
                )
            })
            .collect();
        accounts.push(Account {
            email: format!("aws+{name}@example.com"),
            name,
            id,
            env,
            ou_path: ou.into_iter().map(String::from).collect(),
            tags,
            status: "ACTIVE",
            regions,
            roles,
            users,
            functions,
        });
    }
    let suspended_id = format!("9{}", digits(rng, 11));
    accounts.push(Account {
        email: "aws+legacy@example.com".into(),
        name: "legacy-closed".into(),
        id: suspended_id,
        env: Env::Sandbox,
        ou_path: vec!["Root".into(), "Suspended".into()],
        tags: BTreeMap::new(),
        status: "SUSPENDED",
        regions: vec![],
        roles: vec![],
        users: vec![],
        functions: vec![],
    });
    (org_id, accounts)
}

pub fn pick<'a, T>(rng: &mut ChaCha8Rng, items: &'a [T]) -> &'a T {
    items.choose(rng).unwrap_or(&items[0])
}
