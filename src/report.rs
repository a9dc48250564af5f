//! The funnel report as `funnelfix funnel` and the propose pass see it:
//! counts over the lookback window from PostHog (per date of entry, so the
//! choice can see each step's recent pace), steps in cooldown from the state
//! database, rates and the choice from the pure core.

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use crate::config::{Config, FunnelConfig};
use crate::experiment;
use crate::funnel::{EntryRange, FunnelReport, rates};
use crate::posthog::PostHog;
use crate::store::Store;

pub async fn funnel_report(
    posthog: &PostHog,
    store: Option<&Store>,
    config: &Config,
    funnel: &FunnelConfig,
    now: DateTime<Utc>,
) -> Result<FunnelReport> {
    let range = EntryRange {
        from: now - experiment::chrono_duration(config.thresholds.lookback),
        to: now,
    };
    let days = posthog
        .funnel_days(&funnel.steps, funnel.conversion_window, range, now)
        .await
        .with_context(|| format!("funnel {:?}", funnel.name))?;
    let excluded = match store {
        Some(store) => busy_steps(store, config, funnel, now)?,
        None => Vec::new(),
    };
    Ok(rates::report(funnel, &days, &config.thresholds, &excluded))
}

/// Steps with an experiment still open or in its cooldown, with the reason.
fn busy_steps(
    store: &Store,
    config: &Config,
    funnel: &FunnelConfig,
    now: DateTime<Utc>,
) -> Result<Vec<(usize, String)>> {
    let mut excluded = Vec::new();
    for (i, step) in funnel.steps.iter().enumerate() {
        // An open experiment counts as still running: its step is busy.
        let last_end = store
            .history(&funnel.name, &step.name)?
            .into_iter()
            .find_map(|e| {
                if e.state.is_final() {
                    e.ended_at
                } else {
                    Some(now)
                }
            });
        if let Some(end) = last_end
            && !experiment::cooldown_over(end, now, config.thresholds.cooldown)
        {
            excluded.push((
                i,
                format!(
                    "in cooldown after the experiment that ended {}",
                    end.format("%Y-%m-%d %H:%M UTC")
                ),
            ));
        }
    }
    Ok(excluded)
}
