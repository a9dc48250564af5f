//! What each CLI command does once the config is loaded. Kept out of
//! `main.rs` so the end-to-end tests can call the same code.

use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::Utc;
use secrecy::SecretString;

use crate::config::Config;
use crate::posthog::PostHog;
use crate::report::funnel_report;
use crate::retry::RetryPolicy;
use crate::store::Store;
use crate::text;

/// `funnelfix funnel`: needs only the PostHog key.
pub async fn funnel(config: &Config, only: Option<&str>, json: bool) -> Result<ExitCode> {
    let env = &config.posthog.api_key_env;
    let key = std::env::var(env)
        .ok()
        .filter(|k| !k.is_empty())
        .with_context(|| format!("environment variable {env} is not set (posthog.api_key_env)"))?;
    let posthog = PostHog::new(
        &config.posthog.host,
        &config.posthog.project_id,
        SecretString::from(key),
        env,
        RetryPolicy::SERVICES,
    )?;
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
    // Steps in cooldown are shown as such when a state database exists.
    let store = if config.state.path.exists() {
        Some(Store::open(&config.state.path)?)
    } else {
        None
    };
    let mut reports = Vec::new();
    for f in funnels {
        reports.push(funnel_report(&posthog, store.as_ref(), config, f, Utc::now()).await?);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        for r in &reports {
            println!("{}", text::funnel_table(r));
        }
    }
    Ok(ExitCode::SUCCESS)
}
