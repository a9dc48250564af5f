//! What each CLI command does once the config is loaded. Kept out of
//! `main.rs` so the end-to-end tests can call the same code.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use chrono::Utc;
use secrecy::SecretString;

use crate::app::{App, ProposeOutcome, Services};
use crate::clock::Clock;
use crate::config::{Config, Secrets};
use crate::daemon;
use crate::github::GitHub;
use crate::init::{self, DraftSettings, Page, SavedInsight};
use crate::posthog::PostHog;
use crate::report::funnel_report;
use crate::retry::RetryPolicy;
use crate::stats::Assessment;
use crate::store::Store;
use crate::text;
use crate::watch_chart;

fn secrets(config: &Config) -> Result<Secrets> {
    Secrets::from_env(config).map_err(|problems| {
        let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        anyhow::anyhow!("{}", lines.join("; "))
    })
}

/// The PostHog adapter alone, for the commands that need only its key.
fn posthog_only(config: &Config) -> Result<PostHog> {
    let env = &config.posthog.api_key_env;
    let key = std::env::var(env)
        .ok()
        .filter(|k| !k.is_empty())
        .with_context(|| format!("environment variable {env} is not set (posthog.api_key_env)"))?;
    Ok(PostHog::new(
        &config.posthog.host,
        &config.posthog.project_id,
        SecretString::from(key),
        env,
        RetryPolicy::SERVICES,
    )?)
}

/// Each funnel's report (only `only`, if named), with steps in cooldown
/// shown as such when a state database exists.
async fn reports(
    posthog: &PostHog,
    config: &Config,
    only: Option<&str>,
) -> Result<Vec<crate::funnel::FunnelReport>> {
    let funnels: Vec<_> = config
        .funnels
        .iter()
        .filter(|f| only.is_none_or(|n| n == f.name))
        .collect();
    if funnels.is_empty() {
        let names: Vec<&str> = config.funnels.iter().map(|f| f.name.as_str()).collect();
        anyhow::bail!(
            "no funnel named {:?}; configured: {}",
            only.unwrap_or(""),
            names.join(", ")
        );
    }
    let store = if config.state.path.exists() {
        Some(Store::open(&config.state.path)?)
    } else {
        None
    };
    let mut reports = Vec::new();
    for f in funnels {
        reports.push(funnel_report(posthog, store.as_ref(), config, f, Utc::now()).await?);
    }
    Ok(reports)
}

/// `funnelfix evidence`: what PostHog says about the step each funnel
/// would work on. Needs only the PostHog key.
pub async fn evidence(config: &Config, only: Option<&str>, json: bool) -> Result<ExitCode> {
    let posthog = posthog_only(config)?;
    let now = Utc::now();
    let range = crate::funnel::EntryRange {
        from: now - crate::experiment::chrono_duration(config.thresholds.lookback),
        to: now,
    };
    let mut out = Vec::new();
    for report in reports(&posthog, config, only).await? {
        let funnel = config
            .funnels
            .iter()
            .find(|f| f.name == report.funnel)
            .context("a reported funnel is configured")?;
        match &report.choice {
            Some(choice) => {
                let mut e = posthog.evidence(funnel, choice.step, range, now).await;
                e.focus_on(
                    choice.expected_conversions,
                    config.thresholds.min_visitors,
                    funnel.segment_watch,
                );
                if !json {
                    println!(
                        "funnel {}
{}",
                        funnel.name,
                        text::evidence_text(&e)
                    );
                }
                out.push(serde_json::json!({"funnel": funnel.name, "evidence": e}));
            }
            None => {
                let why = report.reason_none.clone().unwrap_or_default();
                if !json {
                    println!(
                        "funnel {}
  no step to read evidence for: {why}
",
                        funnel.name
                    );
                }
                out.push(
                    serde_json::json!({"funnel": funnel.name, "evidence": null, "reason": why}),
                );
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// `funnelfix funnel`: needs only the PostHog key.
pub async fn funnel(config: &Config, only: Option<&str>, json: bool) -> Result<ExitCode> {
    let posthog = posthog_only(config)?;
    let reports = reports(&posthog, config, only).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in &reports {
            println!("{}", text::funnel_table(r));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `funnelfix status`: reads the state database only.
pub fn status(config: &Config) -> Result<ExitCode> {
    if !config.state.path.exists() {
        println!(
            "no experiments yet ({} does not exist)",
            config.state.path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let store = Store::open(&config.state.path)?;
    let all = store.all()?;
    if all.is_empty() {
        println!("no experiments yet");
    }
    for e in &all {
        println!("{}", text::status_line(e));
    }
    if store.setting("paused")?.as_deref() == Some("1") {
        println!("proposals are paused");
    }
    Ok(ExitCode::SUCCESS)
}

/// `funnelfix status N [--chart FILE]`: one experiment, and its watch chart
/// written to `chart`.
pub fn experiment_status(config: &Config, number: &str, chart: Option<&Path>) -> Result<ExitCode> {
    let id = text::parse_experiment_number(number).with_context(|| text::status_usage(number))?;
    anyhow::ensure!(
        config.state.path.exists(),
        "no experiments yet ({} does not exist)",
        config.state.path.display()
    );
    let store = Store::open(&config.state.path)?;
    let e = store
        .get(id)?
        .with_context(|| text::no_such_experiment(id))?;
    println!("{}", text::status_line(&e));
    if let Some(a) = e
        .assessment
        .as_deref()
        .and_then(|a| serde_json::from_str::<Assessment>(a).ok())
    {
        println!("  last look: {}", text::watch_line(&a));
    }
    let Some(path) = chart else {
        return Ok(ExitCode::SUCCESS);
    };
    let png = watch_chart::for_experiment(&store, &config.thresholds, &e)?
        .with_context(|| format!("experiment #{id}: {}", text::NO_WATCH_CHART))?;
    std::fs::write(path, png)
        .with_context(|| format!("cannot write the watch chart to {}", path.display()))?;
    println!("watch chart written to {}", path.display());
    Ok(ExitCode::SUCCESS)
}

pub fn health(config: &Config) -> Result<ExitCode> {
    let store = Store::open(&config.state.path)?;
    let beat = daemon::healthy(&store, Utc::now())?;
    println!("ok: last heartbeat {}", beat.to_rfc3339());
    Ok(ExitCode::SUCCESS)
}

/// `funnelfix once`: a propose pass and a monitor pass. It holds the daemon's
/// lock while it works, so it is refused while a daemon (or another `once`)
/// runs on the same database. A dry run uses a throw-away copy of the state,
/// writes nothing to any service and needs no lock.
pub async fn once(config: Config, dry_run: bool) -> Result<ExitCode> {
    let secrets = secrets(&config)?;
    let clock = Clock::from_env()?;
    let services = Services::connect(&config, &secrets, RetryPolicy::SERVICES, &clock)?;
    let (store, _lock) = if dry_run {
        (dry_run_store(&config)?, None)
    } else {
        let db = &config.state.path;
        let lock = daemon::DaemonLock::try_acquire(db)?.map_err(|lock| {
            anyhow::anyhow!(
                "a funnelfix daemon (or another `once`) is running on {} (lock {} is held); stop it first, or use `funnelfix once --dry-run`, which writes nothing",
                db.display(),
                lock.display()
            )
        })?;
        (Store::open(db)?, Some(lock))
    };
    let app = App::new(config, store, services, clock)?;
    let mut failed = false;
    for (funnel, outcome) in app.propose_pass(dry_run).await {
        match outcome {
            Ok(ProposeOutcome::Skipped(why)) => println!("{funnel}: nothing proposed: {why}"),
            Ok(ProposeOutcome::Proposed { experiment, pr_url }) => {
                println!("{funnel}: experiment #{experiment} proposed: {pr_url}")
            }
            Ok(ProposeOutcome::DryRun { title, diff }) => {
                println!("{funnel}: would open a PR \"{title}\":\n{diff}")
            }
            Ok(ProposeOutcome::Failed(why)) => {
                failed = true;
                println!("{funnel}: no acceptable change: {why}")
            }
            Err(e) => {
                failed = true;
                eprintln!("{funnel}: error: {e:#}")
            }
        }
    }
    if dry_run {
        println!("dry run: the monitor pass was not run; nothing was written");
    } else {
        for (id, result) in app.monitor_pass().await {
            if let Err(e) = result {
                failed = true;
                eprintln!("experiment #{id}: error: {e:#}");
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The state as it is, in memory, so a dry run can read history without writing.
fn dry_run_store(config: &Config) -> Result<Store> {
    if config.state.path.exists() {
        Store::snapshot_of(&config.state.path)
    } else {
        Store::open_in_memory()
    }
}

/// `funnelfix run`: the daemon until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<ExitCode> {
    let shutdown = daemon::shutdown_signal()?;
    let secrets = secrets(&config)?;
    let clock = Clock::from_env()?;
    let services = Services::connect(&config, &secrets, RetryPolicy::SERVICES, &clock)?;
    let store = Store::open(&config.state.path)?;
    let app = App::new(config, store, services, clock)?;
    daemon::run(app, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// What `funnelfix init` is told on its command line.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Where the draft is written.
    pub config: PathBuf,
    /// The saved funnel's id or short id.
    pub insight: Option<String>,
    /// Overwrite an existing file.
    pub force: bool,
    pub posthog_host: String,
    pub project_id: String,
    pub github_api_url: String,
    pub repo: String,
    pub base_branch: String,
}

/// The variables `init` reads its secrets from: the config's defaults.
const POSTHOG_KEY_ENV: &str = "POSTHOG_API_KEY";
const GITHUB_TOKEN_ENV: &str = "GITHUB_TOKEN";

fn env_secret(var: &str, need: &str) -> Result<SecretString> {
    std::env::var(var)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(SecretString::from)
        .ok_or_else(|| anyhow!(text::init::missing_env(var, need)))
}

/// `funnelfix init`: a draft config from a saved PostHog funnel. Exit 1,
/// writing nothing, when there is no saved funnel (the most used pages and
/// events are listed instead) or several and no way to choose.
pub async fn init(opts: InitOptions) -> Result<ExitCode> {
    if opts.config.exists() && !opts.force {
        bail!(text::init::exists(&opts.config));
    }
    let project = opts.project_id.trim();
    if project.is_empty() || !project.chars().all(|c| c.is_ascii_digit()) {
        bail!(
            "--project-id {project:?} must be the numeric project id from PostHog's project settings"
        );
    }
    let posthog = PostHog::new(
        &opts.posthog_host,
        project,
        env_secret(POSTHOG_KEY_ENV, text::init::POSTHOG_KEY_NEED)?,
        POSTHOG_KEY_ENV,
        RetryPolicy::SERVICES,
    )?;
    // Built first so a malformed --repo or token fails before any request.
    let github = GitHub::new(
        &opts.github_api_url,
        env_secret(GITHUB_TOKEN_ENV, text::init::GITHUB_TOKEN_NEED)?,
        GITHUB_TOKEN_ENV,
        &opts.repo,
        &opts.base_branch,
        RetryPolicy::SERVICES,
    )?;
    let insights = posthog.saved_funnels().await?;
    if insights.is_empty() {
        let top = posthog.top_events(Utc::now()).await?;
        print!("{}", text::init::top_events(project, init::TOP_DAYS, &top));
        eprintln!("{}", text::init::no_saved_funnel(project));
        return Ok(ExitCode::FAILURE);
    }
    let Some(insight) = choose(opts.insight.as_deref(), project, &insights)? else {
        return Ok(ExitCode::FAILURE);
    };
    let mut funnel = init::read_funnel(insight)
        .map_err(|why| anyhow!(text::init::unreadable_insight(insight, &why)))?;
    if funnel.steps.len() < 2 {
        bail!(text::init::too_few_steps(insight, &funnel));
    }

    let listed = github.file_paths(&opts.base_branch).await?;
    if listed.truncated {
        eprintln!("{}", text::init::tree_truncated(&opts.repo));
    }
    // The last step needs no page: people decide nothing there.
    let last = funnel.steps.len() - 1;
    let deciding = &mut funnel.steps[..last];
    if deciding.iter().any(|s| s.page.is_none()) {
        // A custom event's page: where it is sent from most. Only a guess,
        // so a failure to read it costs the guess, not the draft.
        match posthog.top_events(Utc::now()).await {
            Ok(top) => {
                for step in deciding.iter_mut().filter(|s| s.page.is_none()) {
                    step.page = top
                        .top_path(&step.event)
                        .map(|p| Page::Traffic(p.to_string()));
                }
            }
            Err(e) => eprintln!("warning: {e}"),
        }
    }
    for step in deciding.iter_mut() {
        if let Some(page) = &step.page {
            step.files = init::files_for(page.path(), &listed.paths);
        }
    }

    let settings = DraftSettings {
        posthog_host: opts.posthog_host.trim_end_matches('/').to_string(),
        project_id: project.to_string(),
        github_api_url: opts.github_api_url.trim_end_matches('/').to_string(),
        repo: opts.repo.clone(),
        base_branch: opts.base_branch.clone(),
    };
    let draft = init::draft_config(init::EXAMPLE_CONFIG, &settings, insight, &funnel);
    write_draft(&opts.config, &draft, opts.force)?;
    println!("{}", text::init::written(&opts.config, insight, &funnel));
    if let Err(problems) = crate::config::parse(&draft) {
        println!("{}", text::init::STILL_TO_DO);
        for p in problems {
            println!("  {p}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The saved funnel `--insight` names; else the only one; else the one a
/// person picks at a terminal. `None`: several, and nobody to ask.
fn choose<'a>(
    wanted: Option<&str>,
    project: &str,
    insights: &'a [SavedInsight],
) -> Result<Option<&'a SavedInsight>> {
    if let Some(wanted) = wanted {
        return insights
            .iter()
            .find(|i| i.is(wanted))
            .map(Some)
            .ok_or_else(|| anyhow!(text::init::no_such_insight(wanted, project, insights)));
    }
    if let [only] = insights {
        return Ok(Some(only));
    }
    print!("{}", text::init::insight_list(project, insights));
    if !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
        eprintln!("{}", text::init::choose_with_flag(project, insights.len()));
        return Ok(None);
    }
    let stdin = std::io::stdin();
    loop {
        print!("{}", text::init::CHOOSE_PROMPT);
        std::io::stdout().flush()?;
        let mut answer = String::new();
        if stdin.lock().read_line(&mut answer)? == 0 {
            bail!("no funnel chosen; nothing written");
        }
        let answer = answer.trim();
        let by_number = answer
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_sub(1))
            .and_then(|i| insights.get(i));
        match by_number.or_else(|| insights.iter().find(|i| i.is(answer))) {
            Some(insight) => return Ok(Some(insight)),
            None => eprintln!("{}", text::init::choice_not_understood(answer)),
        }
    }
}

/// Writes the draft; without `force` an existing file is never replaced,
/// even one created since the check at the start.
fn write_draft(path: &Path, draft: &str, force: bool) -> Result<()> {
    let written = if force {
        std::fs::write(path, draft)
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .and_then(|mut f| f.write_all(draft.as_bytes()))
    };
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!(text::init::exists(path))
        }
        other => other.with_context(|| format!("cannot write {}", path.display())),
    }
}
