//! The experiment lifecycle as one pure function:
//! `(experiment, event, now, rules) → decision`. An event is anything the
//! world reported (a tick, a tap, a PR seen merged, counts fetched, the
//! result of a merge); a decision is the state change with its fields and
//! the commands that must be done next. The driver (`driver.rs`) persists the
//! decision and its commands in one transaction, runs the commands and feeds
//! their results back as events; nothing else decides.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use serde::{Deserialize, Serialize};

use crate::config::{DriftControl, FailedChecks, RevertMode, Thresholds};
use crate::experiment::{self, ExperimentId, State, WatchStep, chrono_duration};
use crate::github::Checks;
use crate::stats::{self, Counts, RevertRule, WatchInput};
use crate::store::{self, Experiment};
use crate::text;

/// The baseline counted on the early looks' window, kept with that window
/// so a config changed during the watch cannot mix two windows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EarlyBaseline {
    pub window: Duration,
    pub counts: [Counts; 7],
}

/// The upstream step's counts (step `i − 1` to step `i`) for the drift
/// control: on the conversion window and, with early looks, on the early
/// window (the baseline's, or the recent entries' after the merge).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UpstreamCounts {
    pub counts: [Counts; 7],
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early: Option<[Counts; 7]>,
}

/// What the lifecycle needs from the config, for one experiment's funnel.
#[derive(Debug, Clone)]
pub struct Rules {
    pub chat_id: i64,
    pub approvers: Vec<u64>,
    pub thresholds: Thresholds,
    pub conversion_window: Duration,
    /// How long CI on a new PR head is waited for before asking anyway.
    pub checks_wait: Duration,
    pub failed_checks: FailedChecks,
}

/// The buttons of the two messages that ask for a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    Approve,
    Reject,
    /// "Merge the revert", on the revert message (revert = "approve").
    MergeRevert,
}

impl Action {
    fn code(self) -> char {
        match self {
            Action::Approve => 'a',
            Action::Reject => 'r',
            Action::MergeRevert => 'v',
        }
    }
}

/// A button tap as Telegram delivered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tap {
    pub callback_id: String,
    pub user: u64,
    pub chat: i64,
    pub message_id: i32,
    pub action: Action,
    pub nonce: String,
}

/// `a:<id>:<nonce>`, `r:…` or `v:…`: at most 1 + 1 + 19 + 1 + 16 bytes,
/// inside Telegram's 64.
pub fn callback_data(action: Action, e: &Experiment) -> String {
    format!("{}:{}:{}", action.code(), e.id, e.nonce)
}

/// The experiment and action a button's data names, if it is ours.
pub fn parse_callback(data: &str) -> Option<(Action, ExperimentId, String)> {
    let mut parts = data.splitn(3, ':');
    let action = match parts.next()? {
        "a" => Action::Approve,
        "r" => Action::Reject,
        "v" => Action::MergeRevert,
        _ => return None,
    };
    let id = parts.next()?.parse().ok()?;
    let nonce = parts.next()?.to_string();
    Some((action, ExperimentId(id), nonce))
}

/// A pull request as GitHub reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrSeen {
    Open,
    /// GitHub's `merged_at` and `merge_commit_sha`.
    Merged {
        at: DateTime<Utc>,
        sha: String,
    },
    Closed,
}

/// What a merge asked of GitHub came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MergeResult {
    Merged {
        sha: String,
        at: DateTime<Utc>,
    },
    /// The head is not the sha that was shown: nothing was merged.
    HeadMoved,
    /// GitHub would not merge, with its message.
    Refused(String),
}

/// Everything the world reports about an experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// The monitor schedule looks at every open experiment.
    Tick,
    PrOpened {
        number: u64,
        url: String,
        head_sha: String,
    },
    /// The model's fix for a red head was committed on the branch; `diff`
    /// is the whole change against the base.
    FixPushed {
        sha: String,
        diff: String,
    },
    /// The model gave no usable fix, or it could not be committed.
    FixFailed {
        why: String,
    },
    /// The proposal reached the chat as this message.
    ProposalSent {
        message_id: i32,
    },
    Tap(Tap),
    PrSeen(PrSeen),
    /// CI and the preview on the PR's current head, before asking.
    HeadChecked {
        sha: String,
        checks: Checks,
        preview: Option<String>,
        /// The whole change against the base, when the head is not the
        /// one last seen (a person pushed to the branch).
        #[serde(default)]
        diff: Option<String>,
    },
    /// What CI says about the head an approver asked to merge.
    ChecksSeen {
        sha: String,
        checks: Checks,
        by: u64,
    },
    /// The result of a merge asked by `by`.
    MergeDone {
        result: MergeResult,
        by: u64,
    },
    /// The PR was closed and its branch deleted by funnelfix: on a reject
    /// (`by` the approver) or when the approval ran out (`by` none).
    PrClosed {
        by: Option<u64>,
        /// Closed because its checks failed (`failed_checks = "close"`).
        #[serde(default)]
        checks_failed: bool,
    },
    BaselineFetched {
        counts: [Counts; 7],
        /// The same baseline counted on the early window, when asked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        early: Option<EarlyBaseline>,
        /// The upstream step's baseline, when the drift control was asked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        control: Option<UpstreamCounts>,
    },
    CountsFetched {
        counts: [Counts; 7],
        /// The entries too recent for the conversion window, counted on the
        /// early window, when asked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recent: Option<[Counts; 7]>,
        /// The upstream step's counts over the same ranges, when asked.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        control: Option<UpstreamCounts>,
    },
    RevertPrOpened {
        number: u64,
        url: String,
        head_sha: String,
        seen: PrSeen,
        /// The reverted files were changed by someone after the merge.
        changed_since_merge: bool,
    },
    /// The revert message with its button reached the chat.
    RevertAsked {
        message_id: i32,
    },
    RevertPrSeen(PrSeen),
    /// The result of merging the revert PR, asked by `by` (none: funnelfix).
    RevertMergeDone {
        result: MergeResult,
        by: Option<u64>,
    },
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::Tick => "tick",
            Event::PrOpened { .. } => "pr_opened",
            Event::ProposalSent { .. } => "proposal_sent",
            Event::Tap(_) => "tap",
            Event::PrSeen(_) => "pr_seen",
            Event::HeadChecked { .. } => "head_checked",
            Event::FixPushed { .. } => "fix_pushed",
            Event::FixFailed { .. } => "fix_failed",
            Event::ChecksSeen { .. } => "checks_seen",
            Event::MergeDone { .. } => "merge_done",
            Event::PrClosed { .. } => "pr_closed",
            Event::BaselineFetched { .. } => "baseline_fetched",
            Event::CountsFetched { .. } => "counts_fetched",
            Event::RevertPrOpened { .. } => "revert_pr_opened",
            Event::RevertAsked { .. } => "revert_asked",
            Event::RevertPrSeen(_) => "revert_pr_seen",
            Event::RevertMergeDone { .. } => "revert_merge_done",
        }
    }
}

/// What must be done. Commands marked "→" report their result as that event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Write the change on its branch and open the PR, or find them. → PrOpened
    OpenPr,
    /// The chart and the proposal with its buttons. → ProposalSent
    AskApproval,
    /// The small notice the tapper sees. Best effort: Telegram refuses
    /// answers to taps older than about 15 seconds.
    AnswerTap {
        callback_id: String,
        text: String,
    },
    /// → PrSeen
    CheckPr,
    /// Read the PR's head, its CI and its preview. → HeadChecked
    CheckHead,
    /// Ask the model for a fix of the red head and commit it on the branch.
    /// → FixPushed or FixFailed
    AskFix {
        check: String,
        details: String,
    },
    /// Link the preview in the PR's description.
    LinkPreview {
        url: String,
    },
    /// Read CI on `sha` before merging it for `by`. → ChecksSeen
    CheckCi {
        sha: String,
        by: u64,
    },
    /// Merge the PR only if its head is still `sha`. → MergeDone
    Merge {
        sha: String,
        by: u64,
    },
    /// Close the PR and delete its branch. → PrClosed
    ClosePr {
        by: Option<u64>,
        #[serde(default)]
        checks_failed: bool,
    },
    /// → BaselineFetched; also on the early window, when one is given, and
    /// the upstream step's, with `control`.
    FetchBaseline {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        early_window: Option<Duration>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        control: bool,
    },
    /// → CountsFetched; with an early window, the entries too recent for
    /// the conversion window are also counted on it; with `control`, the
    /// upstream step's entries too.
    FetchCounts {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        early_window: Option<Duration>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        control: bool,
    },
    /// Commit the files as they were before the merge on a revert branch and
    /// open its PR, or find them. → RevertPrOpened
    OpenRevertPr,
    /// The revert message with its button. → RevertAsked
    AskRevertApproval,
    /// → RevertPrSeen
    CheckRevertPr,
    /// Merge the revert PR only if its head is still `sha`. → RevertMergeDone
    MergeRevert {
        sha: String,
        by: Option<u64>,
    },
    Notify {
        html: String,
    },
    /// The watch chart, drawn from the stored counts, as a photo: sent with
    /// each verdict.
    SendWatchChart,
    /// Replace a message's text, removing its buttons.
    EditMessage {
        message_id: i32,
        html: String,
    },
    /// A PostHog annotation at `at`.
    Annotate {
        content: String,
        at: DateTime<Utc>,
    },
    Comment {
        pr: u64,
        body: String,
    },
}

impl Command {
    /// Commands whose failure loses nothing worth a retry: they are done once.
    pub fn best_effort(&self) -> bool {
        matches!(
            self,
            Command::AnswerTap { .. }
                | Command::LinkPreview { .. }
                | Command::EditMessage { .. }
                | Command::Annotate { .. }
                | Command::Comment { .. }
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            Command::OpenPr => "open_pr",
            Command::AskApproval => "ask_approval",
            Command::AnswerTap { .. } => "answer_tap",
            Command::CheckPr => "check_pr",
            Command::CheckHead => "check_head",
            Command::LinkPreview { .. } => "link_preview",
            Command::AskFix { .. } => "ask_fix",
            Command::CheckCi { .. } => "check_ci",
            Command::Merge { .. } => "merge",
            Command::ClosePr { .. } => "close_pr",
            Command::FetchBaseline { .. } => "fetch_baseline",
            Command::FetchCounts { .. } => "fetch_counts",
            Command::OpenRevertPr => "open_revert_pr",
            Command::AskRevertApproval => "ask_revert_approval",
            Command::CheckRevertPr => "check_revert_pr",
            Command::MergeRevert { .. } => "merge_revert",
            Command::Notify { .. } => "notify",
            Command::SendWatchChart => "send_watch_chart",
            Command::EditMessage { .. } => "edit_message",
            Command::Annotate { .. } => "annotate",
            Command::Comment { .. } => "comment",
        }
    }
}

/// A state change with the person who caused it, if one did.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub to: State,
    pub detail: String,
    pub actor: Option<u64>,
}

/// An audit row that is not a state change (a refused tap, a refused merge).
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub kind: &'static str,
    pub actor: Option<u64>,
    pub detail: String,
}

/// The lifecycle's answer to one event.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    pub change: Option<Change>,
    /// Columns set with the change (or alone, without one).
    pub fields: Vec<(&'static str, Value)>,
    pub note: Option<Note>,
    pub commands: Vec<Command>,
}

impl Decision {
    fn nothing() -> Decision {
        Decision::default()
    }

    fn to(to: State, detail: impl Into<String>) -> Decision {
        Decision {
            change: Some(Change {
                to,
                detail: detail.into(),
                actor: None,
            }),
            ..Decision::default()
        }
    }

    fn by(mut self, actor: Option<u64>) -> Decision {
        if let Some(c) = &mut self.change {
            c.actor = actor;
        }
        self
    }

    fn set(mut self, column: &'static str, value: Value) -> Decision {
        self.fields.push((column, value));
        self
    }

    fn note(mut self, kind: &'static str, actor: Option<u64>, detail: impl Into<String>) -> Self {
        self.note = Some(Note {
            kind,
            actor,
            detail: detail.into(),
        });
        self
    }

    fn then(mut self, command: Command) -> Decision {
        self.commands.push(command);
        self
    }

    fn then_all(mut self, commands: impl IntoIterator<Item = Command>) -> Decision {
        self.commands.extend(commands);
        self
    }

    fn just(command: Command) -> Decision {
        Decision::nothing().then(command)
    }

    pub fn is_nothing(&self) -> bool {
        *self == Decision::default()
    }
}

/// The answer to `event` for experiment `e` at `now`.
pub fn decide(e: &Experiment, event: &Event, now: DateTime<Utc>, rules: &Rules) -> Decision {
    if let Event::Tap(tap) = event {
        return decide_tap(e, tap, now, rules);
    }
    match e.state {
        State::Proposed => proposed(e, event, now),
        State::AwaitingApproval => awaiting_approval(e, event, now, rules),
        State::Merged => merged(e, event, rules),
        State::Observing => observing(e, event, now, rules),
        State::Reverting => reverting(e, event, now, rules),
        // An ended experiment hears nothing more; a late result is dropped.
        _ => Decision::nothing(),
    }
}

fn proposed(e: &Experiment, event: &Event, now: DateTime<Utc>) -> Decision {
    match event {
        Event::Tick if e.branch.is_none() || e.changed_files.is_none() => {
            // Created but never written: nothing exists outside the database.
            let why = "interrupted before the change was written";
            Decision::to(State::Failed, why).set("failure", store::text(why))
        }
        // Resumed on the next tick, not the next propose run (a week later).
        Event::Tick => Decision::just(Command::OpenPr),
        Event::PrOpened {
            number,
            url,
            head_sha,
        } => Decision::to(State::AwaitingApproval, format!("PR #{number}"))
            .set("pr_number", store::int(*number))
            .set("pr_url", store::text(url))
            .set("head_sha", store::text(head_sha))
            .set("head_seen_at", store::time(now))
            .set("asked_at", store::time(now))
            .then(Command::CheckHead),
        _ => Decision::nothing(),
    }
}

fn awaiting_approval(e: &Experiment, event: &Event, now: DateTime<Utc>, rules: &Rules) -> Decision {
    let timeout = rules.thresholds.approval_timeout;
    let pr = e.pr_number.unwrap_or_default();
    match event {
        Event::Tick => Decision::just(Command::CheckPr),
        Event::ProposalSent { message_id } => {
            Decision::nothing().set("message_id", store::int(*message_id))
        }
        Event::PrSeen(PrSeen::Open) if expired(e, now, timeout) => {
            Decision::just(Command::ClosePr {
                by: None,
                checks_failed: false,
            })
        }
        // Not asked yet: CI was still running, or the chat never got the
        // proposal. Look at the head again; asking follows from there.
        Event::PrSeen(PrSeen::Open) if e.message_id.is_none() => Decision::just(Command::CheckHead),
        Event::HeadChecked { .. } if e.message_id.is_some() => Decision::nothing(),
        // CI on the fixed head is waited for like on a new PR.
        Event::FixPushed { sha, diff } => Decision::nothing()
            .set("head_sha", store::text(sha))
            .set("head_seen_at", store::time(now))
            .set("diff", store::text(diff))
            .then(Command::CheckHead),
        Event::FixFailed { why } => Decision::nothing()
            .note("fix_failed", None, why.clone())
            .then(Command::Notify {
                html: text::fix_failed_note(e, why),
            }),
        Event::HeadChecked {
            sha,
            checks,
            preview,
            diff,
        } => head_checked(
            e,
            sha,
            checks,
            preview.as_deref(),
            diff.as_deref(),
            now,
            rules,
        ),
        Event::PrSeen(PrSeen::Open) => Decision::nothing(),
        Event::PrSeen(PrSeen::Merged { at, sha }) => {
            Decision::to(State::Merged, "merged on GitHub by a person")
                .set("merged_at", store::time(*at))
                .set("merge_sha", store::text(sha))
                .then_all(mark_decided(
                    e,
                    text::DECIDED_MERGED_ON_GITHUB,
                    text::BY_A_PERSON_ON_GITHUB,
                    now,
                ))
                .then(Command::Notify {
                    html: text::human_closed_note(e, true),
                })
                .then(Command::Annotate {
                    content: format!("funnelfix: merged PR #{pr}"),
                    at: *at,
                })
        }
        Event::PrSeen(PrSeen::Closed) => {
            Decision::to(State::Rejected, "closed on GitHub by a person")
                .set("verdict", store::text("closed on GitHub"))
                .then_all(mark_decided(
                    e,
                    text::DECIDED_CLOSED_ON_GITHUB,
                    text::BY_A_PERSON_ON_GITHUB,
                    now,
                ))
                .then(Command::Notify {
                    html: text::human_closed_note(e, false),
                })
        }
        Event::ChecksSeen { sha, checks, by } => match checks {
            Checks::Passed | Checks::None => Decision::just(Command::Merge {
                sha: sha.clone(),
                by: *by,
            }),
            // A red head is never merged, whoever approved it.
            Checks::Failed { name, url, .. } => Decision::nothing()
                .note("merge_refused", Some(*by), format!("check {name} failed"))
                .then(Command::Notify {
                    html: text::checks_failed_note(e, name, url),
                }),
            // Never merged blind: a person can merge on GitHub, where CI
            // shows, and the merge is then watched like any other.
            Checks::Unreadable => Decision::nothing()
                .note("merge_refused", Some(*by), "check runs unreadable")
                .then(Command::Notify {
                    html: text::checks_unreadable_note(e),
                }),
            Checks::Pending { names } => Decision::nothing()
                .note("merge_refused", Some(*by), "checks still running")
                .then(Command::Notify {
                    html: text::checks_pending_note(e, names),
                }),
        },
        Event::MergeDone {
            result: MergeResult::Merged { sha, at },
            by,
        } => Decision::to(State::Merged, format!("merged as {sha}"))
            .by(Some(*by))
            .set("decided_by", store::int(*by))
            .set("decided_at", store::time(now))
            .set("merged_at", store::time(*at))
            .set("merge_sha", store::text(sha))
            .then_all(mark_decided(
                e,
                text::DECIDED_APPROVED,
                &text::by_user(*by),
                now,
            ))
            .then(Command::Notify {
                html: text::merged_note(e, sha, &rules.thresholds),
            })
            .then(Command::Annotate {
                content: format!(
                    "funnelfix: merged PR #{pr} ({})",
                    e.title.as_deref().unwrap_or("")
                ),
                at: *at,
            }),
        Event::MergeDone {
            result: MergeResult::HeadMoved,
            by,
        } => Decision::nothing()
            .note("merge_refused", Some(*by), "head moved")
            // The new head is offered afresh, with its own CI and diff.
            .set("message_id", Value::Null)
            .then_all(mark_decided(
                e,
                text::DECIDED_SUPERSEDED,
                &text::by_user(*by),
                now,
            ))
            .then(Command::Notify {
                html: text::head_moved_note(e),
            })
            .then(Command::CheckHead),
        Event::MergeDone {
            result: MergeResult::Refused(why),
            by,
        } => Decision::nothing()
            .note("merge_refused", Some(*by), why.clone())
            .then(Command::Notify {
                html: text::merge_refused_note(e, why),
            }),
        Event::PrClosed {
            by: None,
            checks_failed: true,
        } => {
            let why = "closed: its checks failed";
            Decision::to(State::Failed, why)
                .set("verdict", store::text("checks failed"))
                .set("failure", store::text(why))
        }
        Event::PrClosed { by: Some(by), .. } => {
            Decision::to(State::Rejected, "rejected in Telegram")
                .by(Some(*by))
                .set("decided_by", store::int(*by))
                .set("decided_at", store::time(now))
                .set("verdict", store::text("rejected"))
                .then_all(mark_decided(
                    e,
                    text::DECIDED_REJECTED,
                    &text::by_user(*by),
                    now,
                ))
                .then(Command::Notify {
                    html: text::rejected_note(e),
                })
        }
        // Never offered because its head stayed red: no one was asked, so
        // no answer was missed.
        Event::PrClosed { by: None, .. }
            if e.message_id.is_none()
                && e.checks_failed_sha.is_some()
                && e.checks_failed_sha == e.head_sha =>
        {
            Decision::to(
                State::Expired,
                "its checks stayed red until the approval timeout",
            )
            .set("verdict", store::text("expired"))
            .then(Command::Notify {
                html: text::red_head_expired_note(e, timeout),
            })
        }
        Event::PrClosed { by: None, .. } => Decision::to(State::Expired, "no answer in time")
            .set("verdict", store::text("expired"))
            .then_all(mark_decided(
                e,
                text::DECIDED_EXPIRED,
                text::BY_FUNNELFIX,
                now,
            ))
            .then(Command::Notify {
                html: text::expired_note(e, timeout),
            }),
        _ => Decision::nothing(),
    }
}

/// The PR's head as CI and the preview deployer see it, before anyone was
/// asked: ask once its checks pass (or there are none, or they ran longer
/// than `checks_wait`); a red head is told once and never offered.
fn head_checked(
    e: &Experiment,
    sha: &str,
    checks: &Checks,
    preview: Option<&str>,
    diff: Option<&str>,
    now: DateTime<Utc>,
    rules: &Rules,
) -> Decision {
    let mut d = Decision::nothing().set("head_checks", json(checks));
    if let Some(diff) = diff {
        d = d.set("diff", store::text(diff));
    }
    let mut seen_at = e.head_seen_at.or(e.asked_at).unwrap_or(now);
    if e.head_sha.as_deref() != Some(sha) {
        // A person pushed to the branch: its CI is waited for afresh.
        seen_at = now;
        d = d
            .set("head_sha", store::text(sha))
            .set("head_seen_at", store::time(now));
    }
    if let Some(url) = preview
        && e.preview_url.as_deref() != Some(url)
    {
        d = d
            .set("preview_url", store::text(url))
            .then(Command::LinkPreview {
                url: url.to_string(),
            });
    }
    match checks {
        // Unreadable: asked at once, the message says CI could not be read.
        Checks::Passed | Checks::None | Checks::Unreadable => d.then(Command::AskApproval),
        Checks::Pending { .. } if now - seen_at >= chrono_duration(rules.checks_wait) => {
            d.then(Command::AskApproval)
        }
        // Asked on a later tick.
        Checks::Pending { .. } => d,
        Checks::Failed { .. } if e.checks_failed_sha.as_deref() == Some(sha) => d,
        Checks::Failed { name, url, details } => {
            let d = d.set("checks_failed_sha", store::text(sha)).note(
                "checks_failed",
                None,
                format!("check {name} failed on {sha}"),
            );
            match rules.failed_checks {
                FailedChecks::Fix if !e.fix_asked => d
                    .set("fix_asked", store::int(1))
                    .then(Command::Notify {
                        html: text::red_head_fix_asked_note(e, name, url),
                    })
                    .then(Command::AskFix {
                        check: name.clone(),
                        details: details.clone(),
                    }),
                FailedChecks::KeepOpen | FailedChecks::Fix => d.then(Command::Notify {
                    html: text::red_head_kept_open_note(e, name, url),
                }),
                FailedChecks::Close => d
                    .then(Command::Notify {
                        html: text::red_head_closed_note(e, name, url),
                    })
                    .then(Command::ClosePr {
                        by: None,
                        checks_failed: true,
                    }),
            }
        }
    }
}

fn merged(e: &Experiment, event: &Event, rules: &Rules) -> Decision {
    let merged_at = e.merged_at.unwrap_or(e.updated_at);
    match event {
        Event::Tick => Decision::just(Command::FetchBaseline {
            from: merged_at - chrono_duration(rules.thresholds.baseline),
            to: merged_at,
            early_window: rules.thresholds.early_window_for(rules.conversion_window),
            // The first step has no upstream step to compare with.
            control: rules.thresholds.drift_control == DriftControl::Upstream && e.step > 0,
        }),
        Event::BaselineFetched {
            counts,
            early,
            control,
        } => {
            let mut detail = match early {
                Some(early) => text::baseline_fetched_with_early(counts, early),
                None => "baseline fetched".to_string(),
            };
            if let Some(control) = control {
                detail.push_str(&text::baseline_control(control));
            }
            let mut d = Decision::to(State::Observing, detail).set("baseline", json(counts));
            if let Some(early) = early {
                d = d.set("early_baseline", json(early));
            }
            if let Some(control) = control {
                d = d.set("control_baseline", json(control));
            }
            d
        }
        _ => Decision::nothing(),
    }
}

fn observing(e: &Experiment, event: &Event, now: DateTime<Utc>, rules: &Rules) -> Decision {
    let t = &rules.thresholds;
    let merged_at = e.merged_at.unwrap_or(e.updated_at);
    let settle = experiment::settle_for(t.observation);
    let step = experiment::watch_step(
        merged_at,
        now,
        t.observation,
        settle,
        rules.conversion_window,
    );
    match event {
        Event::Tick if step == WatchStep::TooEarly => Decision::nothing(),
        Event::Tick => {
            let (from, to) = experiment::observed_entrants(merged_at, t.observation, settle);
            Decision::just(Command::FetchCounts {
                from,
                to,
                early_window: early_baseline(e).map(|b| b.window),
                control: control_baseline(e).is_some(),
            })
        }
        Event::CountsFetched {
            counts,
            recent,
            control,
        } => judge(e, *counts, *recent, *control, step, rules),
        _ => Decision::nothing(),
    }
}

/// The early baseline of an experiment watched with early looks.
pub fn early_baseline(e: &Experiment) -> Option<EarlyBaseline> {
    e.early_baseline
        .as_deref()
        .and_then(|b| serde_json::from_str(b).ok())
}

/// The upstream step's baseline of an experiment watched with the drift
/// control.
pub fn control_baseline(e: &Experiment) -> Option<UpstreamCounts> {
    e.control_baseline
        .as_deref()
        .and_then(|b| serde_json::from_str(b).ok())
}

/// One look at the post-merge counts: revert, keep, or go on watching.
fn judge(
    e: &Experiment,
    post: [Counts; 7],
    recent: Option<[Counts; 7]>,
    control: Option<UpstreamCounts>,
    step: WatchStep,
    rules: &Rules,
) -> Decision {
    let t = &rules.thresholds;
    let Some(baseline) = e
        .baseline
        .as_deref()
        .and_then(|b| serde_json::from_str::<[Counts; 7]>(b).ok())
    else {
        return Decision::nothing().note("error", None, "the stored baseline is unreadable");
    };
    // Watched with early looks: recent entries counted on the early window
    // (none when the look did not count them, as at the final look).
    let early = early_baseline(e);
    let recent = early.map(|b| stats::RecentEntries {
        baseline: b.counts,
        post: recent.unwrap_or_default(),
    });
    // Watched with the drift control: the upstream step's counts, the same
    // ranges and windows as the step's.
    let control = match (control_baseline(e), control) {
        (Some(before), Some(after)) => Some(stats::ControlEntries {
            baseline: before.counts,
            post: after.counts,
            recent: early.map(|_| stats::RecentEntries {
                baseline: before.early.unwrap_or_default(),
                post: after.early.unwrap_or_default(),
            }),
        }),
        (Some(_), None) => {
            return Decision::nothing().note(
                "error",
                None,
                "the look did not count the upstream step the drift control needs",
            );
        }
        (None, _) => None,
    };
    let input = WatchInput {
        final_look: step == WatchStep::FinalJudgement,
        recent,
        control,
        ..WatchInput::configured(baseline, post, t)
    };
    let a = stats::assess(&input, &RevertRule::configured(t));
    let p_value = stats::p_value(e.p_value.unwrap_or(1.0), a.lambda);
    let figures = Decision::nothing()
        .set("assessment", json(&a))
        .set("p_value", store::real(p_value));
    if a.revert {
        let verdict = text::verdict_reverted(&a, p_value);
        return Decision {
            change: Some(Change {
                to: State::Reverting,
                detail: verdict.clone(),
                actor: None,
            }),
            ..figures
        }
        .set("verdict", store::text(verdict))
        .then(Command::OpenRevertPr);
    }
    if step == WatchStep::FinalJudgement {
        let verdict = text::verdict_kept(&a);
        let mut d = Decision {
            change: Some(Change {
                to: State::Kept,
                detail: verdict.clone(),
                actor: None,
            }),
            ..figures
        }
        .set("verdict", store::text(&verdict))
        .then(Command::SendWatchChart)
        .then(Command::Notify {
            html: text::kept_note(e, &verdict),
        });
        if let Some(pr) = e.pr_number {
            d = d.then(Command::Comment {
                pr,
                body: format!("funnelfix verdict: {verdict}"),
            });
        }
        return d;
    }
    figures
}

fn reverting(e: &Experiment, event: &Event, now: DateTime<Utc>, rules: &Rules) -> Decision {
    let verdict = e.verdict.clone().unwrap_or_else(|| "reverted".into());
    match event {
        // (A revert PR recorded before its head was kept is looked up again.)
        Event::Tick if e.revert_pr.is_none() || e.revert_head_sha.is_none() => {
            Decision::just(Command::OpenRevertPr)
        }
        // Follow the revert PR: a person may merge or close it on GitHub.
        Event::Tick => Decision::just(Command::CheckRevertPr),
        Event::RevertPrOpened {
            number,
            url,
            head_sha,
            seen,
            changed_since_merge,
        } => {
            let recorded = Decision::nothing()
                .set("revert_pr", store::int(*number))
                .set("revert_pr_url", store::text(url))
                .set("revert_head_sha", store::text(head_sha));
            let e = &Experiment {
                revert_pr: Some(*number),
                revert_pr_url: Some(url.clone()),
                revert_head_sha: Some(head_sha.clone()),
                ..e.clone()
            };
            match seen {
                PrSeen::Open => {
                    let d = revert_pr_open(e, *changed_since_merge, &verdict, rules);
                    Decision {
                        fields: [recorded.fields, d.fields].concat(),
                        ..d
                    }
                }
                other => {
                    let d = revert_pr_seen(e, other, &verdict, now);
                    Decision {
                        fields: [recorded.fields, d.fields].concat(),
                        ..d
                    }
                }
            }
        }
        Event::RevertAsked { message_id } => {
            Decision::nothing().set("revert_message_id", store::int(*message_id))
        }
        Event::RevertPrSeen(seen) => revert_pr_seen(e, seen, &verdict, now),
        Event::RevertMergeDone {
            result: MergeResult::Merged { at, .. },
            by,
        } => {
            let who = by.map_or(text::BY_FUNNELFIX.to_string(), text::by_user);
            reverted(e, &verdict, *at, *by, &who)
        }
        Event::RevertMergeDone {
            result: MergeResult::HeadMoved,
            by,
        } => {
            let why = "its branch moved after it was opened";
            Decision::nothing()
                .set("revert_told", store::int(1))
                .note("merge_refused", *by, why)
                .then(Command::Notify {
                    html: text::revert_not_merged_note(e, &verdict, why),
                })
        }
        Event::RevertMergeDone {
            result: MergeResult::Refused(why),
            by,
        } => Decision::nothing()
            .set("revert_told", store::int(1))
            .note("merge_refused", *by, why.clone())
            .then(Command::Notify {
                html: text::revert_not_merged_note(e, &verdict, &text::github_said(why)),
            }),
        _ => Decision::nothing(),
    }
}

/// The revert PR is open: merge it, ask for it, or leave it for review.
fn revert_pr_open(e: &Experiment, changed: bool, verdict: &str, rules: &Rules) -> Decision {
    let url = e.revert_pr_url.as_deref().unwrap_or("");
    let sha = e.revert_head_sha.clone().unwrap_or_default();
    if e.revert_told {
        return Decision::nothing();
    }
    if changed {
        // Someone changed these files after the merge: never force; ask for review.
        return Decision::nothing()
            .set("revert_told", store::int(1))
            .then(Command::Notify {
                html: text::revert_needs_review_note(e, verdict, url),
            });
    }
    match rules.thresholds.revert {
        RevertMode::Approve if e.revert_message_id.is_some() => Decision::nothing(),
        RevertMode::Approve => Decision::just(Command::AskRevertApproval),
        RevertMode::Merge => Decision::just(Command::MergeRevert { sha, by: None }),
    }
}

fn revert_pr_seen(e: &Experiment, seen: &PrSeen, verdict: &str, now: DateTime<Utc>) -> Decision {
    match seen {
        PrSeen::Open => Decision::nothing(),
        PrSeen::Merged { at, .. } => reverted(e, verdict, *at, None, text::BY_A_PERSON_ON_GITHUB),
        // A person closed the revert: the change stays, by their choice,
        // and the funnel is free again.
        PrSeen::Closed => {
            let why = "a person closed the revert PR: the change stays";
            let mut d = Decision::to(State::KeptByPerson, why)
                .set("verdict", store::text(format!("{verdict}; {why}")))
                .then(Command::Notify {
                    html: text::revert_closed_note(e, verdict),
                });
            if let Some(id) = e.revert_message_id {
                d = d.then(Command::EditMessage {
                    message_id: id as i32,
                    html: text::decided_message(
                        &text::revert_header(e),
                        text::DECIDED_REVERT_CLOSED,
                        text::BY_A_PERSON_ON_GITHUB,
                        now,
                    ),
                });
            }
            d
        }
    }
}

/// The revert PR is merged: the experiment ends as reverted, and the chat
/// and PostHog's charts hear of it.
fn reverted(
    e: &Experiment,
    verdict: &str,
    at: DateTime<Utc>,
    by: Option<u64>,
    who: &str,
) -> Decision {
    let url = e.revert_pr_url.as_deref().unwrap_or("");
    let mut d = Decision::to(State::Reverted, verdict)
        .by(by)
        .then(Command::SendWatchChart)
        .then(Command::Notify {
            html: text::reverted_note(e, verdict, url),
        })
        .then(Command::Annotate {
            content: format!(
                "funnelfix: reverted PR #{}",
                e.pr_number.unwrap_or_default()
            ),
            at,
        });
    if let Some(id) = e.revert_message_id {
        d = d.then(Command::EditMessage {
            message_id: id as i32,
            html: text::decided_message(
                &text::revert_header(e),
                text::DECIDED_REVERT_MERGED,
                who,
                at,
            ),
        });
    }
    d
}

/// A tap acts whether or not its answer can still be delivered: the answer
/// is one more command, best effort.
fn decide_tap(e: &Experiment, tap: &Tap, now: DateTime<Utc>, rules: &Rules) -> Decision {
    let answer = |text: &str| Command::AnswerTap {
        callback_id: tap.callback_id.clone(),
        text: text.to_string(),
    };
    let on_its_message = match tap.action {
        // The revert button lives on the revert message, the others on the proposal.
        Action::MergeRevert => e.revert_message_id == Some(tap.message_id as i64),
        Action::Approve | Action::Reject => e.message_id == Some(tap.message_id as i64),
    };
    let valid = e.nonce == tap.nonce && on_its_message;
    let approver = tap.chat == rules.chat_id && rules.approvers.contains(&tap.user);
    if !valid || !approver {
        return Decision::just(answer(text::TAP_REFUSED)).note(
            "refused_tap",
            Some(tap.user),
            format!(
                "chat {}, message {}, valid button: {valid}",
                tap.chat, tap.message_id
            ),
        );
    }
    let by = tap.user;
    match (tap.action, e.state) {
        (Action::MergeRevert, State::Reverting) => {
            // Pinned to the head the approver was shown.
            let sha = e.revert_head_sha.clone().unwrap_or_default();
            Decision::just(answer(text::TAP_MERGING_REVERT))
                .then(Command::MergeRevert { sha, by: Some(by) })
        }
        (Action::MergeRevert, state) => Decision::just(answer(&text::tap_already(state, true))),
        (Action::Approve, State::AwaitingApproval)
            if expired(e, now, rules.thresholds.approval_timeout) =>
        {
            // Past its deadline a proposal is no longer open to a merge; the
            // next tick closes it as expired.
            let timeout = rules.thresholds.approval_timeout;
            Decision::just(answer(&text::tap_too_late(timeout))).note(
                "late_tap",
                Some(by),
                "approval after the timeout",
            )
        }
        (Action::Approve, State::AwaitingApproval) => {
            // CI is read again for the exact head that will be merged.
            let sha = e.head_sha.clone().unwrap_or_default();
            Decision::just(answer(text::TAP_MERGING)).then(Command::CheckCi { sha, by })
        }
        (Action::Reject, State::AwaitingApproval) => Decision::just(answer(text::TAP_CLOSING))
            .then(Command::ClosePr {
                by: Some(by),
                checks_failed: false,
            }),
        (_, state) => Decision::just(answer(&text::tap_already(state, false))),
    }
}

fn expired(e: &Experiment, now: DateTime<Utc>, timeout: Duration) -> bool {
    experiment::approval_expired(e.asked_at.unwrap_or(e.created_at), now, timeout)
}

/// The proposal message loses its buttons and says who decided and when.
fn mark_decided(e: &Experiment, verb: &str, who: &str, at: DateTime<Utc>) -> Option<Command> {
    let message_id = e.message_id?;
    Some(Command::EditMessage {
        message_id: message_id as i32,
        html: text::decided_message(&text::proposal_header(e), verb, who, at),
    })
}

fn json<T: Serialize>(value: &T) -> Value {
    store::text(serde_json::to_string(value).unwrap_or_default())
}

#[cfg(test)]
mod tests;
