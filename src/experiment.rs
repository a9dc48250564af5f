//! The experiment lifecycle, pure: which state may follow which, and the
//! time-driven decisions (an approval expires, an observation ends). The
//! orchestrator asks these functions what to do; the store persists every
//! transition with an audit row and applies it as a compare-and-set, so an
//! event delivered twice acts once.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Row id of an experiment in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ExperimentId(pub i64);

impl fmt::Display for ExperimentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where an experiment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Chosen and written; its PR is being opened.
    Proposed,
    /// The PR is open and the chat was asked.
    AwaitingApproval,
    /// Approved and merged; the baseline is being fetched.
    Merged,
    /// Being watched after the merge.
    Observing,
    /// The rate dropped: a revert is under way.
    Reverting,
    /// Ended: the observation window passed without a drop.
    Kept,
    /// Ended: the change was reverted.
    Reverted,
    /// Ended: a revert was due, but a person closed the revert PR.
    KeptByPerson,
    /// Ended: an approver said no, or a human closed the PR.
    Rejected,
    /// Ended: nobody answered within the approval timeout.
    Expired,
    /// Ended: no acceptable change could be produced, or GitHub refused it.
    Failed,
}

impl State {
    pub const ALL: [State; 11] = [
        State::Proposed,
        State::AwaitingApproval,
        State::Merged,
        State::Observing,
        State::Reverting,
        State::Kept,
        State::Reverted,
        State::KeptByPerson,
        State::Rejected,
        State::Expired,
        State::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Proposed => "proposed",
            State::AwaitingApproval => "awaiting_approval",
            State::Merged => "merged",
            State::Observing => "observing",
            State::Reverting => "reverting",
            State::Kept => "kept",
            State::Reverted => "reverted",
            State::KeptByPerson => "kept_by_person",
            State::Rejected => "rejected",
            State::Expired => "expired",
            State::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// An ended experiment no longer blocks its funnel.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            State::Kept
                | State::Reverted
                | State::KeptByPerson
                | State::Rejected
                | State::Expired
                | State::Failed
        )
    }

    /// Whether `self → next` is a transition of the lifecycle.
    pub fn can_become(self, next: State) -> bool {
        use State::*;
        matches!(
            (self, next),
            (Proposed, AwaitingApproval)
                | (Proposed, Failed)
                | (Proposed, Rejected)
                | (AwaitingApproval, Merged)
                | (AwaitingApproval, Rejected)
                | (AwaitingApproval, Expired)
                | (AwaitingApproval, Failed)
                | (Merged, Observing)
                | (Observing, Reverting)
                | (Observing, Kept)
                | (Reverting, Reverted)
                | (Reverting, KeptByPerson)
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An approval that was asked for at `asked_at` has run out at `now`.
pub fn approval_expired(asked_at: DateTime<Utc>, now: DateTime<Utc>, timeout: Duration) -> bool {
    now >= asked_at + chrono_duration(timeout)
}

/// A step last experimented on at `last_end` may be picked again at `now`.
pub fn cooldown_over(last_end: DateTime<Utc>, now: DateTime<Utc>, cooldown: Duration) -> bool {
    now >= last_end + chrono_duration(cooldown)
}

/// What the monitor should do with an observing experiment at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchStep {
    /// The deploy hour is not over yet: no data is judged.
    TooEarly,
    /// Judge the post-merge data; revert if the rule says so.
    Judge,
    /// Judge once more, then keep the change if it was not reverted.
    FinalJudgement,
}

/// The hour after a merge is skipped: caches and deploys settle.
pub const DEPLOY_SETTLE: Duration = Duration::from_secs(3600);

/// The observation window counts *entrants*: people who arrive during
/// `observation` after the deploy hour. The last of them has finished its
/// conversion window at `settle + observation + conversion_window`, and that
/// is when the final judgement is made (judging at `observation` alone would
/// see a day less of matured data and miss more real drops).
pub fn observation_end(
    merged_at: DateTime<Utc>,
    observation: Duration,
    settle: Duration,
    conversion_window: Duration,
) -> DateTime<Utc> {
    merged_at + chrono_duration(settle + observation + conversion_window)
}

/// The entrants the watch counts: from the end of the deploy hour, for `observation`.
pub fn observed_entrants(
    merged_at: DateTime<Utc>,
    observation: Duration,
    settle: Duration,
) -> (DateTime<Utc>, DateTime<Utc>) {
    (
        merged_at + chrono_duration(settle),
        merged_at + chrono_duration(settle + observation),
    )
}

pub fn watch_step(
    merged_at: DateTime<Utc>,
    now: DateTime<Utc>,
    observation: Duration,
    settle: Duration,
    conversion_window: Duration,
) -> WatchStep {
    if now >= observation_end(merged_at, observation, settle, conversion_window) {
        WatchStep::FinalJudgement
    } else if now < merged_at + chrono_duration(settle) {
        WatchStep::TooEarly
    } else {
        WatchStep::Judge
    }
}

/// The deploy-settling time for an observation window: an hour, or a
/// twentieth of a compressed window (tests and the demo use seconds).
pub fn settle_for(observation: Duration) -> Duration {
    DEPLOY_SETTLE.min(observation / 20)
}

pub fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("valid time")
    }

    #[test]
    fn states_round_trip_through_text() {
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
        assert_eq!(State::parse("nonsense"), None);
    }

    #[test]
    fn final_states_go_nowhere() {
        for from in State::ALL.into_iter().filter(|s| s.is_final()) {
            for to in State::ALL {
                assert!(!from.can_become(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn the_happy_path_and_the_revert_path_are_allowed() {
        use State::*;
        for path in [
            &[Proposed, AwaitingApproval, Merged, Observing, Kept][..],
            &[
                Proposed,
                AwaitingApproval,
                Merged,
                Observing,
                Reverting,
                Reverted,
            ][..],
            &[Proposed, AwaitingApproval, Rejected][..],
            &[Proposed, AwaitingApproval, Expired][..],
            &[Proposed, Failed][..],
        ] {
            for pair in path.windows(2) {
                assert!(pair[0].can_become(pair[1]), "{} -> {}", pair[0], pair[1]);
            }
        }
        assert!(!AwaitingApproval.can_become(Observing));
        assert!(!Observing.can_become(Reverted));
        assert!(!Merged.can_become(Rejected));
    }

    #[test]
    fn approval_expires_exactly_at_the_timeout() {
        let asked = t("2026-01-05T09:00:00Z");
        let timeout = Duration::from_secs(72 * 3600);
        assert!(!approval_expired(asked, t("2026-01-08T08:59:59Z"), timeout));
        assert!(approval_expired(asked, t("2026-01-08T09:00:00Z"), timeout));
    }

    #[test]
    fn the_deploy_hour_is_skipped_then_judged_then_final() {
        let merged = t("2026-01-09T16:00:00Z");
        let obs = Duration::from_secs(14 * 86400);
        let day = Duration::from_secs(86400);
        let settle = settle_for(obs);
        assert_eq!(settle, DEPLOY_SETTLE);
        let step = |now| watch_step(merged, t(now), obs, settle, day);
        assert_eq!(step("2026-01-09T16:30:00Z"), WatchStep::TooEarly);
        assert_eq!(step("2026-01-09T17:00:00Z"), WatchStep::Judge);
        // 14 days of entrants after the deploy hour, plus a day for the last to convert.
        assert_eq!(step("2026-01-24T16:59:59Z"), WatchStep::Judge);
        assert_eq!(step("2026-01-24T17:00:00Z"), WatchStep::FinalJudgement);
        assert_eq!(
            observed_entrants(merged, obs, settle),
            (t("2026-01-09T17:00:00Z"), t("2026-01-23T17:00:00Z"))
        );
    }

    #[test]
    fn compressed_windows_settle_proportionally() {
        assert_eq!(settle_for(Duration::from_secs(60)), Duration::from_secs(3));
    }

    #[test]
    fn cooldown() {
        let end = t("2026-01-01T00:00:00Z");
        let cd = Duration::from_secs(28 * 86400);
        assert!(!cooldown_over(end, t("2026-01-28T23:59:59Z"), cd));
        assert!(cooldown_over(end, t("2026-01-29T00:00:00Z"), cd));
    }
}
