//! The lifecycle over every (state, event) pair, as one table; then the
//! sequences real deployments meet, one by one. No IO.

use std::fmt::Write as _;

use super::*;
use crate::store::sample_experiment;

const APPROVER: u64 = 42;
const CHAT: i64 = -1001;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().expect("valid time")
}

fn rules(revert: RevertMode) -> Rules {
    let mut thresholds = crate::config::parse(include_str!("../../config/funnelfix.example.toml"))
        .expect("example config")
        .thresholds;
    thresholds.revert = revert;
    Rules {
        chat_id: CHAT,
        approvers: vec![APPROVER],
        thresholds,
        conversion_window: Duration::from_secs(86400),
        checks_wait: Duration::from_secs(15 * 60),
        failed_checks: FailedChecks::KeepOpen,
    }
}

/// Merged on a Monday at 09:00; "now" in the table is two days later.
fn merged_at() -> DateTime<Utc> {
    t("2026-03-02T09:00:00Z")
}

fn now() -> DateTime<Utc> {
    t("2026-03-04T09:00:00Z")
}

/// Counts per weekday with `rate` conversion, 1,000 entrants a day.
fn week(rate: f64, days: u64) -> [Counts; 7] {
    std::array::from_fn(|_| Counts::new(1000 * days / 7, (1000.0 * rate) as u64 * days / 7))
}

/// A baseline counted on an hour's early window.
fn early_week(rate: f64, days: u64) -> EarlyBaseline {
    EarlyBaseline {
        window: Duration::from_secs(3600),
        counts: week(rate, days),
    }
}

/// An experiment in `state` with every field a later state would have.
fn in_state(state: State) -> Experiment {
    Experiment {
        state,
        nonce: "n0nce".into(),
        branch: Some("funnelfix/signup/viewed-pricing-3".into()),
        changed_files: Some("[[\"site/pricing.html\",\"x\"]]".into()),
        base_sha: Some("base1".into()),
        head_sha: Some("head1".into()),
        message_id: Some(100),
        asked_at: Some(t("2026-03-02T08:00:00Z")),
        merged_at: Some(merged_at()),
        merge_sha: Some("merge1".into()),
        baseline: Some(serde_json::to_string(&week(0.25, 28)).expect("json")),
        revert_pr: Some(13),
        revert_pr_url: Some("https://github.com/acme/website/pull/13".into()),
        revert_head_sha: Some("rhead1".into()),
        revert_message_id: Some(200),
        verdict: Some("reverted: −40.0% relative change".into()),
        ..sample_experiment()
    }
}

fn tap(action: Action, user: u64, message_id: i32) -> Event {
    Event::Tap(Tap {
        callback_id: "cb1".into(),
        user,
        chat: CHAT,
        message_id,
        action,
        nonce: "n0nce".into(),
    })
}

fn head_checked(sha: &str, checks: Checks, preview: Option<&str>) -> Event {
    Event::HeadChecked {
        sha: sha.into(),
        checks,
        preview: preview.map(String::from),
        diff: None,
    }
}

fn red() -> Checks {
    Checks::Failed {
        name: "build".into(),
        url: "https://github.com/acme/website/actions/runs/1".into(),
        details: String::new(),
    }
}

fn running() -> Checks {
    Checks::Pending {
        names: vec!["build".into()],
    }
}

fn events() -> Vec<(&'static str, Event)> {
    let merged = |sha: &str| MergeResult::Merged {
        sha: sha.into(),
        at: t("2026-03-04T08:59:00Z"),
    };
    vec![
        ("tick", Event::Tick),
        (
            "pr opened",
            Event::PrOpened {
                number: 12,
                url: "https://github.com/acme/website/pull/12".into(),
                head_sha: "head1".into(),
            },
        ),
        ("proposal sent", Event::ProposalSent { message_id: 100 }),
        ("tap approve", tap(Action::Approve, APPROVER, 100)),
        ("tap reject", tap(Action::Reject, APPROVER, 100)),
        ("tap merge revert", tap(Action::MergeRevert, APPROVER, 200)),
        ("tap by a stranger", tap(Action::Approve, 7, 100)),
        ("pr seen open", Event::PrSeen(PrSeen::Open)),
        (
            "pr seen merged",
            Event::PrSeen(PrSeen::Merged {
                at: t("2026-03-03T15:00:00Z"),
                sha: "human1".into(),
            }),
        ),
        ("pr seen closed", Event::PrSeen(PrSeen::Closed)),
        (
            "head checked: green",
            head_checked("head1", Checks::Passed, None),
        ),
        ("head checked: red", head_checked("head1", red(), None)),
        (
            "head checked: running",
            head_checked("head1", running(), None),
        ),
        (
            "fix pushed",
            Event::FixPushed {
                sha: "head2".into(),
                diff: String::new(),
            },
        ),
        (
            "fix failed",
            Event::FixFailed {
                why: "no usable fix".into(),
            },
        ),
        (
            "checks passed",
            Event::ChecksSeen {
                sha: "head1".into(),
                checks: Checks::Passed,
                by: APPROVER,
            },
        ),
        (
            "no checks at all",
            Event::ChecksSeen {
                sha: "head1".into(),
                checks: Checks::None,
                by: APPROVER,
            },
        ),
        (
            "checks failed",
            Event::ChecksSeen {
                sha: "head1".into(),
                checks: Checks::Failed {
                    name: "build".into(),
                    url: "https://ci.test/1".into(),
                    details: String::new(),
                },
                by: APPROVER,
            },
        ),
        (
            "checks pending",
            Event::ChecksSeen {
                sha: "head1".into(),
                checks: Checks::Pending {
                    names: vec!["build".into()],
                },
                by: APPROVER,
            },
        ),
        (
            "merge done",
            Event::MergeDone {
                result: merged("merge1"),
                by: APPROVER,
            },
        ),
        (
            "merge head moved",
            Event::MergeDone {
                result: MergeResult::HeadMoved,
                by: APPROVER,
            },
        ),
        (
            "merge refused",
            Event::MergeDone {
                result: MergeResult::Refused("Required status check failed".into()),
                by: APPROVER,
            },
        ),
        (
            "pr closed by approver",
            Event::PrClosed {
                by: Some(APPROVER),
                checks_failed: false,
            },
        ),
        (
            "pr closed on expiry",
            Event::PrClosed {
                by: None,
                checks_failed: false,
            },
        ),
        (
            "pr closed, checks failed",
            Event::PrClosed {
                by: None,
                checks_failed: true,
            },
        ),
        (
            "baseline fetched",
            Event::BaselineFetched {
                counts: week(0.25, 28),
                early: Some(early_week(0.18, 28)),
                control: None,
            },
        ),
        (
            "counts: no change",
            Event::CountsFetched {
                counts: week(0.25, 2),
                recent: None,
                control: None,
            },
        ),
        (
            "counts: −40%",
            Event::CountsFetched {
                counts: week(0.15, 2),
                recent: None,
                control: None,
            },
        ),
        (
            "revert pr opened",
            Event::RevertPrOpened {
                number: 13,
                url: "https://github.com/acme/website/pull/13".into(),
                head_sha: "rhead1".into(),
                seen: PrSeen::Open,
                changed_since_merge: false,
            },
        ),
        (
            "revert pr opened, files changed",
            Event::RevertPrOpened {
                number: 13,
                url: "https://github.com/acme/website/pull/13".into(),
                head_sha: "rhead1".into(),
                seen: PrSeen::Open,
                changed_since_merge: true,
            },
        ),
        ("revert asked", Event::RevertAsked { message_id: 200 }),
        ("revert pr seen open", Event::RevertPrSeen(PrSeen::Open)),
        (
            "revert pr seen merged",
            Event::RevertPrSeen(PrSeen::Merged {
                at: t("2026-03-04T08:00:00Z"),
                sha: "rmerge1".into(),
            }),
        ),
        ("revert pr seen closed", Event::RevertPrSeen(PrSeen::Closed)),
        (
            "revert merge done",
            Event::RevertMergeDone {
                result: merged("rmerge1"),
                by: None,
            },
        ),
        (
            "revert merge head moved",
            Event::RevertMergeDone {
                result: MergeResult::HeadMoved,
                by: Some(APPROVER),
            },
        ),
        (
            "revert merge refused",
            Event::RevertMergeDone {
                result: MergeResult::Refused("Base branch was modified".into()),
                by: None,
            },
        ),
    ]
}

/// One line: the change, the columns set, the audit note, the commands.
fn render(d: &Decision) -> String {
    if d.is_nothing() {
        return "—".into();
    }
    let mut out = String::new();
    if let Some(c) = &d.change {
        let _ = write!(out, "→ {}", c.to);
        if let Some(a) = c.actor {
            let _ = write!(out, " by {a}");
        }
        out.push_str("; ");
    }
    if !d.fields.is_empty() {
        let names: Vec<&str> = d.fields.iter().map(|(k, _)| *k).collect();
        let _ = write!(out, "set {}; ", names.join(","));
    }
    if let Some(n) = &d.note {
        let _ = write!(out, "audit {}; ", n.kind);
    }
    let commands: Vec<String> = d.commands.iter().map(command).collect();
    out.push_str(&commands.join(", "));
    out.trim_end_matches("; ").to_string()
}

fn command(c: &Command) -> String {
    match c {
        Command::Merge { sha, by } => format!("merge@{sha} by {by}"),
        Command::CheckCi { sha, by } => format!("check_ci@{sha} by {by}"),
        Command::MergeRevert { sha, by } => match by {
            Some(by) => format!("merge_revert@{sha} by {by}"),
            None => format!("merge_revert@{sha}"),
        },
        Command::ClosePr {
            by: Some(by),
            checks_failed: false,
        } => format!("close_pr by {by}"),
        Command::ClosePr {
            checks_failed: true,
            ..
        } => "close_pr (checks failed)".to_string(),
        Command::AnswerTap { text, .. } => format!("answer_tap({text:?})"),
        Command::EditMessage { message_id, .. } => format!("edit_message({message_id})"),
        other => other.name().to_string(),
    }
}

#[test]
fn every_state_answers_every_event() {
    let mut table = String::new();
    for mode in [RevertMode::Merge, RevertMode::Approve] {
        let rules = rules(mode);
        let _ = writeln!(table, "## revert = {mode:?}");
        for state in State::ALL {
            // Revert mode only changes what happens while reverting.
            if mode == RevertMode::Approve && state != State::Reverting {
                continue;
            }
            let e = in_state(state);
            for (name, event) in events() {
                let d = decide(&e, &event, now(), &rules);
                if let Some(c) = &d.change {
                    assert!(state.can_become(c.to), "{state} -> {} on {name}", c.to);
                }
                let _ = writeln!(
                    table,
                    "{:<17} | {name:<31} | {}",
                    state.as_str(),
                    render(&d)
                );
            }
        }
    }
    insta::assert_snapshot!(table);
}

#[test]
fn ended_experiments_only_answer_taps() {
    let rules = rules(RevertMode::Merge);
    for state in State::ALL.into_iter().filter(|s| s.is_final()) {
        for (name, event) in events() {
            let d = decide(&in_state(state), &event, now(), &rules);
            assert!(d.change.is_none(), "{state} on {name}");
            assert!(
                d.commands
                    .iter()
                    .all(|c| matches!(c, Command::AnswerTap { .. })),
                "{state} on {name}: {d:?}"
            );
        }
    }
}

// ---- the holes real deployments found, each as the lifecycle's answer ----

#[test]
fn a_closed_revert_pr_ends_the_experiment_kept_by_a_person() {
    let d = decide(
        &in_state(State::Reverting),
        &Event::RevertPrSeen(PrSeen::Closed),
        now(),
        &rules(RevertMode::Approve),
    );
    assert_eq!(d.change.as_ref().map(|c| c.to), Some(State::KeptByPerson));
    assert!(State::KeptByPerson.is_final());
    assert!(
        d.commands
            .iter()
            .any(|c| matches!(c, Command::Notify { html } if html.contains("closed on GitHub")))
    );
}

#[test]
fn a_valid_tap_merges_whatever_becomes_of_its_answer() {
    let d = decide(
        &in_state(State::AwaitingApproval),
        &tap(Action::Approve, APPROVER, 100),
        now(),
        &rules(RevertMode::Merge),
    );
    assert!(matches!(d.commands[0], Command::AnswerTap { .. }));
    assert!(
        d.commands[0].best_effort(),
        "the answer must not hold up the merge"
    );
    // CI is read for the approved head, then it is merged at that head.
    assert_eq!(
        d.commands[1],
        Command::CheckCi {
            sha: "head1".into(),
            by: APPROVER
        }
    );
    let seen = Event::ChecksSeen {
        sha: "head1".into(),
        checks: Checks::Passed,
        by: APPROVER,
    };
    let d = decide(
        &in_state(State::AwaitingApproval),
        &seen,
        now(),
        &rules(RevertMode::Merge),
    );
    assert_eq!(
        d.commands,
        [Command::Merge {
            sha: "head1".into(),
            by: APPROVER
        }]
    );
}

#[test]
fn a_red_head_is_never_merged() {
    let failed = Event::ChecksSeen {
        sha: "head1".into(),
        checks: Checks::Failed {
            name: "build".into(),
            url: "https://ci.test/1".into(),
            details: String::new(),
        },
        by: APPROVER,
    };
    let d = decide(
        &in_state(State::AwaitingApproval),
        &failed,
        now(),
        &rules(RevertMode::Merge),
    );
    assert!(d.change.is_none());
    assert!(
        !d.commands
            .iter()
            .any(|c| matches!(c, Command::Merge { .. }))
    );
    assert!(
        matches!(&d.commands[0], Command::Notify { html } if html.contains("build") && html.contains("https://ci.test/1"))
    );
}

#[test]
fn a_merge_by_a_person_keeps_githubs_time_and_sha() {
    let at = t("2026-03-03T15:00:00Z");
    let d = decide(
        &in_state(State::AwaitingApproval),
        &Event::PrSeen(PrSeen::Merged {
            at,
            sha: "human1".into(),
        }),
        now(),
        &rules(RevertMode::Merge),
    );
    assert_eq!(d.change.as_ref().map(|c| c.to), Some(State::Merged));
    assert!(d.fields.contains(&("merged_at", store::time(at))));
    assert!(d.fields.contains(&("merge_sha", store::text("human1"))));
    assert!(
        d.commands
            .iter()
            .any(|c| matches!(c, Command::Annotate { at: a, .. } if *a == at))
    );
}

#[test]
fn a_revert_tap_merges_the_head_that_was_shown() {
    let d = decide(
        &in_state(State::Reverting),
        &tap(Action::MergeRevert, APPROVER, 200),
        now(),
        &rules(RevertMode::Approve),
    );
    assert_eq!(
        d.commands[1],
        Command::MergeRevert {
            sha: "rhead1".into(),
            by: Some(APPROVER)
        }
    );
}

#[test]
fn a_proposed_experiment_resumes_on_the_next_tick() {
    let d = decide(
        &in_state(State::Proposed),
        &Event::Tick,
        now(),
        &rules(RevertMode::Merge),
    );
    assert_eq!(d.commands, [Command::OpenPr]);
}

#[test]
fn a_refused_revert_merge_gives_githubs_reason() {
    let d = decide(
        &in_state(State::Reverting),
        &Event::RevertMergeDone {
            result: MergeResult::Refused("Base branch was modified".into()),
            by: None,
        },
        now(),
        &rules(RevertMode::Merge),
    );
    let Command::Notify { html } = &d.commands[0] else {
        panic!("{d:?}");
    };
    assert!(html.contains("Base branch was modified"), "{html}");
    assert!(!html.contains("changed by someone"), "{html}");
}

#[test]
fn an_approval_after_the_timeout_merges_nothing() {
    let late = t("2026-03-05T08:00:00Z");
    let d = decide(
        &in_state(State::AwaitingApproval),
        &tap(Action::Approve, APPROVER, 100),
        late,
        &rules(RevertMode::Merge),
    );
    assert!(
        d.commands
            .iter()
            .all(|c| matches!(c, Command::AnswerTap { .. }))
    );
    assert_eq!(d.note.as_ref().map(|n| n.kind), Some("late_tap"));
}

#[test]
fn an_open_pr_past_its_timeout_is_closed_as_expired() {
    let late = t("2026-03-05T08:00:00Z");
    let rules = rules(RevertMode::Merge);
    let e = in_state(State::AwaitingApproval);
    let d = decide(&e, &Event::PrSeen(PrSeen::Open), late, &rules);
    assert_eq!(
        d.commands,
        [Command::ClosePr {
            by: None,
            checks_failed: false
        }]
    );
    let closed = Event::PrClosed {
        by: None,
        checks_failed: false,
    };
    let d = decide(&e, &closed, late, &rules);
    assert_eq!(d.change.map(|c| c.to), Some(State::Expired));
}

#[test]
fn a_proposal_the_chat_never_got_is_asked_again() {
    let e = not_yet_asked();
    let rules = rules(RevertMode::Merge);
    let d = decide(&e, &Event::PrSeen(PrSeen::Open), now(), &rules);
    assert_eq!(d.commands, [Command::CheckHead]);
    let d = decide(
        &e,
        &head_checked("head1", Checks::None, None),
        now(),
        &rules,
    );
    assert_eq!(d.commands, [Command::AskApproval]);
}

/// A PR opened at `now()` − 5 minutes whose proposal is not sent yet.
fn not_yet_asked() -> Experiment {
    let opened = now() - chrono::Duration::minutes(5);
    Experiment {
        message_id: None,
        head_sha: Some("head1".into()),
        asked_at: Some(opened),
        head_seen_at: Some(opened),
        ..in_state(State::AwaitingApproval)
    }
}

#[test]
fn a_new_pr_is_offered_only_once_its_checks_are_read() {
    let d = decide(
        &in_state(State::Proposed),
        &Event::PrOpened {
            number: 12,
            url: "https://github.com/acme/website/pull/12".into(),
            head_sha: "head1".into(),
        },
        now(),
        &rules(RevertMode::Merge),
    );
    assert_eq!(d.commands, [Command::CheckHead]);
}

#[test]
fn running_checks_are_waited_for_then_the_approver_is_asked_anyway() {
    let rules = rules(RevertMode::Merge);
    let e = not_yet_asked();
    let d = decide(&e, &head_checked("head1", running(), None), now(), &rules);
    assert!(d.commands.is_empty(), "{d:?}");
    // 15 minutes after the head was first seen.
    let later = now() + chrono::Duration::minutes(10);
    let d = decide(&e, &head_checked("head1", running(), None), later, &rules);
    assert_eq!(d.commands, [Command::AskApproval]);
}

#[test]
fn a_red_head_is_told_once_and_never_offered() {
    let rules = rules(RevertMode::Merge);
    let e = not_yet_asked();
    let d = decide(&e, &head_checked("head1", red(), None), now(), &rules);
    let [Command::Notify { html }] = d.commands.as_slice() else {
        panic!("{d:?}");
    };
    assert!(html.contains("<b>build</b> failed"), "{html}");
    assert!(html.contains("actions/runs/1"), "{html}");
    assert!(d.change.is_none());
    let told = Experiment {
        checks_failed_sha: Some("head1".into()),
        ..e
    };
    let d = decide(&told, &head_checked("head1", red(), None), now(), &rules);
    assert!(d.commands.is_empty(), "{d:?}");
    // A person pushes a fix: the new head is waited for afresh, then offered.
    let d = decide(
        &told,
        &head_checked("head2", running(), None),
        now(),
        &rules,
    );
    assert!(d.commands.is_empty(), "{d:?}");
    let set: Vec<&str> = d.fields.iter().map(|(k, _)| *k).collect();
    assert!(
        set.contains(&"head_sha") && set.contains(&"head_seen_at"),
        "{set:?}"
    );
    let d = decide(
        &told,
        &head_checked("head2", Checks::Passed, None),
        now(),
        &rules,
    );
    assert_eq!(d.commands, [Command::AskApproval]);
}

#[test]
fn a_red_head_is_closed_when_the_config_says_so() {
    let rules = Rules {
        failed_checks: FailedChecks::Close,
        ..rules(RevertMode::Merge)
    };
    let e = not_yet_asked();
    let d = decide(&e, &head_checked("head1", red(), None), now(), &rules);
    assert!(matches!(d.commands[0], Command::Notify { .. }), "{d:?}");
    assert_eq!(
        d.commands[1],
        Command::ClosePr {
            by: None,
            checks_failed: true
        }
    );
    let closed = Event::PrClosed {
        by: None,
        checks_failed: true,
    };
    let d = decide(&e, &closed, now(), &rules);
    assert_eq!(d.change.map(|c| c.to), Some(State::Failed));
}

#[test]
fn a_preview_is_linked_once() {
    let rules = rules(RevertMode::Merge);
    let e = not_yet_asked();
    let url = "https://website-git-funnelfix-acme.vercel.app";
    let d = decide(
        &e,
        &head_checked("head1", running(), Some(url)),
        now(),
        &rules,
    );
    assert_eq!(d.commands, [Command::LinkPreview { url: url.into() }]);
    let linked = Experiment {
        preview_url: Some(url.into()),
        ..e
    };
    let d = decide(
        &linked,
        &head_checked("head1", Checks::Passed, Some(url)),
        now(),
        &rules,
    );
    assert_eq!(d.commands, [Command::AskApproval]);
}

#[test]
fn revert_approve_mode_asks_once_and_merge_mode_merges_at_the_opened_head() {
    let e = Experiment {
        revert_pr: None,
        revert_head_sha: None,
        revert_message_id: None,
        ..in_state(State::Reverting)
    };
    let opened = Event::RevertPrOpened {
        number: 13,
        url: "u".into(),
        head_sha: "rhead2".into(),
        seen: PrSeen::Open,
        changed_since_merge: false,
    };
    let d = decide(&e, &opened, now(), &rules(RevertMode::Approve));
    assert_eq!(d.commands, [Command::AskRevertApproval]);
    let d = decide(&e, &opened, now(), &rules(RevertMode::Merge));
    assert_eq!(
        d.commands,
        [Command::MergeRevert {
            sha: "rhead2".into(),
            by: None
        }]
    );
    // A revert PR found already closed after a restart ends it too.
    let closed = Event::RevertPrOpened {
        number: 13,
        url: "u".into(),
        head_sha: "rhead2".into(),
        seen: PrSeen::Closed,
        changed_since_merge: false,
    };
    let d = decide(&e, &closed, now(), &rules(RevertMode::Merge));
    assert_eq!(d.change.map(|c| c.to), Some(State::KeptByPerson));
}

#[test]
fn callback_data_round_trips_within_telegrams_limit() {
    let e = Experiment {
        id: ExperimentId(i64::MAX),
        nonce: "0123456789abcdef".into(),
        ..sample_experiment()
    };
    for action in [Action::Approve, Action::Reject, Action::MergeRevert] {
        let data = callback_data(action, &e);
        assert!(data.len() <= 64, "{data}");
        assert_eq!(
            parse_callback(&data),
            Some((action, e.id, "0123456789abcdef".into()))
        );
    }
    assert_eq!(parse_callback("x:1:abc"), None);
    assert_eq!(parse_callback("a:notanumber:abc"), None);
}

#[test]
fn a_red_head_gets_one_fix_from_the_model_then_waits_for_a_person() {
    let rules = Rules {
        failed_checks: FailedChecks::Fix,
        ..rules(RevertMode::Merge)
    };
    let e = not_yet_asked();
    let d = decide(&e, &head_checked("head1", red(), None), now(), &rules);
    assert!(matches!(d.commands[0], Command::Notify { .. }), "{d:?}");
    assert!(matches!(&d.commands[1], Command::AskFix { check, .. } if check == "build"));
    let asked = Experiment {
        fix_asked: true,
        checks_failed_sha: Some("head1".into()),
        ..e
    };
    let fixed = Event::FixPushed {
        sha: "head2".into(),
        diff: "--- a/x\n+++ b/x\n".into(),
    };
    let d = decide(&asked, &fixed, now(), &rules);
    assert_eq!(d.commands, [Command::CheckHead]);
    let set: Vec<&str> = d.fields.iter().map(|(k, _)| *k).collect();
    assert_eq!(set, ["head_sha", "head_seen_at", "diff"]);
    // The fix is red too: no second fix; the PR waits for a person.
    let fixed = Experiment {
        head_sha: Some("head2".into()),
        ..asked.clone()
    };
    let d = decide(&fixed, &head_checked("head2", red(), None), now(), &rules);
    let [Command::Notify { html }] = d.commands.as_slice() else {
        panic!("{d:?}");
    };
    assert!(html.contains("PR stays open"), "{html}");
    let failed = Event::FixFailed {
        why: "no usable fix".into(),
    };
    let d = decide(&asked, &failed, now(), &rules);
    assert_eq!(d.note.as_ref().map(|n| n.kind), Some("fix_failed"));
    assert!(d.change.is_none());
}

#[test]
fn unreadable_checks_are_asked_about_but_never_merged_blind() {
    let rules = rules(RevertMode::Merge);
    let d = decide(
        &not_yet_asked(),
        &head_checked("head1", Checks::Unreadable, None),
        now(),
        &rules,
    );
    assert_eq!(d.commands, [Command::AskApproval]);
    let d = decide(
        &in_state(State::AwaitingApproval),
        &Event::ChecksSeen {
            sha: "head1".into(),
            checks: Checks::Unreadable,
            by: APPROVER,
        },
        now(),
        &rules,
    );
    let [Command::Notify { html }] = d.commands.as_slice() else {
        panic!("{d:?}");
    };
    assert!(html.contains("Merge it on GitHub"), "{html}");
}

#[test]
fn early_looks_are_asked_and_judged_on_the_window_kept_with_the_baseline() {
    let mut rules = rules(RevertMode::Merge);
    // The baseline was counted on an hour; the config now says 2 hours.
    rules.thresholds.early_window = Some(Duration::from_secs(7200));
    let merged = in_state(State::Merged);
    let d = decide(&merged, &Event::Tick, now(), &rules);
    assert!(
        matches!(
            d.commands[..],
            [Command::FetchBaseline {
                early_window: Some(w),
                ..
            }] if w == Duration::from_secs(7200)
        ),
        "{d:?}"
    );
    let observing = Experiment {
        early_baseline: Some(serde_json::to_string(&early_week(0.18, 28)).expect("json")),
        ..in_state(State::Observing)
    };
    let d = decide(&observing, &Event::Tick, now(), &rules);
    assert!(
        matches!(
            d.commands[..],
            [Command::FetchCounts {
                early_window: Some(w),
                ..
            }] if w == Duration::from_secs(3600)
        ),
        "{d:?}"
    );
    // No entry has finished its day-long window, but within the first hour
    // half as many went on as before the merge.
    let halved = Event::CountsFetched {
        counts: [Counts::default(); 7],
        recent: Some(week(0.09, 1)),
        control: None,
    };
    let d = decide(&observing, &halved, now(), &rules);
    assert_eq!(
        d.change.as_ref().map(|c| c.to),
        Some(State::Reverting),
        "{d:?}"
    );
    // An experiment merged before early looks existed is judged as before.
    let d = decide(&in_state(State::Observing), &halved, now(), &rules);
    assert!(d.change.is_none(), "{d:?}");
    // Early looks off: not asked for.
    rules.thresholds.early_window = None;
    let d = decide(&merged, &Event::Tick, now(), &rules);
    assert!(
        matches!(
            d.commands[..],
            [Command::FetchBaseline {
                early_window: None,
                ..
            }]
        ),
        "{d:?}"
    );
}

#[test]
fn the_drift_control_is_asked_kept_with_the_baseline_and_judged() {
    let mut rules = rules(RevertMode::Merge);
    rules.thresholds.early_window = None;
    rules.thresholds.drift_control = DriftControl::Upstream;
    let merged = in_state(State::Merged);
    assert!(merged.step > 0, "the sample step has an upstream step");
    let d = decide(&merged, &Event::Tick, now(), &rules);
    assert!(
        matches!(
            d.commands[..],
            [Command::FetchBaseline { control: true, .. }]
        ),
        "{d:?}"
    );
    // The first step has no upstream step: watched without the control.
    let first = Experiment {
        step: 0,
        ..merged.clone()
    };
    let d = decide(&first, &Event::Tick, now(), &rules);
    assert!(
        matches!(
            d.commands[..],
            [Command::FetchBaseline { control: false, .. }]
        ),
        "{d:?}"
    );
    let upstream = |rate: f64, days: u64| UpstreamCounts {
        counts: week(rate, days),
        early: None,
    };
    let d = decide(
        &merged,
        &Event::BaselineFetched {
            counts: week(0.25, 28),
            early: None,
            control: Some(upstream(0.5, 28)),
        },
        now(),
        &rules,
    );
    let change = d.change.as_ref().expect("observing");
    assert_eq!(change.to, State::Observing);
    assert!(
        change
            .detail
            .ends_with("; the upstream step (the drift control): 50.0% of 28000 entries"),
        "{}",
        change.detail
    );
    let observing = Experiment {
        control_baseline: Some(serde_json::to_string(&upstream(0.5, 28)).expect("json")),
        ..in_state(State::Observing)
    };
    let d = decide(&observing, &Event::Tick, now(), &rules);
    assert!(
        matches!(d.commands[..], [Command::FetchCounts { control: true, .. }]),
        "{d:?}"
    );
    // Both steps 40% lower: the whole site drifted, the change is kept watching.
    let both = Event::CountsFetched {
        counts: week(0.15, 2),
        recent: None,
        control: Some(upstream(0.3, 2)),
    };
    let d = decide(&observing, &both, now(), &rules);
    assert!(d.change.is_none(), "{d:?}");
    // The step alone 40% lower: reverted, and the verdict says against what.
    let alone = Event::CountsFetched {
        counts: week(0.15, 2),
        recent: None,
        control: Some(upstream(0.5, 2)),
    };
    let d = decide(&observing, &alone, now(), &rules);
    let change = d.change.as_ref().expect("reverting");
    assert_eq!(change.to, State::Reverting);
    assert!(
        change
            .detail
            .starts_with("reverted: -40.8% relative change, against the upstream step's -0.4% (the step alone -41.1%)"),
        "{}",
        change.detail
    );
    // A look without the upstream step's counts is not judged on the step alone.
    let missing = Event::CountsFetched {
        counts: week(0.15, 2),
        recent: None,
        control: None,
    };
    let d = decide(&observing, &missing, now(), &rules);
    assert!(d.change.is_none() && d.commands.is_empty(), "{d:?}");
    // Turning the control off in the config does not change a watch that has one.
    rules.thresholds.drift_control = DriftControl::Off;
    let d = decide(&observing, &Event::Tick, now(), &rules);
    assert!(
        matches!(d.commands[..], [Command::FetchCounts { control: true, .. }]),
        "{d:?}"
    );
}

#[test]
fn a_red_head_that_runs_out_is_not_told_it_got_no_answer() {
    let rules = rules(RevertMode::Merge);
    let red = Experiment {
        message_id: None,
        checks_failed_sha: Some("head1".into()),
        ..in_state(State::AwaitingApproval)
    };
    let closed = Event::PrClosed {
        by: None,
        checks_failed: false,
    };
    let d = decide(&red, &closed, now(), &rules);
    let change = d.change.as_ref().expect("expired");
    assert_eq!(change.to, State::Expired);
    assert_eq!(
        change.detail,
        "its checks stayed red until the approval timeout"
    );
    let [Command::Notify { html }] = d.commands.as_slice() else {
        panic!("{d:?}");
    };
    assert!(
        html.contains("was never offered: its checks failed"),
        "{html}"
    );
    // A head that was offered and not answered is told as before.
    let asked = in_state(State::AwaitingApproval);
    let d = decide(&asked, &closed, now(), &rules);
    assert_eq!(
        d.change.as_ref().map(|c| c.detail.as_str()),
        Some("no answer in time")
    );
    // A red head that was fixed (a new head) but never answered is also as before.
    let fixed = Experiment {
        head_sha: Some("head2".into()),
        ..red
    };
    let d = decide(&fixed, &closed, now(), &rules);
    assert_eq!(
        d.change.as_ref().map(|c| c.detail.as_str()),
        Some("no answer in time")
    );
}
