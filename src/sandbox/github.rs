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

// ---- The object store and the repository's rules ----

impl Repo {
    fn put_blob(&mut self, content: &[u8]) -> String {
        let sha = hash(&[b"blob", content]);
        self.blobs.insert(sha.clone(), content.to_vec());
        sha
    }

    fn put_tree(&mut self, tree: Tree) -> String {
        let mut parts: Vec<&[u8]> = vec![b"tree"];
        for (path, blob) in &tree {
            parts.push(path.as_bytes());
            parts.push(blob.as_bytes());
        }
        let sha = hash(&parts);
        self.trees.insert(sha.clone(), tree);
        sha
    }

    fn put_commit(&mut self, message: &str, tree: &str, parents: Vec<String>) -> String {
        self.commit_counter += 1;
        let counter = self.commit_counter.to_string();
        let mut parts: Vec<&[u8]> = vec![b"commit", counter.as_bytes(), message.as_bytes()];
        parts.push(tree.as_bytes());
        for parent in &parents {
            parts.push(parent.as_bytes());
        }
        let sha = hash(&parts);
        let author = match &self.caller {
            Caller::Installation => self.caller_login(),
            Caller::Token => TOKEN_COMMITTER.to_string(),
        };
        let commit = Commit {
            message: message.to_string(),
            tree: tree.to_string(),
            parents,
            date: self.now(),
            author,
        };
        self.commits.insert(sha.clone(), commit);
        sha
    }

    fn tree_of(&self, commit: &str) -> Option<&Tree> {
        self.trees.get(&self.commits.get(commit)?.tree)
    }

    fn pull(&self, number: u64) -> Option<&Pull> {
        self.pulls.iter().find(|p| p.public.number == number)
    }

    fn pull_mut(&mut self, number: u64) -> Option<&mut Pull> {
        self.pulls.iter_mut().find(|p| p.public.number == number)
    }

    /// Points `branch` at `sha`; open pull requests from it follow.
    fn move_branch(&mut self, branch: &str, sha: &str) {
        self.refs.insert(branch.to_string(), sha.to_string());
        if branch != self.base_branch {
            self.on_push(branch, sha);
        }
        let now = self.now();
        for pull in &mut self.pulls {
            if pull.public.head == branch && pull.public.state == PullState::Open {
                pull.public.head_sha = sha.to_string();
                pull.updated_at = now.clone();
            }
        }
    }

    /// Removes `branch`; like GitHub, open pull requests from it are closed.
    fn delete_branch(&mut self, branch: &str) -> bool {
        if self.refs.remove(branch).is_none() {
            return false;
        }
        let now = self.now();
        for pull in &mut self.pulls {
            if pull.public.head == branch && pull.public.state == PullState::Open {
                pull.public.state = PullState::Closed;
                pull.closed_at = Some(now.clone());
                pull.updated_at = now.clone();
            }
        }
        true
    }

    fn ancestors(&self, sha: &str) -> Vec<String> {
        let mut seen = BTreeSet::new();
        let mut order = Vec::new();
        let mut queue = VecDeque::from([sha.to_string()]);
        while let Some(sha) = queue.pop_front() {
            if !seen.insert(sha.clone()) {
                continue;
            }
            if let Some(commit) = self.commits.get(&sha) {
                queue.extend(commit.parents.iter().cloned());
            }
            order.push(sha);
        }
        order
    }

    fn is_ancestor(&self, ancestor: &str, of: &str) -> bool {
        self.ancestors(of).iter().any(|sha| sha == ancestor)
    }

    /// The tree a merge of `head` into `base` would have, or `None` on a
    /// conflict (unless `prefer_head`, which resolves it for the head).
    fn merged_tree(&self, base: &str, head: &str, prefer_head: bool) -> Option<Tree> {
        let head_ancestors: BTreeSet<String> = self.ancestors(head).into_iter().collect();
        let merge_base = self
            .ancestors(base)
            .into_iter()
            .find(|sha| head_ancestors.contains(sha));
        let empty = Tree::new();
        let ours = self.tree_of(base).unwrap_or(&empty);
        let theirs = self.tree_of(head).unwrap_or(&empty);
        let original = merge_base
            .and_then(|sha| self.tree_of(&sha))
            .unwrap_or(&empty);
        let paths: BTreeSet<&String> = ours
            .keys()
            .chain(theirs.keys())
            .chain(original.keys())
            .collect();
        let mut merged = Tree::new();
        for path in paths {
            let (o, b, h) = (original.get(path), ours.get(path), theirs.get(path));
            let pick = if h == o || b == h {
                b
            } else if b == o || prefer_head {
                h
            } else {
                return None;
            };
            if let Some(blob) = pick {
                merged.insert(path.clone(), blob.clone());
            }
        }
        Some(merged)
    }

    /// Whether pull request `number` could be merged now.
    fn can_merge(&self, pull: &Pull) -> bool {
        let base = &self.refs[&pull.public.base];
        pull.mergeable
            && self
                .merged_tree(base, &pull.public.head_sha, false)
                .is_some()
    }

    /// Merges an open pull request; returns the merge commit's sha.
    fn merge_pull(&mut self, number: u64, method: &str, title: &str, prefer_head: bool) -> String {
        let Some(pull) = self.pull(number) else {
            return String::new();
        };
        let head = pull.public.head_sha.clone();
        let base_branch = pull.public.base.clone();
        let base = self.refs[&base_branch].clone();
        let tree = self
            .merged_tree(&base, &head, prefer_head)
            .unwrap_or_default();
        let tree = self.put_tree(tree);
        let parents = match method {
            "merge" => vec![base, head.clone()],
            _ => vec![base],
        };
        let sha = self.put_commit(title, &tree, parents);
        self.move_branch(&base_branch, &sha);
        let now = self.now();
        if let Some(pull) = self.pull_mut(number) {
            pull.public.state = PullState::Merged;
            pull.public.merge_commit_sha = Some(sha.clone());
            pull.merged_head = Some(head);
            pull.merged_at = Some(now.clone());
            pull.closed_at = Some(now.clone());
            pull.updated_at = now;
        }
        sha
    }
}

// ---- HTTP: one handler routes every request, as GitHub's paths go ----

type Shared = Arc<Mutex<Repo>>;

/// GitHub's `per_page`: 30 unless asked, at most 100.
fn per_page(query: &HashMap<String, String>) -> usize {
    query
        .get("per_page")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100)
}

async fn handle(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query = Query::<HashMap<String, String>>::try_from_uri(&uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let mut repo = lock(&state);
    let answer = repo.serve(&method, uri.path(), &query, &headers, &body);
    // What a person does between requests (pushes, merges) is theirs.
    repo.caller = Caller::Token;
    answer
}

impl Repo {
    fn serve(
        &mut self,
        method: &Method,
        path: &str,
        query: &HashMap<String, String>,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Response {
        *self
            .requests
            .entry((method.to_string(), path.to_string()))
            .or_default() += 1;
        if method != Method::GET && method != Method::HEAD {
            self.write_requests += 1;
        }
        if method == Method::PUT && path.ends_with("/merge") {
            self.merge_requests += 1;
        }
        if let Some(status) = self.take_fault(method.as_str(), path) {
            return fault(status);
        }
        self.catch_up();
        if let Some(answer) = self.serve_app(method, path, headers) {
            return answer;
        }
        match self.authorize(headers) {
            Some(caller) => self.caller = caller,
            None => return error(401, "Bad credentials"),
        }

        let segments: Vec<String> = path
            .trim_start_matches('/')
            .split('/')
            .map(percent_decode)
            .collect();
        let [first, owner, name, rest @ ..] = segments.as_slice() else {
            return not_found();
        };
        if first != "repos"
            || !owner.eq_ignore_ascii_case(&self.owner)
            || !name.eq_ignore_ascii_case(&self.name)
        {
            return not_found();
        }
        let body: Value = if body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(body) {
                Ok(value) => value,
                Err(_) => return error(400, "Problems parsing JSON"),
            }
        };
        let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
        let number = |n: &str| n.parse::<u64>().ok();
        match (method.as_str(), rest.as_slice()) {
            ("GET", []) => reply(200, &self.repo_json()),
            ("GET", ["git", "ref" | "refs", "heads", branch @ ..]) => {
                self.get_ref(&branch.join("/"))
            }
            ("POST", ["git", "refs"]) => self.create_ref(&body),
            ("PATCH", ["git", "refs", "heads", branch @ ..]) => {
                self.update_ref(&branch.join("/"), &body)
            }
            ("DELETE", ["git", "refs", "heads", branch @ ..]) => {
                if self.delete_branch(&branch.join("/")) {
                    no_content()
                } else {
                    unprocessable("Reference does not exist")
                }
            }
            ("POST", ["git", "blobs"]) => self.create_blob(&body),
            ("GET", ["git", "blobs", sha]) => self.get_blob(sha),
            ("POST", ["git", "trees"]) => self.create_tree(&body),
            ("GET", ["git", "trees", tree_ish @ ..]) => {
                match self.resolve_tree(&tree_ish.join("/")) {
                    Some(sha) if query.contains_key("recursive") => {
                        reply(200, &self.recursive_tree_json(&sha))
                    }
                    Some(sha) => reply(200, &self.tree_json(&sha)),
                    None => not_found(),
                }
            }
            ("POST", ["git", "commits"]) => self.create_commit(&body),
            ("GET", ["git", "commits", sha]) => match self.commits.contains_key(*sha) {
                true => reply(200, &self.commit_json(sha)),
                false => not_found(),
            },
            // GitHub has no Checks permission for fine-grained tokens.
            ("GET", ["commits", _, "check-runs"])
                if matches!(self.caller, Caller::Token)
                    && self.token.starts_with(FINE_GRAINED_PREFIX) =>
            {
                error(403, "Resource not accessible by personal access token")
            }
            ("GET", ["commits", sha, "check-runs"]) => self.check_runs_json(sha),
            ("GET", ["commits", sha, "status"]) => self.combined_status_json(sha),
            ("GET", ["deployments"]) => self.deployments_json(query),
            ("GET", ["deployments", id, "statuses"]) => match number(id) {
                Some(id) => self.deployment_statuses_json(id, query),
                None => not_found(),
            },
            ("GET", ["contents", path @ ..]) => self.get_contents(&path.join("/"), query),
            ("GET", ["pulls"]) => self.list_pulls(query),
            ("POST", ["pulls"]) => self.create_pull(&body),
            ("GET", ["pulls", n]) => match number(n).and_then(|n| self.pull(n)) {
                Some(pull) => reply(200, &self.pull_json(pull, true)),
                None => not_found(),
            },
            ("PATCH", ["pulls", n]) => match number(n) {
                Some(n) => self.update_pull(n, &body),
                None => not_found(),
            },
            ("PUT", ["pulls", n, "merge"]) => match number(n) {
                Some(n) => self.merge_request(n, &body),
                None => not_found(),
            },
            ("GET", ["pulls", n, "merge"]) => match number(n).and_then(|n| self.pull(n)) {
                Some(pull) if pull.public.state == PullState::Merged => no_content(),
                _ => not_found(),
            },
            ("GET", ["issues", n, "labels"]) => match number(n).and_then(|n| self.pull(n)) {
                Some(pull) => reply(200, &self.labels_json(pull)),
                None => not_found(),
            },
            ("POST", ["issues", n, "labels"]) => match number(n) {
                Some(n) => self.add_labels(n, &body),
                None => not_found(),
            },
            ("GET", ["issues", n, "comments"]) => match number(n).and_then(|n| self.pull(n)) {
                Some(pull) => {
                    let comments = (0..pull.public.comments.len())
                        .map(|i| self.comment_json(pull, i))
                        .collect();
                    reply(200, &Value::Array(comments))
                }
                None => not_found(),
            },
            ("POST", ["issues", n, "comments"]) => match number(n) {
                Some(n) => self.add_comment(n, &body),
                None => not_found(),
            },
            _ => not_found(),
        }
    }

    /// `GET /deployments?sha=`: newest first, like GitHub.
    fn deployments_json(&self, query: &HashMap<String, String>) -> Response {
        let list: Vec<Value> = self
            .deployments
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, d)| query.get("sha").is_none_or(|sha| *sha == d.sha))
            .take(per_page(query))
            .map(|(i, d)| {
                json!({
                    "id": i + 1, "sha": d.sha, "ref": d.sha, "task": "deploy",
                    "environment": d.environment,
                    "production_environment": d.production_environment,
                    "transient_environment": !d.production_environment,
                    "creator": self.user_json("deployer[bot]"),
                })
            })
            .collect();
        reply(200, &Value::Array(list))
    }

    /// `GET /deployments/{id}/statuses`: newest first.
    fn deployment_statuses_json(&self, id: u64, query: &HashMap<String, String>) -> Response {
        let Some(d) = (id as usize)
            .checked_sub(1)
            .and_then(|i| self.deployments.get(i))
        else {
            return not_found();
        };
        let list: Vec<Value> = d
            .statuses
            .iter()
            .enumerate()
            .rev()
            .take(per_page(query))
            .map(|(i, s)| {
                json!({
                    "id": i + 1, "state": s.state, "environment": d.environment,
                    "environment_url": s.environment_url.clone().unwrap_or_default(),
                    "target_url": "", "log_url": "", "description": "",
                })
            })
            .collect();
        reply(200, &Value::Array(list))
    }

    /// `GET /commits/{sha}/check-runs`.
    fn check_runs_json(&self, sha: &str) -> Response {
        let runs = self.check_runs.get(sha).cloned().unwrap_or_default();
        let list: Vec<Value> = runs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                json!({
                    "id": i + 1, "head_sha": sha, "name": r.name, "status": r.status,
                    "conclusion": r.conclusion, "html_url": r.html_url,
                    "output": {
                        "title": r.summary.as_ref().map(|s| s.lines().next().unwrap_or_default()),
                        "summary": r.summary, "text": null,
                        "annotations_count": 0,
                    },
                })
            })
            .collect();
        reply(200, &json!({"total_count": list.len(), "check_runs": list}))
    }

    /// `GET /commits/{sha}/status`: with no statuses GitHub says "pending"
    /// with total_count 0, which means "no CI here", not "wait".
    fn combined_status_json(&self, sha: &str) -> Response {
        let list = self.statuses.get(sha).cloned().unwrap_or_default();
        let state = if list
            .iter()
            .any(|s| s.state == "failure" || s.state == "error")
        {
            "failure"
        } else if list.is_empty() || list.iter().any(|s| s.state == "pending") {
            "pending"
        } else {
            "success"
        };
        let statuses: Vec<Value> = list
            .iter()
            .map(|s| json!({"context": s.context, "state": s.state, "target_url": s.target_url, "description": null}))
            .collect();
        reply(
            200,
            &json!({"state": state, "sha": sha, "total_count": statuses.len(), "statuses": statuses}),
        )
    }

    fn take_fault(&mut self, method: &str, path: &str) -> Option<u16> {
        let i = self.faults.iter().position(|f| {
            f.remaining > 0
                && path.contains(&f.path_contains)
                && f.method.as_deref().is_none_or(|m| m == method)
        })?;
        let fault = &mut self.faults[i];
        fault.remaining -= 1;
        let status = fault.status;
        if fault.remaining == 0 {
            self.faults.remove(i);
        }
        Some(status)
    }

    /// The person's token, or a live installation token; `None` earns GitHub's 401.
    fn authorize(&mut self, headers: &HeaderMap) -> Option<Caller> {
        let token = bearer(headers)?;
        if token == self.token {
            return Some(Caller::Token);
        }
        let now = self.time();
        let issued = self.tokens.iter().find(|t| t.token == token)?;
        if issued.expires_at > now {
            Some(Caller::Installation)
        } else {
            self.expired_token_refusals += 1;
            None
        }
    }

    /// The two endpoints an App calls with its JWT: its installation on the
    /// repository, and a token for that installation. `None` for any other path.
    fn serve_app(&mut self, method: &Method, path: &str, headers: &HeaderMap) -> Option<Response> {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        // The installation asked for: this repository's, or one by id.
        let wanted = match (method.as_str(), segments.as_slice()) {
            ("GET", ["repos", owner, name, "installation"]) => {
                let here = owner.eq_ignore_ascii_case(&self.owner)
                    && name.eq_ignore_ascii_case(&self.name);
                here.then_some(None)
            }
            ("POST", ["app", "installations", id, "access_tokens"]) => {
                id.parse::<u64>().ok().map(Some)
            }
            _ => return None,
        };
        let Some(app) = self.app.clone() else {
            return Some(error(401, github_app::UNDECODABLE));
        };
        let jwt = bearer(headers).unwrap_or_default();
        if let Err(message) = github_app::verify_jwt(&jwt, &app, self.time()) {
            return Some(error(401, message));
        }
        Some(match (wanted, app.installation_id) {
            (Some(None), Some(id)) => reply(200, &self.installation_json(&app, id)),
            (Some(Some(wanted)), Some(id)) if wanted == id => {
                let issued = github_app::new_token(&app, self.tokens.len() as u64, self.time());
                let body = json!({
                    "token": issued.token,
                    "expires_at": issued.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    "permissions": github_app::permissions(),
                    "repository_selection": "selected",
                });
                self.tokens.push(issued);
                reply(201, &body)
            }
            _ => not_found(),
        })
    }

    // -- git refs --

    fn get_ref(&self, branch: &str) -> Response {
        match self.refs.get(branch) {
            Some(sha) => reply(200, &self.ref_json(branch, sha)),
            None => not_found(),
        }
    }

    fn create_ref(&mut self, body: &Value) -> Response {
        let (Some(full), Some(sha)) = (body["ref"].as_str(), body["sha"].as_str()) else {
            return invalid(json!([{"resource": "Reference", "code": "missing_field"}]));
        };
        let Some(branch) = full.strip_prefix("refs/heads/").filter(|b| !b.is_empty()) else {
            return unprocessable(&format!("{full} is not a valid ref name."));
        };
        if !self.commits.contains_key(sha) {
            return unprocessable("Object does not exist");
        }
        if self.refs.contains_key(branch) {
            return unprocessable("Reference already exists");
        }
        self.move_branch(branch, sha);
        reply(201, &self.ref_json(branch, sha))
    }

    fn update_ref(&mut self, branch: &str, body: &Value) -> Response {
        let Some(sha) = body["sha"].as_str() else {
            return invalid(
                json!([{"resource": "Reference", "field": "sha", "code": "missing_field"}]),
            );
        };
        let Some(current) = self.refs.get(branch).cloned() else {
            return unprocessable("Reference does not exist");
        };
        if !self.commits.contains_key(sha) {
            return unprocessable("Object does not exist");
        }
        let force = body["force"].as_bool().unwrap_or(false);
        if !force && !self.is_ancestor(&current, sha) {
            return unprocessable("Update is not a fast forward");
        }
        self.move_branch(branch, sha);
        reply(200, &self.ref_json(branch, sha))
    }

    // -- git objects --

    fn create_blob(&mut self, body: &Value) -> Response {
        let Some(content) = body["content"].as_str() else {
            return invalid(
                json!([{"resource": "Blob", "field": "content", "code": "missing_field"}]),
            );
        };
        let bytes = match body["encoding"].as_str().unwrap_or("utf-8") {
            "utf-8" => content.as_bytes().to_vec(),
            "base64" => match decode_base64(content) {
                Some(bytes) => bytes,
                None => return unprocessable("Invalid Base64 content"),
            },
            other => return unprocessable(&format!("encoding {other} is not supported")),
        };
        let sha = self.put_blob(&bytes);
        let url = self.api(&format!("git/blobs/{sha}"));
        reply(201, &json!({"sha": sha, "url": url}))
    }

    fn get_blob(&self, sha: &str) -> Response {
        let Some(content) = self.blobs.get(sha) else {
            return not_found();
        };
        reply(
            200,
            &json!({
                "sha": sha,
                "node_id": format!("B_{sha}"),
                "size": content.len(),
                "url": self.api(&format!("git/blobs/{sha}")),
                "content": encode_base64_wrapped(content),
                "encoding": "base64",
            }),
        )
    }

    fn create_tree(&mut self, body: &Value) -> Response {
        let mut tree = match body["base_tree"].as_str() {
            Some(base) => match self.trees.get(base) {
                Some(tree) => tree.clone(),
                None => return unprocessable("base_tree is not a valid tree oid"),
            },
            None => Tree::new(),
        };
        let Some(entries) = body["tree"].as_array() else {
            return invalid(
                json!([{"resource": "Tree", "field": "tree", "code": "missing_field"}]),
            );
        };
        for entry in entries {
            let Some(path) = entry["path"].as_str().filter(|p| !p.is_empty()) else {
                return unprocessable("tree.path is missing");
            };
            if entry["type"].as_str().unwrap_or("blob") != "blob" {
                return unprocessable("the twin only stores blobs in trees");
            }
            match (entry.get("content"), entry.get("sha")) {
                (Some(Value::String(_)), Some(Value::String(_))) => {
                    return unprocessable(BOTH_OR_NEITHER);
                }
                (Some(Value::String(content)), _) => {
                    let blob = self.put_blob(content.as_bytes());
                    tree.insert(path.to_string(), blob);
                }
                (_, Some(Value::String(sha))) => {
                    if !self.blobs.contains_key(sha) {
                        return unprocessable(&format!("tree.sha {sha} is not a valid blob"));
                    }
                    tree.insert(path.to_string(), sha.clone());
                }
                (_, Some(Value::Null)) => {
                    if tree.remove(path).is_none() {
                        return unprocessable("GitRPC::BadObjectState");
                    }
                }
                _ => return unprocessable(BOTH_OR_NEITHER),
            }
        }
        let sha = self.put_tree(tree);
        reply(201, &self.tree_json(&sha))
    }

    fn create_commit(&mut self, body: &Value) -> Response {
        let (Some(message), Some(tree)) = (body["message"].as_str(), body["tree"].as_str()) else {
            return invalid(json!([{"resource": "Commit", "code": "missing_field"}]));
        };
        if !self.trees.contains_key(tree) {
            return unprocessable("Tree SHA does not exist");
        }
        let mut parents = Vec::new();
        for parent in body["parents"].as_array().into_iter().flatten() {
            match parent.as_str() {
                Some(sha) if self.commits.contains_key(sha) => parents.push(sha.to_string()),
                _ => return unprocessable("Parent SHA does not exist or is not a commit object"),
            }
        }
        let sha = self.put_commit(message, tree, parents);
        reply(201, &self.commit_json(&sha))
    }

    // -- contents --

    fn get_contents(&self, path: &str, query: &HashMap<String, String>) -> Response {
        let wanted = query
            .get("ref")
            .cloned()
            .unwrap_or_else(|| self.base_branch.clone());
        let name = wanted.strip_prefix("refs/heads/").unwrap_or(&wanted);
        let commit = match self.refs.get(name) {
            Some(sha) => sha.clone(),
            None if self.commits.contains_key(&wanted) => wanted.clone(),
            None => return error(404, &format!("No commit found for the ref {wanted}")),
        };
        let tree = &self.trees[&self.commits[&commit].tree];
        let path = path.trim_matches('/');
        if let Some(blob) = tree.get(path) {
            return reply(200, &self.content_json(path, blob, &wanted, true));
        }
        // A directory: list what is directly inside it.
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        let mut listing = BTreeMap::new();
        for (file, blob) in tree {
            if let Some(inside) = file.strip_prefix(&prefix) {
                let entry = match inside.split_once('/') {
                    None => self.content_json(file, blob, &wanted, false),
                    Some((dir, _)) => self.dir_json(&format!("{prefix}{dir}"), &wanted),
                };
                listing
                    .entry(entry["path"].as_str().unwrap_or_default().to_string())
                    .or_insert(entry);
            }
        }
        if listing.is_empty() {
            return not_found();
        }
        reply(200, &Value::Array(listing.into_values().collect()))
    }

    // -- pull requests --

    fn list_pulls(&self, query: &HashMap<String, String>) -> Response {
        let state = query.get("state").map_or("open", String::as_str);
        // Like GitHub, a head without "owner:" is ignored rather than matched.
        let head = query.get("head").and_then(|h| h.split_once(':'));
        let base = query.get("base");
        let per_page = per_page(query);
        let page = query
            .get("page")
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(1)
            .max(1);
        let mut matching: Vec<&Pull> = self
            .pulls
            .iter()
            .filter(|p| match state {
                "all" => true,
                "closed" => p.public.state != PullState::Open,
                _ => p.public.state == PullState::Open,
            })
            .filter(|p| match head {
                Some((owner, branch)) => {
                    owner.eq_ignore_ascii_case(&self.owner) && p.public.head == branch
                }
                None => true,
            })
            .filter(|p| base.is_none_or(|b| &p.public.base == b))
            .collect();
        if query.get("direction").map(String::as_str) != Some("asc") {
            matching.reverse();
        }
        let pulls = matching
            .into_iter()
            .skip((page - 1) * per_page)
            .take(per_page)
            .map(|p| self.pull_json(p, false))
            .collect();
        reply(200, &Value::Array(pulls))
    }

    fn create_pull(&mut self, body: &Value) -> Response {
        let Some(title) = body["title"].as_str().filter(|t| !t.is_empty()) else {
            return invalid(
                json!([{"resource": "PullRequest", "code": "missing_field", "field": "title"}]),
            );
        };
        let head = body["head"].as_str().unwrap_or_default();
        let branch = match head.split_once(':') {
            Some((owner, branch)) if owner.eq_ignore_ascii_case(&self.owner) => branch,
            Some(_) => head,
            None => head,
        };
        let base = body["base"].as_str().unwrap_or_default();
        if !self.refs.contains_key(base) {
            return invalid(
                json!([{"resource": "PullRequest", "field": "base", "code": "invalid"}]),
            );
        }
        let Some(head_sha) = self.refs.get(branch).cloned() else {
            return invalid(
                json!([{"resource": "PullRequest", "field": "head", "code": "invalid"}]),
            );
        };
        let label = format!("{}:{branch}", self.owner);
        if self.pulls.iter().any(|p| {
            p.public.head == branch && p.public.base == base && p.public.state == PullState::Open
        }) {
            let message = format!("A pull request already exists for {label}.");
            return invalid(
                json!([{"resource": "PullRequest", "code": "custom", "message": message}]),
            );
        }
        if self.is_ancestor(&head_sha, &self.refs[base]) {
            let message = format!("No commits between {base} and {branch}");
            return invalid(
                json!([{"resource": "PullRequest", "code": "custom", "message": message}]),
            );
        }
        let number = self
            .pulls
            .iter()
            .map(|p| p.public.number)
            .max()
            .unwrap_or(0)
            + 1;
        let now = self.now();
        self.pulls.push(Pull {
            public: TwinPull {
                number,
                title: title.to_string(),
                body: body["body"].as_str().unwrap_or_default().to_string(),
                head: branch.to_string(),
                head_sha,
                base: base.to_string(),
                state: PullState::Open,
                labels: Vec::new(),
                comments: Vec::new(),
                merge_commit_sha: None,
                author: self.caller_login(),
            },
            mergeable: true,
            merged_head: None,
            created_at: now.clone(),
            updated_at: now,
            closed_at: None,
            merged_at: None,
        });
        let pull = &self.pulls[self.pulls.len() - 1];
        reply(201, &self.pull_json(pull, true))
    }

    fn update_pull(&mut self, number: u64, body: &Value) -> Response {
        let Some(pull) = self.pull(number) else {
            return not_found();
        };
        let reopen_possible = self.refs.contains_key(&pull.public.head);
        let now = self.now();
        let Some(pull) = self.pull_mut(number) else {
            return not_found();
        };
        if let Some(title) = body["title"].as_str() {
            pull.public.title = title.to_string();
        }
        if let Some(text) = body["body"].as_str() {
            pull.public.body = text.to_string();
        }
        match (body["state"].as_str(), pull.public.state) {
            (Some("closed"), PullState::Open) => {
                pull.public.state = PullState::Closed;
                pull.closed_at = Some(now.clone());
            }
            (Some("open"), PullState::Closed) if reopen_possible => {
                pull.public.state = PullState::Open;
                pull.closed_at = None;
            }
            (Some("open"), PullState::Closed | PullState::Merged) => {
                return invalid(
                    json!([{"resource": "PullRequest", "code": "custom", "field": "state", "message": "state cannot be changed. The pull request cannot be reopened."}]),
                );
            }
            _ => {}
        }
        pull.updated_at = now;
        let pull = self.pull(number).map(|p| self.pull_json(p, true));
        reply(200, &pull.unwrap_or(Value::Null))
    }

    fn merge_request(&mut self, number: u64, body: &Value) -> Response {
        let Some(pull) = self.pull(number) else {
            return not_found();
        };
        let method = body["merge_method"].as_str().unwrap_or("merge");
        if !["merge", "squash", "rebase"].contains(&method) {
            return invalid(
                json!([{"resource": "PullRequest", "field": "merge_method", "code": "invalid"}]),
            );
        }
        if pull.public.state != PullState::Open {
            return error(405, "Pull Request is not mergeable");
        }
        if body["sha"]
            .as_str()
            .is_some_and(|sha| sha != pull.public.head_sha)
        {
            return error(
                409,
                "Head branch was modified. Review and try the merge again.",
            );
        }
        if !self.can_merge(pull) {
            return error(405, "Pull Request is not mergeable");
        }
        let title = match body["commit_title"].as_str() {
            Some(title) => title.to_string(),
            None if method == "merge" => {
                format!(
                    "Merge pull request #{number} from {}/{}",
                    self.owner, pull.public.head
                )
            }
            None => format!("{} (#{number})", pull.public.title),
        };
        let sha = self.merge_pull(number, method, &title, false);
        reply(
            200,
            &json!({"sha": sha, "merged": true, "message": "Pull Request successfully merged"}),
        )
    }

    fn add_labels(&mut self, number: u64, body: &Value) -> Response {
        // GitHub takes {"labels": [..]} or a bare array.
        let names: Vec<String> = body
            .get("labels")
            .unwrap_or(body)
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        let Some(pull) = self.pull_mut(number) else {
            return not_found();
        };
        for name in names {
            if !pull.public.labels.contains(&name) {
                pull.public.labels.push(name);
            }
        }
        let pull = &self.pulls[self
            .pulls
            .iter()
            .position(|p| p.public.number == number)
            .unwrap_or(0)];
        reply(200, &self.labels_json(pull))
    }

    fn add_comment(&mut self, number: u64, body: &Value) -> Response {
        let Some(text) = body["body"].as_str() else {
            return invalid(
                json!([{"resource": "IssueComment", "field": "body", "code": "missing_field"}]),
            );
        };
        let Some(pull) = self.pull_mut(number) else {
            return not_found();
        };
        pull.public.comments.push(text.to_string());
        let index = pull.public.comments.len() - 1;
        let pull = &self.pulls[self
            .pulls
            .iter()
            .position(|p| p.public.number == number)
            .unwrap_or(0)];
        reply(201, &self.comment_json(pull, index))
    }
}

// ---- GitHub's JSON shapes ----

impl Repo {
    /// `{api}/repos/{owner}/{name}/{route}`.
    fn api(&self, route: &str) -> String {
        format!(
            "{}/repos/{}/{}/{route}",
            self.api_url, self.owner, self.name
        )
    }

    /// The twin serves no HTML: pages point at its own host, GitHub-style.
    fn html(&self, route: &str) -> String {
        format!("{}/{}/{}/{route}", self.api_url, self.owner, self.name)
    }

    /// `GET /repos/{owner}/{repo}/installation`: the App installed on the owner's account.
    fn installation_json(&self, app: &TwinApp, id: u64) -> Value {
        let api = &self.api_url;
        json!({
            "id": id, "account": self.user_json(&self.owner),
            "access_tokens_url": format!("{api}/app/installations/{id}/access_tokens"),
            "repositories_url": format!("{api}/installation/repositories"),
            "html_url": format!("{api}/settings/installations/{id}"),
            "app_id": app.id, "app_slug": app.slug, "target_id": 1, "target_type": "Organization",
            "permissions": github_app::permissions(), "events": [],
            "created_at": self.now(), "updated_at": self.now(),
            "single_file_name": null, "repository_selection": "selected",
        })
    }

    fn user_json(&self, login: &str) -> Value {
        let api = &self.api_url;
        let user = format!("{api}/users/{login}");
        json!({
            "login": login, "id": 1, "node_id": "MDQ6VXNlcjE=",
            "avatar_url": format!("{api}/avatars/{login}"), "gravatar_id": "",
            "url": user, "html_url": format!("{api}/{login}"),
            "followers_url": format!("{user}/followers"),
            "following_url": format!("{user}/following{{/other_user}}"),
            "gists_url": format!("{user}/gists{{/gist_id}}"),
            "starred_url": format!("{user}/starred{{/owner}}{{/repo}}"),
            "subscriptions_url": format!("{user}/subscriptions"),
            "organizations_url": format!("{user}/orgs"),
            "repos_url": format!("{user}/repos"),
            "events_url": format!("{user}/events{{/privacy}}"),
            "received_events_url": format!("{user}/received_events"),
            "type": if login.ends_with("[bot]") { "Bot" } else { "User" }, "site_admin": false,
        })
    }

    fn repo_json(&self) -> Value {
        json!({
            "id": 42, "node_id": "R_kgDOTwin", "name": self.name,
            "full_name": format!("{}/{}", self.owner, self.name),
            "private": true, "owner": self.user_json(&self.owner),
            "html_url": format!("{}/{}/{}", self.api_url, self.owner, self.name),
            "url": format!("{}/repos/{}/{}", self.api_url, self.owner, self.name),
            "default_branch": self.base_branch,
            "permissions": {"admin": false, "maintain": false, "push": true, "triage": true, "pull": true},
        })
    }

    fn ref_json(&self, branch: &str, sha: &str) -> Value {
        json!({
            "ref": format!("refs/heads/{branch}"),
            "node_id": format!("REF_{}", hash(&[branch.as_bytes()])),
            "url": self.api(&format!("git/refs/heads/{branch}")),
            "object": {"sha": sha, "type": "commit", "url": self.api(&format!("git/commits/{sha}"))},
        })
    }

    fn tree_json(&self, sha: &str) -> Value {
        let entries: Vec<Value> = self.trees[sha]
            .iter()
            .map(|(path, blob)| {
                json!({
                    "path": path, "mode": "100644", "type": "blob", "sha": blob,
                    "size": self.blobs[blob].len(), "url": self.api(&format!("git/blobs/{blob}")),
                })
            })
            .collect();
        json!({"sha": sha, "url": self.api(&format!("git/trees/{sha}")), "tree": entries, "truncated": false})
    }

    /// A tree sha, or the tree of a commit sha or a branch name, as GitHub
    /// accepts any of them in `GET /git/trees/{tree_sha}`.
    fn resolve_tree(&self, tree_ish: &str) -> Option<String> {
        if self.trees.contains_key(tree_ish) {
            return Some(tree_ish.to_string());
        }
        let commit = self.refs.get(tree_ish).map_or(tree_ish, String::as_str);
        self.commits.get(commit).map(|c| c.tree.clone())
    }

    /// `?recursive=1`: every blob and, as GitHub lists them, every directory
    /// as a `tree` entry (its sha stands for the flat tree's slice).
    fn recursive_tree_json(&self, sha: &str) -> Value {
        let mut tree = self.tree_json(sha);
        let dirs: BTreeSet<&str> = self.trees[sha]
            .keys()
            .flat_map(|path| path.match_indices('/').map(|(i, _)| &path[..i]))
            .collect();
        if let Some(entries) = tree["tree"].as_array_mut() {
            for dir in dirs {
                let dir_sha = hash(&[b"subtree", sha.as_bytes(), dir.as_bytes()]);
                entries.push(json!({
                    "path": dir, "mode": "040000", "type": "tree", "sha": dir_sha,
                    "url": self.api(&format!("git/trees/{dir_sha}")),
                }));
            }
            entries.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
        }
        tree
    }

    fn commit_json(&self, sha: &str) -> Value {
        let commit = &self.commits[sha];
        let person =
            json!({"name": commit.author, "email": "twin@example.invalid", "date": commit.date});
        let parents: Vec<Value> = commit
            .parents
            .iter()
            .map(|p| {
                json!({"sha": p, "url": self.api(&format!("git/commits/{p}")), "html_url": self.html(&format!("commit/{p}"))})
            })
            .collect();
        json!({
            "sha": sha, "node_id": format!("C_{sha}"),
            "url": self.api(&format!("git/commits/{sha}")),
            "html_url": self.html(&format!("commit/{sha}")),
            "author": person, "committer": person, "message": commit.message,
            "tree": {"sha": commit.tree, "url": self.api(&format!("git/trees/{}", commit.tree))},
            "parents": parents,
            "verification": {"verified": false, "reason": "unsigned", "signature": null, "payload": null, "verified_at": null},
        })
    }

    fn content_json(&self, path: &str, blob: &str, at: &str, with_content: bool) -> Value {
        let bytes = &self.blobs[blob];
        let name = path.rsplit('/').next().unwrap_or(path);
        let url = format!("{}?ref={at}", self.api(&format!("contents/{path}")));
        let git = self.api(&format!("git/blobs/{blob}"));
        let html = self.html(&format!("blob/{at}/{path}"));
        let mut value = json!({
            "type": "file", "size": bytes.len(), "name": name, "path": path, "sha": blob,
            "url": url, "git_url": git, "html_url": html,
            "download_url": format!("{}/raw/{}/{}/{at}/{path}", self.api_url, self.owner, self.name),
            "_links": {"self": url, "git": git, "html": html},
        });
        if with_content {
            value["encoding"] = json!("base64");
            value["content"] = json!(encode_base64_wrapped(bytes));
        }
        value
    }

    /// A directory entry in a listing (flat trees keep no sha for it: one is made up).
    fn dir_json(&self, path: &str, at: &str) -> Value {
        let sha = hash(&[b"dir", path.as_bytes()]);
        let url = format!("{}?ref={at}", self.api(&format!("contents/{path}")));
        let git = self.api(&format!("git/trees/{sha}"));
        let html = self.html(&format!("tree/{at}/{path}"));
        json!({
            "type": "dir", "size": 0, "name": path.rsplit('/').next().unwrap_or(path),
            "path": path, "sha": sha, "url": url, "git_url": git, "html_url": html,
            "download_url": null, "_links": {"self": url, "git": git, "html": html},
        })
    }

    fn label_json(&self, name: &str) -> Value {
        json!({
            "id": u64::from_str_radix(&hash(&[name.as_bytes()])[..8], 16).unwrap_or(7000),
            "node_id": format!("LA_{}", hash(&[name.as_bytes()])),
            "url": format!("{}/repos/{}/{}/labels/{}", self.api_url, self.owner, self.name, name),
            "name": name, "color": "ededed", "default": false, "description": null,
        })
    }

    fn labels_json(&self, pull: &Pull) -> Value {
        Value::Array(
            pull.public
                .labels
                .iter()
                .map(|l| self.label_json(l))
                .collect(),
        )
    }

    fn comment_json(&self, pull: &Pull, index: usize) -> Value {
        let number = pull.public.number;
        let id = number * 1_000 + index as u64 + 1;
        json!({
            "id": id, "node_id": format!("IC_{id}"),
            "url": self.api(&format!("issues/comments/{id}")),
            "html_url": self.html(&format!("pull/{number}#issuecomment-{id}")),
            "issue_url": self.api(&format!("issues/{number}")),
            "body": pull.public.comments[index],
            "user": self.user_json(&pull.public.author),
            "created_at": pull.updated_at, "updated_at": pull.updated_at,
            "author_association": "CONTRIBUTOR",
        })
    }

    fn branch_json(&self, branch: &str, sha: &str) -> Value {
        json!({
            "label": format!("{}:{branch}", self.owner), "ref": branch, "sha": sha,
            "user": self.user_json(&self.owner), "repo": self.repo_json(),
        })
    }

    /// A pull request as `GET pulls/{n}` shows it; `full: false` is the list
    /// endpoint's shorter form, without `merged` and `mergeable`.
    fn pull_json(&self, pull: &Pull, full: bool) -> Value {
        let p = &pull.public;
        let n = p.number;
        let open = p.state == PullState::Open;
        let base_sha = self.refs.get(&p.base).cloned().unwrap_or_default();
        // While open, GitHub fills merge_commit_sha with a test merge.
        let merge_commit_sha = match &p.merge_commit_sha {
            Some(sha) => Some(sha.clone()),
            None if open => Some(hash(&[
                b"test-merge",
                p.head_sha.as_bytes(),
                base_sha.as_bytes(),
            ])),
            None => None,
        };
        let link = |href: String| json!({"href": href});
        let links = json!({
            "self": link(self.api(&format!("pulls/{n}"))),
            "html": link(self.html(&format!("pull/{n}"))),
            "issue": link(self.api(&format!("issues/{n}"))),
            "comments": link(self.api(&format!("issues/{n}/comments"))),
            "review_comments": link(self.api(&format!("pulls/{n}/comments"))),
            "review_comment": link(self.api("pulls/comments{/number}")),
            "commits": link(self.api(&format!("pulls/{n}/commits"))),
            "statuses": link(self.api(&format!("statuses/{}", p.head_sha))),
        });
        let mut value = json!({
            "url": self.api(&format!("pulls/{n}")), "id": 5000 + n,
            "node_id": format!("PR_{n}"), "html_url": self.html(&format!("pull/{n}")),
            "diff_url": self.html(&format!("pull/{n}.diff")),
            "patch_url": self.html(&format!("pull/{n}.patch")),
            "issue_url": self.api(&format!("issues/{n}")),
            "commits_url": self.api(&format!("pulls/{n}/commits")),
            "review_comments_url": self.api(&format!("pulls/{n}/comments")),
            "review_comment_url": self.api("pulls/comments{/number}"),
            "comments_url": self.api(&format!("issues/{n}/comments")),
            "statuses_url": self.api(&format!("statuses/{}", p.head_sha)),
            "number": n, "state": if open { "open" } else { "closed" }, "locked": false,
            "title": p.title, "user": self.user_json(&p.author), "body": p.body,
            "labels": self.labels_json(pull), "milestone": null, "active_lock_reason": null,
            "created_at": pull.created_at, "updated_at": pull.updated_at,
            "closed_at": pull.closed_at, "merged_at": pull.merged_at,
            "merge_commit_sha": merge_commit_sha,
        });
        let more = json!({
            "assignee": null, "assignees": [], "requested_reviewers": [], "requested_teams": [],
            "head": self.branch_json(&p.head, &p.head_sha),
            "base": self.branch_json(&p.base, &base_sha),
            "_links": links,
            "author_association": "CONTRIBUTOR", "auto_merge": null, "draft": false,
        });
        extend(&mut value, more);
        if full {
            let mergeable = open.then(|| self.can_merge(pull));
            let state = match mergeable {
                Some(true) => "clean",
                Some(false) => "dirty",
                None => "unknown",
            };
            let extra = json!({
                "merged": p.state == PullState::Merged, "mergeable": mergeable,
                "rebaseable": mergeable, "mergeable_state": state,
                "merged_by": (p.state == PullState::Merged).then(|| self.user_json(&self.owner)),
                "comments": p.comments.len(), "review_comments": 0,
                "maintainer_can_modify": false, "commits": 1,
                "additions": 1, "deletions": 1, "changed_files": 1,
            });
            extend(&mut value, extra);
        }
        value
    }
}

fn extend(value: &mut Value, more: Value) {
    if let (Value::Object(value), Value::Object(more)) = (value, more) {
        value.extend(more);
    }
}

// ---- Responses ----

fn reply(status: u16, body: &Value) -> Response {
    respond(status, body.to_string(), &[])
}

fn respond(status: u16, body: String, extra: &[(&str, String)]) -> Response {
    let reset = chrono::Utc::now().timestamp() + 3600;
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .header("x-github-api-version-selected", "2022-11-28")
        .header("x-ratelimit-limit", "5000")
        .header("x-ratelimit-remaining", "4999")
        .header("x-ratelimit-reset", reset.to_string())
        .header("x-ratelimit-used", "1")
        .header("x-ratelimit-resource", "core");
    for (name, value) in extra {
        builder = builder.header(*name, value);
    }
    builder
        .body(Body::from(body))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

fn error(status: u16, message: &str) -> Response {
    reply(
        status,
        &json!({"message": message, "documentation_url": DOCS, "status": status.to_string()}),
    )
}

fn not_found() -> Response {
    error(404, "Not Found")
}

fn unprocessable(message: &str) -> Response {
    error(422, message)
}

fn invalid(errors: Value) -> Response {
    reply(
        422,
        &json!({"message": "Validation Failed", "errors": errors, "documentation_url": DOCS, "status": "422"}),
    )
}

/// The token of an `Authorization: Bearer …` (or `token …`) header.
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("token "))
        .map(str::to_string)
}

fn no_content() -> Response {
    let mut response = respond(204, String::new(), &[]);
    response.headers_mut().remove(header::CONTENT_TYPE);
    response
}

/// An injected failure, shaped as GitHub sends it.
fn fault(status: u16) -> Response {
    const SECONDARY: &str = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID 0000:TWIN.";
    let message = match status {
        401 => "Bad credentials".to_string(),
        403 | 429 => SECONDARY.to_string(),
        404 => "Not Found".to_string(),
        // The only 405 GitHub gives: a merge it will not do.
        405 => "Pull Request is not mergeable".to_string(),
        500 | 502 => "Server Error".to_string(),
        _ => StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error")
            .to_string(),
    };
    let body = json!({"message": message, "documentation_url": DOCS, "status": status.to_string()});
    let extra = match status {
        403 | 429 => vec![("retry-after", "1".to_string())],
        _ => Vec::new(),
    };
    respond(status, body.to_string(), &extra)
}

// ---- Encodings ----

/// Base64 wrapped at 60 columns, each line ending in a newline, as GitHub sends it.
fn encode_base64_wrapped(bytes: &[u8]) -> String {
    let flat = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = String::with_capacity(flat.len() + flat.len() / 60 + 1);
    for chunk in flat.as_bytes().chunks(60) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .ok()
}

fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
