//! Twin of GitHub's REST API for one repository: a real little object store
//! (blobs, trees, commits, branch refs), the contents API, pull requests with
//! labels and comments, and merges that move the base branch. Paths, JSON and
//! error shapes follow GitHub's (they deserialize into octocrab's models);
//! state lives in an `Arc<Mutex<..>>` that tests read and change through the
//! handle: human pushes, merges and closes, unmergeable PRs, injected faults,
//! and request counts. A registered GitHub App authenticates as GitHub's do
//! (see `github_app.rs`): its installation tokens work like a token, expire
//! after an hour of the twin's clock, and what they make comes from
//! `<slug>[bot]`.
//!
//! Simplifications: trees are flat (path → blob, mode 100644), so tree answers
//! list every file like `?recursive=1` (which adds the directories as `tree`
//! entries, as GitHub does); merges are a file-level three-way merge.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use base64::Engine;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::Server;
use super::github_app::{self, IssuedToken, TwinApp};

mod http;
mod json;
mod responses;
mod store;

use http::*;
use responses::*;

const DOCS: &str = "https://docs.github.com/rest";
/// GitHub's answer to a tree entry with both, or neither, of `sha` and `content`.
const BOTH_OR_NEITHER: &str =
    "Must supply either tree.sha or tree.content. Request will be rejected if both are present.";

/// A pull request as the twin holds it.
#[derive(Debug, Clone)]
pub struct TwinPull {
    pub number: u64,
    pub title: String,
    pub body: String,
    /// The head branch's name.
    pub head: String,
    pub head_sha: String,
    pub base: String,
    pub state: PullState,
    pub labels: Vec<String>,
    pub comments: Vec<String>,
    pub merge_commit_sha: Option<String>,
    /// The login that opened it: the token's user, or `<slug>[bot]`.
    pub author: String,
}

/// Who a request comes from, once its credential is checked.
/// How a fine-grained personal access token starts (a classic one: `ghp_`).
const FINE_GRAINED_PREFIX: &str = "github_pat_";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Caller {
    /// The token the twin was started with (a person's token).
    Token,
    /// An installation token of the registered App.
    Installation,
}

/// The login of the person whose token the twin accepts, and the name on
/// commits they make through the API.
const TOKEN_LOGIN: &str = "funnelfix-bot";
const TOKEN_COMMITTER: &str = "funnelfix twin";

/// A running GitHub twin; stops when dropped.
pub struct GitHubTwin {
    server: Server,
    state: Arc<Mutex<Repo>>,
}

type Tree = BTreeMap<String, String>;

struct Commit {
    message: String,
    tree: String,
    parents: Vec<String>,
    date: String,
    /// Author and committer name.
    author: String,
}

struct Pull {
    public: TwinPull,
    mergeable: bool,
    merged_head: Option<String>,
    created_at: String,
    updated_at: String,
    closed_at: Option<String>,
    merged_at: Option<String>,
}

struct Fault {
    /// Only requests with this method, when set ("POST /pulls").
    method: Option<String>,
    path_contains: String,
    status: u16,
    remaining: usize,
}

struct Repo {
    api_url: String,
    owner: String,
    name: String,
    base_branch: String,
    token: String,
    blobs: HashMap<String, Vec<u8>>,
    trees: HashMap<String, Tree>,
    commits: HashMap<String, Commit>,
    refs: BTreeMap<String, String>,
    pulls: Vec<Pull>,
    faults: VecDeque<Fault>,
    /// Requests received, by method and path.
    requests: HashMap<(String, String), usize>,
    merge_requests: usize,
    write_requests: usize,
    /// Makes every commit's sha unique, like a timestamp would.
    commit_counter: u64,
    /// The world's time for merged_at and the other timestamps.
    clock: Option<Clock>,
    /// CI on each commit, as GitHub reports it: check runs and commit statuses.
    check_runs: HashMap<String, Vec<CheckRun>>,
    statuses: HashMap<String, Vec<CommitStatus>>,
    /// The GitHub App registered with the twin, if any.
    app: Option<TwinApp>,
    /// Every installation token handed out, oldest first.
    tokens: Vec<IssuedToken>,
    /// Requests refused because their installation token had expired.
    expired_token_refusals: usize,
    /// Who sent the request being served.
    caller: Caller,
    /// Deployments, oldest first; their ids are their index + 1.
    deployments: Vec<Deployment>,
    /// CI run on every push to a branch, and the runs not finished yet.
    workflow: Option<Workflow>,
    running: Vec<(String, chrono::DateTime<chrono::Utc>)>,
    /// Numbers the workflow's runs, as GitHub numbers a repository's runs.
    runs_started: u64,
    /// Preview deployments made on every push, and those not ready yet.
    deployer: Option<PreviewDeployer>,
    deploying: Vec<(u64, chrono::DateTime<chrono::Utc>, String)>,
}

/// A CI workflow the repository runs on every push to a branch other than
/// the base, as GitHub Actions does: a check run in progress from the push,
/// completed `takes` later.
#[derive(Debug, Clone)]
pub struct Workflow {
    pub name: String,
    pub takes: Duration,
    /// The run fails when a file of the pushed commit contains this text
    /// (a test the change breaks).
    pub fails_on: Option<String>,
}

/// A preview deployer (as Vercel, Netlify and Cloudflare Pages do): a
/// deployment of every pushed branch head, ready `takes` later at
/// `https://{branch}.{domain}`.
#[derive(Debug, Clone)]
pub struct PreviewDeployer {
    pub domain: String,
    pub takes: Duration,
}

/// A check run (GitHub Actions and other apps).
#[derive(Debug, Clone)]
pub struct CheckRun {
    pub name: String,
    /// "queued", "in_progress" or "completed".
    pub status: String,
    /// Set once completed: "success", "failure", "neutral", "cancelled", "skipped", "timed_out", "action_required".
    pub conclusion: Option<String>,
    pub html_url: String,
    /// The run's report (`output.summary`), once it has one.
    pub summary: Option<String>,
}

/// A commit status (older CI, Vercel, Netlify previews).
#[derive(Debug, Clone)]
pub struct CommitStatus {
    pub context: String,
    /// "pending", "success", "failure" or "error".
    pub state: String,
    pub target_url: Option<String>,
}

/// A deployment of a commit (Vercel, Netlify and Cloudflare Pages create
/// one per preview) with its statuses, oldest first.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub sha: String,
    pub environment: String,
    pub production_environment: bool,
    pub statuses: Vec<DeploymentStatus>,
}

#[derive(Debug, Clone)]
pub struct DeploymentStatus {
    /// "queued", "in_progress", "pending", "success", "failure", "error" or "inactive".
    pub state: String,
    pub environment_url: Option<String>,
}

/// A pull request's state as GitHub shows it (the twin's own, not the adapter's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullState {
    Open,
    Closed,
    Merged,
}

/// Where the twin reads the time (a simulated world moves its own clock).
pub type Clock = Arc<dyn Fn() -> chrono::DateTime<chrono::Utc> + Send + Sync>;

impl GitHubTwin {
    /// Serves `owner/repo` whose `base_branch` holds one commit with `files`,
    /// accepting only `token`.
    pub async fn start(
        owner: &str,
        repo: &str,
        base_branch: &str,
        files: &[(&str, &str)],
        token: &str,
    ) -> std::io::Result<GitHubTwin> {
        let mut state = Repo {
            api_url: String::new(),
            owner: owner.to_string(),
            name: repo.to_string(),
            base_branch: base_branch.to_string(),
            token: token.to_string(),
            blobs: HashMap::new(),
            trees: HashMap::new(),
            commits: HashMap::new(),
            refs: BTreeMap::new(),
            pulls: Vec::new(),
            faults: VecDeque::new(),
            requests: HashMap::new(),
            merge_requests: 0,
            write_requests: 0,
            commit_counter: 0,
            clock: None,
            check_runs: HashMap::new(),
            statuses: HashMap::new(),
            deployments: Vec::new(),
            workflow: None,
            running: Vec::new(),
            runs_started: 0,
            deployer: None,
            deploying: Vec::new(),
            app: None,
            tokens: Vec::new(),
            expired_token_refusals: 0,
            caller: Caller::Token,
        };
        let tree = files
            .iter()
            .map(|(path, content)| (path.to_string(), state.put_blob(content.as_bytes())))
            .collect();
        let tree = state.put_tree(tree);
        let sha = state.put_commit("Initial commit", &tree, Vec::new());
        state.refs.insert(base_branch.to_string(), sha);

        let state = Arc::new(Mutex::new(state));
        let router = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&state));
        let server = Server::start(router).await?;
        lock(&state).api_url = server.url();
        Ok(GitHubTwin { server, state })
    }

    /// CI reports a check run on commit `sha` (replacing one of the same name).
    pub fn set_check_run(&self, sha: &str, run: CheckRun) {
        let mut state = self.state();
        let runs = state.check_runs.entry(sha.to_string()).or_default();
        runs.retain(|r| r.name != run.name);
        runs.push(run);
    }

    /// CI reports a commit status on `sha` (replacing one of the same context).
    pub fn set_status(&self, sha: &str, status: CommitStatus) {
        let mut state = self.state();
        let list = state.statuses.entry(sha.to_string()).or_default();
        list.retain(|s| s.context != status.context);
        list.push(status);
    }

    /// From now on every push to a branch runs `workflow`.
    pub fn run_ci_on_push(&self, workflow: Workflow) {
        self.state().workflow = Some(workflow);
    }

    /// From now on every push to a branch is deployed as a preview.
    pub fn deploy_previews(&self, deployer: PreviewDeployer) {
        self.state().deployer = Some(deployer);
    }

    /// A deployer creates a deployment; returns its id.
    pub fn add_deployment(&self, deployment: Deployment) -> u64 {
        let mut state = self.state();
        state.deployments.push(deployment);
        state.deployments.len() as u64
    }

    /// A deployer reports a new status of deployment `id`.
    pub fn add_deployment_status(&self, id: u64, status: DeploymentStatus) {
        let mut state = self.state();
        if let Some(d) = state.deployments.get_mut(id as usize - 1) {
            d.statuses.push(status);
        }
    }

    /// Timestamps (merged_at, closed_at, commit dates) from `clock`.
    pub fn set_clock(&self, clock: Clock) {
        self.state().clock = Some(clock);
    }

    /// The API's base URL, for `GitHub::new`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    fn state(&self) -> MutexGuard<'_, Repo> {
        lock(&self.state)
    }

    /// The file's content at the head of `branch`, if both exist.
    pub fn file_on_branch(&self, branch: &str, path: &str) -> Option<String> {
        let state = self.state();
        let sha = state.refs.get(branch)?;
        let blob = state.tree_of(sha)?.get(path)?;
        Some(String::from_utf8_lossy(&state.blobs[blob]).into_owned())
    }

    /// Every pull request, in creation order.
    pub fn pulls(&self) -> Vec<TwinPull> {
        self.state()
            .pulls
            .iter()
            .map(|p| p.public.clone())
            .collect()
    }

    /// PUT `.../merge` requests received, refused ones included.
    pub fn merge_requests(&self) -> usize {
        self.state().merge_requests
    }

    /// The head sha that was merged for pull request `number`.
    pub fn merged_head(&self, number: u64) -> Option<String> {
        self.state().pull(number)?.merged_head.clone()
    }

    /// POST, PUT, PATCH and DELETE requests received.
    pub fn write_requests(&self) -> usize {
        self.state().write_requests
    }

    /// Requests received with this method whose path contains `path_contains`.
    pub fn requests(&self, method: &str, path_contains: &str) -> usize {
        self.state()
            .requests
            .iter()
            .filter(|((m, p), _)| m.eq_ignore_ascii_case(method) && p.contains(path_contains))
            .map(|(_, count)| count)
            .sum()
    }

    /// The next `times` requests whose path contains `path_contains` get
    /// `status` with GitHub's error JSON. 403 is a secondary rate limit and,
    /// like 429, carries `retry-after: 1`. A method in front ("POST /pulls")
    /// limits the fault to that method.
    pub fn fail_next(&self, path_contains: &str, status: u16, times: usize) {
        let (method, path_contains) = match path_contains.split_once(' ') {
            Some((m, p)) if m.chars().all(|c| c.is_ascii_uppercase()) => (Some(m.to_string()), p),
            _ => (None, path_contains),
        };
        self.state().faults.push_back(Fault {
            method,
            path_contains: path_contains.to_string(),
            status,
            remaining: times,
        });
    }

    /// A person commits `content` to `path` on `branch` (made from the base
    /// branch if missing); returns the new head sha.
    pub fn push_to_branch(&self, branch: &str, path: &str, content: &str) -> String {
        let mut state = self.state();
        let parent = match state.refs.get(branch) {
            Some(sha) => sha.clone(),
            None => state.refs[&state.base_branch].clone(),
        };
        let mut tree = state.tree_of(&parent).cloned().unwrap_or_default();
        let blob = state.put_blob(content.as_bytes());
        tree.insert(path.to_string(), blob);
        let tree = state.put_tree(tree);
        let sha = state.put_commit(&format!("Update {path}"), &tree, vec![parent]);
        state.move_branch(branch, &sha);
        sha
    }

    /// A person merges pull request `number` (squash, resolving any conflict
    /// in the PR's favour); returns the merge commit's sha.
    pub fn merge_by_human(&self, number: u64) -> String {
        let mut state = self.state();
        let Some(pull) = state.pull(number) else {
            panic!("the twin has no pull request #{number}");
        };
        if let Some(sha) = &pull.public.merge_commit_sha {
            return sha.clone();
        }
        assert!(
            pull.public.state == PullState::Open,
            "pull request #{number} is closed: a person cannot merge it"
        );
        let title = format!("{} (#{number})", pull.public.title);
        state.merge_pull(number, "squash", &title, true)
    }

    /// A person closes pull request `number` without merging.
    pub fn close_by_human(&self, number: u64) {
        let mut state = self.state();
        let now = state.now();
        if let Some(pull) = state.pull_mut(number)
            && pull.public.state == PullState::Open
        {
            pull.public.state = PullState::Closed;
            pull.closed_at = Some(now.clone());
            pull.updated_at = now;
        }
    }

    /// When false, merging pull request `number` answers 405.
    pub fn set_mergeable(&self, number: u64, mergeable: bool) {
        if let Some(pull) = self.state().pull_mut(number) {
            pull.mergeable = mergeable;
        }
    }

    /// The branch names, sorted.
    pub fn branches(&self) -> Vec<String> {
        self.state().refs.keys().cloned().collect()
    }

    /// Registers a GitHub App (installed on the repository when
    /// `app.installation_id` is set), replacing any other.
    pub fn register_app(&self, app: TwinApp) {
        self.state().app = Some(app);
    }

    /// The installation tokens handed out, oldest first.
    pub fn installation_tokens(&self) -> Vec<String> {
        self.state()
            .tokens
            .iter()
            .map(|t| t.token.clone())
            .collect()
    }

    /// Requests refused with 401 because their installation token had expired.
    pub fn expired_token_refusals(&self) -> usize {
        self.state().expired_token_refusals
    }

    /// The author's name on commit `sha`.
    pub fn commit_author(&self, sha: &str) -> Option<String> {
        self.state().commits.get(sha).map(|c| c.author.clone())
    }
}

fn lock(state: &Mutex<Repo>) -> MutexGuard<'_, Repo> {
    // A panicking test must not poison the twin for the others.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl Repo {
    fn time(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.as_ref().map_or_else(chrono::Utc::now, |c| c())
    }

    fn now(&self) -> String {
        self.time()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    /// A push to a branch starts its CI run and its preview deployment.
    fn on_push(&mut self, branch: &str, sha: &str) {
        let now = self.time();
        let after = |d: Duration| now + chrono::Duration::from_std(d).unwrap_or_default();
        if let Some(w) = self.workflow.clone() {
            self.runs_started += 1;
            let html_url = format!(
                "https://github.com/{}/{}/actions/runs/{}",
                self.owner, self.name, self.runs_started
            );
            let runs = self.check_runs.entry(sha.to_string()).or_default();
            runs.retain(|r| r.name != w.name);
            runs.push(CheckRun {
                name: w.name.clone(),
                status: "in_progress".into(),
                conclusion: None,
                summary: None,
                html_url,
            });
            self.running.push((sha.to_string(), after(w.takes)));
        }
        if let Some(d) = self.deployer.clone() {
            self.deployments.push(Deployment {
                sha: sha.to_string(),
                environment: "Preview".into(),
                production_environment: false,
                statuses: vec![DeploymentStatus {
                    state: "in_progress".into(),
                    environment_url: None,
                }],
            });
            let url = format!("https://{}.{}", branch.replace('/', "-"), d.domain);
            self.deploying
                .push((self.deployments.len() as u64, after(d.takes), url));
        }
    }

    /// Finishes the CI runs and deployments whose time has come.
    fn catch_up(&mut self) {
        let now = self.time();
        let (done, running) = std::mem::take(&mut self.running)
            .into_iter()
            .partition(|(_, due)| *due <= now);
        self.running = running;
        for (sha, _) in done {
            let Some(w) = self.workflow.clone() else {
                continue;
            };
            // The test that fails names the file holding the marker.
            let failing = w.fails_on.as_deref().and_then(|marker| {
                let tree = self.tree_of(&sha)?;
                let (path, _) = tree.iter().find(|(_, blob)| {
                    String::from_utf8_lossy(&self.blobs[*blob]).contains(marker)
                })?;
                Some(format!(
                    "1 test failed\n\ncopy.spec.ts: {path} must not contain {marker:?}"
                ))
            });
            if let Some(run) = self
                .check_runs
                .get_mut(&sha)
                .and_then(|runs| runs.iter_mut().find(|r| r.name == w.name))
            {
                run.status = "completed".into();
                run.conclusion = Some(
                    if failing.is_some() {
                        "failure"
                    } else {
                        "success"
                    }
                    .into(),
                );
                run.summary = failing;
            }
        }
        let (ready, deploying) = std::mem::take(&mut self.deploying)
            .into_iter()
            .partition(|(_, due, _)| *due <= now);
        self.deploying = deploying;
        for (id, _, url) in ready {
            if let Some(d) = self.deployments.get_mut(id as usize - 1) {
                d.statuses.push(DeploymentStatus {
                    state: "success".into(),
                    environment_url: Some(url),
                });
            }
        }
    }

    /// The login that acts in the request being served.
    fn caller_login(&self) -> String {
        match (&self.caller, &self.app) {
            (Caller::Installation, Some(app)) => app.bot_login(),
            _ => TOKEN_LOGIN.to_string(),
        }
    }
}

/// 40 hex digits, like a git sha.
pub(super) fn hash(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    digest[..20].iter().map(|b| format!("{b:02x}")).collect()
}
