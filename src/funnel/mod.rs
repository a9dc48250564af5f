//! Pure funnel logic: the HogQL query text with its placeholder values, the
//! rows it returns turned into step counts, step-to-step rates with Wilson
//! intervals, and the choice of the step to work on.

use serde::{Deserialize, Serialize};

/// What the funnel query counts, per step (see [`hogql`] for the exact
/// definition): `entries[i]` is the number of entries at step `i` (a
/// person's first step-`i` event of a UTC day), and `converted[i]` how many
/// of them were followed by the person's step-`i + 1` event within the
/// conversion window. `converted` has one element less than `entries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunnelCounts {
    pub entries: Vec<u64>,
    pub converted: Vec<u64>,
}

impl FunnelCounts {
    /// No entries at any of `steps` steps.
    pub fn empty(steps: usize) -> FunnelCounts {
        FunnelCounts {
            entries: vec![0; steps],
            converted: vec![0; steps.saturating_sub(1)],
        }
    }

    /// Entries and conversions of transition `i` (step i → i + 1).
    pub fn transition(&self, i: usize) -> (u64, u64) {
        (
            self.entries.get(i).copied().unwrap_or(0),
            self.converted.get(i).copied().unwrap_or(0),
        )
    }

    fn add(&mut self, other: &FunnelCounts) {
        for (v, o) in [
            (&mut self.entries, &other.entries),
            (&mut self.converted, &other.converted),
        ] {
            if v.len() < o.len() {
                v.resize(o.len(), 0);
            }
            for (total, n) in v.iter_mut().zip(o) {
                *total += n;
            }
        }
    }
}

/// One step-to-step transition: of `entrants` entries at step `index`,
/// `converted` went on to step `index + 1` within the conversion window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Index into [`FunnelReport::steps`].
    pub step: usize,
    pub reason: String,
    /// The step's conversions expected during the observation window, at
    /// its recent pace (see [`rates::pace`]).
    #[serde(default)]
    pub expected_conversions: f64,
}

/// Everything `funnelfix funnel` prints for one funnel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunnelReport {
    pub funnel: String,
    pub counts: FunnelCounts,
    pub steps: Vec<StepRate>,
    /// The product of the step rates: the share of the first step's
    /// entries that would reach the last step if every step converted at
    /// its rate.
    pub overall: f64,
    /// `None` when no step can be judged; `reason_none` then says why.
    pub choice: Option<Choice>,
    pub reason_none: Option<String>,
    /// What PostHog says about the chosen step, when the propose pass read it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<crate::evidence::Evidence>,
}

pub mod hogql;
pub mod rates;

/// The entries of a segment: those whose step event (the person's first
/// step event of the day) has `property` equal to `value`, such as
/// `$device_type` = "Mobile". An experiment restricted to a segment is
/// watched on these entries only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchSegment {
    /// A property name [`crate::config::is_property_name`] accepts.
    pub property: String,
    pub value: String,
}

use chrono::{DateTime, Datelike, NaiveDate, Utc};

/// Entries are counted when they fall in `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRange {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// Funnel counts of the entries made on one UTC date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayCounts {
    pub date: NaiveDate,
    pub counts: FunnelCounts,
    /// Per transition, the per-person sums of its entries (see
    /// [`crate::stats::PersonSums`]); empty when the source gave none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub people: Vec<crate::stats::PersonSums>,
}

/// Funnel counts split by the UTC date of entry, with the entry range they
/// were counted over (after right-censoring: no entry at or after
/// `range.to` is in them). Dates without entries are absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ByDay {
    pub range: EntryRange,
    /// Oldest first.
    pub days: Vec<DayCounts>,
}

impl ByDay {
    /// The counts of all dates.
    pub fn total(&self) -> FunnelCounts {
        let steps = self
            .days
            .iter()
            .map(|d| d.counts.entries.len())
            .max()
            .unwrap_or(0);
        let mut out = FunnelCounts::empty(steps);
        for d in &self.days {
            out.add(&d.counts);
        }
        out
    }

    /// The same counts by weekday of entry, for a funnel of `steps` steps.
    pub fn by_weekday(&self, steps: usize) -> ByWeekday {
        let mut out = ByWeekday::default_for(steps);
        for day in &self.days {
            let w = day.date.weekday().num_days_from_monday() as usize;
            out.days[w].add(&day.counts);
        }
        out
    }
}

/// Funnel counts split by the UTC weekday of entry (0 = Monday).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByWeekday {
    pub days: [FunnelCounts; 7],
}

impl ByWeekday {
    /// Seven empty days for a funnel of `steps` steps.
    pub fn default_for(steps: usize) -> ByWeekday {
        ByWeekday {
            days: std::array::from_fn(|_| FunnelCounts::empty(steps)),
        }
    }

    pub fn total(&self) -> FunnelCounts {
        let steps = self.days.iter().map(|d| d.entries.len()).max().unwrap_or(0);
        let mut out = FunnelCounts::empty(steps);
        for d in &self.days {
            out.add(d);
        }
        out
    }
}
