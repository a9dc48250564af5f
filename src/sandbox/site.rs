//! A simulated website for the demo and the scenario tests: visitors walk
//! the funnel and each step converts at a rate that depends on the page that
//! is live, i.e. on the files of the step on the GitHub twin's base branch.
//! A merge (or a revert) therefore changes the data PostHog reports.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::config::FunnelConfig;
use crate::sandbox::github::GitHubTwin;
use crate::sandbox::posthog::{Event, PostHogTwin};

/// Text that, when present on a step's page, multiplies that step's rate.
#[derive(Debug, Clone)]
pub struct Effect {
    pub marker: String,
    pub multiplier: f64,
}

pub struct Site {
    funnel: FunnelConfig,
    branch: String,
    /// Base rate of each transition (step i → i + 1).
    pub base_rates: Vec<f64>,
    pub effects: Vec<Effect>,
    /// Entrants per day, before the weekday profile.
    pub visitors_per_day: f64,
    rng: SmallRng,
    next_person: u64,
}

/// Traffic by weekday (Monday first): quieter weekends, as most sites have.
const WEEKDAY_TRAFFIC: [f64; 7] = [1.1, 1.15, 1.1, 1.05, 0.95, 0.8, 0.85];

impl Site {
    pub fn new(
        funnel: FunnelConfig,
        branch: &str,
        base_rates: Vec<f64>,
        visitors_per_day: f64,
        seed: u64,
    ) -> Site {
        Site {
            funnel,
            branch: branch.to_string(),
            base_rates,
            effects: Vec::new(),
            visitors_per_day,
            rng: SmallRng::seed_from_u64(seed),
            next_person: 0,
        }
    }

    pub fn with_effect(mut self, marker: &str, multiplier: f64) -> Site {
        self.effects.push(Effect {
            marker: marker.to_string(),
            multiplier,
        });
        self
    }

    /// The rate of each transition given the pages live now.
    pub fn live_rates(&self, github: &GitHubTwin) -> Vec<f64> {
        self.base_rates
            .iter()
            .enumerate()
            .map(|(i, base)| {
                let pages: String = self.funnel.steps[i]
                    .files
                    .iter()
                    .filter_map(|f| github.file_on_branch(&self.branch, f))
                    .collect();
                let factor: f64 = self
                    .effects
                    .iter()
                    .filter(|e| pages.contains(&e.marker))
                    .map(|e| e.multiplier)
                    .product();
                (base * factor).clamp(0.0, 1.0)
            })
            .collect()
    }

    /// Visitors who enter in `[from, to)`, walking the funnel under the pages
    /// live now; their events go to the PostHog twin.
    pub fn simulate(
        &mut self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        github: &GitHubTwin,
        posthog: &PostHogTwin,
    ) -> usize {
        let rates = self.live_rates(github);
        let window = Duration::from_std(self.funnel.conversion_window).unwrap_or(Duration::days(1));
        let mut events = Vec::new();
        let mut t = from;
        while t < to {
            let slice_end = (t + Duration::hours(1)).min(to);
            let seconds = (slice_end - t).num_milliseconds().max(0) as f64 / 1000.0;
            let per_second = self.visitors_per_day
                * WEEKDAY_TRAFFIC[t.weekday().num_days_from_monday() as usize]
                / 86_400.0;
            let expected = per_second * seconds;
            // Whole visitors, with the fraction carried by chance.
            let mut n = expected.floor() as u64;
            if self.rng.random::<f64>() < expected.fract() {
                n += 1;
            }
            for _ in 0..n {
                let offset = self.rng.random_range(0.0..seconds.max(0.001));
                let start = t + Duration::milliseconds((offset * 1000.0) as i64);
                self.walk(start, window, &rates, &mut events);
            }
            t = slice_end;
        }
        let count = events.len();
        posthog.push_events(events);
        count
    }

    fn walk(
        &mut self,
        start: DateTime<Utc>,
        window: Duration,
        rates: &[f64],
        events: &mut Vec<Event>,
    ) {
        self.next_person += 1;
        let person = format!("visitor-{}", self.next_person);
        let mut at = start;
        for (i, step) in self.funnel.steps.iter().enumerate() {
            if i > 0 {
                if self.rng.random::<f64>() >= rates[i - 1] {
                    return;
                }
                // The next step follows well inside the conversion window.
                let gap_ms =
                    (window.num_milliseconds() as f64 * self.rng.random_range(0.01..0.5)) as i64;
                at += Duration::milliseconds(gap_ms.max(1));
            }
            let properties: BTreeMap<String, String> = step.filters.clone();
            events.push(Event {
                person_id: person.clone(),
                event: step.event.clone(),
                timestamp: at,
                properties,
            });
        }
    }
}
