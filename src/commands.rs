//! What each CLI command does once the config is loaded. Kept out of
//! `main.rs` so the end-to-end tests can call the same code.

use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::Utc;
use secrecy::SecretString;

use crate::app::{App, ProposeOutcome, Services};
use crate::clock::Clock;
use crate::config::{Config, Secrets};
use crate::daemon;
use crate::posthog::PostHog;
use crate::report::funnel_report;
use crate::retry::RetryPolicy;
use crate::store::Store;
use crate::text;

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
                let e = posthog.evidence(funnel, choice.step, range, now).await;
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
    let services = Services::connect(&config, &secrets, RetryPolicy::SERVICES)?;
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
    let app = App::new(config, store, services, Clock::from_env()?)?;
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
    let services = Services::connect(&config, &secrets, RetryPolicy::SERVICES)?;
    let store = Store::open(&config.state.path)?;
    let app = App::new(config, store, services, Clock::from_env()?)?;
    daemon::run(app, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
