//! The GitHub adapter: reads files, commits without a clone through the Git
//! Data API (blobs, a tree on top of the parent's, a commit, a new ref), and
//! opens, reads, merges and closes pull requests.
//!
//! Every call goes through octocrab's raw `_get`/`_post`/... so that we see the
//! status and headers of each answer and retry deliberately: reads, PUT, PATCH
//! and DELETE are tried again on 5xx and on rate limits, waiting what GitHub
//! asks; a POST that creates something is re-sent only when GitHub said it did
//! not process it (429, or a rate-limit 403), never blindly on a 5xx.
//!
//! It authenticates with a token, or as a GitHub App: a JWT finds the App's
//! installation on the repository and mints installation tokens, which are
//! renewed on funnelfix's clock before they expire. A token GitHub refuses
//! anyway (401: nothing was done) is replaced and the request sent once more.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use octocrab::Octocrab;
use secrecy::SecretString;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::clock::Clock;
use crate::config::MergeMethod;
use crate::experiment::ExperimentId;
use crate::github_app::{self, AppCredentials};
use crate::retry::{Attempt, GaveUp, RetryPolicy};

/// `funnelfix/<funnel>/<step-slug>-<id>`: deterministic, so a restart finds what it made.
pub fn branch_name(prefix: &str, funnel: &str, step: &str, id: ExperimentId) -> String {
    format!("{prefix}{funnel}/{}-{id}", slug(step))
}

/// `funnelfix/revert-<id>`.
pub fn revert_branch_name(prefix: &str, id: ExperimentId) -> String {
    format!("{prefix}revert-{id}")
}

fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').chars().take(30).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrState {
    Open,
    Closed,
    Merged,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub number: u64,
    /// The page a person opens (`html_url`).
    pub url: String,
    pub head_sha: String,
    pub state: PrState,
    /// Set only once merged (GitHub also fills it with a test merge while open).
    pub merge_commit_sha: Option<String>,
    /// When GitHub merged it, whoever did.
    pub merged_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// CI's verdict on one commit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Checks {
    /// The repository runs no CI on it: no check run, no status (GitHub
    /// still says "pending" then, with total_count 0).
    None,
    /// Some are still running.
    Pending {
        names: Vec<String>,
    },
    Passed,
    /// The check runs cannot be read with this credential (GitHub offers
    /// fine-grained tokens no Checks permission) and no status failed:
    /// whether CI passed is unknown.
    Unreadable,
    /// The first that failed, with its page and what it reported (for a
    /// model asked to fix it; may be empty).
    Failed {
        name: String,
        url: String,
        #[serde(default)]
        details: String,
    },
}

impl Checks {
    /// `runs` is `None` when GitHub refused to show them.
    fn combine(runs: Option<&[CheckRunJson]>, statuses: &[StatusJson]) -> Checks {
        let Some(runs) = runs else {
            return match Checks::combine(Some(&[]), statuses) {
                failed @ Checks::Failed { .. } => failed,
                _ => Checks::Unreadable,
            };
        };
        const FAILED: &[&str] = &[
            "failure",
            "cancelled",
            "timed_out",
            "action_required",
            "startup_failure",
        ];
        if let Some(r) = runs
            .iter()
            .find(|r| r.conclusion.as_deref().is_some_and(|c| FAILED.contains(&c)))
        {
            return Checks::Failed {
                name: r.name.clone(),
                url: r.html_url.clone().unwrap_or_default(),
                details: r
                    .output
                    .as_ref()
                    .map(CheckOutputJson::details)
                    .unwrap_or_default(),
            };
        }
        if let Some(s) = statuses
            .iter()
            .find(|s| s.state == "failure" || s.state == "error")
        {
            return Checks::Failed {
                name: s.context.clone(),
                url: s.target_url.clone().unwrap_or_default(),
                details: s.description.clone().unwrap_or_default(),
            };
        }
        let mut names: Vec<String> = runs
            .iter()
            .filter(|r| r.status != "completed")
            .map(|r| r.name.clone())
            .collect();
        names.extend(
            statuses
                .iter()
                .filter(|s| s.state == "pending")
                .map(|s| s.context.clone()),
        );
        if !names.is_empty() {
            Checks::Pending { names }
        } else if runs.is_empty() && statuses.is_empty() {
            Checks::None
        } else {
            Checks::Passed
        }
    }
}

/// What an approver should know about a PR head before deciding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadReport {
    pub checks: Checks,
    /// A deployment preview of the head.
    pub preview: Option<String>,
}

/// Deployments of one head looked at for a preview.
const PREVIEW_DEPLOYMENTS: usize = 10;

/// Statuses that deploy previews post (their context names the service).
const PREVIEW_CONTEXTS: &[&str] = &[
    "vercel",
    "netlify",
    "cloudflare",
    "pages",
    "preview",
    "deploy",
];

/// A successful commit status from a preview deployer, with its URL.
fn preview_in_statuses(statuses: &[StatusJson]) -> Option<String> {
    statuses
        .iter()
        .filter(|s| s.state == "success")
        .filter(|s| {
            let context = s.context.to_ascii_lowercase();
            PREVIEW_CONTEXTS.iter().any(|c| context.contains(c))
        })
        .find_map(|s| s.target_url.clone().filter(|u| is_web_url(u)))
}

/// Only http(s) links go into a PR or a chat message.
fn is_web_url(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://")
}

#[derive(Deserialize)]
struct DeploymentJson {
    id: u64,
    #[serde(default)]
    production_environment: bool,
}

#[derive(Deserialize)]
struct DeploymentStatusJson {
    state: String,
    environment_url: Option<String>,
}

#[derive(Deserialize)]
struct PrBodyJson {
    body: Option<String>,
}

#[derive(Deserialize)]
struct CheckRunsJson {
    check_runs: Vec<CheckRunJson>,
}

#[derive(Deserialize)]
struct CheckRunJson {
    name: String,
    status: String,
    conclusion: Option<String>,
    html_url: Option<String>,
    output: Option<CheckOutputJson>,
}

/// What a check run reported (markdown; GitHub caps each part at 64 KB).
#[derive(Deserialize)]
struct CheckOutputJson {
    title: Option<String>,
    summary: Option<String>,
    text: Option<String>,
}

impl CheckOutputJson {
    fn details(&self) -> String {
        [&self.title, &self.summary, &self.text]
            .into_iter()
            .flatten()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[derive(Deserialize)]
struct CombinedStatusJson {
    statuses: Vec<StatusJson>,
}

#[derive(Deserialize)]
struct StatusJson {
    context: String,
    state: String,
    target_url: Option<String>,
    description: Option<String>,
}

/// The files of a branch, as one recursive tree listing gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePaths {
    pub paths: Vec<String>,
    /// GitHub cut the listing short: some files are missing.
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeOutcome {
    Merged {
        sha: String,
    },
    /// The head is no longer the approved commit (409): nothing was merged.
    HeadMoved,
    /// GitHub would not merge (405, or 422), with its message.
    NotMergeable(String),
}

#[derive(Clone)]
pub struct GitHub {
    /// With a token, it sends it on every request; for an App it has none,
    /// and each request is given the credential it needs.
    client: Octocrab,
    owner: String,
    name: String,
    base_branch: String,
    auth: Arc<Auth>,
    retry: RetryPolicy,
}

enum Auth {
    /// A token from the environment variable `env`.
    Token {
        env: String,
    },
    App(AppSession),
}

/// A GitHub App acting through its installation on the repository.
struct AppSession {
    app: AppCredentials,
    /// Tokens are renewed by this clock (the daemon's), and JWTs signed by it.
    clock: Clock,
    /// Held while a token is minted, so that concurrent requests wait for one.
    state: tokio::sync::Mutex<InstallationState>,
}

#[derive(Default)]
struct InstallationState {
    installation_id: Option<u64>,
    token: Option<InstallationToken>,
    /// Counts the tokens minted, so a refused one is replaced only once.
    generation: u64,
}

struct InstallationToken {
    token: SecretString,
    expires_at: chrono::DateTime<chrono::Utc>,
}

/// What a request is sent with.
#[derive(Clone, Copy)]
enum Credential<'a> {
    /// The adapter's client, or one carrying an installation token.
    Client(&'a Octocrab),
    /// A JWT of the App, signed afresh for every try.
    AppJwt(&'a AppSession),
}

/// Who GitHub is refusing, for messages.
#[derive(Debug, Clone, Copy)]
enum Who<'a> {
    Token { env: &'a str },
    App { app_id: u64 },
}

/// One answer from GitHub, read whole.
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    ratelimit_remaining: Option<String>,
    ratelimit_reset: Option<String>,
    body: String,
    /// How many times the request was sent.
    attempts: u32,
}

impl Answer {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Whether a request may be sent again after a failure that GitHub may
/// already have acted upon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resend {
    /// GET, PUT, PATCH, DELETE: sending twice has the effect of sending once.
    Idempotent,
    /// POST that creates a blob, commit, ref, PR or comment.
    OnlyIfUnprocessed,
}

impl GitHub {
    /// An adapter for `repo` (`owner/name`) on the API at `api_url`. Call it
    /// inside a Tokio runtime (octocrab starts a task).
    pub fn new(
        api_url: &str,
        token: SecretString,
        token_env: &str,
        repo: &str,
        base_branch: &str,
        retry: RetryPolicy,
    ) -> anyhow::Result<GitHub> {
        check_token(&token, token_env)?;
        let auth = Auth::Token {
            env: token_env.to_string(),
        };
        GitHub::build(api_url, Some(token), auth, repo, base_branch, retry)
    }

    /// An adapter acting as GitHub App `app` on `repo`: its installation
    /// there is looked up (unless configured) and its tokens minted at the
    /// first request, and renewed on `clock` before they expire.
    pub fn with_app(
        api_url: &str,
        app: AppCredentials,
        repo: &str,
        base_branch: &str,
        retry: RetryPolicy,
        clock: Clock,
    ) -> anyhow::Result<GitHub> {
        let auth = Auth::App(AppSession {
            app,
            clock,
            state: tokio::sync::Mutex::new(InstallationState::default()),
        });
        GitHub::build(api_url, None, auth, repo, base_branch, retry)
    }

    fn build(
        api_url: &str,
        token: Option<SecretString>,
        auth: Auth,
        repo: &str,
        base_branch: &str,
        retry: RetryPolicy,
    ) -> anyhow::Result<GitHub> {
        let (owner, name) = match repo.split_once('/') {
            Some((o, n)) if !o.is_empty() && !n.is_empty() && !n.contains('/') => (o, n),
            _ => bail!("the GitHub repository must be written owner/name, got {repo:?}"),
        };
        // octocrab spawns its client's worker on the current runtime, and panics without one.
        if tokio::runtime::Handle::try_current().is_err() {
            bail!("the GitHub client must be created inside a Tokio runtime");
        }
        let mut builder = Octocrab::builder()
            .base_uri(api_url.trim_end_matches('/'))
            .with_context(|| format!("the GitHub API URL {api_url:?} is not a valid URL"))?;
        if let Some(token) = token {
            // octocrab keeps it secret too: never exposed here.
            builder = builder.personal_token(token);
        }
        let client = builder
            .set_connect_timeout(Some(retry.timeout))
            .set_read_timeout(Some(retry.timeout))
            .set_write_timeout(Some(retry.timeout))
            .build()
            .context("could not build the GitHub client")?;
        Ok(GitHub {
            client,
            owner: owner.to_string(),
            name: name.to_string(),
            base_branch: base_branch.to_string(),
            auth: Arc::new(auth),
            retry,
        })
    }

    fn who(&self) -> Who<'_> {
        match &*self.auth {
            Auth::Token { env } => Who::Token { env },
            Auth::App(session) => Who::App {
                app_id: session.app.app_id,
            },
        }
    }

    fn repo(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    /// The sha at the tip of the base branch.
    #[tracing::instrument(skip_all)]
    pub async fn base_head(&self) -> anyhow::Result<String> {
        let what = format!("reading the base branch {}", self.base_branch);
        match self.branch_head(&self.base_branch).await? {
            Some(sha) => Ok(sha),
            None => {
                // The same 404 for a missing branch and a hidden repository: tell them apart.
                let repo = self.send_repo_root(&what).await?;
                if repo.status == 404 {
                    Err(self.failure(&repo, &what))
                } else {
                    bail!(
                        "the base branch {} does not exist in {}",
                        self.base_branch,
                        self.repo()
                    )
                }
            }
        }
    }

    /// The files at commit `at`; `None` for a path absent there.
    #[tracing::instrument(skip_all, fields(at = %at))]
    pub async fn read_files(
        &self,
        at: &str,
        paths: &[String],
    ) -> anyhow::Result<BTreeMap<String, Option<String>>> {
        let mut files = BTreeMap::new();
        for path in paths {
            let content = self.read_file(at, path).await?;
            files.insert(path.clone(), content);
        }
        Ok(files)
    }

    async fn read_file(&self, at: &str, path: &str) -> anyhow::Result<Option<String>> {
        let what = format!("reading {path} at {}", short(at));
        let route = format!("contents/{}?ref={}", encode_path(path), encode_path(at));
        let answer = self.send(Method::Get, &route, None, &what).await?;
        if answer.status == 404 {
            return Ok(None);
        }
        if !answer.ok() {
            return Err(self.failure(&answer, &what));
        }
        let value: Value = answer.json(&what)?;
        if value.is_array() {
            bail!("{path} is a directory in {}, not a file", self.repo());
        }
        let entry: ContentEntry = serde_json::from_value(value)
            .with_context(|| format!("unexpected answer from GitHub while {what}"))?;
        if entry.kind != "file" {
            bail!("{path} is a {} in {}, not a file", entry.kind, self.repo());
        }
        let encoded = match (entry.encoding.as_deref(), entry.content) {
            (Some("base64"), Some(content)) => content,
            // Files over 1 MB come without content: read the blob instead.
            _ => self.read_blob(&entry.sha, &what).await?,
        };
        decode_text(&encoded)
            .with_context(|| format!("{path} at {} is not UTF-8 text", short(at)))
            .map(Some)
    }

    async fn read_blob(&self, sha: &str, what: &str) -> anyhow::Result<String> {
        let answer = self
            .send(Method::Get, &format!("git/blobs/{sha}"), None, what)
            .await?;
        if !answer.ok() {
            return Err(self.failure(&answer, what));
        }
        let blob: Blob = answer.json(what)?;
        if blob.encoding != "base64" {
            bail!(
                "GitHub sent a blob in {:?} encoding while {what}",
                blob.encoding
            );
        }
        Ok(blob.content)
    }

    /// Every file's path on `branch`, from one recursive tree listing
    /// (`truncated` is true when GitHub cut the listing short, past 100,000
    /// entries or 7 MB).
    #[tracing::instrument(skip_all, fields(branch = %branch))]
    pub async fn file_paths(&self, branch: &str) -> anyhow::Result<FilePaths> {
        let what = format!("listing the files of {branch}");
        let route = format!("git/trees/{}?recursive=1", encode_path(branch));
        let answer = self.send(Method::Get, &route, None, &what).await?;
        if answer.status == 404 {
            // Tells a missing branch from a missing (or hidden) repository.
            self.base_head().await?;
            bail!("the branch {branch} does not exist in {}", self.repo());
        }
        if !answer.ok() {
            return Err(self.failure(&answer, &what));
        }
        let tree: TreeListing = answer.json(&what)?;
        let paths = tree
            .tree
            .into_iter()
            .filter(|e| e.kind == "blob")
            .map(|e| e.path)
            .collect();
        Ok(FilePaths {
            paths,
            truncated: tree.truncated,
        })
    }

    /// The sha at the tip of `branch`, or `None` when there is no such branch.
    #[tracing::instrument(skip_all, fields(branch = %branch))]
    pub async fn branch_head(&self, branch: &str) -> anyhow::Result<Option<String>> {
        let what = format!("reading the branch {branch}");
        let route = format!("git/ref/heads/{}", encode_path(branch));
        let answer = self.send(Method::Get, &route, None, &what).await?;
        if answer.status == 404 {
            return Ok(None);
        }
        if !answer.ok() {
            return Err(self.failure(&answer, &what));
        }
        let reference: Reference = answer.json(&what)?;
        Ok(Some(reference.object.sha))
    }

    /// Commits `changes` on top of `base` and points a new branch at it.
    /// Returns the new commit's sha. Fails if the branch already exists.
    #[tracing::instrument(skip_all, fields(branch = %branch, base = %base))]
    pub async fn commit_files(
        &self,
        base: &str,
        branch: &str,
        message: &str,
        changes: &[(String, Option<String>)],
    ) -> anyhow::Result<String> {
        let sha = self.write_commit(base, branch, message, changes).await?;
        let what = format!("creating the branch {branch}");
        let body = json!({"ref": format!("refs/heads/{branch}"), "sha": sha});
        let answer = self
            .send(Method::Post, "git/refs", Some(&body), &what)
            .await?;
        if answer.status == 422 && answer.message().contains("already exists") {
            bail!(
                "the branch {branch} already exists in {} (422 {})",
                self.repo(),
                answer.message()
            );
        }
        if !answer.ok() {
            return Err(self.failure(&answer, &what));
        }
        Ok(sha)
    }

    /// Commits `changes` on top of `head`, the tip of the existing `branch`,
    /// and moves the branch to it; fails, changing nothing a person sees,
    /// if the branch moved meanwhile. Returns the new commit's sha.
    #[tracing::instrument(skip_all, fields(branch = %branch, head = %head))]
    pub async fn commit_on_branch(
        &self,
        head: &str,
        branch: &str,
        message: &str,
        changes: &[(String, Option<String>)],
    ) -> anyhow::Result<String> {
        let sha = self.write_commit(head, branch, message, changes).await?;
        let what = format!("moving the branch {branch}");
        let route = format!("git/refs/heads/{}", encode_path(branch));
        let body = json!({"sha": sha, "force": false});
        let answer = self.send(Method::Patch, &route, Some(&body), &what).await?;
        if answer.status == 422 && answer.message().contains("fast forward") {
            bail!(
                "the branch {branch} moved after {} (422 {})",
                short(head),
                answer.message()
            );
        }
        if !answer.ok() {
            return Err(self.failure(&answer, &what));
        }
        Ok(sha)
    }

    /// A commit of `changes` on top of `parent`, on no branch yet.
    async fn write_commit(
        &self,
        parent: &str,
        branch: &str,
        message: &str,
        changes: &[(String, Option<String>)],
    ) -> anyhow::Result<String> {
        let base = self.commit(parent).await?;
        let mut entries = Vec::with_capacity(changes.len());
        for (path, content) in changes {
            let sha = match content {
                Some(content) => Value::String(self.create_blob(path, content).await?),
                // A null sha removes the path from the base tree.
                None => Value::Null,
            };
            entries.push(json!({"path": path, "mode": "100644", "type": "blob", "sha": sha}));
        }

        let what = format!("creating the tree for branch {branch}");
        let tree: Created = self
            .create(
                "git/trees",
                &json!({"base_tree": base.tree.sha, "tree": entries}),
                &what,
            )
            .await?;

        let what = format!("creating the commit for branch {branch}");
        let commit: Created = self
            .create(
                "git/commits",
                &json!({"message": message, "tree": tree.sha, "parents": [parent]}),
                &what,
            )
            .await?;
        Ok(commit.sha)
    }

    async fn create_blob(&self, path: &str, content: &str) -> anyhow::Result<String> {
        let what = format!("uploading {path}");
        let blob: Created = self
            .create(
                "git/blobs",
                &json!({"content": content, "encoding": "utf-8"}),
                &what,
            )
            .await?;
        Ok(blob.sha)
    }

    /// The first parent of commit `sha`.
    #[tracing::instrument(skip_all, fields(sha = %sha))]
    pub async fn commit_parent(&self, sha: &str) -> anyhow::Result<String> {
        let commit = self.commit(sha).await?;
        match commit.parents.into_iter().next() {
            Some(parent) => Ok(parent.sha),
            None => bail!("commit {} has no parent", short(sha)),
        }
    }

    async fn commit(&self, sha: &str) -> anyhow::Result<GitCommit> {
        let what = format!("reading commit {}", short(sha));
        let answer = self
            .send(Method::Get, &format!("git/commits/{sha}"), None, &what)
            .await?;
        if answer.status == 404 {
            bail!("commit {sha} not found in {}", self.repo());
        }
        if !answer.ok() {
            return Err(self.failure(&answer, &what));
        }
        answer.json(&what)
    }

    /// What CI says about commit `sha`: its check runs and commit statuses together.
    #[tracing::instrument(skip_all, fields(sha = %sha))]
    pub async fn checks(&self, sha: &str) -> anyhow::Result<Checks> {
        let (runs, statuses) = self.ci_reports(sha).await?;
        Ok(Checks::combine(runs.as_deref(), &statuses))
    }

    /// CI on commit `sha` and the preview a deployer posted for it, if any:
    /// what an approver sees before deciding.
    #[tracing::instrument(skip_all, fields(sha = %sha))]
    pub async fn head_report(&self, sha: &str) -> anyhow::Result<HeadReport> {
        let (runs, statuses) = self.ci_reports(sha).await?;
        // A preview is a convenience: without one (or without the
        // Deployments permission) the approver is still asked.
        let preview = match preview_in_statuses(&statuses) {
            Some(url) => Some(url),
            None => self
                .deployment_preview(sha)
                .await
                .unwrap_or_else(|err| {
                    tracing::warn!(error = %format!("{err:#}"), "could not read the preview deployments");
                    None
                }),
        };
        Ok(HeadReport {
            checks: Checks::combine(runs.as_deref(), &statuses),
            preview,
        })
    }

    /// The check runs (`None` when this credential may not read them) and
    /// the commit statuses of `sha`.
    async fn ci_reports(
        &self,
        sha: &str,
    ) -> anyhow::Result<(Option<Vec<CheckRunJson>>, Vec<StatusJson>)> {
        let what = format!("reading the checks of {}", short(sha));
        let answer = self
            .send(
                Method::Get,
                &format!("commits/{sha}/check-runs?per_page=100"),
                None,
                &what,
            )
            .await?;
        let runs = if answer.status == 403 && answer.message().contains("not accessible") {
            tracing::warn!(message = %answer.message(), "this credential cannot read check runs");
            None
        } else if answer.ok() {
            Some(answer.json::<CheckRunsJson>(&what)?.check_runs)
        } else {
            return Err(self.failure(&answer, &what));
        };
        let answer = self
            .send(Method::Get, &format!("commits/{sha}/status"), None, &what)
            .await?;
        if !answer.ok() {
            return Err(self.failure(&answer, &what));
        }
        let status: CombinedStatusJson = answer.json(&what)?;
        Ok((runs, status.statuses))
    }

    /// The newest successful non-production deployment of `sha` with an
    /// environment URL (Vercel, Netlify and Cloudflare Pages post these).
    async fn deployment_preview(&self, sha: &str) -> anyhow::Result<Option<String>> {
        let what = format!("reading the deployments of {}", short(sha));
        let route = format!("deployments?sha={sha}&per_page={PREVIEW_DEPLOYMENTS}");
        let answer = self.send(Method::Get, &route, None, &what).await?;
        if !answer.ok() {
            return Err(self.failure(&answer, &what));
        }
        let deployments: Vec<DeploymentJson> = answer.json(&what)?;
        for d in deployments.iter().filter(|d| !d.production_environment) {
            let route = format!("deployments/{}/statuses?per_page=10", d.id);
            let answer = self.send(Method::Get, &route, None, &what).await?;
            if !answer.ok() {
                return Err(self.failure(&answer, &what));
            }
            // Newest first: only the current state of the deployment counts.
            let statuses: Vec<DeploymentStatusJson> = answer.json(&what)?;
            if let Some(s) = statuses.first()
                && s.state == "success"
                && let Some(url) = s.environment_url.as_deref().filter(|u| is_web_url(u))
            {
                return Ok(Some(url.to_string()));
            }
        }
        Ok(None)
    }

    /// Adds a line linking the preview to the PR's description, once.
    #[tracing::instrument(skip_all, fields(pr = number))]
    pub async fn link_preview(&self, number: u64, url: &str) -> anyhow::Result<()> {
        let what = format!("reading pull request #{number}");
        let answer = self
            .send(Method::Get, &format!("pulls/{number}"), None, &what)
            .await?;
        if !answer.ok() {
            return Err(self.failure(&answer, &what));
        }
        let pr: PrBodyJson = answer.json(&what)?;
        let body = pr.body.unwrap_or_default();
        if body.contains(url) {
            return Ok(());
        }
        let body = json!({"body": format!("**Preview:** {url}\n\n{body}")});
        let what = format!("linking the preview in pull request #{number}");
        self.update_pr(number, &body, &what).await
    }

    /// The pull request whose head is `branch` in this repository: the open
    /// one if any, else the newest.
    #[tracing::instrument(skip_all, fields(branch = %branch))]
    pub async fn find_pr(&self, branch: &str) -> anyhow::Result<Option<PullRequest>> {
        let what = format!("looking for a pull request from {branch}");
        // GitHub silently ignores a bare branch name: it must be owner:branch.
        let label = format!("{}:{branch}", self.owner);
        let route = format!("pulls?head={}&state=all&per_page=100", encode_path(&label));
        let answer = self.send(Method::Get, &route, None, &what).await?;
        if !answer.ok() {
            return Err(self.failure(&answer, &what));
        }
        let pulls: Vec<PullJson> = answer.json(&what)?;
        // GitHub lists newest first; keep only this branch in case the filter was dropped.
        let mut ours = pulls
            .into_iter()
            .filter(|p| p.head.ref_name == branch && p.head.label.as_deref() == Some(&label))
            .map(PullJson::into_pull)
            .collect::<Vec<_>>();
        let open = ours.iter().position(|p| p.state == PrState::Open);
        Ok(match open {
            Some(i) => Some(ours.swap_remove(i)),
            None => ours.into_iter().next(),
        })
    }

    /// Opens a pull request from `branch` into the base branch, then labels it.
    #[tracing::instrument(skip_all, fields(branch = %branch))]
    pub async fn open_pr(
        &self,
        branch: &str,
        title: &str,
        body: &str,
        labels: &[String],
    ) -> anyhow::Result<PullRequest> {
        let what = format!("opening a pull request from {branch}");
        let pull: PullJson = self
            .create(
                "pulls",
                &json!({"title": title, "head": branch, "base": self.base_branch, "body": body}),
                &what,
            )
            .await?;
        let pull = pull.into_pull();
        if !labels.is_empty() {
            let what = format!("labelling pull request #{}", pull.number);
            let route = format!("issues/{}/labels", pull.number);
            // The PR exists now: a missing label must not make us lose track of it.
            if let Err(e) = self
                .create::<Value>(&route, &json!({"labels": labels}), &what)
                .await
            {
                tracing::warn!(error = %format!("{e:#}"), pr = pull.number, "could not label the pull request");
            }
        }
        Ok(pull)
    }

    /// Pull request `number` as it is now.
    #[tracing::instrument(skip_all, fields(pr = number))]
    pub async fn pull_request(&self, number: u64) -> anyhow::Result<PullRequest> {
        let what = format!("reading pull request #{number}");
        let answer = self
            .send(Method::Get, &format!("pulls/{number}"), None, &what)
            .await?;
        if !answer.ok() {
            return Err(self.failure(&answer, &what));
        }
        Ok(answer.json::<PullJson>(&what)?.into_pull())
    }

    /// Merges pull request `number` only if its head is still `sha`.
    #[tracing::instrument(skip_all, fields(pr = number, sha = %sha))]
    pub async fn merge(
        &self,
        number: u64,
        sha: &str,
        method: MergeMethod,
        title: &str,
    ) -> anyhow::Result<MergeOutcome> {
        let what = format!("merging pull request #{number}");
        let body = json!({"sha": sha, "merge_method": method.as_str(), "commit_title": title});
        let route = format!("pulls/{number}/merge");
        let answer = self.send(Method::Put, &route, Some(&body), &what).await?;
        match answer.status {
            200 => {
                let merged: MergeAnswer = answer.json(&what)?;
                Ok(MergeOutcome::Merged { sha: merged.sha })
            }
            409 => Ok(MergeOutcome::HeadMoved),
            405 | 422 => {
                // A retried PUT may have merged on an earlier try that we never heard back from.
                if answer.attempts > 1 {
                    let pull = self.pull_request(number).await?;
                    if let (PrState::Merged, Some(merged)) = (pull.state, pull.merge_commit_sha)
                        && pull.head_sha == sha
                    {
                        return Ok(MergeOutcome::Merged { sha: merged });
                    }
                }
                Ok(MergeOutcome::NotMergeable(answer.message()))
            }
            _ => Err(self.failure(&answer, &what)),
        }
    }

    /// Closes pull request `number` without merging.
    #[tracing::instrument(skip_all, fields(pr = number))]
    pub async fn close_pr(&self, number: u64) -> anyhow::Result<()> {
        let what = format!("closing pull request #{number}");
        self.update_pr(number, &json!({"state": "closed"}), &what)
            .await
    }

    async fn update_pr(&self, number: u64, body: &Value, what: &str) -> anyhow::Result<()> {
        let route = format!("pulls/{number}");
        let answer = self.send(Method::Patch, &route, Some(body), what).await?;
        if !answer.ok() {
            return Err(self.failure(&answer, what));
        }
        Ok(())
    }

    /// Deletes `branch`; a branch already gone is fine.
    #[tracing::instrument(skip_all, fields(branch = %branch))]
    pub async fn delete_branch(&self, branch: &str) -> anyhow::Result<()> {
        let what = format!("deleting the branch {branch}");
        let route = format!("git/refs/heads/{}", encode_path(branch));
        let answer = self.send(Method::Delete, &route, None, &what).await?;
        if answer.ok() || answer.status == 404 || answer.status == 422 {
            return Ok(());
        }
        Err(self.failure(&answer, &what))
    }

    /// Adds a comment to pull request `number`.
    #[tracing::instrument(skip_all, fields(pr = number))]
    pub async fn comment(&self, number: u64, body: &str) -> anyhow::Result<()> {
        let what = format!("commenting on pull request #{number}");
        let route = format!("issues/{number}/comments");
        self.create::<Value>(&route, &json!({"body": body}), &what)
            .await?;
        Ok(())
    }
}

// ---- Transport: one request, retried by our rules ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    fn resend(self) -> Resend {
        match self {
            Method::Post => Resend::OnlyIfUnprocessed,
            _ => Resend::Idempotent,
        }
    }
}

impl GitHub {
    /// Sends `method` to `/repos/{owner}/{name}/{route}` until it succeeds,
    /// fails for good, or the tries run out; returns the last answer.
    async fn send(
        &self,
        method: Method,
        route: &str,
        body: Option<&Value>,
        what: &str,
    ) -> anyhow::Result<Answer> {
        let uri = format!("/repos/{}/{}/{route}", self.owner, self.name);
        self.send_uri(method, &uri, body, what).await
    }

    /// `GET /repos/{owner}/{name}`, to tell a missing repository from a missing object.
    async fn send_repo_root(&self, what: &str) -> anyhow::Result<Answer> {
        let uri = format!("/repos/{}/{}", self.owner, self.name);
        self.send_uri(Method::Get, &uri, None, what).await
    }

    async fn send_uri(
        &self,
        method: Method,
        uri: &str,
        body: Option<&Value>,
        what: &str,
    ) -> anyhow::Result<Answer> {
        let Auth::App(session) = &*self.auth else {
            return self
                .send_as(Credential::Client(&self.client), method, uri, body, what)
                .await;
        };
        let (client, generation) = self.installation_client(session, None).await?;
        let answer = self
            .send_as(Credential::Client(&client), method, uri, body, what)
            .await?;
        if answer.status != 401 {
            return Ok(answer);
        }
        // Refused before anything was done (expired early, revoked, or our
        // clock behind GitHub's): safe to send again, even a POST.
        tracing::info!("GitHub refused the installation token: getting a new one");
        let (client, _) = self.installation_client(session, Some(generation)).await?;
        let mut again = self
            .send_as(Credential::Client(&client), method, uri, body, what)
            .await?;
        again.attempts += answer.attempts;
        Ok(again)
    }

    /// A client carrying a valid installation token, minted if there is none,
    /// if it is about to expire, or if GitHub refused generation `refused`.
    async fn installation_client(
        &self,
        session: &AppSession,
        refused: Option<u64>,
    ) -> anyhow::Result<(Octocrab, u64)> {
        let mut state = session.state.lock().await;
        let now = session.clock.now();
        let usable = state.token.as_ref().filter(|t| {
            refused != Some(state.generation) && !github_app::needs_renewal(t.expires_at, now)
        });
        let token = match usable {
            Some(t) => t.token.clone(),
            None => {
                let installation_id = match state.installation_id {
                    Some(id) => id,
                    None => {
                        let id = match session.app.installation_id {
                            Some(id) => id,
                            None => self.find_installation(session).await?,
                        };
                        state.installation_id = Some(id);
                        id
                    }
                };
                let minted = self.mint_token(session, installation_id).await?;
                let token = minted.token.clone();
                state.token = Some(minted);
                state.generation += 1;
                token
            }
        };
        let client = self
            .client
            .user_access_token(token)
            .context("could not build the GitHub client")?;
        Ok((client, state.generation))
    }

    /// `GET /repos/{owner}/{repo}/installation`, as the App.
    async fn find_installation(&self, session: &AppSession) -> anyhow::Result<u64> {
        let app_id = session.app.app_id;
        let what = format!(
            "finding GitHub App {app_id}'s installation on {}",
            self.repo()
        );
        let uri = format!("/repos/{}/{}/installation", self.owner, self.name);
        let answer = self
            .send_as(Credential::AppJwt(session), Method::Get, &uri, None, &what)
            .await?;
        match answer.status {
            200 => {
                let found: InstallationJson = answer.json(&what)?;
                tracing::info!(
                    app_id,
                    installation = found.id,
                    acting_as = %format!("{}[bot]", found.app_slug.as_deref().unwrap_or("app")),
                    "found the GitHub App's installation"
                );
                Ok(found.id)
            }
            401 => Err(jwt_refused(&answer, session, &what)),
            404 => bail!(
                "GitHub App {app_id} is not installed on {} (404 while {what}): install it on the repository from the App's page (Install App)",
                self.repo()
            ),
            _ => Err(self.failure(&answer, &what)),
        }
    }

    /// `POST /app/installations/{id}/access_tokens`, as the App.
    async fn mint_token(
        &self,
        session: &AppSession,
        installation_id: u64,
    ) -> anyhow::Result<InstallationToken> {
        let app_id = session.app.app_id;
        let what =
            format!("getting a token for installation {installation_id} of GitHub App {app_id}");
        let uri = format!("/app/installations/{installation_id}/access_tokens");
        let answer = self
            .send_as(
                Credential::AppJwt(session),
                Method::Post,
                &uri,
                Some(&json!({})),
                &what,
            )
            .await?;
        match answer.status {
            200..=299 => {
                // The body holds the token: an error must not quote it.
                let minted: TokenJson = serde_json::from_str(&answer.body).map_err(|_| {
                    anyhow!("unexpected answer from GitHub while {what} ({}): no token and expiry in it", answer.status)
                })?;
                let expires_at = chrono::DateTime::parse_from_rfc3339(&minted.expires_at)
                    .with_context(|| {
                        format!(
                            "GitHub gave an expiry that is not a time while {what}: {:?}",
                            minted.expires_at
                        )
                    })?
                    .with_timezone(&chrono::Utc);
                Ok(InstallationToken {
                    token: SecretString::from(minted.token),
                    expires_at,
                })
            }
            401 => Err(jwt_refused(&answer, session, &what)),
            404 => bail!(
                "installation {installation_id} of GitHub App {app_id} not found (404 while {what}): check github.installation_id, or leave it out to have it looked up"
            ),
            _ => Err(self.failure(&answer, &what)),
        }
    }

    /// Sends with `credential` until it succeeds, fails for good, or the
    /// tries run out; returns the last answer.
    async fn send_as(
        &self,
        credential: Credential<'_>,
        method: Method,
        uri: &str,
        body: Option<&Value>,
        what: &str,
    ) -> anyhow::Result<Answer> {
        let max = self.retry.max_attempts.max(1);
        let resend = method.resend();
        let outcome = self
            .retry
            .run("GitHub", |attempt| async move {
                let client = match credential {
                    Credential::Client(client) => client.clone(),
                    Credential::AppJwt(session) => {
                        let app = &session.app;
                        let jwt = github_app::jwt(app.app_id, &app.key, session.clock.now());
                        match self.client.user_access_token(jwt) {
                            Ok(client) => client,
                            Err(e) => return Attempt::Fail(Unanswered::Unreachable(e)),
                        }
                    }
                };
                let sent = tokio::time::timeout(
                    self.retry.timeout,
                    Self::send_once(&client, method, uri, body),
                );
                match sent.await {
                    Ok(Ok(mut answer)) => {
                        answer.attempts = attempt;
                        match retry_wait(&answer, resend, unix_now()) {
                            Some(asked) => Attempt::Again {
                                error: Unanswered::Asked(answer),
                                asked,
                            },
                            None => Attempt::Done(answer),
                        }
                    }
                    // Only a request that is safe to repeat is sent again.
                    Ok(Err(e)) if resend == Resend::Idempotent => Attempt::Again {
                        error: Unanswered::Unreachable(e),
                        asked: None,
                    },
                    Ok(Err(e)) => Attempt::Fail(Unanswered::Unreachable(e)),
                    Err(_) if resend == Resend::Idempotent => Attempt::Again {
                        error: Unanswered::Timeout,
                        asked: None,
                    },
                    Err(_) => Attempt::Fail(Unanswered::Timeout),
                }
            })
            .await;
        match outcome {
            Ok(answer) => Ok(answer),
            // The last answer is described by the caller, who knows what it meant.
            Err(GaveUp {
                error: Unanswered::Asked(answer),
                ..
            }) => Ok(answer),
            // The causes name the real trouble (refused, DNS, TLS): keep them.
            Err(GaveUp {
                error: Unanswered::Unreachable(e),
                attempts,
                ..
            }) => Err(anyhow::Error::new(e).context(format!(
                "could not reach GitHub while {what} (try {attempts} of {max})"
            ))),
            Err(GaveUp {
                error: Unanswered::Timeout,
                attempts,
                ..
            }) => Err(anyhow!(
                "GitHub did not answer within {} while {what} (try {attempts} of {max})",
                humantime::format_duration(self.retry.timeout)
            )),
        }
    }

    async fn send_once(
        client: &Octocrab,
        method: Method,
        uri: &str,
        body: Option<&Value>,
    ) -> Result<Answer, octocrab::Error> {
        let uri = uri.to_string();
        let response = match method {
            Method::Get => client._get(uri).await?,
            Method::Post => client._post(uri, body).await?,
            Method::Put => client._put(uri, body).await?,
            Method::Patch => client._patch(uri, body).await?,
            Method::Delete => client._delete(uri, body).await?,
        };
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let status = response.status().as_u16();
        let retry_after = header("retry-after");
        let ratelimit_remaining = header("x-ratelimit-remaining");
        let ratelimit_reset = header("x-ratelimit-reset");
        let body = client.body_to_string(response).await?;
        Ok(Answer {
            status,
            retry_after,
            ratelimit_remaining,
            ratelimit_reset,
            body,
            attempts: 1,
        })
    }

    /// POSTs `body` to create something; any answer but 2xx is an error.
    async fn create<T: DeserializeOwned>(
        &self,
        route: &str,
        body: &Value,
        what: &str,
    ) -> anyhow::Result<T> {
        let answer = self.send(Method::Post, route, Some(body), what).await?;
        if !answer.ok() {
            return Err(self.failure(&answer, what));
        }
        answer.json(what)
    }

    /// The one-line error for an answer we cannot use.
    fn failure(&self, answer: &Answer, what: &str) -> anyhow::Error {
        anyhow!(describe_failure(answer, &self.repo(), self.who(), what))
    }
}

impl Answer {
    fn json<T: DeserializeOwned>(&self, what: &str) -> anyhow::Result<T> {
        serde_json::from_str(&self.body).with_context(|| {
            format!(
                "unexpected answer from GitHub while {what} ({}): {}",
                self.status,
                one_line(&self.body, 200)
            )
        })
    }

    /// GitHub's `message`, with the details of a validation error.
    fn message(&self) -> String {
        let Ok(error) = serde_json::from_str::<ErrorJson>(&self.body) else {
            return one_line(&self.body, 200);
        };
        let details = error
            .errors
            .iter()
            .filter_map(|e| match e {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o
                    .get("message")
                    .or_else(|| o.get("code"))
                    .and_then(Value::as_str)
                    .map(|s| match o.get("field").and_then(Value::as_str) {
                        Some(field) => format!("{field} {s}"),
                        None => s.to_string(),
                    }),
                _ => None,
            })
            .collect::<Vec<_>>();
        let message = if details.is_empty() {
            error.message
        } else {
            format!("{}: {}", error.message, details.join("; "))
        };
        one_line(&message, 300)
    }

    fn rate_limited(&self) -> bool {
        self.status == 429
            || (self.status == 403
                && (self.retry_after.is_some() || self.ratelimit_remaining.as_deref() == Some("0")))
    }
}

/// `Some(asked wait)` when the request should be sent again.
/// Why one request to GitHub gave no usable answer.
#[derive(Debug)]
enum Unanswered {
    /// GitHub answered and asked (or its answer invites) another try.
    Asked(Answer),
    Unreachable(octocrab::Error),
    Timeout,
}

impl std::fmt::Display for Unanswered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unanswered::Asked(a) => write!(f, "GitHub answered {}", a.status),
            Unanswered::Unreachable(e) => write!(f, "GitHub unreachable: {e}"),
            Unanswered::Timeout => f.write_str("GitHub did not answer in time"),
        }
    }
}

fn retry_wait(answer: &Answer, resend: Resend, now: u64) -> Option<Option<Duration>> {
    if answer.rate_limited() {
        // GitHub refused before doing anything, so even a POST is safe to send again.
        let asked = match (&answer.retry_after, &answer.ratelimit_reset) {
            (Some(secs), _) => secs.trim().parse::<u64>().ok().map(Duration::from_secs),
            (None, Some(reset)) => reset
                .trim()
                .parse::<u64>()
                .ok()
                .map(|reset| Duration::from_secs(reset.saturating_sub(now).max(1))),
            (None, None) => None,
        };
        return Some(asked);
    }
    if answer.status >= 500 && resend == Resend::Idempotent {
        return Some(None);
    }
    None
}

fn describe_failure(answer: &Answer, repo: &str, who: Who<'_>, what: &str) -> String {
    let message = answer.message();
    let status = answer.status;
    let tries = answer.attempts;
    match (status, who) {
        (401, Who::Token { env }) => format!(
            "GitHub refused the token in ${env} (401): check it is valid (GitHub said {message:?} while {what})"
        ),
        (401, Who::App { app_id }) => format!(
            "GitHub refused fresh installation tokens of GitHub App {app_id} (401 while {what}): is the App still installed and not suspended? (GitHub said {message:?})"
        ),
        (403 | 429, _) if answer.rate_limited() => format!(
            "GitHub rate limit still in force after {tries} tries while {what} ({status}): {message}"
        ),
        (403, Who::Token { env }) => format!(
            "GitHub denied {what} in {repo} (403): the token in ${env} needs write access to contents and pull requests ({message})"
        ),
        (403, Who::App { app_id }) => format!(
            "GitHub denied {what} in {repo} (403): GitHub App {app_id} needs Contents and Pull requests read and write, Checks and Commit statuses read ({message})"
        ),
        (404, Who::Token { .. }) => format!(
            "repository {repo} not found or not visible to the token (404 while {what}: {message})"
        ),
        (404, Who::App { app_id }) => format!(
            "repository {repo} not found or not visible to GitHub App {app_id}'s installation (404 while {what}: {message})"
        ),
        (500.., _) if tries > 1 => {
            format!("GitHub failed while {what} ({status}) after {tries} tries: {message}")
        }
        (500.., _) => format!(
            "GitHub failed while {what} ({status}); not sent again since it may have been applied: {message}"
        ),
        _ => format!("GitHub refused {what} ({status}): {message}"),
    }
}

/// A 401 to the App's own JWT: the id or the key is wrong, or the clock is off.
fn jwt_refused(answer: &Answer, session: &AppSession, what: &str) -> anyhow::Error {
    let app = &session.app;
    anyhow!(
        "GitHub refused the JWT of GitHub App {} (401 while {what}): check github.app_id, that the key in {} is this App's, and this machine's clock (GitHub said {:?})",
        app.app_id,
        app.key_source,
        answer.message()
    )
}

// ---- Helpers ----

fn check_token(token: &SecretString, token_env: &str) -> anyhow::Result<()> {
    use secrecy::ExposeSecret;
    let token = token.expose_secret();
    if token.trim().is_empty() {
        bail!("the GitHub token in ${token_env} is empty");
    }
    // octocrab panics on a header it cannot build: refuse such a token here.
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        bail!(
            "the GitHub token in ${token_env} contains spaces or characters not allowed in an HTTP header"
        );
    }
    Ok(())
}

/// Percent-encodes a path or query value, keeping `/` between segments.
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// GitHub's base64 (wrapped with newlines) to text.
fn decode_text(encoded: &str) -> anyhow::Result<String> {
    let compact: String = encoded.chars().filter(|c| !c.is_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .context("invalid base64 from GitHub")?;
    Ok(String::from_utf8(bytes)?)
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

fn one_line(text: &str, max_chars: usize) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &flat[..i]),
        None => flat,
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---- The parts of GitHub's JSON we read ----

#[derive(Deserialize)]
struct ErrorJson {
    message: String,
    #[serde(default)]
    errors: Vec<Value>,
}

#[derive(Deserialize)]
struct ContentEntry {
    #[serde(rename = "type")]
    kind: String,
    sha: String,
    encoding: Option<String>,
    content: Option<String>,
}

#[derive(Deserialize)]
struct InstallationJson {
    id: u64,
    app_slug: Option<String>,
}

/// Not octocrab's `InstallationToken`: its `Debug` would print the token.
#[derive(Deserialize)]
struct TokenJson {
    token: String,
    expires_at: String,
}

#[derive(Deserialize)]
struct Blob {
    content: String,
    encoding: String,
}

/// `GET /git/trees/{branch}?recursive=1`.
#[derive(Deserialize)]
struct TreeListing {
    tree: Vec<TreeEntry>,
    #[serde(default)]
    truncated: bool,
}

#[derive(Deserialize)]
struct TreeEntry {
    path: String,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct Reference {
    object: ShaOnly,
}

#[derive(Deserialize)]
struct ShaOnly {
    sha: String,
}

#[derive(Deserialize)]
struct Created {
    sha: String,
}

#[derive(Deserialize)]
struct GitCommit {
    tree: ShaOnly,
    parents: Vec<ShaOnly>,
}

#[derive(Deserialize)]
struct MergeAnswer {
    sha: String,
}

#[derive(Deserialize)]
struct PullJson {
    number: u64,
    html_url: String,
    state: String,
    head: PullHead,
    /// Absent from the list endpoint; `merged_at` is always there.
    merged: Option<bool>,
    merged_at: Option<String>,
    merge_commit_sha: Option<String>,
}

#[derive(Deserialize)]
struct PullHead {
    #[serde(rename = "ref")]
    ref_name: String,
    sha: String,
    label: Option<String>,
}

impl PullJson {
    fn into_pull(self) -> PullRequest {
        let merged = self.merged == Some(true) || self.merged_at.is_some();
        let state = match (merged, self.state.as_str()) {
            (true, _) => PrState::Merged,
            (false, "open") => PrState::Open,
            _ => PrState::Closed,
        };
        PullRequest {
            number: self.number,
            url: self.html_url,
            head_sha: self.head.sha,
            state,
            merge_commit_sha: if merged { self.merge_commit_sha } else { None },
            merged_at: self
                .merged_at
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&chrono::Utc)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: Who<'static> = Who::Token {
        env: "GITHUB_TOKEN",
    };

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            retry_after: None,
            ratelimit_remaining: None,
            ratelimit_reset: None,
            body: body.to_string(),
            attempts: 1,
        }
    }

    #[test]
    fn server_errors_are_retried_only_for_idempotent_requests() {
        let a = answer(502, "");
        assert_eq!(retry_wait(&a, Resend::Idempotent, 0), Some(None));
        assert_eq!(retry_wait(&a, Resend::OnlyIfUnprocessed, 0), None);
    }

    #[test]
    fn rate_limits_are_retried_with_the_wait_github_asks() {
        let mut a = answer(
            403,
            r#"{"message":"You have exceeded a secondary rate limit."}"#,
        );
        a.retry_after = Some("7".into());
        assert_eq!(
            retry_wait(&a, Resend::OnlyIfUnprocessed, 0),
            Some(Some(Duration::from_secs(7)))
        );
        let mut a = answer(403, r#"{"message":"API rate limit exceeded"}"#);
        a.ratelimit_remaining = Some("0".into());
        a.ratelimit_reset = Some("1030".into());
        assert_eq!(
            retry_wait(&a, Resend::Idempotent, 1000),
            Some(Some(Duration::from_secs(30)))
        );
        assert_eq!(
            retry_wait(&answer(429, ""), Resend::Idempotent, 0),
            Some(None)
        );
    }

    #[test]
    fn a_plain_403_is_a_missing_permission_not_a_rate_limit() {
        let a = answer(
            403,
            r#"{"message":"Resource not accessible by personal access token","documentation_url":"https://docs.github.com/rest"}"#,
        );
        assert_eq!(retry_wait(&a, Resend::Idempotent, 0), None);
        let text = describe_failure(&a, "acme/web", TOKEN, "opening a pull request");
        assert!(
            text.contains("write access to contents and pull requests"),
            "{text}"
        );
        assert!(text.contains("Resource not accessible"), "{text}");
    }

    #[test]
    fn errors_are_one_line_with_githubs_message() {
        let a = answer(
            422,
            r#"{"message":"Validation Failed","errors":[{"resource":"PullRequest","code":"custom","message":"A pull request already exists for acme:x."}]}"#,
        );
        let text = describe_failure(&a, "acme/web", TOKEN, "opening a pull request");
        assert_eq!(
            text,
            "GitHub refused opening a pull request (422): Validation Failed: A pull request already exists for acme:x."
        );
        let a = answer(404, r#"{"message":"Not Found"}"#);
        let text = describe_failure(&a, "acme/web", TOKEN, "reading pull request #3");
        assert!(text.starts_with("repository acme/web not found or not visible to the token"));
        let a = answer(502, "<html>\n<body>Bad gateway</body>\n</html>");
        assert!(!describe_failure(&a, "acme/web", TOKEN, "x").contains('\n'));
    }

    #[test]
    fn paths_and_labels_are_encoded_for_the_url() {
        assert_eq!(encode_path("site/a b.html"), "site/a%20b.html");
        assert_eq!(encode_path("acme:funnelfix/x"), "acme%3Afunnelfix/x");
    }

    #[test]
    fn wrapped_base64_decodes() {
        assert_eq!(decode_text("aGVsbG8g\nd29ybGQ=\n").unwrap(), "hello world");
    }

    #[test]
    fn merged_pulls_read_as_merged_from_either_field() {
        let pull: PullJson = serde_json::from_value(json!({
            "number": 4, "html_url": "https://github.com/a/b/pull/4", "state": "closed",
            "head": {"ref": "x", "sha": "abc", "label": "a:x"},
            "merged_at": "2024-01-01T00:00:00Z", "merge_commit_sha": "def"
        }))
        .unwrap();
        let pull = pull.into_pull();
        assert_eq!(pull.state, PrState::Merged);
        assert_eq!(pull.merge_commit_sha.as_deref(), Some("def"));
    }
}
