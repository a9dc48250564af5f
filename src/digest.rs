//! The weekly digest, pure: what happened to experiments in a week, the
//! change each kept one measured, what the kept changes add up to on each
//! step since funnelfix started, and what it will look at next. The app
//! gathers the data (the store, one funnel report per funnel); the words are
//! in `text::digest_message`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::experiment::{ExperimentId, State};
use crate::stats::Assessment;
use crate::store::Experiment;

/// What funnelfix will look at next on one funnel.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// An experiment is open on the funnel: nothing new until it ends.
    Busy { id: ExperimentId, state: State },
    /// Proposals are paused.
    Paused,
    /// The step it would pick, and why.
    Step {
        step: String,
        next_step: String,
        reason: String,
    },
    /// No step can be picked, and why.
    Nothing(String),
    /// PostHog could not be asked: the error, in one line.
    Unknown(String),
}

/// One experiment of the week, with the change it measured (kept and
/// reverted ones).
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub experiment: Experiment,
    pub measured: Option<Assessment>,
}

/// The kept changes of one step, multiplied.
#[derive(Debug, Clone, PartialEq)]
pub struct StepTotal {
    pub funnel: String,
    pub step: String,
    pub next_step: String,
    /// How many kept changes it is the product of.
    pub changes: usize,
    /// `∏(1 + change) − 1`.
    pub change: f64,
    /// The product of the changes' always-valid intervals: it holds with at
    /// least `1 − changes·α`, as each interval holds with `1 − α`.
    pub interval: (f64, f64),
}

/// Everything the digest says.
#[derive(Debug, Clone, PartialEq)]
pub struct Digest {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub opened: Vec<Item>,
    /// Kept, including those kept because a person closed their revert.
    pub kept: Vec<Item>,
    pub reverted: Vec<Item>,
    pub rejected: Vec<Item>,
    pub expired: Vec<Item>,
    /// Proposals that ended without a change (no valid edit, a PR refused).
    pub failed: Vec<Item>,
    /// When the first experiment started, if one did.
    pub since: Option<DateTime<Utc>>,
    /// Every step with a kept change up to `to`, in funnel and step order.
    pub totals: Vec<StepTotal>,
    /// Per funnel, what it will look at next.
    pub next: Vec<(String, Next)>,
    /// The next propose run.
    pub next_run: Option<DateTime<Utc>>,
}

impl Digest {
    /// Nothing was opened or ended in the week.
    pub fn is_quiet(&self) -> bool {
        [
            &self.opened,
            &self.kept,
            &self.reverted,
            &self.rejected,
            &self.expired,
            &self.failed,
        ]
        .iter()
        .all(|v| v.is_empty())
    }
}

fn measured(e: &Experiment) -> Option<Assessment> {
    serde_json::from_str(e.assessment.as_deref()?).ok()
}

fn kept(state: State) -> bool {
    matches!(state, State::Kept | State::KeptByPerson)
}

/// The digest of `[from, to)` from every experiment (any order), what each
/// funnel will look at next, and when the next propose run is.
pub fn digest(
    experiments: &[Experiment],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    next: Vec<(String, Next)>,
    next_run: Option<DateTime<Utc>>,
) -> Digest {
    let mut all: Vec<&Experiment> = experiments.iter().collect();
    all.sort_by_key(|e| e.id);
    let in_week = |t: Option<DateTime<Utc>>| t.is_some_and(|t| from <= t && t < to);
    let item = |e: &&Experiment| Item {
        experiment: (*e).clone(),
        measured: measured(e),
    };
    let ended = |pick: fn(State) -> bool| -> Vec<Item> {
        all.iter()
            .filter(|e| pick(e.state) && in_week(e.ended_at))
            .map(item)
            .collect()
    };
    let opened = all
        .iter()
        .filter(|e| in_week(Some(e.created_at)) && e.pr_number.is_some())
        .map(item)
        .collect();

    // Totals per step, in funnel and step order.
    let mut totals: BTreeMap<(String, usize), StepTotal> = BTreeMap::new();
    for e in all
        .iter()
        .filter(|e| kept(e.state) && e.ended_at.is_some_and(|t| t < to))
    {
        let Some(a) = measured(e) else { continue };
        let t = totals
            .entry((e.funnel.clone(), e.step))
            .or_insert_with(|| StepTotal {
                funnel: e.funnel.clone(),
                step: e.step_name.clone(),
                next_step: e.next_step_name.clone(),
                changes: 0,
                change: 0.0,
                interval: (0.0, 0.0),
            });
        t.changes += 1;
        t.change = (1.0 + t.change) * (1.0 + a.relative_change) - 1.0;
        // A rate cannot fall below zero: no factor is below 0.
        let (low, high) = a.relative_interval;
        t.interval = (
            (1.0 + t.interval.0) * (1.0 + low.max(-1.0)) - 1.0,
            (1.0 + t.interval.1) * (1.0 + high) - 1.0,
        );
    }

    Digest {
        from,
        to,
        opened,
        kept: ended(kept),
        reverted: ended(|s| s == State::Reverted),
        rejected: ended(|s| s == State::Rejected),
        expired: ended(|s| s == State::Expired),
        failed: ended(|s| s == State::Failed),
        since: all.iter().map(|e| e.created_at).min(),
        totals: totals.into_values().collect(),
        next,
        next_run,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::digest_message;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    fn assessment(change: f64, low: f64, high: f64) -> String {
        let mut a = crate::text::tests::assessment(change);
        a.relative_interval = (low, high);
        serde_json::to_string(&a).expect("json")
    }

    /// An experiment created at `created` that ended at `ended` in `state`.
    fn exp(id: i64, state: State, created: &str, ended: Option<&str>) -> Experiment {
        let mut e = crate::store::sample_experiment();
        e.id = ExperimentId(id);
        e.state = state;
        e.created_at = t(created);
        e.ended_at = ended.map(t);
        e.pr_number = Some(10 + id as u64);
        e.title = Some(format!("Change <{id}> & more"));
        e
    }

    fn next() -> Vec<(String, Next)> {
        vec![
            (
                "signup".into(),
                Next::Step {
                    step: "Started signup".into(),
                    next_step: "Completed signup".into(),
                    reason: "\"Started signup\" has the lowest rate even at the optimistic end of its interval: 55.0% of 1100 entries go on to \"Completed signup\" (95% interval 52.0%–58.0%); the other 1 judged step(s) all do better".into(),
                },
            ),
            ("checkout".into(), Next::Unknown("PostHog answered 503 <busy>".into())),
        ]
    }

    const FROM: &str = "2026-03-09T08:00:00Z";
    const TO: &str = "2026-03-16T08:00:00Z";

    /// A week with one experiment of each kind, and a change kept weeks
    /// before on the same step.
    fn busy_week() -> Vec<Experiment> {
        let mut earlier = exp(
            1,
            State::Kept,
            "2026-02-02T09:00:00Z",
            Some("2026-02-17T10:00:00Z"),
        );
        earlier.assessment = Some(assessment(0.10, 0.02, 0.18));
        let mut kept = exp(
            2,
            State::Kept,
            "2026-02-23T09:00:00Z",
            Some("2026-03-10T10:00:00Z"),
        );
        kept.assessment = Some(assessment(0.05, -0.03, 0.13));
        let mut by_person = exp(
            3,
            State::KeptByPerson,
            "2026-02-24T09:00:00Z",
            Some("2026-03-11T12:00:00Z"),
        );
        by_person.step = 0;
        by_person.step_name = "Visited homepage".into();
        by_person.next_step_name = "Viewed pricing".into();
        by_person.assessment = Some(assessment(-0.12, -0.2, -0.04));
        let mut reverted = exp(
            4,
            State::Reverted,
            "2026-03-02T09:00:00Z",
            Some("2026-03-12T15:00:00Z"),
        );
        reverted.assessment = Some(assessment(-0.21, -0.33, -0.09));
        reverted.p_value = Some(0.0123);
        let rejected = exp(
            5,
            State::Rejected,
            "2026-03-09T09:00:00Z",
            Some("2026-03-09T11:00:00Z"),
        );
        let expired = exp(
            6,
            State::Expired,
            "2026-03-05T09:00:00Z",
            Some("2026-03-13T09:00:00Z"),
        );
        let mut failed = exp(
            7,
            State::Failed,
            "2026-03-14T09:00:00Z",
            Some("2026-03-14T09:01:00Z"),
        );
        failed.pr_number = None;
        failed.failure = Some("no valid edit after 3 attempts: search text not found".into());
        let open = exp(8, State::AwaitingApproval, "2026-03-15T09:00:00Z", None);
        // Ended after the week: not in it, and not yet in the totals.
        let mut later = exp(
            9,
            State::Kept,
            "2026-03-01T09:00:00Z",
            Some("2026-03-16T09:00:00Z"),
        );
        later.assessment = Some(assessment(0.5, 0.4, 0.6));
        vec![
            open, earlier, kept, by_person, reverted, rejected, expired, failed, later,
        ]
    }

    #[test]
    fn a_week_with_each_kind_of_verdict() {
        let d = digest(
            &busy_week(),
            t(FROM),
            t(TO),
            next(),
            Some(t("2026-03-16T09:00:00Z")),
        );
        let ids = |v: &[Item]| v.iter().map(|i| i.experiment.id.0).collect::<Vec<_>>();
        assert_eq!(ids(&d.opened), [5, 8]);
        assert_eq!(ids(&d.kept), [2, 3]);
        assert_eq!(ids(&d.reverted), [4]);
        assert_eq!(ids(&d.rejected), [5]);
        assert_eq!(ids(&d.expired), [6]);
        assert_eq!(ids(&d.failed), [7]);
        insta::assert_snapshot!(digest_message(&d), @r#"
        <b>funnelfix weekly digest</b> · 2026-03-09 to 2026-03-16
        2 opened · 2 kept · 1 reverted · 1 rejected · 1 expired · 1 failed

        <b>Opened</b>
        • #5 Viewed pricing → Started signup: Change &lt;5&gt; &amp; more (PR #15)
        • #8 Viewed pricing → Started signup: Change &lt;8&gt; &amp; more (PR #18)

        <b>Kept</b>
        • #2 Viewed pricing → Started signup: +5.0% (always-valid interval -3.0% to +13.0%)
        • #3 Visited homepage → Viewed pricing: -12.0% (always-valid interval -20.0% to -4.0%), kept by a person who closed its revert

        <b>Reverted</b>
        • #4 Viewed pricing → Started signup: -21.0% (always-valid p = 0.0123)

        <b>Rejected</b>
        • #5 Viewed pricing → Started signup: Change &lt;5&gt; &amp; more (PR #15)

        <b>Expired</b>
        • #6 Viewed pricing → Started signup: Change &lt;6&gt; &amp; more (PR #16)

        <b>No change could be proposed</b>
        • #7 Viewed pricing → Started signup: no valid edit after 3 attempts: search text not found

        <b>Since funnelfix started</b> (2026-02-02), the kept changes multiply to:
        • signup · Visited homepage → Viewed pricing: -12.0% (interval -20.0% to -4.0%), 1 kept change
        • signup · Viewed pricing → Started signup: +15.5% (interval -1.1% to +33.3%), 2 kept changes
        Each interval is the product of the kept changes' always-valid intervals.

        <b>Next</b> (propose run Mon 2026-03-16 09:00 UTC)
        • signup: Started signup → Completed signup: "Started signup" has the lowest rate even at the optimistic end of its interval: 55.0% of 1100 entries go on to "Completed signup" (95% interval 52.0%–58.0%); the other 1 judged step(s) all do better
        • checkout: could not ask PostHog (PostHog answered 503 &lt;busy&gt;)
        "#);
    }

    #[test]
    fn kept_changes_multiply_with_their_intervals() {
        let d = digest(&busy_week(), t(FROM), t(TO), Vec::new(), None);
        let pricing = d
            .totals
            .iter()
            .find(|s| s.step == "Viewed pricing")
            .expect("pricing");
        assert_eq!(pricing.changes, 2);
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        close(pricing.change, 1.10 * 1.05 - 1.0);
        close(pricing.interval.0, 1.02 * 0.97 - 1.0);
        close(pricing.interval.1, 1.18 * 1.13 - 1.0);
    }

    #[test]
    fn an_empty_week_says_so_briefly() {
        let mut earlier = exp(
            1,
            State::Kept,
            "2026-02-02T09:00:00Z",
            Some("2026-02-17T10:00:00Z"),
        );
        earlier.assessment = Some(assessment(0.10, 0.02, 0.18));
        let d = digest(
            &[earlier],
            t(FROM),
            t(TO),
            vec![
                ("signup".into(), Next::Paused),
                (
                    "checkout".into(),
                    Next::Busy {
                        id: ExperimentId(4),
                        state: State::Observing,
                    },
                ),
                (
                    "trial".into(),
                    Next::Nothing("the funnel has no step to judge".into()),
                ),
            ],
            Some(t("2026-03-16T09:00:00Z")),
        );
        assert!(d.is_quiet());
        insta::assert_snapshot!(digest_message(&d), @r#"
        <b>funnelfix weekly digest</b> · 2026-03-09 to 2026-03-16
        A quiet week: no experiment was opened or ended.

        <b>Next</b> (propose run Mon 2026-03-16 09:00 UTC)
        • signup: proposals are paused (/resume)
        • checkout: experiment #4 is observing; nothing new until it ends
        • trial: nothing: the funnel has no step to judge
        "#);
    }
}
