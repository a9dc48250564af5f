//! Counts into step rates with Wilson intervals, and the choice of the step
//! to work on. Pure: the same counts always give the same report.

use crate::config::{FunnelConfig, Selection, Thresholds};

use super::{Choice, FunnelCounts, FunnelReport, StepRate};

/// z for a two-sided 95% interval.
const Z95: f64 = 1.959_963_984_540_054;

/// The revert test needs at least this many post-merge conversions before it
/// may act (see `stats`), so a step expected to see fewer during the
/// observation window cannot be watched and is not picked.
pub const MIN_WATCH_CONVERSIONS: f64 = 30.0;

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

/// The whole report: rates, overall conversion and the step to work on.
///
/// `excluded` lists steps that must not be picked now, with the reason
/// (cooldown, an experiment in progress).
pub fn report(
    funnel: &FunnelConfig,
    counts: &FunnelCounts,
    thresholds: &Thresholds,
    excluded: &[(usize, String)],
) -> FunnelReport {
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
            let why = skip_reason(funnel, s, thresholds, excluded);
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
    let expected = expected_conversions(s, t);
    if expected < MIN_WATCH_CONVERSIONS {
        return Some(format!(
            "too little traffic to watch a change: about {expected:.0} conversions expected during the observation window, the revert test needs {MIN_WATCH_CONVERSIONS:.0}"
        ));
    }
    None
}

/// Conversions expected during `observation`, at the lookback's pace.
pub fn expected_conversions(s: &StepRate, t: &Thresholds) -> f64 {
    let lookback = t.lookback.as_secs_f64().max(1.0);
    s.converted as f64 * t.observation.as_secs_f64() / lookback
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
    use std::time::Duration;

    fn funnel(selection: Selection) -> FunnelConfig {
        let step = |name: &str, files: &[&str]| StepConfig {
            name: name.into(),
            event: "e".into(),
            filters: Default::default(),
            files: files.iter().map(|f| f.to_string()).collect(),
        };
        FunnelConfig {
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
        }
    }

    /// Entries at each step, each step's conversions being the next
    /// step's entries (as when every entry is a new person's).
    fn counts(reached: &[u64]) -> FunnelCounts {
        FunnelCounts {
            entries: reached.to_vec(),
            converted: reached[1..].to_vec(),
        }
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
            &counts(&[5000, 1530, 320, 64]),
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
            &counts(&[5000, 1530, 320, 64]),
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
            &counts(&[4000, 1000, 150, 20]),
            &thresholds(),
            &[(1, "in cooldown".into())],
        );
        assert!(!r.steps[2].judged);
        assert_eq!(r.choice.as_ref().map(|c| c.step), Some(0));

        let r = report(
            &funnel(Selection::LowestRate),
            &counts(&[4000, 1000, 150, 20]),
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
            &counts(&[300, 40, 39, 38]),
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
    fn malformed_counts_never_give_rates_above_one() {
        let r = report(
            &funnel(Selection::LowestRate),
            &counts(&[10, 20]),
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
            &counts(&[0, 0, 0, 0]),
            &thresholds(),
            &[],
        );
        assert_eq!(r.overall, 0.0);
        assert!(r.choice.is_none());
    }
}
