//! Pure funnel logic: the HogQL query text with its placeholder values, the
//! rows it returns turned into step counts, step-to-step rates with Wilson
//! intervals, and the choice of the step to work on.

use serde::Serialize;

/// People counted by the funnel query: `reached[i]` is how many entrants of the
/// first step (in the time range) went on to reach step `i` in order, within
/// the conversion window. `reached[0]` is the number of entrants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FunnelCounts {
    pub reached: Vec<u64>,
}

/// One step-to-step transition: of `entrants` who reached step `index`,
/// `converted` went on to step `index + 1`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepRate {
    /// Index of the step people leave from (0-based).
    pub index: usize,
    /// Name of that step.
    pub name: String,
    /// Name of the step they should reach next.
    pub next_name: String,
    pub entrants: u64,
    pub converted: u64,
    /// converted / entrants (0 when there are no entrants).
    pub rate: f64,
    /// 95% Wilson interval of the rate.
    pub low: f64,
    pub high: f64,
    /// Whether the step has at least `min_visitors` entrants and can be judged.
    pub judged: bool,
}

/// The step funnelfix would work on, and why in words.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Choice {
    /// Index into [`FunnelReport::steps`].
    pub step: usize,
    pub reason: String,
}

/// Everything `funnelfix funnel` prints for one funnel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunnelReport {
    pub funnel: String,
    pub counts: FunnelCounts,
    pub steps: Vec<StepRate>,
    /// reached[last] / reached[0].
    pub overall: f64,
    /// `None` when no step can be judged; `reason_none` then says why.
    pub choice: Option<Choice>,
    pub reason_none: Option<String>,
}

pub mod hogql;
pub mod rates;

use chrono::{DateTime, Datelike, NaiveDate, Utc};

/// People are counted when their first first-step event falls in `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRange {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// Funnel counts of the people who entered on one UTC date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DayCounts {
    pub date: NaiveDate,
    pub counts: FunnelCounts,
}

/// Funnel counts split by the UTC date of entry, with the entry range they
/// were counted over (after right-censoring: nobody entering at or after
/// `range.to` is in them). Dates without entrants are absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByDay {
    pub range: EntryRange,
    /// Oldest first.
    pub days: Vec<DayCounts>,
}

impl ByDay {
    pub fn total(&self) -> FunnelCounts {
        sum(self.days.iter().map(|d| &d.counts))
    }

    /// The same counts by weekday of entry, for a funnel of `steps` steps.
    pub fn by_weekday(&self, steps: usize) -> ByWeekday {
        let mut out = ByWeekday::default_for(steps);
        for day in &self.days {
            let w = day.date.weekday().num_days_from_monday() as usize;
            out.days[w] = sum([&out.days[w], &day.counts]);
        }
        out
    }
}

/// Step-wise sums; the result is as long as the longest input.
fn sum<'a>(counts: impl IntoIterator<Item = &'a FunnelCounts>) -> FunnelCounts {
    let mut reached: Vec<u64> = Vec::new();
    for c in counts {
        if reached.len() < c.reached.len() {
            reached.resize(c.reached.len(), 0);
        }
        for (total, n) in reached.iter_mut().zip(&c.reached) {
            *total += n;
        }
    }
    FunnelCounts { reached }
}

/// Funnel counts split by the UTC weekday of entry (0 = Monday).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ByWeekday {
    pub days: [FunnelCounts; 7],
}

impl ByWeekday {
    /// Seven empty days for a funnel of `steps` steps.
    pub fn default_for(steps: usize) -> ByWeekday {
        ByWeekday {
            days: std::array::from_fn(|_| FunnelCounts {
                reached: vec![0; steps],
            }),
        }
    }

    pub fn total(&self) -> FunnelCounts {
        sum(&self.days)
    }
}
