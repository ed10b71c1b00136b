//! The AWS Organizations account source: account metadata straight from
//! the organization, for production, where the snapshot file would go
//! stale.
//!
//! A single lookup (an event from an account enrich has not seen) costs
//! three calls: DescribeAccount, ListTagsForResource and ListParents. The
//! OU path is then assembled from the OU tree, which is cached (name and
//! parent per OU, for [`OU_CACHE_TTL`]) because OUs are few and rarely
//! change, so a warm source never asks DescribeOrganizationalUnit again.
//! Enumerating every account (for `trailhound org snapshot` and
//! [`AccountSource::accounts`]) walks the tree from the root instead of
//! asking ListParents per account: ListAccounts (all pages) for the
//! accounts, ListOrganizationalUnitsForParent and ListChildren per OU for
//! where they sit, ListTagsForResource per account — calls grow with
//! accounts plus OUs, not accounts times depth.
//!
//! Organizations allows few requests per second per account, so every call
//! waits for a permit of the backend's concurrency cap (`[aws]
//! max_concurrency`), and throttling (TooManyRequestsException) and 5xx are
//! retried by the SDK's retry strategy (`[aws] max_attempts`,
//! `initial_backoff`). What still fails is explained by
//! [`trailhound_aws::explain`]: the action (as the IAM action to grant),
//! the account or OU, AWS's message and the fix. An account the
//! organization does not contain is `Ok(None)`: cross-account calls are
//! normal, not errors.
//!
//! The credentials need these read-only actions, in the management account
//! or a delegated administrator for Organizations: DescribeOrganization,
//! DescribeAccount, ListAccounts, ListTagsForResource, ListParents,
//! ListRoots, DescribeOrganizationalUnit, ListOrganizationalUnitsForParent,
//! ListChildren.

use std::collections::{BTreeMap, HashMap};
use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_organizations::Client;
use aws_sdk_organizations::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_organizations::types::{ChildType, ParentType};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::{Semaphore, SemaphorePermit};
use trailhound_aws::Aws;
use trailhound_core::account::{OrgAccount, OrgSnapshot};

use crate::source::{AccountSource, SourceError};

/// How long an OU's name and parent are trusted.
pub const OU_CACHE_TTL: Duration = Duration::from_secs(3600);

/// Organizations pages hold at most 20 accounts or OUs.
const MAX_PAGE_SIZE: i32 = 20;

/// OUs nest at most five deep under the root; a longer chain is a loop.
const MAX_DEPTH: usize = 16;

const NAME: &str = "organizations";

#[derive(Clone, Debug)]
struct OuNode {
    name: String,
    /// The parent's id and whether it is the root; None for the root.
    parent: Option<(String, bool)>,
    at: Instant,
}

/// Account metadata from the AWS Organizations API.
pub struct OrganizationsSource {
    client: Client,
    limiter: Arc<Semaphore>,
    organization_id: OnceLock<String>,
    ous: RwLock<HashMap<String, OuNode>>,
    ou_ttl: Duration,
    page_size: i32,
    /// `[aws] max_attempts`, for messages.
    attempts: u32,
}

impl std::fmt::Debug for OrganizationsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrganizationsSource")
            .field("organization_id", &self.organization_id.get())
            .finish_non_exhaustive()
    }
}

/// Turns an SDK failure into a [`SourceError`] that names the IAM action,
/// the resource and the fix.
fn source_error<E, R>(
    e: &SdkError<E, R>,
    attempts: u32,
    action: &str,
    resource: &str,
) -> SourceError
where
    E: ProvideErrorMetadata + StdError + 'static,
    R: std::fmt::Debug + 'static,
{
    let action = format!("organizations:{action}");
    let mut message = trailhound_aws::explain(e, &action, resource);
    let retryable = trailhound_aws::is_retryable(e);
    if retryable && attempts > 1 {
        message.push_str(&format!(
            " (gave up after {attempts} attempts, [aws] max_attempts)"
        ));
    }
    if let SdkError::ServiceError(s) = e
        && matches!(
            s.err().code(),
            Some("AccessDeniedException" | "AccessDenied")
        )
    {
        message.push_str(
            ". Organizations answers these calls only in the management account or a delegated administrator: run there, or set [aws] assume_role_arn to a read-only role in it",
        );
    }
    SourceError {
        source_name: NAME.into(),
        message,
        retryable,
    }
}

fn missing(what: &str, resource: &str) -> SourceError {
    SourceError {
        source_name: NAME.into(),
        message: format!("{resource}: the Organizations response has no {what}"),
        retryable: false,
    }
}

impl OrganizationsSource {
    /// A source on the `organizations` client of `aws`. Asks
    /// DescribeOrganization first, so wrong credentials, missing permissions
    /// or an account outside any organization fail at start-up with a clear
    /// message. A transient failure (throttling, 5xx, network) only logs: the
    /// organization id is then fetched with the first lookup.
    pub async fn connect(aws: &Aws) -> Result<Self, SourceError> {
        let source = Self {
            client: Client::new(&aws.sdk_config(NAME)),
            limiter: aws.limiter(),
            organization_id: OnceLock::new(),
            ous: RwLock::new(HashMap::new()),
            ou_ttl: OU_CACHE_TTL,
            page_size: MAX_PAGE_SIZE,
            attempts: aws.config().max_attempts,
        };
        match source.ensure_organization().await {
            Ok(_) => {}
            Err(e) if e.retryable => {
                tracing::warn!(error = %e, "organization not reachable yet; will retry on the first lookup");
            }
            Err(e) => return Err(e),
        }
        Ok(source)
    }

    /// Sets how long OU names and parents are cached.
    pub fn with_ou_ttl(mut self, ttl: Duration) -> Self {
        self.ou_ttl = ttl;
        self
    }

    /// Sets the page size of list calls (1 to 20), e.g. to exercise paging.
    pub fn with_page_size(mut self, size: i32) -> Self {
        self.page_size = size.clamp(1, MAX_PAGE_SIZE);
        self
    }

    fn error<E, R>(&self, e: &SdkError<E, R>, action: &str, resource: &str) -> SourceError
    where
        E: ProvideErrorMetadata + StdError + 'static,
        R: std::fmt::Debug + 'static,
    {
        source_error(e, self.attempts, action, resource)
    }

    async fn permit(&self) -> Result<SemaphorePermit<'_>, SourceError> {
        self.limiter.acquire().await.map_err(|_| SourceError {
            source_name: NAME.into(),
            message: "the concurrency limiter was closed".into(),
            retryable: false,
        })
    }

    async fn ensure_organization(&self) -> Result<&str, SourceError> {
        if let Some(id) = self.organization_id.get() {
            return Ok(id);
        }
        let out = {
            let _p = self.permit().await?;
            self.client
                .describe_organization()
                .send()
                .await
                .map_err(|e| self.error(&e, "DescribeOrganization", "the organization"))?
        };
        let id = out
            .organization()
            .and_then(|o| o.id())
            .ok_or_else(|| missing("organization id", "the organization"))?;
        Ok(self.organization_id.get_or_init(|| id.to_string()))
    }

    /// The account's tags.
    async fn tags(&self, account_id: &str) -> Result<BTreeMap<String, String>, SourceError> {
        let resource = format!("account {account_id}");
        let mut tags = BTreeMap::new();
        let mut token = None;
        loop {
            let out = {
                let _p = self.permit().await?;
                self.client
                    .list_tags_for_resource()
                    .resource_id(account_id)
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| self.error(&e, "ListTagsForResource", &resource))?
            };
            for t in out.tags() {
                tags.insert(t.key().to_string(), t.value().to_string());
            }
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(tags);
            }
        }
    }

    /// The direct parent of an account or OU: (id, is the root).
    async fn parent(&self, child_id: &str, resource: &str) -> Result<(String, bool), SourceError> {
        let out = {
            let _p = self.permit().await?;
            self.client
                .list_parents()
                .child_id(child_id)
                .send()
                .await
                .map_err(|e| self.error(&e, "ListParents", resource))?
        };
        let p = out
            .parents()
            .first()
            .ok_or_else(|| missing("parent", resource))?;
        let id = p.id().ok_or_else(|| missing("parent id", resource))?;
        Ok((id.to_string(), p.r#type() == Some(&ParentType::Root)))
    }

    fn cached_ou(&self, id: &str) -> Option<OuNode> {
        let ous = self.ous.read().unwrap_or_else(|p| p.into_inner());
        ous.get(id)
            .filter(|n| n.at.elapsed() < self.ou_ttl)
            .cloned()
    }

    fn cache_ou(&self, id: &str, name: String, parent: Option<(String, bool)>) {
        let mut ous = self.ous.write().unwrap_or_else(|p| p.into_inner());
        ous.insert(
            id.to_string(),
            OuNode {
                name,
                parent,
                at: Instant::now(),
            },
        );
    }

    /// Every root (an organization has one), cached as OU nodes without a
    /// parent.
    async fn roots(&self) -> Result<Vec<(String, String)>, SourceError> {
        let mut roots = Vec::new();
        let mut token = None;
        loop {
            let out = {
                let _p = self.permit().await?;
                self.client
                    .list_roots()
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| self.error(&e, "ListRoots", "the organization"))?
            };
            for r in out.roots() {
                if let Some(id) = r.id() {
                    let name = r.name().unwrap_or("Root").to_string();
                    self.cache_ou(id, name.clone(), None);
                    roots.push((id.to_string(), name));
                }
            }
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(roots);
            }
        }
    }

    /// One node of the OU tree: from the cache, else asked for.
    async fn ou(&self, id: &str, is_root: bool) -> Result<OuNode, SourceError> {
        if let Some(n) = self.cached_ou(id) {
            return Ok(n);
        }
        if is_root {
            self.roots().await?;
            return self
                .cached_ou(id)
                .ok_or_else(|| missing(&format!("root {id} in ListRoots"), "the organization"));
        }
        let resource = format!("organizational unit {id}");
        let out = {
            let _p = self.permit().await?;
            self.client
                .describe_organizational_unit()
                .organizational_unit_id(id)
                .send()
                .await
                .map_err(|e| self.error(&e, "DescribeOrganizationalUnit", &resource))?
        };
        let name = out
            .organizational_unit()
            .and_then(|o| o.name())
            .ok_or_else(|| missing("OU name", &resource))?
            .to_string();
        let parent = self.parent(id, &resource).await?;
        self.cache_ou(id, name.clone(), Some(parent.clone()));
        Ok(OuNode {
            name,
            parent: Some(parent),
            at: Instant::now(),
        })
    }

    /// Names from the root down to `parent`, e.g. ["Root", "Workloads",
    /// "Production"].
    async fn path_from(
        &self,
        parent: String,
        parent_is_root: bool,
    ) -> Result<Vec<String>, SourceError> {
        let mut names = Vec::new();
        let mut next = Some((parent, parent_is_root));
        while let Some((id, is_root)) = next {
            if names.len() >= MAX_DEPTH {
                return Err(SourceError {
                    source_name: NAME.into(),
                    message: format!("the OU tree above {id} is deeper than {MAX_DEPTH}: a loop?"),
                    retryable: false,
                });
            }
            let node = self.ou(&id, is_root).await?;
            names.push(node.name);
            next = node.parent;
        }
        names.reverse();
        Ok(names)
    }

    /// Every account of the organization with tags and OU path, sorted by
    /// id: what `trailhound org snapshot` writes.
    pub async fn snapshot(&self) -> Result<OrgSnapshot, SourceError> {
        let organization_id = self.ensure_organization().await?.to_string();
        let listed = self.list_accounts().await?;
        let placed = self.walk_tree().await?;
        let concurrency = self.limiter.available_permits().max(1);
        let mut accounts: Vec<OrgAccount> = futures::stream::iter(listed)
            .map(|a| {
                let parent = placed.get(&a.id).cloned();
                async move {
                    let tags = self.tags(&a.id);
                    let path = async {
                        match parent {
                            Some(path) => Ok(path),
                            // Moved or joined while the tree was walked.
                            None => {
                                let (p, root) =
                                    self.parent(&a.id, &format!("account {}", a.id)).await?;
                                self.path_from(p, root).await
                            }
                        }
                    };
                    let (tags, ou_path) = futures::try_join!(tags, path)?;
                    Ok::<_, SourceError>(OrgAccount { tags, ou_path, ..a })
                }
            })
            .buffer_unordered(concurrency)
            .try_collect()
            .await?;
        accounts.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(OrgSnapshot {
            organization_id,
            accounts,
        })
    }

    /// ListAccounts, every page; tags and paths are left empty.
    async fn list_accounts(&self) -> Result<Vec<OrgAccount>, SourceError> {
        let mut accounts = Vec::new();
        let mut token = None;
        loop {
            let out = {
                let _p = self.permit().await?;
                self.client
                    .list_accounts()
                    .max_results(self.page_size)
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| self.error(&e, "ListAccounts", "the organization"))?
            };
            for a in out.accounts() {
                if let Some(a) = org_account(a) {
                    accounts.push(a);
                }
            }
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(accounts);
            }
        }
    }

    /// Walks the OU tree level by level: account id → OU path.
    async fn walk_tree(&self) -> Result<HashMap<String, Vec<String>>, SourceError> {
        let mut placed = HashMap::new();
        let mut level: Vec<(String, bool, Vec<String>)> = self
            .roots()
            .await?
            .into_iter()
            .map(|(id, name)| (id, true, vec![name]))
            .collect();
        let mut depth = 0;
        while !level.is_empty() {
            depth += 1;
            if depth > MAX_DEPTH {
                return Err(SourceError {
                    source_name: NAME.into(),
                    message: format!("the OU tree is deeper than {MAX_DEPTH}: a loop?"),
                    retryable: false,
                });
            }
            let children =
                futures::future::try_join_all(level.iter().map(|(id, is_root, path)| async move {
                    let ous = self.child_ous(id, *is_root).await?;
                    let accounts = self.child_accounts(id).await?;
                    Ok::<_, SourceError>((path, ous, accounts))
                }))
                .await?;
            let mut next = Vec::new();
            for (path, ous, accounts) in children {
                for a in accounts {
                    placed.insert(a, path.clone());
                }
                for (id, name) in ous {
                    let mut p = path.clone();
                    p.push(name);
                    next.push((id, false, p));
                }
            }
            level = next;
        }
        Ok(placed)
    }

    /// The OUs directly under `parent`, cached as they come.
    async fn child_ous(
        &self,
        parent: &str,
        parent_is_root: bool,
    ) -> Result<Vec<(String, String)>, SourceError> {
        let resource = format!("organizational unit {parent}");
        let mut ous = Vec::new();
        let mut token = None;
        loop {
            let out = {
                let _p = self.permit().await?;
                self.client
                    .list_organizational_units_for_parent()
                    .parent_id(parent)
                    .max_results(self.page_size)
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| self.error(&e, "ListOrganizationalUnitsForParent", &resource))?
            };
            for ou in out.organizational_units() {
                if let (Some(id), Some(name)) = (ou.id(), ou.name()) {
                    self.cache_ou(
                        id,
                        name.to_string(),
                        Some((parent.to_string(), parent_is_root)),
                    );
                    ous.push((id.to_string(), name.to_string()));
                }
            }
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(ous);
            }
        }
    }

    /// The ids of the accounts directly under `parent`.
    async fn child_accounts(&self, parent: &str) -> Result<Vec<String>, SourceError> {
        let resource = format!("organizational unit {parent}");
        let mut ids = Vec::new();
        let mut token = None;
        loop {
            let out = {
                let _p = self.permit().await?;
                self.client
                    .list_children()
                    .parent_id(parent)
                    .child_type(ChildType::Account)
                    .max_results(self.page_size)
                    .set_next_token(token)
                    .send()
                    .await
                    .map_err(|e| self.error(&e, "ListChildren", &resource))?
            };
            ids.extend(
                out.children()
                    .iter()
                    .filter_map(|c| c.id().map(str::to_string)),
            );
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(ids);
            }
        }
    }
}

/// An account as Organizations lists it, before tags and path; None
/// without an id.
fn org_account(a: &aws_sdk_organizations::types::Account) -> Option<OrgAccount> {
    // `State` replaces `Status`, which AWS retires in September 2026.
    let status = a
        .state()
        .map(|s| s.as_str().to_string())
        .or_else(|| {
            #[allow(deprecated)]
            a.status().map(|s| s.as_str().to_string())
        })
        .unwrap_or_else(|| "ACTIVE".into());
    Some(OrgAccount {
        id: a.id()?.to_string(),
        name: a.name().unwrap_or_default().to_string(),
        email: a.email().unwrap_or_default().to_string(),
        status,
        ou_path: Vec::new(),
        tags: BTreeMap::new(),
    })
}

#[async_trait]
impl AccountSource for OrganizationsSource {
    fn name(&self) -> &str {
        NAME
    }

    fn organization_id(&self) -> &str {
        self.organization_id.get().map(String::as_str).unwrap_or("")
    }

    async fn account(&self, account_id: &str) -> Result<Option<OrgAccount>, SourceError> {
        self.ensure_organization().await?;
        let resource = format!("account {account_id}");
        let described = {
            let _p = self.permit().await?;
            self.client
                .describe_account()
                .account_id(account_id)
                .send()
                .await
        };
        let out = match described {
            Ok(out) => out,
            Err(e)
                if e.as_service_error().is_some_and(|s| {
                    s.is_account_not_found_exception() || s.is_invalid_input_exception()
                }) =>
            {
                // Not in this organization (or not an account id at all).
                return Ok(None);
            }
            Err(e) => return Err(self.error(&e, "DescribeAccount", &resource)),
        };
        let Some(account) = out.account().and_then(org_account) else {
            return Err(missing("account", &resource));
        };
        let path = async {
            let (p, root) = self.parent(account_id, &resource).await?;
            self.path_from(p, root).await
        };
        let (tags, ou_path) = futures::try_join!(self.tags(account_id), path)?;
        Ok(Some(OrgAccount {
            tags,
            ou_path,
            ..account
        }))
    }

    async fn accounts(&self) -> Result<Vec<OrgAccount>, SourceError> {
        Ok(self.snapshot().await?.accounts)
    }
}

/// Failures of `trailhound org snapshot`.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotWriteError {
    #[error(transparent)]
    Aws(#[from] trailhound_aws::AwsError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("failed to write org snapshot {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Reads the whole organization through `aws` and writes it to `out` in
/// the org snapshot format (README "The org snapshot"), replacing the file
/// only once it is complete. Returns what was written.
pub async fn write_snapshot(
    aws: &trailhound_aws::AwsConfig,
    out: &Path,
) -> Result<OrgSnapshot, SnapshotWriteError> {
    let aws = Aws::load(aws).await?;
    let snapshot = OrganizationsSource::connect(&aws).await?.snapshot().await?;
    let write_err = |source| SnapshotWriteError::Write {
        path: out.to_path_buf(),
        source,
    };
    let json =
        serde_json::to_vec_pretty(&snapshot).map_err(|e| write_err(std::io::Error::other(e)))?;
    let mut tmp = out.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    trailhound_runtime::private::write(&tmp, json).map_err(write_err)?;
    std::fs::rename(&tmp, out).map_err(write_err)?;
    Ok(snapshot)
}
