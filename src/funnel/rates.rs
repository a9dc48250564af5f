//! Counts into step rates with Wilson intervals, and the choice of the step
//! to work on. Pure: the same counts always give the same report.

use std::time::Duration;

use chrono::NaiveDate;

use crate::config::{FunnelConfig, Selection, Thresholds};
use crate::text::human_duration;

use super::hogql::day_start;
use super::{ByDay, Choice, FunnelCounts, FunnelReport, StepRate};

/// z for a two-sided 95% interval.
const Z95: f64 = 1.959_963_984_540_054;

/// The revert test needs at least this many post-merge conversions before it
/// may act, so a step expected to see fewer during the observation window
/// cannot be watched and is not picked. Defined once, in `stats`.
pub const MIN_WATCH_CONVERSIONS: f64 = crate::stats::DEFAULT_MIN_CONVERSIONS as f64;

/// The 95% Wilson score interval of `converted / entrants`.
pub fn wilson(converted: u64, entrants: u64) -> (f64, f64) {
    if entrants == 0 {
        return (0.0, 1.0);
    }
    let n = entrants as f64;
    let p = converted as f64 / n;
    let z2 = Z95 * Z95;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Step-to-step rates of `counts`; `judged` marks steps with enough entrants.
pub fn step_rates(
    funnel: &FunnelConfig,
    counts: &FunnelCounts,
    min_visitors: u64,
) -> Vec<StepRate> {
    (0..funnel.steps.len().saturating_sub(1))
        .map(|i| {
            let (entrants, converted) = counts.transition(i);
            // Conversions are a subset of the entries; clamp so a malformed
            // reply can never give a rate above 1.
            let converted = converted.min(entrants);
            let rate = if entrants == 0 {
                0.0
            } else {
                converted as f64 / entrants as f64
            };
            let (low, high) = wilson(converted, entrants);
            StepRate {
                index: i,
                name: funnel.steps[i].name.clone(),
                next_name: funnel.steps[i + 1].name.clone(),
                entrants,
                converted,
                rate,
                low,
                high,
                judged: entrants >= min_visitors,
            }
        })
        .collect()
}

/// The whole report: rates, overall conversion and the step to work on,
/// from the lookback's counts per date of entry (the dates give each step's
/// recent pace, see [`pace`]).
///
/// `excluded` lists steps that must not be picked now, with the reason
/// (cooldown, an experiment in progress).
pub fn report(
    funnel: &FunnelConfig,
    days: &ByDay,
    thresholds: &Thresholds,
    excluded: &[(usize, String)],
) -> FunnelReport {
    let mut counts = days.total();
    counts.entries.resize(funnel.steps.len(), 0);
    counts
        .converted
        .resize(funnel.steps.len().saturating_sub(1), 0);
    let counts = &counts;
    let steps = step_rates(funnel, counts, thresholds.min_visitors);
    let overall = if steps.is_empty() {
        0.0
    } else {
        steps.iter().map(|s| s.rate).product()
    };

    let mut skipped: Vec<String> = Vec::new();
    let candidates: Vec<&StepRate> = steps
        .iter()
        .filter(|s| {
            let why = skip_reason(funnel, s, days, thresholds, excluded);
            if let Some(why) = &why {
                skipped.push(format!("{} → {}: {why}", s.name, s.next_name));
            }
            why.is_none()
        })
        .collect();

    let best = match funnel.selection {
        Selection::LowestRate => candidates
            .iter()
            .min_by(|a, b| a.high.total_cmp(&b.high).then(a.index.cmp(&b.index))),
        Selection::MostLost => candidates.iter().max_by(|a, b| {
            lost(a)
                .total_cmp(&lost(b))
                // On a tie the earlier step wins: max_by keeps the last maximum.
                .then(b.index.cmp(&a.index))
        }),
    };
    let (choice, reason_none) = match best {
        Some(s) => (
            Some(Choice {
                step: s.index,
                reason: reason(funnel.selection, s, &candidates),
                expected_conversions: pace(days, s.index, thresholds.observation).expected,
            }),
            None,
        ),
        None => (
            None,
            Some(if skipped.is_empty() {
                "the funnel has no step to judge".to_string()
            } else {
                format!("no step can be picked: {}", skipped.join("; "))
            }),
        ),
    };
    FunnelReport {
        funnel: funnel.name.clone(),
        counts: counts.clone(),
        steps,
        overall,
        choice,
        reason_none,
        evidence: None,
    }
}

/// People lost at a step: entrants × (1 − rate).
fn lost(s: &StepRate) -> f64 {
    s.entrants as f64 - s.converted as f64
}

/// Why a step cannot be picked now, if it cannot.
fn skip_reason(
    funnel: &FunnelConfig,
    s: &StepRate,
    days: &ByDay,
    t: &Thresholds,
    excluded: &[(usize, String)],
) -> Option<String> {
    if let Some((_, why)) = excluded.iter().find(|(i, _)| *i == s.index) {
        return Some(why.clone());
    }
    if !s.judged {
        return Some(format!(
            "{} entries, fewer than min_visitors = {}",
            s.entrants, t.min_visitors
        ));
    }
    if funnel.steps[s.index].files.is_empty() {
        return Some("no page files are configured for this step".into());
    }
    let pace = pace(days, s.index, t.observation);
    if pace.expected < MIN_WATCH_CONVERSIONS {
        return Some(format!(
            "too little traffic to watch a change: {}, about {:.0} conversions expected in {}; the revert test needs {MIN_WATCH_CONVERSIONS:.0}",
            pace.describe(),
            pace.expected,
            human_duration(t.observation),
        ));
    }
    None
}

/// How many conversions a step can be expected to bring during the
/// observation window, from its recent pace.
#[derive(Debug, Clone, PartialEq)]
pub struct Pace {
    /// Conversions expected during the observation window.
    pub expected: f64,
    /// The span, ending where the counted entries end, that the pace was
    /// measured over.
    pub over: Duration,
    /// The first date with entries at the step, when the step's data
    /// starts so late that it limited `over`.
    pub data_from: Option<NaiveDate>,
}

impl Pace {
    /// "at the pace of the last 5.4 days (the step's data starts 2026-03-09)".
    pub fn describe(&self) -> String {
        let mut s = format!("at the pace of the last {}", span_text(self.over));
        if let Some(date) = self.data_from {
            s.push_str(&format!(" (the step's data starts {date})"));
        }
        s
    }
}

/// The pace of step `step`'s conversions (entries at the step going on to
/// the next) over the most recent `min(observation, span with data)` of the
/// counted entry range, applied to `observation`.
///
/// The span with data runs from the first UTC date with entries at the step
/// (or the range's start) to the range's end, and is never taken shorter
/// than a day (or the whole range, if that is shorter), so the hour of a
/// launch or a time-of-day cycle is not extrapolated. Measuring only the
/// recent part follows growth and shrinkage: a site that launched five days
/// ago is not diluted by 23 empty days, and one whose traffic halved is
/// judged by its current traffic, not its past. Dates are whole UTC days:
/// the share of a date inside the window is counted pro rata.
pub fn pace(days: &ByDay, step: usize, observation: Duration) -> Pace {
    let from = days.range.from.timestamp();
    let to = days.range.to.timestamp().max(from);
    let observation_secs = observation.as_secs_f64().max(1.0);
    let none = Pace {
        expected: 0.0,
        over: Duration::ZERO,
        data_from: None,
    };
    let Some(first) = days
        .days
        .iter()
        .find(|d| d.counts.entries.get(step).is_some_and(|&n| n > 0))
    else {
        return none;
    };
    let data_start = day_start(first.date).clamp(from, to);
    let span = (to - data_start) as f64;
    let shortest = ((to - from) as f64).min(DAY_SECS);
    let window = observation_secs.min(span.max(shortest));
    if window <= 0.0 {
        return none;
    }
    let window_start = to as f64 - window;
    let mut conversions = 0.0;
    for d in &days.days {
        let start = day_start(d.date).max(from) as f64;
        let end = (day_start(d.date) + DAY_SECS as i64).min(to) as f64;
        let inside = end - start.max(window_start);
        if end <= start || inside <= 0.0 {
            continue;
        }
        let (entrants, converted) = d.counts.transition(step);
        let converted = converted.min(entrants);
        conversions += converted as f64 * inside / (end - start);
    }
    Pace {
        expected: conversions / window * observation_secs,
        over: Duration::from_secs_f64(window),
        data_from: (data_start > from && span < observation_secs).then_some(first.date),
    }
}

const DAY_SECS: f64 = 86_400.0;

/// "14 days", "5.4 days", "9 hours", "30 minutes".
fn span_text(d: Duration) -> String {
    let secs = d.as_secs_f64();
    let (n, unit) = if secs >= DAY_SECS {
        (secs / DAY_SECS, "day")
    } else if secs >= 3_600.0 {
        (secs / 3_600.0, "hour")
    } else {
        (secs / 60.0, "minute")
    };
    let n = (n * 10.0).round() / 10.0;
    let plural = if n == 1.0 { "" } else { "s" };
    if n.fract() == 0.0 {
        format!("{n:.0} {unit}{plural}")
    } else {
        format!("{n:.1} {unit}{plural}")
    }
}

fn reason(selection: Selection, s: &StepRate, candidates: &[&StepRate]) -> String {
    let others = candidates.len().saturating_sub(1);
    let rate = format!(
        "{:.1}% of {} entries go on to {:?} (95% interval {:.1}%–{:.1}%)",
        s.rate * 100.0,
        s.entrants,
        s.next_name,
        s.low * 100.0,
        s.high * 100.0
    );
    match selection {
        Selection::LowestRate if others == 0 => {
            format!("{:?} is the only step that can be judged: {rate}", s.name)
        }
        Selection::LowestRate => format!(
            "{:?} has the lowest rate even at the optimistic end of its interval: {rate}; the other {others} judged step(s) all do better",
            s.name
        ),
        Selection::MostLost => format!(
            "{:?} loses the most people: {} of {} do not go on ({rate})",
            s.name,
            s.entrants - s.converted,
            s.entrants
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RevertMode, StepConfig};
    use crate::funnel::{DayCounts, EntryRange};
    use chrono::{DateTime, Utc};

    fn funnel(selection: Selection) -> FunnelConfig {
        let step = |name: &str, files: &[&str]| StepConfig {
            name: name.into(),
            event: "e".into(),
            filters: Default::default(),
            files: files.iter().map(|f| f.to_string()).collect(),
        };
        FunnelConfig {
            segment_watch: false,
            name: "signup".into(),
            conversion_window: Duration::from_secs(86_400),
            selection,
            steps: vec![
                step("Home", &["site/index.html"]),
                step("Pricing", &["site/pricing.html"]),
                step("Signup", &["site/signup.html"]),
                step("Done", &[]),
            ],
        }
    }

    fn thresholds() -> Thresholds {
        let day = Duration::from_secs(86_400);
        Thresholds {
            lookback: day * 28,
            min_visitors: 200,
            approval_timeout: day * 3,
            observation: day * 14,
            baseline: day * 28,
            max_relative_drop: 0.1,
            false_revert_rate: 0.05,
            cooldown: day * 28,
            revert: RevertMode::Merge,
            early_window: Some(Duration::from_secs(3600)),
            drift_control: crate::config::DriftControl::Off,
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("a time")
    }

    fn date(s: &str) -> NaiveDate {
        s.parse().expect("a date")
    }

    /// 28 days of entries, 1 to 28 March 2026.
    fn lookback() -> EntryRange {
        EntryRange {
            from: t("2026-03-01T00:00:00Z"),
            to: t("2026-03-29T00:00:00Z"),
        }
    }

    /// Entries at each step, each step's conversions being the next
    /// step's entries (as when every entry is a new person's).
    fn chain(reached: &[u64]) -> FunnelCounts {
        FunnelCounts {
            entries: reached.to_vec(),
            converted: reached.get(1..).unwrap_or_default().to_vec(),
        }
    }

    fn by_day(range: EntryRange, days: &[(&str, &[u64])]) -> ByDay {
        ByDay {
            range,
            days: days
                .iter()
                .map(|(d, reached)| DayCounts {
                    date: date(d),
                    people: Vec::new(),
                    counts: chain(reached),
                })
                .collect(),
        }
    }

    /// `reached` spread evenly over the 28 days of [`lookback`].
    fn even(reached: &[u64]) -> ByDay {
        ByDay {
            range: lookback(),
            days: (0..28u64)
                .map(|d| DayCounts {
                    date: date("2026-03-01") + chrono::Days::new(d),
                    people: Vec::new(),
                    counts: chain(
                        &reached
                            .iter()
                            .map(|n| n / 28 + u64::from(d < n % 28))
                            .collect::<Vec<_>>(),
                    ),
                })
                .collect(),
        }
    }

    /// `per_day(d)` for each of the 28 days of [`lookback`].
    fn daily(per_day: impl Fn(u64) -> Vec<u64>) -> ByDay {
        ByDay {
            range: lookback(),
            days: (0..28u64)
                .map(|d| DayCounts {
                    date: date("2026-03-01") + chrono::Days::new(d),
                    people: Vec::new(),
                    counts: chain(&per_day(d)),
                })
                .collect(),
        }
    }

    /// The gate before paces: conversions × observation / lookback.
    fn old_expected(s: &StepRate) -> f64 {
        s.converted as f64 * 14.0 / 28.0
    }

    #[test]
    fn wilson_matches_values_computed_by_hand() {
        // 20 of 100: centre 0.2147, half-width 0.0777 (Wilson 1927, z = 1.96).
        let (lo, hi) = wilson(20, 100);
        assert!((lo - 0.1333).abs() < 1e-4, "{lo}");
        assert!((hi - 0.2888).abs() < 1e-4, "{hi}");
        let (lo, hi) = wilson(0, 10);
        assert_eq!(lo, 0.0);
        assert!((hi - 0.2775).abs() < 1e-4, "{hi}");
        let (lo, hi) = wilson(10, 10);
        assert!((lo - 0.7225).abs() < 1e-4, "{lo}");
        assert!((hi - 1.0).abs() < 1e-12);
        assert_eq!(wilson(0, 0), (0.0, 1.0));
    }

    #[test]
    fn lowest_rate_ranks_by_the_upper_bound() {
        // Pricing: 320/1530 = 20.9%, a tight interval. Signup: 64/320 = 20.0%,
        // lower, but so uncertain that its upper bound is above Pricing's.
        let r = report(
            &funnel(Selection::LowestRate),
            &even(&[5000, 1530, 320, 64]),
            &thresholds(),
            &[],
        );
        let s = &r.steps;
        assert_eq!(s.len(), 3);
        assert_eq!((s[1].entrants, s[1].converted), (1530, 320));
        let signup_rate = s[2].rate;
        assert!(signup_rate < s[1].rate);
        assert!(s[2].high > s[1].high);
        assert_eq!(r.choice.as_ref().map(|c| c.step), Some(1));
        assert!(r.choice.unwrap().reason.contains("optimistic end"));
        assert!((r.overall - 64.0 / 5000.0).abs() < 1e-12);
    }

    #[test]
    fn most_lost_ranks_by_people_lost() {
        let r = report(
            &funnel(Selection::MostLost),
            &even(&[5000, 1530, 320, 64]),
            &thresholds(),
            &[],
        );
        // Home loses 3470, Pricing 1210, Signup 256.
        let c = r.choice.expect("a choice");
        assert_eq!(c.step, 0);
        assert!(c.reason.contains("3470 of 5000"), "{}", c.reason);
    }

    #[test]
    fn steps_under_min_visitors_and_excluded_steps_are_not_picked() {
        let r = report(
            &funnel(Selection::LowestRate),
            &even(&[4000, 1000, 150, 20]),
            &thresholds(),
            &[(1, "in cooldown".into())],
        );
        assert!(!r.steps[2].judged);
        assert_eq!(r.choice.as_ref().map(|c| c.step), Some(0));

        let r = report(
            &funnel(Selection::LowestRate),
            &even(&[4000, 1000, 150, 20]),
            &thresholds(),
            &[(0, "in cooldown".into()), (1, "in cooldown".into())],
        );
        assert!(r.choice.is_none());
        let why = r.reason_none.expect("a reason");
        assert!(
            why.contains("in cooldown") && why.contains("min_visitors = 200"),
            "{why}"
        );
    }

    #[test]
    fn a_step_too_quiet_to_watch_is_not_picked() {
        // 300 entrants, 40 conversions in 28 days: 20 expected in 14 days.
        let r = report(
            &funnel(Selection::LowestRate),
            &even(&[300, 40, 39, 38]),
            &thresholds(),
            &[],
        );
        assert!(r.choice.is_none());
        assert!(
            r.reason_none
                .unwrap()
                .contains("too little traffic to watch")
        );
    }

    #[test]
    fn a_site_with_five_days_of_data_is_paced_by_those_days() {
        // Launched on 24 March: 5 of the lookback's 28 days have data. Pricing
        // → Signup converts 4 a day: 20 in the lookback.
        let days: Vec<(&str, &[u64])> = [
            "2026-03-24",
            "2026-03-25",
            "2026-03-26",
            "2026-03-27",
            "2026-03-28",
        ]
        .iter()
        .map(|d| (*d, &[120u64, 60, 4, 2][..]))
        .collect();
        let days = by_day(lookback(), &days);
        let r = report(&funnel(Selection::LowestRate), &days, &thresholds(), &[]);
        let pricing = &r.steps[1];
        assert_eq!((pricing.entrants, pricing.converted), (300, 20));
        // At the lookback's average pace it was gated: 10 expected in 14
        // days. The pace of the last 14 days alone would still say 20.
        assert!(old_expected(pricing) < MIN_WATCH_CONVERSIONS);
        // At the pace of its 5 days: 20 / 5 × 14 = 56.
        let p = pace(&days, 1, thresholds().observation);
        assert!((p.expected - 56.0).abs() < 1e-9, "{p:?}");
        assert_eq!(p.over, Duration::from_secs(5 * 86_400));
        assert_eq!(p.data_from, Some(date("2026-03-24")));
        assert_eq!(r.choice.map(|c| c.step), Some(1), "{:?}", r.reason_none);
    }

    #[test]
    fn the_reason_says_which_pace_it_used() {
        // Five days of data, Pricing → Signup at 2 a day: 28 in 14 days.
        let days: Vec<(&str, &[u64])> = vec![
            ("2026-03-24", &[200, 60, 2, 1]),
            ("2026-03-25", &[200, 60, 2, 1]),
            ("2026-03-26", &[200, 60, 2, 1]),
            ("2026-03-27", &[200, 60, 2, 1]),
            ("2026-03-28", &[200, 60, 2, 1]),
        ];
        let r = report(
            &funnel(Selection::LowestRate),
            &by_day(lookback(), &days),
            &thresholds(),
            &[(0, "in cooldown".into())],
        );
        insta::assert_snapshot!(r.reason_none.expect("no choice"), @"no step can be picked: Home → Pricing: in cooldown; Pricing → Signup: too little traffic to watch a change: at the pace of the last 5 days (the step's data starts 2026-03-24), about 28 conversions expected in 14 days; the revert test needs 30; Signup → Done: 10 entries, fewer than min_visitors = 200");

        // A site with a whole lookback of data is paced by the last
        // observation window, and says so.
        let r = report(
            &funnel(Selection::LowestRate),
            &even(&[28_000, 560, 28, 14]),
            &thresholds(),
            &[(0, "in cooldown".into())],
        );
        insta::assert_snapshot!(r.reason_none.expect("no choice"), @"no step can be picked: Home → Pricing: in cooldown; Pricing → Signup: too little traffic to watch a change: at the pace of the last 14 days, about 14 conversions expected in 14 days; the revert test needs 30; Signup → Done: 28 entries, fewer than min_visitors = 200");
    }

    #[test]
    fn a_site_that_grew_is_paced_by_its_recent_traffic() {
        // Pricing → Signup: 1 a day for two weeks, then 3 a day.
        let days = daily(|d| vec![400, 40, if d < 14 { 1 } else { 3 }, 0]);
        let r = report(&funnel(Selection::LowestRate), &days, &thresholds(), &[]);
        assert!(old_expected(&r.steps[1]) < MIN_WATCH_CONVERSIONS);
        let p = pace(&days, 1, thresholds().observation);
        assert!((p.expected - 42.0).abs() < 1e-9, "{p:?}");
        assert_eq!(p.data_from, None);
        assert_eq!(r.choice.map(|c| c.step), Some(1));
    }

    #[test]
    fn a_site_that_shrank_is_not_overestimated() {
        // Pricing → Signup: 5 a day for two weeks, then 1 a day. On average
        // 42 in 14 days, but only 14 at today's pace.
        let days = daily(|d| vec![400, 40, if d < 14 { 5 } else { 1 }, 0]);
        let r = report(
            &funnel(Selection::LowestRate),
            &days,
            &thresholds(),
            &[(0, "in cooldown".into())],
        );
        assert!(old_expected(&r.steps[1]) >= MIN_WATCH_CONVERSIONS);
        assert!(r.choice.is_none());
        let why = r.reason_none.expect("a reason");
        assert!(
            why.contains("at the pace of the last 14 days, about 14 conversions"),
            "{why}"
        );
    }

    #[test]
    fn a_partial_date_counts_pro_rata() {
        // Entries from 1 March 12:00 to 29 March 12:00 at 10 conversions a
        // day: the partial first and last dates have 5. The last 14 days
        // start at noon on 15 March and hold 5 + 13 × 10 + 5 = 140.
        let range = EntryRange {
            from: t("2026-03-01T12:00:00Z"),
            to: t("2026-03-29T12:00:00Z"),
        };
        let days = ByDay {
            range,
            days: (0..29u64)
                .map(|d| {
                    let c = if d == 0 || d == 28 { 5 } else { 10 };
                    DayCounts {
                        date: date("2026-03-01") + chrono::Days::new(d),
                        people: Vec::new(),
                        counts: chain(&[100, c]),
                    }
                })
                .collect(),
        };
        let p = pace(&days, 0, Duration::from_secs(14 * 86_400));
        assert!((p.expected - 140.0).abs() < 1e-9, "{p:?}");
        assert_eq!(p.describe(), "at the pace of the last 14 days");
    }

    #[test]
    fn a_few_hours_of_data_are_paced_over_a_whole_day() {
        // The step's first entrants came in the 6 hours before the range's
        // end: they are spread over a day, not extrapolated from 6 hours.
        let range = EntryRange {
            from: t("2026-03-01T06:00:00Z"),
            to: t("2026-03-29T06:00:00Z"),
        };
        let days = by_day(range, &[("2026-03-29", &[300, 6])]);
        let p = pace(&days, 0, Duration::from_secs(14 * 86_400));
        assert!((p.expected - 84.0).abs() < 1e-9, "{p:?}");
        assert_eq!(
            p.describe(),
            "at the pace of the last 1 day (the step's data starts 2026-03-29)"
        );
        // A step nobody reached has no pace.
        assert_eq!(pace(&days, 1, Duration::from_secs(86_400)).expected, 0.0);
        // Short spans read in hours; uneven ones with a decimal.
        assert_eq!(span_text(Duration::from_secs(9 * 3600)), "9 hours");
        assert_eq!(
            span_text(Duration::from_secs(5 * 86_400 + 34_200)),
            "5.4 days"
        );
        assert_eq!(span_text(Duration::from_secs(1800)), "30 minutes");
    }

    #[test]
    fn malformed_counts_never_give_rates_above_one() {
        let r = report(
            &funnel(Selection::LowestRate),
            &even(&[10, 20]),
            &thresholds(),
            &[],
        );
        assert!(
            r.steps
                .iter()
                .all(|s| s.rate <= 1.0 && s.converted <= s.entrants)
        );
        let r = report(
            &funnel(Selection::LowestRate),
            &even(&[0, 0, 0, 0]),
            &thresholds(),
            &[],
        );
        assert_eq!(r.overall, 0.0);
        assert!(r.choice.is_none());
    }
}
