//! The TOML configuration, in two stages: [`parse`] reads the text into raw
//! sections (syntax, unknown keys, types), then validation turns it into a
//! checked [`Config`] and collects *every* problem, each naming its key and
//! line. Secrets never live in the file: it only names environment variables,
//! read by [`Secrets::from_env`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use toml::Spanned;

use crate::github_app::{AppCredentials, AppKey};

/// Where the config is read from when neither `-c` nor `FUNNELFIX_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "funnelfix.toml";

/// One problem with the configuration, printed as `file:line: key: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// All problems found in one config file; `Display` prints one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    pub file: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {p}", self.file)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

// ---------------------------------------------------------------------------
// The checked configuration.

#[derive(Debug, Clone)]
pub struct Config {
    pub state: StateConfig,
    pub schedule: ScheduleConfig,
    pub posthog: PosthogConfig,
    pub github: GithubConfig,
    pub telegram: TelegramConfig,
    pub llm: LlmConfig,
    pub thresholds: Thresholds,
    pub funnels: Vec<FunnelConfig>,
}

#[derive(Debug, Clone)]
pub struct StateConfig {
    /// SQLite file, relative to the working directory; created on first run.
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    /// When to look for the worst step and propose a change (cron with seconds, UTC).
    pub propose: cron::Schedule,
    /// When to expire approvals and watch merged changes.
    pub monitor: cron::Schedule,
    /// When to send the weekly digest to Telegram.
    pub digest: cron::Schedule,
}

#[derive(Debug, Clone)]
pub struct PosthogConfig {
    pub host: String,
    pub project_id: String,
    pub api_key_env: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MergeMethod {
    Merge,
    Squash,
    Rebase,
}

/// What funnelfix does with a proposal whose PR head fails its checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailedChecks {
    /// Leave the PR open for a person; ask once a new head passes.
    KeepOpen,
    /// Close the PR and delete its branch.
    Close,
    /// Ask the model once for a fix on the same branch; if that fails too,
    /// keep it open.
    Fix,
}

impl MergeMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            MergeMethod::Merge => "merge",
            MergeMethod::Squash => "squash",
            MergeMethod::Rebase => "rebase",
        }
    }
}

#[derive(Debug, Clone)]
pub struct GithubConfig {
    pub api_url: String,
    /// `owner/name`.
    pub repo: String,
    pub base_branch: String,
    /// A token, or a GitHub App.
    pub auth: GithubAuth,
    pub branch_prefix: String,
    pub labels: Vec<String>,
    /// Globs of the paths a proposal may change.
    pub allowed_paths: Vec<String>,
    pub allowed: globset::GlobSet,
    pub max_changed_lines: usize,
    pub merge_method: MergeMethod,
    /// Origins (`https://host`) an edit may link to besides those the page
    /// already uses.
    pub allowed_origins: Vec<String>,
    /// How long to wait for CI on a new PR head before asking anyway.
    pub checks_wait: Duration,
    pub failed_checks: FailedChecks,
}

/// How funnelfix authenticates to GitHub: exactly one of the two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GithubAuth {
    /// A token (fine-grained or classic) in the environment variable `env`.
    Token { env: String },
    /// A GitHub App acting through its installation on the repository; PRs
    /// and commits then come from `<app-slug>[bot]`.
    App {
        app_id: u64,
        key: AppKeySource,
        /// Looked up from the repository when absent.
        installation_id: Option<u64>,
    },
}

/// Where the App's private key (the `.pem` GitHub gives) is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppKeySource {
    /// The PEM's contents in this environment variable.
    Env(String),
    /// A file holding the PEM.
    File(PathBuf),
}

impl GithubConfig {
    pub fn owner(&self) -> &str {
        self.repo.split_once('/').map_or("", |(o, _)| o)
    }
    pub fn name(&self) -> &str {
        self.repo.split_once('/').map_or("", |(_, n)| n)
    }
}

#[derive(Debug, Clone)]
pub struct TelegramConfig {
    pub api_url: String,
    pub token_env: String,
    pub chat_id: i64,
    pub approvers: Vec<u64>,
}

#[derive(Debug, Clone)]
pub struct LlmConfig {
    pub base_url: String,
    pub model: String,
    pub api_key_env: String,
    /// Prompt template; when the file does not exist the shipped default is used.
    pub prompt: PathBuf,
    pub max_attempts: u32,
    /// How long one answer may take before it is dropped and asked again.
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevertMode {
    /// Revert PRs are merged at once.
    Merge,
    /// Revert PRs wait for an approval in Telegram.
    Approve,
}

/// What the watched step's change is judged against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftControl {
    /// Against the baseline alone.
    #[default]
    Off,
    /// Against the upstream step's change over the same days, which removes
    /// a drift the whole site shares (the first step has none: off there).
    Upstream,
}

#[derive(Debug, Clone)]
pub struct Thresholds {
    pub lookback: Duration,
    pub min_visitors: u64,
    pub approval_timeout: Duration,
    pub observation: Duration,
    pub baseline: Duration,
    pub max_relative_drop: f64,
    pub false_revert_rate: f64,
    pub cooldown: Duration,
    pub revert: RevertMode,
    /// The early looks' window (`None`: off): entries too recent for the
    /// conversion window are judged on whether they went on within it.
    pub early_window: Option<Duration>,
    pub drift_control: DriftControl,
}

impl Thresholds {
    /// The early window a funnel with this conversion window is watched
    /// with: none when it is off or not shorter than the conversion window.
    pub fn early_window_for(&self, conversion_window: Duration) -> Option<Duration> {
        self.early_window.filter(|w| *w < conversion_window)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Selection {
    /// The step with the lowest Wilson upper bound.
    LowestRate,
    /// The step losing the most people: entrants × (1 − rate).
    MostLost,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FunnelConfig {
    pub name: String,
    /// How long after a step the next one may follow.
    pub conversion_window: Duration,
    pub selection: Selection,
    /// When the chosen step has a segment much worse than the rest with the
    /// traffic to be watched, watch the experiment on that segment's
    /// entries only (baseline and watch alike).
    pub segment_watch: bool,
    pub steps: Vec<StepConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepConfig {
    pub name: String,
    pub event: String,
    /// Property equality filters, e.g. `$pathname = "/pricing"`.
    pub filters: BTreeMap<String, String>,
    /// The page(s) where users decide to go on to the next step.
    pub files: Vec<String>,
}

impl StepConfig {
    /// A step without page files, from its name, event and property filters.
    pub fn new(name: &str, event: &str, filters: &[(&str, &str)]) -> StepConfig {
        StepConfig {
            name: name.into(),
            event: event.into(),
            filters: filters
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            files: vec![],
        }
    }
}

/// The secret values named by the config, read from the environment.
#[derive(Debug, Clone)]
pub struct Secrets {
    pub posthog_api_key: SecretString,
    pub github: GithubCredentials,
    pub telegram_token: SecretString,
    pub llm_api_key: SecretString,
}

/// The GitHub credentials [`GithubAuth`] names, read and checked.
#[derive(Debug, Clone)]
pub enum GithubCredentials {
    Token {
        token: SecretString,
        /// The variable it came from, for messages.
        env: String,
    },
    App(AppCredentials),
}

fn missing_env(key: &str, var: &str) -> Problem {
    Problem {
        line: None,
        key: key.to_string(),
        message: format!("environment variable {var} is not set"),
    }
}

/// The App's key from the environment or a file, parsed; never quoted in a problem.
fn app_credentials(
    app_id: u64,
    source: &AppKeySource,
    installation_id: Option<u64>,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<AppCredentials, Problem> {
    let (key, described, pem) = match source {
        AppKeySource::Env(var) => {
            let key = "github.app_private_key_env";
            let pem = lookup(var)
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| missing_env(key, var))?;
            (key, format!("the value of {var}"), pem)
        }
        AppKeySource::File(path) => {
            let key = "github.app_private_key_file";
            let pem = std::fs::read_to_string(path).map_err(|e| Problem {
                line: None,
                key: key.to_string(),
                message: format!("cannot read {}: {e}", path.display()),
            })?;
            (key, path.display().to_string(), pem)
        }
    };
    let app_key = AppKey::from_pem(&pem).map_err(|why| Problem {
        line: None,
        key: key.to_string(),
        message: format!("{described} {why}"),
    })?;
    Ok(AppCredentials {
        app_id,
        key: app_key,
        installation_id,
        key_source: match source {
            AppKeySource::Env(var) => format!("${var}"),
            AppKeySource::File(path) => path.display().to_string(),
        },
    })
}

impl Secrets {
    /// Reads every secret; the error lists each missing variable.
    pub fn from_env(config: &Config) -> Result<Secrets, Vec<Problem>> {
        Self::from_lookup(config, |name| std::env::var(name).ok())
    }

    /// Like [`Secrets::from_env`] with an explicit lookup (tests, the demo).
    pub fn from_lookup(
        config: &Config,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Secrets, Vec<Problem>> {
        let mut problems = Vec::new();
        let get = |problems: &mut Vec<Problem>, key: &str, var: &str| -> SecretString {
            match lookup(var).filter(|v| !v.trim().is_empty()) {
                Some(v) => SecretString::from(v),
                None => {
                    problems.push(missing_env(key, var));
                    SecretString::from(String::new())
                }
            }
        };
        let posthog_api_key = get(
            &mut problems,
            "posthog.api_key_env",
            &config.posthog.api_key_env,
        );
        let github = match &config.github.auth {
            GithubAuth::Token { env } => GithubCredentials::Token {
                token: get(&mut problems, "github.token_env", env),
                env: env.clone(),
            },
            GithubAuth::App {
                app_id,
                key,
                installation_id,
            } => match app_credentials(*app_id, key, *installation_id, &lookup) {
                Ok(app) => GithubCredentials::App(app),
                Err(problem) => {
                    problems.push(problem);
                    GithubCredentials::Token {
                        token: SecretString::from(String::new()),
                        env: String::new(),
                    }
                }
            },
        };
        let secrets = Secrets {
            posthog_api_key,
            github,
            telegram_token: get(
                &mut problems,
                "telegram.token_env",
                &config.telegram.token_env,
            ),
            llm_api_key: get(&mut problems, "llm.api_key_env", &config.llm.api_key_env),
        };
        if problems.is_empty() {
            Ok(secrets)
        } else {
            Err(problems)
        }
    }
}

// ---------------------------------------------------------------------------
// Raw sections as written in the file. Fields that need checking beyond their
// type are `Spanned`, so a problem can name its line.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    state: RawState,
    #[serde(default)]
    schedule: RawSchedule,
    posthog: RawPosthog,
    github: RawGithub,
    telegram: RawTelegram,
    #[serde(default)]
    llm: RawLlm,
    #[serde(default)]
    thresholds: RawThresholds,
    #[serde(default, rename = "funnel")]
    funnels: Vec<Spanned<RawFunnel>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    /// Default `"funnelfix.db"`.
    #[serde(default = "default_state_path")]
    path: PathBuf,
}

impl Default for RawState {
    fn default() -> Self {
        RawState {
            path: default_state_path(),
        }
    }
}

fn default_state_path() -> PathBuf {
    PathBuf::from("funnelfix.db")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    /// Default `"0 0 9 * * Mon"`: Mondays at 09:00 UTC.
    #[serde(default = "default_propose")]
    propose: Spanned<String>,
    /// Default `"0 */15 * * * *"`: every 15 minutes.
    #[serde(default = "default_monitor")]
    monitor: Spanned<String>,
    /// Default `"0 0 8 * * Mon"`: Mondays at 08:00 UTC.
    #[serde(default = "default_digest")]
    digest: Spanned<String>,
}

impl Default for RawSchedule {
    fn default() -> Self {
        RawSchedule {
            propose: default_propose(),
            monitor: default_monitor(),
            digest: default_digest(),
        }
    }
}

fn unspanned<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}
fn default_propose() -> Spanned<String> {
    unspanned("0 0 9 * * Mon".into())
}
fn default_monitor() -> Spanned<String> {
    unspanned("0 */15 * * * *".into())
}
fn default_digest() -> Spanned<String> {
    unspanned("0 0 8 * * Mon".into())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPosthog {
    /// Default `"https://us.posthog.com"`.
    #[serde(default = "default_posthog_host")]
    host: Spanned<String>,
    project_id: Spanned<ProjectId>,
    /// Default `"POSTHOG_API_KEY"`.
    #[serde(default = "default_posthog_key_env")]
    api_key_env: Spanned<String>,
}

/// PostHog project ids are numbers, but people write them quoted too.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ProjectId {
    Text(String),
    Number(i64),
}

fn default_posthog_host() -> Spanned<String> {
    unspanned("https://us.posthog.com".into())
}
fn default_posthog_key_env() -> Spanned<String> {
    unspanned("POSTHOG_API_KEY".into())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGithub {
    /// Default `"https://api.github.com"`.
    #[serde(default = "default_github_api")]
    api_url: Spanned<String>,
    repo: Spanned<String>,
    /// Default `"main"`.
    #[serde(default = "default_base_branch")]
    base_branch: Spanned<String>,
    /// Default `"GITHUB_TOKEN"`, unless the `app_*` keys configure a GitHub App.
    #[serde(default = "default_github_token_env")]
    token_env: Spanned<String>,
    /// GitHub App auth instead of a token: the App's id ...
    app_id: Option<Spanned<i64>>,
    /// ... and its private key, in this environment variable ...
    app_private_key_env: Option<Spanned<String>>,
    /// ... or in this file.
    app_private_key_file: Option<Spanned<String>>,
    /// Default: looked up with `GET /repos/{owner}/{repo}/installation`.
    installation_id: Option<Spanned<i64>>,
    /// Default `"funnelfix/"`.
    #[serde(default = "default_branch_prefix")]
    branch_prefix: Spanned<String>,
    /// Default `["funnelfix"]`.
    #[serde(default = "default_labels")]
    labels: Vec<String>,
    /// Required: nothing may change outside these globs.
    allowed_paths: Spanned<Vec<String>>,
    /// Default 40.
    #[serde(default = "default_max_changed_lines")]
    max_changed_lines: Spanned<i64>,
    /// Default `"squash"`.
    #[serde(default = "default_merge_method")]
    merge_method: MergeMethod,
    /// Default `[]`.
    #[serde(default = "default_allowed_origins")]
    allowed_origins: Spanned<Vec<String>>,
    /// Default `"15m"`.
    #[serde(default = "default_checks_wait")]
    checks_wait: Spanned<String>,
    /// Default `"keep_open"`.
    #[serde(default = "default_failed_checks")]
    failed_checks: FailedChecks,
}

fn default_checks_wait() -> Spanned<String> {
    unspanned("15m".into())
}
fn default_failed_checks() -> FailedChecks {
    FailedChecks::KeepOpen
}
fn default_github_api() -> Spanned<String> {
    unspanned("https://api.github.com".into())
}
fn default_base_branch() -> Spanned<String> {
    unspanned("main".into())
}
fn default_github_token_env() -> Spanned<String> {
    unspanned("GITHUB_TOKEN".into())
}
fn default_branch_prefix() -> Spanned<String> {
    unspanned("funnelfix/".into())
}
fn default_labels() -> Vec<String> {
    vec!["funnelfix".into()]
}
fn default_allowed_origins() -> Spanned<Vec<String>> {
    unspanned(Vec::new())
}
fn default_max_changed_lines() -> Spanned<i64> {
    unspanned(40)
}
fn default_merge_method() -> MergeMethod {
    MergeMethod::Squash
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTelegram {
    /// Default `"https://api.telegram.org"`.
    #[serde(default = "default_telegram_api")]
    api_url: Spanned<String>,
    /// Default `"TELEGRAM_BOT_TOKEN"`.
    #[serde(default = "default_telegram_token_env")]
    token_env: Spanned<String>,
    chat_id: i64,
    approvers: Spanned<Vec<u64>>,
}

fn default_telegram_api() -> Spanned<String> {
    unspanned("https://api.telegram.org".into())
}
fn default_telegram_token_env() -> Spanned<String> {
    unspanned("TELEGRAM_BOT_TOKEN".into())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLlm {
    /// Default `"https://api.openai.com/v1"`.
    #[serde(default = "default_llm_url")]
    base_url: Spanned<String>,
    /// Default `"gpt-4.1-mini"`.
    #[serde(default = "default_llm_model")]
    model: Spanned<String>,
    /// Default `"OPENAI_API_KEY"`.
    #[serde(default = "default_llm_key_env")]
    api_key_env: Spanned<String>,
    /// Default `"prompts/propose.md"`.
    #[serde(default = "default_prompt")]
    prompt: PathBuf,
    /// Default 3.
    #[serde(default = "default_max_attempts")]
    max_attempts: Spanned<i64>,
    /// Default `"60s"`.
    #[serde(default = "default_llm_timeout")]
    timeout: Spanned<String>,
}

impl Default for RawLlm {
    fn default() -> Self {
        RawLlm {
            base_url: default_llm_url(),
            model: default_llm_model(),
            api_key_env: default_llm_key_env(),
            prompt: default_prompt(),
            max_attempts: default_max_attempts(),
            timeout: default_llm_timeout(),
        }
    }
}

fn default_llm_url() -> Spanned<String> {
    unspanned("https://api.openai.com/v1".into())
}
fn default_llm_model() -> Spanned<String> {
    unspanned("gpt-4.1-mini".into())
}
fn default_llm_key_env() -> Spanned<String> {
    unspanned("OPENAI_API_KEY".into())
}
fn default_prompt() -> PathBuf {
    PathBuf::from("prompts/propose.md")
}
fn default_max_attempts() -> Spanned<i64> {
    unspanned(3)
}
fn default_llm_timeout() -> Spanned<String> {
    unspanned("60s".into())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThresholds {
    /// Default `"28d"`.
    #[serde(default = "default_28d")]
    lookback: Spanned<String>,
    /// Default 200.
    #[serde(default = "default_min_visitors")]
    min_visitors: Spanned<i64>,
    /// Default `"72h"`.
    #[serde(default = "default_72h")]
    approval_timeout: Spanned<String>,
    /// Default `"14d"`.
    #[serde(default = "default_14d")]
    observation: Spanned<String>,
    /// Default `"28d"`.
    #[serde(default = "default_28d")]
    baseline: Spanned<String>,
    /// Default 0.10.
    #[serde(default = "default_max_relative_drop")]
    max_relative_drop: Spanned<f64>,
    /// Default 0.05.
    #[serde(default = "default_false_revert_rate")]
    false_revert_rate: Spanned<f64>,
    /// Default `"28d"`.
    #[serde(default = "default_28d")]
    cooldown: Spanned<String>,
    /// Default `"merge"`.
    #[serde(default = "default_revert_mode")]
    revert: RevertMode,
    /// Default `"1h"`; `"off"` turns early looks off.
    #[serde(default = "default_1h")]
    early_window: Spanned<String>,
    /// Default `"off"`.
    #[serde(default)]
    drift_control: DriftControl,
}

impl Default for RawThresholds {
    fn default() -> Self {
        RawThresholds {
            lookback: default_28d(),
            min_visitors: default_min_visitors(),
            approval_timeout: default_72h(),
            observation: default_14d(),
            baseline: default_28d(),
            max_relative_drop: default_max_relative_drop(),
            false_revert_rate: default_false_revert_rate(),
            cooldown: default_28d(),
            revert: default_revert_mode(),
            early_window: default_1h(),
            drift_control: DriftControl::Off,
        }
    }
}

fn default_28d() -> Spanned<String> {
    unspanned("28d".into())
}
fn default_14d() -> Spanned<String> {
    unspanned("14d".into())
}
fn default_1h() -> Spanned<String> {
    unspanned("1h".into())
}
fn default_72h() -> Spanned<String> {
    unspanned("72h".into())
}
fn default_min_visitors() -> Spanned<i64> {
    unspanned(200)
}
fn default_max_relative_drop() -> Spanned<f64> {
    unspanned(0.10)
}
fn default_false_revert_rate() -> Spanned<f64> {
    unspanned(0.05)
}
fn default_revert_mode() -> RevertMode {
    RevertMode::Merge
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFunnel {
    name: Spanned<String>,
    /// Default `"1d"`.
    #[serde(default = "default_conversion_window")]
    conversion_window: Spanned<String>,
    /// Default `"lowest_rate"`.
    #[serde(default = "default_selection")]
    selection: Selection,
    /// Default false.
    #[serde(default)]
    segment_watch: bool,
    #[serde(default, rename = "step")]
    steps: Vec<Spanned<RawStep>>,
}

fn default_conversion_window() -> Spanned<String> {
    unspanned("1d".into())
}
fn default_selection() -> Selection {
    Selection::LowestRate
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: Spanned<String>,
    event: Spanned<String>,
    #[serde(default = "no_filters")]
    filters: Spanned<BTreeMap<String, String>>,
    #[serde(default)]
    files: Vec<String>,
}

fn no_filters() -> Spanned<BTreeMap<String, String>> {
    unspanned(BTreeMap::new())
}

// ---------------------------------------------------------------------------
// Loading and validation.

/// Reads and checks the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
        file: file.clone(),
        problems: vec![Problem {
            line: None,
            key: "config".into(),
            message: format!("cannot read the file: {e}"),
        }],
    })?;
    parse(&text).map_err(|problems| ConfigErrors { file, problems })
}

/// Parses and checks config text; every problem found is returned.
pub fn parse(text: &str) -> Result<Config, Vec<Problem>> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| vec![serde_problem(text, &e)])?;
    Checker::new(text).check(raw)
}

/// Turns a TOML/serde error into one line: the key it names, if any, and the line.
fn serde_problem(text: &str, err: &toml::de::Error) -> Problem {
    let line = err.span().map(|s| line_of(text, s.start));
    let message = err.message().trim().replace('\n', " ");
    // serde says "unknown field `x`, expected one of ..." or "missing field `x`".
    let key = message
        .split('`')
        .nth(1)
        .filter(|_| message.contains("field"))
        .map(|k| k.to_string())
        .or_else(|| line.and_then(|l| key_on_line(text, l)))
        .map(|k| match line.and_then(|l| section_above(text, l)) {
            Some(section) => format!("{section}.{k}"),
            None => k,
        })
        .unwrap_or_else(|| "config".into());
    Problem { line, key, message }
}

/// The `[table]` or `[[array]]` header that `line` belongs to.
fn section_above(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().take(line).collect();
    lines
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string())
        .filter(|s| !s.is_empty())
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The bare key written at the start of `line`, for errors that carry no key.
fn key_on_line(text: &str, line: usize) -> Option<String> {
    let l = text.lines().nth(line - 1)?.trim();
    let (k, _) = l.split_once('=')?;
    let k = k.trim();
    (!k.is_empty() && !k.starts_with('[')).then(|| k.to_string())
}

struct Checker<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl<'a> Checker<'a> {
    fn new(text: &'a str) -> Self {
        Checker {
            text,
            problems: Vec::new(),
        }
    }

    fn line<T>(&self, s: &Spanned<T>) -> Option<usize> {
        let span = s.span();
        (span.end > 0).then(|| line_of(self.text, span.start))
    }

    fn problem<T>(&mut self, at: &Spanned<T>, key: impl Into<String>, message: impl Into<String>) {
        let line = self.line(at);
        self.problems.push(Problem {
            line,
            key: key.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, s: &Spanned<String>, key: &str) -> Duration {
        match humantime::parse_duration(s.get_ref().trim()) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.problem(s, key, "must be longer than zero");
                Duration::from_secs(1)
            }
            Err(e) => {
                self.problem(
                    s,
                    key,
                    format!(
                        "{:?} is not a duration ({e}); write e.g. \"30s\", \"15m\", \"72h\", \"14d\"",
                        s.get_ref()
                    ),
                );
                Duration::from_secs(1)
            }
        }
    }

    fn cron(&mut self, s: &Spanned<String>, key: &str) -> cron::Schedule {
        match cron::Schedule::from_str(s.get_ref()) {
            Ok(c) => c,
            Err(e) => {
                // The cron crate draws a caret diagram over several lines; keep its last line.
                let text = e.to_string();
                let reason = text
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("");
                self.problem(
                    s,
                    key,
                    format!(
                        "{:?} is not a cron expression with seconds ({}); e.g. \"0 */15 * * * *\"",
                        s.get_ref(),
                        reason.trim().trim_end_matches('.')
                    ),
                );
                cron::Schedule::from_str("0 0 0 * * *").expect("constant cron is valid")
            }
        }
    }

    fn url(&mut self, s: &Spanned<String>, key: &str) -> String {
        let v = s.get_ref().trim().trim_end_matches('/').to_string();
        if !(v.starts_with("http://") || v.starts_with("https://")) {
            self.problem(s, key, format!("{v:?} must be an http:// or https:// URL"));
        }
        v
    }

    fn env_name(&mut self, s: &Spanned<String>, key: &str) -> String {
        let v = s.get_ref().trim().to_string();
        let ok = !v.is_empty()
            && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !v.starts_with(|c: char| c.is_ascii_digit());
        if !ok {
            self.problem(
                s,
                key,
                format!("{v:?} must be the NAME of an environment variable (letters, digits, _), not a secret"),
            );
        }
        v
    }

    fn non_empty(&mut self, s: &Spanned<String>, key: &str) -> String {
        let v = s.get_ref().trim().to_string();
        if v.is_empty() {
            self.problem(s, key, "must not be empty");
        }
        v
    }

    fn positive(&mut self, s: &Spanned<i64>, key: &str, max: i64) -> i64 {
        let v = *s.get_ref();
        if v < 1 {
            self.problem(s, key, format!("must be at least 1 (got {v})"));
            return 1;
        }
        if v > max {
            self.problem(s, key, format!("must be at most {max} (got {v})"));
            return max;
        }
        v
    }

    fn fraction(&mut self, s: &Spanned<f64>, key: &str) -> f64 {
        let v = *s.get_ref();
        if !(v > 0.0 && v < 1.0) {
            self.problem(
                s,
                key,
                format!("must be a fraction above 0 and below 1 (got {v})"),
            );
            return 0.5;
        }
        v
    }

    fn check(mut self, raw: RawConfig) -> Result<Config, Vec<Problem>> {
        let schedule = ScheduleConfig {
            propose: self.cron(&raw.schedule.propose, "schedule.propose"),
            monitor: self.cron(&raw.schedule.monitor, "schedule.monitor"),
            digest: self.cron(&raw.schedule.digest, "schedule.digest"),
        };

        let project_id = match raw.posthog.project_id.get_ref() {
            ProjectId::Text(t) => t.trim().to_string(),
            ProjectId::Number(n) => n.to_string(),
        };
        if project_id.is_empty() || !project_id.chars().all(|c| c.is_ascii_digit()) {
            self.problem(
                &raw.posthog.project_id,
                "posthog.project_id",
                format!(
                    "{project_id:?} must be the numeric project id from PostHog's project settings"
                ),
            );
        }
        let posthog = PosthogConfig {
            host: self.url(&raw.posthog.host, "posthog.host"),
            project_id,
            api_key_env: self.env_name(&raw.posthog.api_key_env, "posthog.api_key_env"),
        };

        let github = self.github(raw.github);

        let telegram = TelegramConfig {
            api_url: self.url(&raw.telegram.api_url, "telegram.api_url"),
            token_env: self.env_name(&raw.telegram.token_env, "telegram.token_env"),
            chat_id: raw.telegram.chat_id,
            approvers: raw.telegram.approvers.get_ref().clone(),
        };
        if telegram.approvers.is_empty() {
            self.problem(
                &raw.telegram.approvers,
                "telegram.approvers",
                "must list at least one Telegram user id, or nobody can approve",
            );
        }

        let llm = LlmConfig {
            base_url: self.url(&raw.llm.base_url, "llm.base_url"),
            model: self.non_empty(&raw.llm.model, "llm.model"),
            api_key_env: self.env_name(&raw.llm.api_key_env, "llm.api_key_env"),
            prompt: raw.llm.prompt,
            max_attempts: self.positive(&raw.llm.max_attempts, "llm.max_attempts", 10) as u32,
            timeout: self.duration(&raw.llm.timeout, "llm.timeout"),
        };

        let t = &raw.thresholds;
        let thresholds = Thresholds {
            lookback: self.duration(&t.lookback, "thresholds.lookback"),
            min_visitors: self.positive(&t.min_visitors, "thresholds.min_visitors", i64::MAX)
                as u64,
            approval_timeout: self.duration(&t.approval_timeout, "thresholds.approval_timeout"),
            observation: self.duration(&t.observation, "thresholds.observation"),
            baseline: self.duration(&t.baseline, "thresholds.baseline"),
            max_relative_drop: self.fraction(&t.max_relative_drop, "thresholds.max_relative_drop"),
            false_revert_rate: self.fraction(&t.false_revert_rate, "thresholds.false_revert_rate"),
            cooldown: self.duration(&t.cooldown, "thresholds.cooldown"),
            revert: t.revert,
            early_window: match t.early_window.get_ref().trim() {
                "off" => None,
                _ => Some(self.duration(&t.early_window, "thresholds.early_window")),
            },
            drift_control: t.drift_control,
        };

        let funnels = self.funnels(&raw.funnels, &github);

        if self.problems.is_empty() {
            Ok(Config {
                state: StateConfig {
                    path: raw.state.path,
                },
                schedule,
                posthog,
                github,
                telegram,
                llm,
                thresholds,
                funnels,
            })
        } else {
            Err(self.problems)
        }
    }

    fn github(&mut self, g: RawGithub) -> GithubConfig {
        let repo = g.repo.get_ref().trim().to_string();
        let valid_repo = repo
            .split_once('/')
            .is_some_and(|(o, n)| is_repo_part(o) && is_repo_part(n));
        if !valid_repo {
            self.problem(
                &g.repo,
                "github.repo",
                format!("{repo:?} must be \"owner/name\""),
            );
        }
        let branch_prefix = g.branch_prefix.get_ref().trim().to_string();
        if !is_branch_name(&branch_prefix) {
            self.problem(
                &g.branch_prefix,
                "github.branch_prefix",
                format!("{branch_prefix:?} is not usable in a git branch name"),
            );
        }
        let mut builder = globset::GlobSetBuilder::new();
        if g.allowed_paths.get_ref().is_empty() {
            self.problem(
                &g.allowed_paths,
                "github.allowed_paths",
                "must list at least one glob, e.g. [\"site/**\"]",
            );
        }
        for pattern in g.allowed_paths.get_ref() {
            if pattern.starts_with('/') || pattern.split('/').any(|p| p == "..") {
                self.problem(
                    &g.allowed_paths,
                    "github.allowed_paths",
                    format!("{pattern:?} must be relative to the repository root"),
                );
                continue;
            }
            match globset::GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
            {
                Ok(glob) => {
                    builder.add(glob);
                }
                Err(e) => self.problem(
                    &g.allowed_paths,
                    "github.allowed_paths",
                    format!("{pattern:?} is not a glob: {e}"),
                ),
            }
        }
        let allowed = builder
            .build()
            .unwrap_or_else(|_| globset::GlobSet::empty());
        for origin in g.allowed_origins.get_ref() {
            let (scheme, host) = origin.split_once("://").unwrap_or(("", ""));
            if !matches!(scheme, "http" | "https") || host.is_empty() || host.contains('/') {
                self.problem(
                    &g.allowed_origins,
                    "github.allowed_origins",
                    format!("{origin:?} is not an origin like \"https://cdn.example.com\""),
                );
            }
        }
        GithubConfig {
            api_url: self.url(&g.api_url, "github.api_url"),
            repo,
            base_branch: self.non_empty(&g.base_branch, "github.base_branch"),
            auth: self.github_auth(&g),
            branch_prefix,
            labels: g.labels,
            allowed_paths: g.allowed_paths.into_inner(),
            allowed,
            max_changed_lines: self.positive(
                &g.max_changed_lines,
                "github.max_changed_lines",
                10_000,
            ) as usize,
            merge_method: g.merge_method,
            allowed_origins: g
                .allowed_origins
                .into_inner()
                .into_iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            checks_wait: self.duration(&g.checks_wait, "github.checks_wait"),
            failed_checks: g.failed_checks,
        }
    }

    /// A token or a GitHub App: exactly one, each with what it needs.
    fn github_auth(&mut self, g: &RawGithub) -> GithubAuth {
        let app_keys = [
            g.app_id.as_ref().map(|s| self.line(s)),
            g.app_private_key_env.as_ref().map(|s| self.line(s)),
            g.app_private_key_file.as_ref().map(|s| self.line(s)),
            g.installation_id.as_ref().map(|s| self.line(s)),
        ];
        let Some(first_app_line) = app_keys.into_iter().flatten().next() else {
            return GithubAuth::Token {
                env: self.env_name(&g.token_env, "github.token_env"),
            };
        };
        // The default token_env has no span: only a written one conflicts.
        if self.line(&g.token_env).is_some() {
            self.problem(
                &g.token_env,
                "github.token_env",
                "set either token_env (a token) or app_id with app_private_key_env or app_private_key_file (a GitHub App), not both",
            );
        }
        let app_id = match &g.app_id {
            Some(id) => self.positive(id, "github.app_id", i64::MAX) as u64,
            None => {
                self.problems.push(Problem {
                    line: first_app_line,
                    key: "github.app_id".into(),
                    message: "is required for GitHub App auth: the App ID shown on the App's settings page".into(),
                });
                0
            }
        };
        let key = match (&g.app_private_key_env, &g.app_private_key_file) {
            (Some(env), None) => {
                AppKeySource::Env(self.env_name(env, "github.app_private_key_env"))
            }
            (None, Some(file)) => AppKeySource::File(PathBuf::from(
                self.non_empty(file, "github.app_private_key_file"),
            )),
            (Some(_), Some(file)) => {
                self.problem(
                    file,
                    "github.app_private_key_file",
                    "set app_private_key_env or app_private_key_file, not both",
                );
                AppKeySource::File(PathBuf::new())
            }
            (None, None) => {
                self.problems.push(Problem {
                    line: first_app_line,
                    key: "github.app_private_key_env".into(),
                    message: "GitHub App auth needs the App's private key: set app_private_key_env (the .pem's contents in that variable) or app_private_key_file".into(),
                });
                AppKeySource::Env(String::new())
            }
        };
        let installation_id = g
            .installation_id
            .as_ref()
            .map(|id| self.positive(id, "github.installation_id", i64::MAX) as u64);
        GithubAuth::App {
            app_id,
            key,
            installation_id,
        }
    }

    fn funnels(&mut self, raw: &[Spanned<RawFunnel>], github: &GithubConfig) -> Vec<FunnelConfig> {
        if raw.is_empty() {
            self.problems.push(Problem {
                line: None,
                key: "funnel".into(),
                message: "no [[funnel]] is configured; add at least one with two or more steps"
                    .into(),
            });
        }
        let mut names = Vec::<String>::new();
        let mut funnels = Vec::new();
        for (fi, f) in raw.iter().enumerate() {
            let f_ref = f.get_ref();
            let name = f_ref.name.get_ref().trim().to_string();
            let key = format!("funnel[{fi}]");
            if !is_slug(&name) {
                self.problem(
                    &f_ref.name,
                    format!("{key}.name"),
                    format!(
                        "{name:?} must be 1-40 characters of a-z, 0-9, - or _ (it names branches)"
                    ),
                );
            }
            if names.contains(&name) {
                self.problem(
                    &f_ref.name,
                    format!("{key}.name"),
                    format!("funnel {name:?} is defined twice"),
                );
            }
            names.push(name.clone());
            let conversion_window = self.duration(
                &f_ref.conversion_window,
                &format!("{key}.conversion_window"),
            );
            if f_ref.steps.len() < 2 {
                self.problem(
                    f,
                    format!("{key}.step"),
                    format!(
                        "funnel {name:?} has {} step(s); a funnel needs at least two [[funnel.step]]",
                        f_ref.steps.len()
                    ),
                );
            }
            let mut steps = Vec::new();
            let mut step_names = Vec::<String>::new();
            let last = f_ref.steps.len().saturating_sub(1);
            for (si, s) in f_ref.steps.iter().enumerate() {
                let s_ref = s.get_ref();
                let skey = format!("{key}.step[{si}]");
                let step_name = self.non_empty(&s_ref.name, &format!("{skey}.name"));
                if step_names.contains(&step_name) {
                    self.problem(
                        &s_ref.name,
                        format!("{skey}.name"),
                        format!("step {step_name:?} appears twice in funnel {name:?}"),
                    );
                }
                step_names.push(step_name.clone());
                let event = self.non_empty(&s_ref.event, &format!("{skey}.event"));
                for prop in s_ref.filters.get_ref().keys() {
                    if !is_property_name(prop) {
                        self.problem(
                            &s_ref.filters,
                            format!("{skey}.filters"),
                            format!(
                                "property name {prop:?} is not allowed: use letters, digits, _ and a leading $ only"
                            ),
                        );
                    }
                }
                if si < last && s_ref.files.is_empty() {
                    self.problem(
                        s,
                        format!("{skey}.files"),
                        format!("step {step_name:?} lists no files: name the page(s) where users decide to go on"),
                    );
                }
                for file in &s_ref.files {
                    if !github.allowed.is_match(file) {
                        self.problem(
                            s,
                            format!("{skey}.files"),
                            format!("{file:?} is outside github.allowed_paths"),
                        );
                    }
                }
                steps.push(StepConfig {
                    name: step_name,
                    event,
                    filters: s_ref.filters.get_ref().clone(),
                    files: s_ref.files.clone(),
                });
            }
            funnels.push(FunnelConfig {
                name,
                conversion_window,
                selection: f_ref.selection,
                segment_watch: f_ref.segment_watch,
                steps,
            });
        }
        funnels
    }
}

fn is_repo_part(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn is_branch_name(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && !s.contains("..")
        && !s.starts_with('/')
}

/// Funnel names end up in branch names and callback data.
fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_'))
}

/// HogQL reads `properties.<name>` with the name spliced into the query text
/// (a placeholder cannot stand for a name), so only plain identifiers pass.
pub fn is_property_name(s: &str) -> bool {
    let body = s.strip_prefix('$').unwrap_or(s);
    !body.is_empty()
        && body.len() <= 100
        && body.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !body.starts_with(|c: char| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../config/funnelfix.example.toml");

    /// The problems `text` has, one per line, as check-config prints them.
    fn problems(text: &str) -> String {
        match parse(text) {
            Ok(_) => "ok".into(),
            Err(problems) => problems
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    /// The example with `from` replaced by `to` (which must occur).
    fn example_with(from: &str, to: &str) -> String {
        assert!(EXAMPLE.contains(from), "example lacks {from:?}");
        EXAMPLE.replacen(from, to, 1)
    }

    const MINIMAL: &str = r#"
[posthog]
project_id = 7
[github]
repo = "acme/site"
allowed_paths = ["site/**"]
[telegram]
chat_id = -100
approvers = [1]
[[funnel]]
name = "signup"
  [[funnel.step]]
  name = "Home"
  event = "$pageview"
  files = ["site/index.html"]
  [[funnel.step]]
  name = "Signed up"
  event = "signup"
"#;

    #[test]
    fn example_is_valid() {
        let c = parse(EXAMPLE).expect("example parses");
        assert_eq!(c.funnels[0].steps.len(), 4);
        assert_eq!(c.thresholds.observation, Duration::from_secs(14 * 86400));
        assert_eq!(
            c.funnels[0].steps[1]
                .filters
                .get("$pathname")
                .map(String::as_str),
            Some("/pricing")
        );
        assert_eq!(c.github.owner(), "acme");
        assert_eq!(c.github.name(), "website");
    }

    #[test]
    fn defaults_fill_everything_optional() {
        let c = parse(MINIMAL).expect("minimal parses");
        assert_eq!(c.posthog.project_id, "7");
        assert_eq!(c.posthog.host, "https://us.posthog.com");
        assert_eq!(c.github.max_changed_lines, 40);
        assert_eq!(c.github.merge_method, MergeMethod::Squash);
        assert_eq!(c.llm.max_attempts, 3);
        assert_eq!(c.llm.timeout, Duration::from_secs(60));
        assert_eq!(c.thresholds.min_visitors, 200);
        assert_eq!(
            c.thresholds.approval_timeout,
            Duration::from_secs(72 * 3600)
        );
        assert_eq!(c.thresholds.max_relative_drop, 0.10);
        assert_eq!(c.thresholds.revert, RevertMode::Merge);
        assert_eq!(c.funnels[0].conversion_window, Duration::from_secs(86400));
        assert_eq!(c.funnels[0].selection, Selection::LowestRate);
        assert_eq!(c.state.path, PathBuf::from("funnelfix.db"));
    }

    #[test]
    fn syntax_error() {
        insta::assert_snapshot!(problems(&example_with("[state]", "[state")), @"line 7: config: unclosed table, expected `]`");
    }

    #[test]
    fn allowed_origins_must_be_origins() {
        insta::assert_snapshot!(problems(&example_with("allowed_origins = []", r#"allowed_origins = ["https://docs.acme.com", "docs.acme.com/x"]"#)), @r#"line 35: github.allowed_origins: "docs.acme.com/x" is not an origin like "https://cdn.example.com""#);
    }

    #[test]
    fn unknown_key() {
        insta::assert_snapshot!(problems(&example_with("min_visitors = 200", "min_visits = 200")), @"line 55: thresholds.min_visits: unknown field `min_visits`, expected one of `lookback`, `min_visitors`, `approval_timeout`, `observation`, `baseline`, `max_relative_drop`, `false_revert_rate`, `cooldown`, `revert`, `early_window`, `drift_control`");
    }

    #[test]
    fn bad_duration() {
        insta::assert_snapshot!(problems(&example_with(r#"observation = "14d""#, r#"observation = "two weeks""#)), @r#"line 57: thresholds.observation: "two weeks" is not a duration (expected number at 0); write e.g. "30s", "15m", "72h", "14d""#);
    }

    #[test]
    fn bad_cron() {
        insta::assert_snapshot!(problems(&example_with(r#"propose = "0 0 9 * * Mon""#, r#"propose = "0 9 * * Mon""#)), @r#"line 11: schedule.propose: "0 9 * * Mon" is not a cron expression with seconds ('Mon' is not a valid month name); e.g. "0 */15 * * * *""#);
        insta::assert_snapshot!(problems(&example_with(r#"digest = "0 0 8 * * Mon""#, r#"digest = "weekly""#)), @r#"line 13: schedule.digest: "weekly" is not a cron expression with seconds (The 'Seconds' field does not support using names. 'weekly' specified); e.g. "0 */15 * * * *""#);
    }

    #[test]
    fn the_digest_is_weekly_unless_told_otherwise() {
        use std::str::FromStr;
        let without = EXAMPLE.replacen("digest = \"0 0 8 * * Mon\"", "", 1);
        let c = parse(&without).expect("parses");
        assert_eq!(
            c.schedule.digest,
            cron::Schedule::from_str("0 0 8 * * Mon").expect("cron")
        );
    }

    #[test]
    fn empty_funnel() {
        let text = EXAMPLE.split("[[funnel]]").next().unwrap_or_default();
        insta::assert_snapshot!(problems(text), @"funnel: no [[funnel]] is configured; add at least one with two or more steps");
    }

    #[test]
    fn one_step_funnel() {
        let text = format!(
            "{}{}",
            EXAMPLE
                .split("  [[funnel.step]]")
                .next()
                .unwrap_or_default(),
            "  [[funnel.step]]\n  name = \"Home\"\n  event = \"$pageview\"\n"
        );
        insta::assert_snapshot!(problems(&text), @r#"line 66: funnel[0].step: funnel "signup" has 1 step(s); a funnel needs at least two [[funnel.step]]"#);
    }

    #[test]
    fn duplicate_step_names() {
        insta::assert_snapshot!(problems(&example_with(r#"name = "Started signup""#, r#"name = "Viewed pricing""#)), @r#"line 85: funnel[0].step[2].name: step "Viewed pricing" appears twice in funnel "signup""#);
    }

    #[test]
    fn bad_property_name() {
        insta::assert_snapshot!(problems(&example_with(r#"filters = { "$pathname" = "/" }"#, r#"filters = { "$path name) OR 1=1 --" = "/" }"#)), @r#"line 75: funnel[0].step[0].filters: property name "$path name) OR 1=1 --" is not allowed: use letters, digits, _ and a leading $ only"#);
    }

    #[test]
    fn thresholds_out_of_range() {
        let text = example_with("max_relative_drop = 0.10", "max_relative_drop = -0.1")
            .replacen("false_revert_rate = 0.05", "false_revert_rate = 1.5", 1)
            .replacen("min_visitors = 200", "min_visitors = -5", 1);
        insta::assert_snapshot!(problems(&text), @"
        line 55: thresholds.min_visitors: must be at least 1 (got -5)
        line 59: thresholds.max_relative_drop: must be a fraction above 0 and below 1 (got -0.1)
        line 60: thresholds.false_revert_rate: must be a fraction above 0 and below 1 (got 1.5)
        ");
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let text = example_with(r#"lookback = "28d""#, r#"lookback = "28 fortnights""#)
            .replacen(r#"monitor = "0 */15 * * * *""#, r#"monitor = "often""#, 1)
            .replacen(r#"repo = "acme/website""#, r#"repo = "website""#, 1)
            .replacen(
                r#"files = ["site/signup.html"]"#,
                r#"files = [".github/workflows/ci.yml"]"#,
                1,
            );
        insta::assert_snapshot!(problems(&text), @r#"
        line 12: schedule.monitor: "often" is not a cron expression with seconds (The 'Seconds' field does not support using names. 'often' specified); e.g. "0 */15 * * * *"
        line 23: github.repo: "website" must be "owner/name"
        line 54: thresholds.lookback: "28 fortnights" is not a duration (unknown time unit "fortnights", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)); write e.g. "30s", "15m", "72h", "14d"
        line 84: funnel[0].step[2].files: ".github/workflows/ci.yml" is outside github.allowed_paths
        "#);
    }

    #[test]
    fn missing_env_secret() {
        let c = parse(EXAMPLE).expect("example parses");
        let err = Secrets::from_lookup(&c, |name| {
            (name != "GITHUB_TOKEN").then(|| "value".to_string())
        })
        .expect_err("GITHUB_TOKEN is missing");
        let lines: Vec<String> = err.iter().map(|p| p.to_string()).collect();
        insta::assert_snapshot!(lines.join("\n"), @"github.token_env: environment variable GITHUB_TOKEN is not set");
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let c = parse(EXAMPLE).expect("example parses");
        let s =
            Secrets::from_lookup(&c, |_| Some("sekret-value-123".to_string())).expect("all set");
        assert!(!format!("{s:?}").contains("sekret-value-123"));
    }

    #[test]
    fn secret_value_in_place_of_env_name_is_refused() {
        let text = example_with(
            r#"token_env = "GITHUB_TOKEN""#,
            r#"token_env = "ghp_abc-123.xyz""#,
        );
        let out = problems(&text);
        assert!(out.contains("github.token_env"), "{out}");
    }

    const APP_KEY: &str = include_str!("../tests/fixtures/github_app_key.pem");

    /// The example on GitHub App auth: `lines` in place of token_env.
    fn example_with_app(lines: &str) -> String {
        example_with(r#"token_env = "GITHUB_TOKEN""#, lines)
    }

    #[test]
    fn github_app_auth_replaces_the_token() {
        let c = parse(&example_with_app(
            "app_id = 1042\napp_private_key_env = \"GITHUB_APP_PRIVATE_KEY\"",
        ))
        .expect("app auth parses");
        assert_eq!(
            c.github.auth,
            GithubAuth::App {
                app_id: 1042,
                key: AppKeySource::Env("GITHUB_APP_PRIVATE_KEY".into()),
                installation_id: None,
            }
        );
        let c = parse(EXAMPLE).expect("example parses");
        assert_eq!(
            c.github.auth,
            GithubAuth::Token {
                env: "GITHUB_TOKEN".into()
            }
        );
    }

    #[test]
    fn a_token_and_an_app_together_is_one_problem() {
        let text = example_with(
            "branch_prefix = ",
            "app_id = 1042\napp_private_key_env = \"GITHUB_APP_PRIVATE_KEY\"\nbranch_prefix = ",
        );
        insta::assert_snapshot!(problems(&text), @"line 25: github.token_env: set either token_env (a token) or app_id with app_private_key_env or app_private_key_file (a GitHub App), not both");
    }

    #[test]
    fn an_app_needs_its_id_and_exactly_one_key() {
        let text = example_with_app(r#"app_private_key_env = "GITHUB_APP_PRIVATE_KEY""#);
        insta::assert_snapshot!(problems(&text), @"line 25: github.app_id: is required for GitHub App auth: the App ID shown on the App's settings page");
        let text = example_with_app("app_id = 1042\ninstallation_id = 7");
        insta::assert_snapshot!(problems(&text), @"line 25: github.app_private_key_env: GitHub App auth needs the App's private key: set app_private_key_env (the .pem's contents in that variable) or app_private_key_file");
        let text = example_with_app(
            "app_id = 1042\napp_private_key_env = \"K\"\napp_private_key_file = \"k.pem\"",
        );
        insta::assert_snapshot!(problems(&text), @"line 27: github.app_private_key_file: set app_private_key_env or app_private_key_file, not both");
        let text = example_with_app("app_id = 0\napp_private_key_env = \"-----BEGIN\"");
        insta::assert_snapshot!(problems(&text), @r#"
        line 25: github.app_id: must be at least 1 (got 0)
        line 26: github.app_private_key_env: "-----BEGIN" must be the NAME of an environment variable (letters, digits, _), not a secret
        "#);
    }

    #[test]
    fn the_app_key_is_read_and_checked_without_being_quoted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("app.pem");
        std::fs::write(&file, APP_KEY).expect("written");
        let by_file = example_with_app(&format!(
            "app_id = 1042\napp_private_key_file = {:?}",
            file.display().to_string()
        ));
        let c = parse(&by_file).expect("parses");
        let secrets = Secrets::from_lookup(&c, |_| Some("value".into())).expect("key read");
        let GithubCredentials::App(app) = &secrets.github else {
            panic!("App credentials expected");
        };
        assert_eq!((app.app_id, app.installation_id), (1042, None));
        assert!(
            !format!("{secrets:?}").contains("MII"),
            "the key shows in Debug"
        );

        let lines = |text: &str, lookup: &dyn Fn(&str) -> Option<String>| {
            let c = parse(text).expect("parses");
            let err = Secrets::from_lookup(&c, lookup).expect_err("a problem");
            err.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        };
        let by_env = example_with_app("app_id = 1042\napp_private_key_env = \"APP_KEY\"");
        let missing = |name: &str| (name != "APP_KEY").then(|| "value".to_string());
        insta::assert_snapshot!(lines(&by_env, &missing), @"github.app_private_key_env: environment variable APP_KEY is not set");
        let not_pem = |name: &str| {
            Some(if name == "APP_KEY" {
                "ghp_123".into()
            } else {
                "value".into()
            })
        };
        insta::assert_snapshot!(lines(&by_env, &not_pem), @"github.app_private_key_env: the value of APP_KEY is not a PEM private key (no -----BEGIN line)");
        let cut = APP_KEY[..400].to_string();
        let cut_short = move |name: &str| {
            Some(if name == "APP_KEY" {
                cut.clone()
            } else {
                "value".into()
            })
        };
        let text = lines(&by_env, &cut_short);
        insta::assert_snapshot!(text, @"github.app_private_key_env: the value of APP_KEY is cut short: its -----END RSA PRIVATE KEY----- line is missing");
        let gone = by_file.replace("app.pem", "gone.pem");
        let text = lines(&gone, &|_| Some("value".into()));
        assert!(
            text.starts_with("github.app_private_key_file: cannot read ")
                && text.contains("gone.pem: No such file"),
            "{text}"
        );
    }

    #[test]
    fn property_names() {
        assert!(is_property_name("$pathname"));
        assert!(is_property_name("plan_type"));
        assert!(!is_property_name("$"));
        assert!(!is_property_name("a.b"));
        assert!(!is_property_name("x' OR 1"));
        assert!(!is_property_name("1abc"));
    }
}
