//! Every sentence funnelfix shows a person, in one pure module so a reviewer
//! sees the exact wording in the snapshot tests: the terminal table, the PR
//! bodies, and the Telegram messages (HTML, escaped).

pub mod init;

use std::fmt::Write;

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::{Config, Thresholds};
use crate::evidence::{
    Action, Attention, Evidence, Focus, Part, Rate, Reading, Said, Segments, Speed,
};
use crate::experiment::State;
use crate::funnel::FunnelReport;
use crate::github::Checks;
use crate::stats::Assessment;
use crate::store::Experiment;

/// A hidden line in the PR body that ties the PR to its experiment.
pub fn pr_marker(experiment_id: i64) -> String {
    format!("<!-- funnelfix:experiment={experiment_id} -->")
}

pub fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

pub fn signed_pct(x: f64) -> String {
    format!("{:+.1}%", x * 100.0)
}

/// "14 days", "5 hours", "90 seconds": whole units, as people write them.
pub fn human_duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = match secs {
        0 => return humantime::format_duration(d).to_string(),
        s if s % 86_400 == 0 => (s / 86_400, "day"),
        s if s % 3_600 == 0 => (s / 3_600, "hour"),
        s if s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// HTML for Telegram: only `&`, `<` and `>` need escaping.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// What a rate counts, in one sentence.
pub const ENTRY_NOTE: &str = "An entry is a person's first visit to a step on a UTC day; it went on if that person reached the next step within the conversion window after it.";

/// The terminal table of `funnelfix funnel`.
pub fn funnel_table(report: &FunnelReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "funnel {}", report.funnel);
    let width = report
        .steps
        .iter()
        .map(|s| s.name.chars().count() + s.next_name.chars().count() + 3)
        .max()
        .unwrap_or(10)
        .max(10);
    let _ = writeln!(
        out,
        "  {:<width$}  {:>9}  {:>9}  {:>7}  {:>15}",
        "step", "entries", "went on", "rate", "95% interval"
    );
    for (i, s) in report.steps.iter().enumerate() {
        let chosen = report.choice.as_ref().is_some_and(|c| c.step == i);
        let mark = if chosen { "▶" } else { " " };
        let judged = if s.judged { "" } else { "  (too few to judge)" };
        let _ = writeln!(
            out,
            "{mark} {:<width$}  {:>9}  {:>9}  {:>7}  {:>15}{judged}",
            format!("{} → {}", s.name, s.next_name),
            s.entrants,
            s.converted,
            pct(s.rate),
            format!("{}–{}", pct(s.low), pct(s.high)),
        );
    }
    let _ = writeln!(
        out,
        "  overall (the product of the step rates): {}\n  {ENTRY_NOTE}",
        pct(report.overall)
    );
    match (&report.choice, &report.reason_none) {
        (Some(c), _) => {
            let _ = writeln!(out, "  would work on: {}", c.reason);
        }
        (None, Some(why)) => {
            let _ = writeln!(out, "  would work on nothing: {why}");
        }
        (None, None) => {}
    }
    out
}

/// The markdown table of a funnel, for PR bodies.
pub fn funnel_markdown(report: &FunnelReport) -> String {
    let mut out = String::from(
        "| step | entries | went on | rate | 95% interval |\n|---|---:|---:|---:|---:|\n",
    );
    for (i, s) in report.steps.iter().enumerate() {
        let chosen = report.choice.as_ref().is_some_and(|c| c.step == i);
        let name = format!("{} → {}", s.name, s.next_name);
        let name = if chosen { format!("**{name}**") } else { name };
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {}–{} |",
            s.entrants,
            s.converted,
            pct(s.rate),
            pct(s.low),
            pct(s.high)
        );
    }
    let _ = writeln!(out, "\n{}", ENTRY_NOTE.replace("An entry", "An *entry*"));
    out
}

/// The revert rule in words, with the configured numbers.
pub fn revert_rule(t: &Thresholds) -> String {
    format!(
        "After the merge funnelfix watches the entries at this step in the {} after it, against the {} before it \
         (the same rate as above, weekday-standardised, skipping the deploy hour). It reverts the change at the first look where an \
         always-valid test (mSPRT) is confident at {} that the rate fell (or, at the last look, a fixed-horizon \
         z-test gives z ≤ −2.5), the rate is down by at least {} relative, and at least 30 conversions were \
         seen since the merge. Otherwise it keeps the change and reports the measured lift.",
        human_duration(t.observation),
        human_duration(t.baseline),
        pct(1.0 - t.false_revert_rate),
        pct(t.max_relative_drop),
    )
}

/// What the PR body needs to know about the proposal.
pub struct PrBody<'a> {
    pub experiment_id: i64,
    pub report: &'a FunnelReport,
    pub step: usize,
    pub hypothesis: &'a str,
    pub diff: &'a str,
    pub config: &'a Config,
}

pub fn pr_body(b: &PrBody<'_>) -> String {
    let s = &b.report.steps[b.step];
    format!(
        "funnelfix proposes one change to the step **{step} → {next}** of the funnel `{funnel}`.\n\n\
         ## Why this step\n\n\
         {rate} of {entrants} entries at this step went on ({converted} did; 95% interval {low}–{high}).\n\n\
         {table}\n\
         ## Hypothesis\n\n{hypothesis}\n\n\
         {focus}\
         {evidence}\
         ## What changed\n\n```diff\n{diff}\n```\n\n\
         ## What happens next\n\n\
         - An approver decides in Telegram: Approve merges exactly this head; Reject closes this PR.\n\
         - Unanswered after {timeout}, it is closed.\n\
         - {rule}\n\n\
         {marker}\n",
        step = s.name,
        next = s.next_name,
        funnel = b.report.funnel,
        rate = pct(s.rate),
        entrants = s.entrants,
        converted = s.converted,
        low = pct(s.low),
        high = pct(s.high),
        table = funnel_markdown(b.report),
        hypothesis = b.hypothesis.trim(),
        focus = b
            .report
            .evidence
            .as_ref()
            .and_then(|e| e.focus.as_ref())
            .map(|f| format!("## For whom\n\n{}\n\n", markdown_text(&focus_sentence(f))))
            .unwrap_or_default(),
        evidence = b
            .report
            .evidence
            .as_ref()
            .map(|e| format!("{}\n", evidence_markdown(e)))
            .unwrap_or_default(),
        diff = b.diff.trim_end(),
        timeout = human_duration(b.config.thresholds.approval_timeout),
        rule = revert_rule(&b.config.thresholds),
        marker = pr_marker(b.experiment_id),
    )
}

/// The Telegram proposal, with Approve / Reject buttons added by the caller.
pub fn proposal_message(
    e: &Experiment,
    report: &FunnelReport,
    summary: &str,
    thresholds: &Thresholds,
    checks_wait: Duration,
) -> String {
    let s = &report.steps[e.step];
    let title = e.title.as_deref().unwrap_or("");
    let hypothesis = e.hypothesis.as_deref().unwrap_or("");
    let pr = e.pr_url.as_deref().unwrap_or("");
    format!(
        "<b>funnelfix proposal #{id}</b> · funnel <b>{funnel}</b>\n\
         Step <b>{step} → {next}</b>: {rate} ({converted} of {entrants} daily entries went on, 95% CI {low}–{high})\n\n\
         <b>{title}</b>\n{hypothesis}\n\n\
         {evidence}{focus}\
         Change: {summary}\n{excerpt}\
         PR: <a href=\"{pr}\">{pr}</a>\n{head}\n\
         If merged, it is watched for {obs} and reverted if the rate drops by more than {drop} with {conf} confidence.",
        id = e.id,
        funnel = escape(&e.funnel),
        step = escape(&s.name),
        next = escape(&s.next_name),
        rate = pct(s.rate),
        converted = s.converted,
        entrants = s.entrants,
        low = pct(s.low),
        high = pct(s.high),
        title = escape(title),
        hypothesis = escape(hypothesis),
        evidence = report
            .evidence
            .as_ref()
            .map(evidence_lines)
            .unwrap_or_default(),
        focus = report
            .evidence
            .as_ref()
            .and_then(|e| e.focus.as_ref())
            .map(|f| format!("For whom: {}\n", escape(&focus_sentence(f))))
            .unwrap_or_default(),
        summary = escape(summary),
        excerpt = change_excerpt(e.diff.as_deref().unwrap_or("")),
        pr = escape(pr),
        head = head_lines(e, checks_wait),
        obs = human_duration(thresholds.observation),
        drop = pct(thresholds.max_relative_drop),
        conf = pct(1.0 - thresholds.false_revert_rate),
    )
}

/// Lines of the change shown in the chat, and the width each is cut to, so
/// the proposal reads on a phone without opening GitHub.
const EXCERPT_LINES: usize = 8;
const EXCERPT_WIDTH: usize = 100;

/// The changed lines of a unified diff as a short before → after block
/// ("− old", "+ new"), escaped, or nothing for an empty diff.
pub fn change_excerpt(diff: &str) -> String {
    let changed: Vec<String> = diff
        .lines()
        .filter(|l| !l.starts_with("+++") && !l.starts_with("---"))
        .filter_map(|l| {
            let (sign, rest) = match l.chars().next()? {
                '-' => ("− ", &l[1..]),
                '+' => ("+ ", &l[1..]),
                _ => return None,
            };
            let rest = rest.trim();
            let cut: String = rest.chars().take(EXCERPT_WIDTH).collect();
            let more = if cut.len() < rest.len() { "…" } else { "" };
            Some(format!("{sign}{cut}{more}"))
        })
        .collect();
    if changed.is_empty() {
        return String::new();
    }
    let mut lines: Vec<String> = changed.iter().take(EXCERPT_LINES).cloned().collect();
    if changed.len() > EXCERPT_LINES {
        lines.push(format!("… {} more", changed.len() - EXCERPT_LINES));
    }
    format!("<pre>{}</pre>\n", escape(&lines.join("\n")))
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// The proposal message after a decision (its keyboard is removed).
pub fn decided_message(original_html: &str, verb: &str, by: &str, at: DateTime<Utc>) -> String {
    format!(
        "{original_html}\n\n<b>{verb}</b> by {} at {}",
        escape(by),
        when(at)
    )
}

pub fn merged_note(e: &Experiment, sha: &str, thresholds: &Thresholds) -> String {
    format!(
        "✅ Merged PR #{pr} ({sha}). Watching <b>{step} → {next}</b> for {obs}.",
        pr = e.pr_number.unwrap_or_default(),
        sha = escape(short(sha)),
        step = escape(&e.step_name),
        next = escape(&e.next_step_name),
        obs = human_duration(thresholds.observation),
    )
}

pub fn head_moved_note(e: &Experiment) -> String {
    format!(
        "⚠️ Not merged: the branch of PR #{} moved after the proposal, so it is not what was approved. funnelfix reads the new head and asks again once its checks pass.",
        e.pr_number.unwrap_or_default()
    )
}

/// " details" linking a check's page, or nothing when it has none.
fn details_link(url: &str) -> String {
    if url.is_empty() {
        String::new()
    } else {
        format!(" <a href=\"{}\">details</a>", escape(url))
    }
}

/// A new PR's head failed its checks before anyone was asked; `then` says
/// what happens to it.
fn red_head_note(e: &Experiment, icon: &str, check: &str, url: &str, then: &str) -> String {
    format!(
        "{icon} funnelfix proposal #{id}: the check <b>{check}</b> failed on PR #{pr}.{link} {then}",
        id = e.id,
        check = escape(check),
        pr = e.pr_number.unwrap_or_default(),
        link = details_link(url),
    )
}

/// The PR stays open for a person (`failed_checks = "keep_open"`).
pub fn red_head_kept_open_note(e: &Experiment, check: &str, url: &str) -> String {
    red_head_note(
        e,
        "⛔",
        check,
        url,
        "It will not be offered for approval while it is red. The PR stays open: push a fix to its branch and funnelfix asks once the checks pass, or close it.",
    )
}

/// The model is asked once for a fix (`failed_checks = "fix"`).
pub fn red_head_fix_asked_note(e: &Experiment, check: &str, url: &str) -> String {
    red_head_note(
        e,
        "🔧",
        check,
        url,
        "The model is asked once for a fix on the same branch; you are asked once its checks pass.",
    )
}

/// The PR is closed (`failed_checks = "close"`).
pub fn red_head_closed_note(e: &Experiment, check: &str, url: &str) -> String {
    red_head_note(
        e,
        "⛔",
        check,
        url,
        "The PR is closed and its branch deleted; the step can be proposed again.",
    )
}

/// Why no fix was asked: the change has no changed lines left.
pub fn fix_no_lines_left(max: usize) -> String {
    format!("the change already uses all {max} changed lines that github.max_changed_lines allows")
}

/// The commit message of the model's fix on the PR's branch.
pub fn fix_commit_message(check: &str, title: &str) -> String {
    format!("Fix the check {check}: {title}")
}

/// The model's fix could not be made; the PR stays open for a person.
pub fn fix_failed_note(e: &Experiment, why: &str) -> String {
    format!(
        "⛔ funnelfix proposal #{id}: no fix for the failed check on PR #{pr}: {why}. The PR stays open: push a fix to its branch and funnelfix asks once the checks pass, or close it.",
        id = e.id,
        pr = e.pr_number.unwrap_or_default(),
        why = escape(why),
    )
}

/// What CI and the preview say, for the proposal: one line each.
pub fn head_lines(e: &Experiment, checks_wait: Duration) -> String {
    let checks = e
        .head_checks
        .as_deref()
        .and_then(|c| serde_json::from_str::<Checks>(c).ok());
    let mut lines = match checks {
        Some(Checks::Passed) => "CI: ✅ checks passed\n".to_string(),
        Some(Checks::None) => "CI: none on this repository\n".to_string(),
        Some(Checks::Unreadable) => {
            "CI: ⚠️ its check runs cannot be read with funnelfix's token; look on GitHub\n"
                .to_string()
        }
        Some(Checks::Pending { names }) => format!(
            "CI: ⏳ still running after {} ({}); read again before merging\n",
            human_duration(checks_wait),
            escape(&names.join(", "))
        ),
        // Never asked on a red head; an older database has no record.
        Some(Checks::Failed { .. }) | None => String::new(),
    };
    if let Some(url) = &e.preview_url {
        let _ = writeln!(
            lines,
            "Preview: <a href=\"{url}\">{url}</a>",
            url = escape(url)
        );
    }
    lines
}

/// Approve was tapped, but CI failed on the head: nothing merged.
pub fn checks_failed_note(e: &Experiment, check: &str, url: &str) -> String {
    let link = details_link(url);
    format!(
        "⛔ Not merged: the check <b>{}</b> failed on PR #{}.{link} Fix it on the branch and tap Approve again, or close the PR.",
        escape(check),
        e.pr_number.unwrap_or_default()
    )
}

/// Approve was tapped but funnelfix may not read the head's check runs.
pub fn checks_unreadable_note(e: &Experiment) -> String {
    format!(
        "⚠️ Not merged: funnelfix's GitHub token cannot read the check runs of PR #{} (GitHub gives fine-grained tokens no Checks permission), so it cannot tell whether CI passed. Merge it on GitHub once CI is green (funnelfix then watches it as usual), or give funnelfix a GitHub App or a classic token.",
        e.pr_number.unwrap_or_default()
    )
}

/// Approve was tapped while CI still runs on the head: nothing merged yet.
pub fn checks_pending_note(e: &Experiment, names: &[String]) -> String {
    format!(
        "⏳ Not merged yet: checks are still running on PR #{} ({}). Tap Approve again once they pass.",
        e.pr_number.unwrap_or_default(),
        escape(&names.join(", "))
    )
}

pub fn merge_refused_note(e: &Experiment, why: &str) -> String {
    format!(
        "⚠️ GitHub refused to merge PR #{}: {}. Nothing else was done.",
        e.pr_number.unwrap_or_default(),
        escape(why)
    )
}

pub fn rejected_note(e: &Experiment) -> String {
    format!(
        "PR #{} closed and its branch deleted.",
        e.pr_number.unwrap_or_default()
    )
}

pub fn expired_note(e: &Experiment, timeout: std::time::Duration) -> String {
    format!(
        "⌛ Proposal #{} got no answer within {}: PR #{} closed.",
        e.id,
        human_duration(timeout),
        e.pr_number.unwrap_or_default()
    )
}

/// A proposal whose head stayed red was never offered, so nobody failed to
/// answer it: it ran out while waiting for a fix.
pub fn red_head_expired_note(e: &Experiment, timeout: std::time::Duration) -> String {
    format!(
        "⌛ Proposal #{} was never offered: its checks failed and no passing head came within {}. PR #{} closed.",
        e.id,
        human_duration(timeout),
        e.pr_number.unwrap_or_default()
    )
}

pub fn human_closed_note(e: &Experiment, merged: bool) -> String {
    if merged {
        format!(
            "PR #{} was merged on GitHub; funnelfix is watching the step now.",
            e.pr_number.unwrap_or_default()
        )
    } else {
        format!(
            "PR #{} was closed on GitHub; proposal #{} is withdrawn.",
            e.pr_number.unwrap_or_default(),
            e.id
        )
    }
}

pub fn failed_note(funnel: &str, step: &str, reasons: &[String]) -> String {
    let mut out = format!(
        "❌ No change proposed for <b>{}</b> / <b>{}</b>: the model's edits were refused.",
        escape(funnel),
        escape(step)
    );
    for r in reasons.iter().take(5) {
        let _ = write!(out, "\n• {}", escape(r));
    }
    out
}

/// Running figures, for logs and the demo.
pub fn watch_line(a: &Assessment) -> String {
    format!(
        "rate {} vs expected {} ({} relative{}), Λ = {:.2}, {} conversions since the merge",
        pct(a.p_post),
        pct(a.p_expected),
        signed_pct(a.relative_change),
        against_upstream(a),
        a.lambda,
        a.post_conversions
    )
}

pub fn verdict_kept(a: &Assessment) -> String {
    format!(
        "kept: {} relative change{} (always-valid interval {} to {}), {} vs {} expected",
        signed_pct(a.relative_change),
        against_upstream(a),
        signed_pct(a.relative_interval.0),
        signed_pct(a.relative_interval.1),
        pct(a.p_post),
        pct(a.p_expected),
    )
}

pub fn verdict_reverted(a: &Assessment, p_value: f64) -> String {
    format!(
        "reverted: {} relative change{} (always-valid p = {:.4}), {} vs {} expected, {} conversions",
        signed_pct(a.relative_change),
        against_upstream(a),
        p_value,
        pct(a.p_post),
        pct(a.p_expected),
        a.post_conversions
    )
}

/// "Experiment #3 on <b>Viewed pricing → Started signup</b>", escaped.
fn experiment_on_step(e: &Experiment) -> String {
    format!(
        "Experiment #{} on <b>{} → {}</b>{}",
        e.id,
        escape(&e.step_name),
        escape(&e.next_step_name),
        escape(&segment_only(e))
    )
}

/// " (… entries only)" for an experiment watched on one segment.
fn segment_only(e: &Experiment) -> String {
    e.watch_segment()
        .map(|w| format!(" ({} = {} entries only)", w.property, quoted(&w.value)))
        .unwrap_or_default()
}

/// The caption of the watch chart sent with a verdict or for `/status N`.
pub fn watch_chart_caption(e: &Experiment) -> String {
    let control = match e.control_baseline {
        Some(_) => " (the step's own rate; it is judged against the upstream step's)",
        None => "",
    };
    format!("{}: the watch, day by day{control}", experiment_on_step(e))
}

/// The baseline's record when early looks are on: how many of its
/// conversions came within the early window, the site's own delay as
/// PostHog measured it.
pub fn baseline_fetched_with_early(
    counts: &[crate::stats::Counts; 7],
    early: &crate::lifecycle::EarlyBaseline,
) -> String {
    let all: u64 = counts.iter().map(|c| c.conversions).sum();
    let soon: u64 = early.counts.iter().map(|c| c.conversions).sum();
    let share = if all > 0 {
        format!("{:.0}%", 100.0 * soon as f64 / all as f64)
    } else {
        "none".to_string()
    };
    format!(
        "baseline fetched; {share} of its conversions came within {} (the early looks' window)",
        human_duration(early.window)
    )
}

/// What the baseline's record adds with the drift control: the upstream
/// step's rate the step will be judged against, e.g. "; the upstream step
/// (the drift control): 41.2% of 9120 entries".
pub fn baseline_control(control: &crate::lifecycle::UpstreamCounts) -> String {
    let total = control
        .counts
        .iter()
        .fold(crate::stats::Counts::default(), |a, c| a.add(*c));
    let rate = if total.entrants > 0 {
        pct(total.conversions as f64 / total.entrants as f64)
    } else {
        "no rate".to_string()
    };
    format!(
        "; the upstream step (the drift control): {rate} of {} entries",
        total.entrants
    )
}

/// How the drift control moved a verdict's change: ", against the upstream
/// step's −8.0% (the step alone −20.0%)", or nothing without it.
fn against_upstream(a: &Assessment) -> String {
    match a.control {
        Some(c) => format!(
            ", against the upstream step's {} (the step alone {})",
            signed_pct(c.upstream_change),
            signed_pct(c.watched_change)
        ),
        None => String::new(),
    }
}

pub fn kept_note(e: &Experiment, verdict: &str) -> String {
    format!("🏁 {} is over: {}.", experiment_on_step(e), escape(verdict))
}

pub fn reverted_note(e: &Experiment, verdict: &str, revert_url: &str) -> String {
    format!(
        "↩️ {}: {}. Revert: {}",
        experiment_on_step(e),
        escape(verdict),
        escape(revert_url)
    )
}

pub fn revert_needs_review_note(e: &Experiment, verdict: &str, revert_url: &str) -> String {
    format!(
        "⚠️ Experiment #{} should be reverted ({}), but the files were changed by someone since the merge. \
         The revert PR is open for review and was not merged: {}",
        e.id,
        escape(verdict),
        escape(revert_url)
    )
}

/// revert = "approve": the revert PR waits for a tap on this message.
pub fn revert_approval_note(e: &Experiment, verdict: &str, revert_url: &str) -> String {
    format!(
        "⚠️ {} should be reverted: {}. The revert PR is ready: {}\nTap to merge it.",
        experiment_on_step(e),
        escape(verdict),
        escape(revert_url)
    )
}

// ---- Short answers: the notice a tapper sees, command replies, titles ----

pub const TAP_REFUSED: &str = "Sorry, you cannot decide on this proposal.";
pub const TAP_MERGING: &str = "Merging…";
pub const TAP_MERGING_REVERT: &str = "Merging the revert…";
pub const TAP_CLOSING: &str = "Closing the PR…";
pub const ONLY_APPROVERS: &str = "Sorry, only approvers can use funnelfix commands.";
pub const PAUSED: &str =
    "Paused: no new proposals. Watching and reverting go on. /resume to continue.";
pub const RESUMED: &str = "Resumed: proposals will be made on schedule.";
/// What an edited proposal or revert message says happened.
pub const DECIDED_APPROVED: &str = "Approved";
pub const DECIDED_REJECTED: &str = "Rejected";
pub const DECIDED_EXPIRED: &str = "Expired";
pub const DECIDED_MERGED_ON_GITHUB: &str = "Merged on GitHub";
pub const DECIDED_CLOSED_ON_GITHUB: &str = "Closed on GitHub";
pub const DECIDED_REVERT_MERGED: &str = "Revert merged";
pub const DECIDED_SUPERSEDED: &str = "Not merged: its branch moved; asked again for the new head";
pub const DECIDED_REVERT_CLOSED: &str = "Revert PR closed on GitHub";
pub const BY_A_PERSON_ON_GITHUB: &str = "a person on GitHub";
pub const BY_FUNNELFIX: &str = "funnelfix";

/// An approver, as the edited message names them.
pub fn by_user(user: u64) -> String {
    format!("user {user}")
}

/// GitHub's own words on a refused merge.
pub fn github_said(why: &str) -> String {
    format!("GitHub said: {why}")
}

pub const APPROVE_BUTTON: &str = "✅ Approve";
pub const REJECT_BUTTON: &str = "❌ Reject";
pub const MERGE_REVERT_BUTTON: &str = "↩️ Merge the revert";

/// A tap on a decision already taken.
pub fn tap_already(state: State, revert: bool) -> String {
    if revert {
        format!("Already done: {state}.")
    } else {
        format!("Already decided: {state}.")
    }
}

pub fn tap_too_late(timeout: std::time::Duration) -> String {
    format!(
        "Too late: this proposal expired after {}.",
        human_duration(timeout)
    )
}

pub fn chart_caption(funnel: &str) -> String {
    format!("Funnel {}", escape(funnel))
}

pub fn funnel_unreadable(funnel: &str, error: &anyhow::Error) -> String {
    escape(&format!("Could not read funnel {funnel}: {error:#}"))
}

/// The revert PR's title and commit message.
pub fn revert_title(e: &Experiment) -> String {
    format!(
        "Revert \"{}\"",
        e.title.as_deref().unwrap_or("funnelfix change")
    )
}

/// The revert's merge commit title.
pub fn revert_merge_title(e: &Experiment) -> String {
    format!("Revert PR #{}", e.pr_number.unwrap_or_default())
}

/// A revert that waits for a person on GitHub, with the real reason.
pub fn revert_not_merged_note(e: &Experiment, verdict: &str, why: &str) -> String {
    format!(
        "⚠️ Experiment #{} should be reverted ({}), but the revert PR was not merged: {}. \
         It is open for review: {}",
        e.id,
        escape(verdict),
        escape(why),
        escape(e.revert_pr_url.as_deref().unwrap_or(""))
    )
}

/// A person closed the revert PR: the change stays.
pub fn revert_closed_note(e: &Experiment, verdict: &str) -> String {
    format!(
        "🛑 {}: the revert PR was closed on GitHub, so the change stays. funnelfix had found: {}. \
         The funnel is open to new proposals.",
        experiment_on_step(e),
        escape(verdict)
    )
}

/// The first line of the proposal message, kept when it is edited.
pub fn proposal_header(e: &Experiment) -> String {
    format!(
        "<b>funnelfix proposal #{}</b>: {}",
        e.id,
        escape(e.title.as_deref().unwrap_or(""))
    )
}

/// The first line of the revert message, kept when it is edited.
pub fn revert_header(e: &Experiment) -> String {
    format!("<b>Revert of experiment #{}</b>", e.id)
}

/// "+3 −1 lines in site/pricing.html".
pub fn summarize_diff(diff: &str) -> String {
    let added = diff
        .lines()
        .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
        .count();
    let removed = diff
        .lines()
        .filter(|l| l.starts_with('-') && !l.starts_with("---"))
        .count();
    let files: Vec<&str> = diff
        .lines()
        .filter_map(|l| l.strip_prefix("+++ "))
        .map(|f| f.trim_start_matches("b/"))
        .collect();
    format!("+{added} −{removed} lines in {}", files.join(", "))
}

pub fn revert_pr_body(e: &Experiment, verdict: &str, a: &Assessment, t: &Thresholds) -> String {
    format!(
        "funnelfix reverts PR #{pr} (experiment {id}) on the step **{step} → {next}**.\n\n\
         **{verdict}**\n\n\
         | | rate |\n|---|---:|\n| expected from the baseline (weekday-weighted) | {pexp} |\n| since the merge | {ppost} |\n\n\
         Conversions since the merge: {x}. Λ = {lambda:.2} (threshold {thr:.0}).\n\n\
         Rule: {rule}\n\n{marker}\n",
        pr = e.pr_number.unwrap_or_default(),
        id = e.id,
        step = e.step_name,
        next = e.next_step_name,
        pexp = pct(a.p_expected),
        ppost = pct(a.p_post),
        x = a.post_conversions,
        lambda = a.lambda,
        thr = 1.0 / t.false_revert_rate,
        rule = revert_rule(t),
        marker = pr_marker(e.id.0),
    )
}

pub fn status_line(e: &Experiment) -> String {
    let mut line = format!(
        "#{} {} · {} → {}{} · {}",
        e.id,
        e.funnel,
        e.step_name,
        e.next_step_name,
        segment_only(e),
        e.state
    );
    if let Some(pr) = e.pr_number {
        let _ = write!(line, " · PR #{pr}");
    }
    if let Some(rate) = e.rate_before {
        let _ = write!(line, " · rate before {}", pct(rate));
    }
    if let Some(v) = &e.verdict {
        let _ = write!(line, " · {v}");
    } else if let Some(f) = &e.failure {
        let _ = write!(line, " · {f}");
    }
    line
}

// ---- The weekly digest ----

fn digest_item(i: &crate::digest::Item) -> String {
    let e = &i.experiment;
    let mut line = format!(
        "• #{} {} → {}",
        e.id,
        escape(&e.step_name),
        escape(&e.next_step_name)
    );
    let measured = i.measured.as_ref();
    match (e.state, measured) {
        (State::Kept | State::KeptByPerson, Some(a)) => {
            let _ = write!(
                line,
                ": {}{} (always-valid interval {} to {})",
                signed_pct(a.relative_change),
                against_upstream(a),
                signed_pct(a.relative_interval.0),
                signed_pct(a.relative_interval.1)
            );
            if e.state == State::KeptByPerson {
                line.push_str(", kept by a person who closed its revert");
            }
        }
        (State::Reverted, Some(a)) => {
            let _ = write!(
                line,
                ": {}{}",
                signed_pct(a.relative_change),
                against_upstream(a)
            );
            if let Some(p) = e.p_value {
                let _ = write!(line, " (always-valid p = {p:.4})");
            }
        }
        (State::Failed, _) => {
            let _ = write!(line, ": {}", escape(e.failure.as_deref().unwrap_or("")));
        }
        _ => {
            let _ = write!(line, ": {}", escape(e.title.as_deref().unwrap_or("")));
            if let Some(pr) = e.pr_number {
                let _ = write!(line, " (PR #{pr})");
            }
        }
    }
    line
}

fn digest_next(funnel: &str, next: &crate::digest::Next) -> String {
    use crate::digest::Next;
    let what = match next {
        Next::Busy { id, state } => {
            format!("experiment #{id} is {state}; nothing new until it ends")
        }
        Next::Paused => "proposals are paused (/resume)".to_string(),
        Next::Step {
            step,
            next_step,
            reason,
        } => format!("{step} → {next_step}: {reason}"),
        Next::Nothing(why) => format!("nothing: {why}"),
        Next::Unknown(error) => format!("could not ask PostHog ({error})"),
    };
    format!("• {}: {}", escape(funnel), escape(&what))
}

/// The weekly digest, in Telegram HTML.
pub fn digest_message(d: &crate::digest::Digest) -> String {
    let mut out = format!(
        "<b>funnelfix weekly digest</b> · {} to {}\n",
        d.from.format("%Y-%m-%d"),
        d.to.format("%Y-%m-%d")
    );
    if d.is_quiet() {
        out.push_str("A quiet week: no experiment was opened or ended.\n");
    } else {
        let sections = [
            ("opened", "Opened", &d.opened),
            ("kept", "Kept", &d.kept),
            ("reverted", "Reverted", &d.reverted),
            ("rejected", "Rejected", &d.rejected),
            ("expired", "Expired", &d.expired),
            ("failed", "No change could be proposed", &d.failed),
        ];
        let counts: Vec<String> = sections
            .iter()
            .filter(|(word, _, items)| !items.is_empty() || *word != "failed")
            .map(|(word, _, items)| format!("{} {word}", items.len()))
            .collect();
        let _ = writeln!(out, "{}", counts.join(" · "));
        for (_, title, items) in sections.iter().filter(|(_, _, items)| !items.is_empty()) {
            let _ = writeln!(out, "\n<b>{title}</b>");
            for i in items.iter() {
                let _ = writeln!(out, "{}", digest_item(i));
            }
        }
        if !d.totals.is_empty() {
            let _ = writeln!(
                out,
                "\n<b>Since funnelfix started</b> ({}), the kept changes multiply to:",
                d.since
                    .map_or(String::new(), |t| t.format("%Y-%m-%d").to_string())
            );
            for s in &d.totals {
                let _ = writeln!(
                    out,
                    "• {} · {} → {}: {} (interval {} to {}), {} kept change{}",
                    escape(&s.funnel),
                    escape(&s.step),
                    escape(&s.next_step),
                    signed_pct(s.change),
                    signed_pct(s.interval.0),
                    signed_pct(s.interval.1),
                    s.changes,
                    if s.changes == 1 { "" } else { "s" }
                );
            }
            out.push_str(
                "Each interval is the product of the kept changes' always-valid intervals.\n",
            );
        }
    }
    let _ = write!(out, "\n<b>Next</b>");
    if let Some(t) = d.next_run {
        let _ = write!(out, " (propose run {})", t.format("%a %Y-%m-%d %H:%M UTC"));
    }
    out.push('\n');
    for (funnel, next) in &d.next {
        let _ = writeln!(out, "{}", digest_next(funnel, next));
    }
    out.trim_end().to_string()
}

/// The experiment `/status N` or `status N` names: "3" or "#3".
pub fn parse_experiment_number(arg: &str) -> Option<crate::experiment::ExperimentId> {
    let n: i64 = arg.trim().trim_start_matches('#').parse().ok()?;
    (n > 0).then_some(crate::experiment::ExperimentId(n))
}

pub fn status_usage(arg: &str) -> String {
    format!("{arg:?} is not an experiment number; write e.g. 3 for experiment #3")
}

pub fn no_such_experiment(id: crate::experiment::ExperimentId) -> String {
    format!("There is no experiment #{id}.")
}

/// `/status N` for an experiment that was never merged.
pub const NO_WATCH_CHART: &str = "It was never merged, so it has no watch chart.";

pub fn help() -> &'static str {
    "/status: open experiments and their state\n\
     /status N: experiment #N with its watch chart\n\
     /funnel: the funnel table and chart\n\
     /pause: no new proposals (watching and reverting go on)\n\
     /resume: proposals again\n\
     /help: this list"
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(7)]
}

// ---------------------------------------------------------------------------
// Evidence.

fn quoted(s: &str) -> String {
    format!("\u{201c}{s}\u{201d}")
}

fn rate_text(r: &Rate) -> String {
    format!("{} (95% {}–{})", pct(r.rate), pct(r.low), pct(r.high))
}

fn action_name(a: &Action) -> String {
    match a.kind.as_str() {
        "click" => format!("clicked {}", quoted(&a.label)),
        "rageclick" => format!("rage-clicked {}", quoted(&a.label)),
        "deadclick" => format!("dead-clicked {}", quoted(&a.label)),
        _ => format!("sent the event {}", quoted(&a.label)),
    }
}

fn action_line(a: &Action) -> String {
    format!(
        "{} entries ({} of the step's) {}: {} went on, against {} of the others ({:.1}×{})",
        a.did.entries,
        pct(a.reach),
        action_name(a),
        rate_text(&a.did),
        pct(a.others.rate),
        a.lift,
        if a.clear { "" } else { ", intervals overlap" },
    )
}

fn reading_line(who: &str, r: &Reading) -> String {
    let seconds = r
        .mean_seconds
        .map(|s| format!(", {s:.0} s on the page on average"))
        .unwrap_or_default();
    format!(
        "{} of the {who} with a reading ({}) scrolled less than a quarter of the page, {} less than half{seconds}",
        pct(r.share_under_quarter()),
        r.measured,
        pct(if r.measured == 0 {
            0.0
        } else {
            r.under_half as f64 / r.measured as f64
        }),
    )
}

/// What each part of the evidence found, in words: (part, finding), one
/// finding per line; absent and unread parts say so.
pub fn evidence_findings(e: &Evidence) -> Vec<(&'static str, String)> {
    fn part<T>(
        out: &mut Vec<(&'static str, String)>,
        name: &'static str,
        p: &Part<T>,
        absent: &str,
        found: impl Fn(&T) -> Vec<String>,
    ) {
        match p {
            Part::Found(t) => out.extend(found(t).into_iter().map(|l| (name, l))),
            Part::Absent => out.push((name, absent.to_string())),
            Part::Failed(why) => out.push((name, format!("not read: the query failed ({why})"))),
        }
    }
    let mut out = Vec::new();
    part(
        &mut out,
        "secondary actions",
        &e.actions,
        "PostHog has no clicks or other events by enough of this step's entries on its page",
        |v: &Vec<Action>| v.iter().take(3).map(action_line).collect(),
    );
    part(
        &mut out,
        "segments",
        &e.segments,
        "PostHog has no device, browser or referrer on this step's events",
        |s: &Segments| match &s.worst {
            Some(w) => vec![format!(
                "{} = {} is much worse: {} of the step's entries, {} went on, against {} for the rest",
                w.dimension,
                quoted(&w.value),
                pct(w.share),
                rate_text(&w.rate),
                pct(w.rest.rate),
            )],
            None => vec![format!(
                "no segment is much worse than the rest ({} segments with {} or more entries compared)",
                s.segments.len(),
                crate::evidence::MIN_ENTRIES
            )],
        },
    );
    part(
        &mut out,
        "attention",
        &e.attention,
        "PostHog has no scroll depth for this page (page leaves with $prev_pageview_max_scroll_percentage)",
        |a: &Attention| {
            vec![
                reading_line("entries that left", &a.left),
                reading_line("entries that went on", &a.went_on),
            ]
        },
    );
    part(
        &mut out,
        "frustration",
        &e.frustration,
        "no rage clicks or dead clicks on this page",
        |v: &Vec<Action>| v.iter().take(3).map(action_line).collect(),
    );
    part(
        &mut out,
        "speed",
        &e.speed,
        "PostHog has no web vitals for this page",
        |s: &Speed| {
            let metric = |name: &str, v: Option<f64>, unit: &str| {
                v.map(|v| format!("{name} p75 {v:.0}{unit}"))
            };
            let mut parts: Vec<String> = [
                metric("LCP", s.lcp_p75, " ms"),
                metric("INP", s.inp_p75, " ms"),
            ]
            .into_iter()
            .flatten()
            .collect();
            if let Some(cls) = s.cls_p75 {
                parts.push(format!("CLS p75 {cls:.2}"));
            }
            vec![format!(
                "{} ({} of {} entries measured)",
                parts.join(", "),
                s.measured,
                s.entries
            )]
        },
    );
    part(
        &mut out,
        "what visitors said",
        &e.said,
        "no survey answers on this page",
        |s: &Said| {
            let mut lines = vec![format!(
                "{} survey answers from this step's entries, {} from entries that went on; the most recent:",
                s.answers, s.from_converters
            )];
            lines.extend(s.recent.iter().map(|a| {
                format!(
                    "{} ({}, {})",
                    quoted(&a.text),
                    a.at.format("%Y-%m-%d"),
                    if a.went_on { "went on" } else { "left" }
                )
            }));
            lines
        },
    );
    out
}

fn evidence_heading(e: &Evidence) -> String {
    match &e.all {
        Some(all) => format!(
            "Evidence for {} → {} from PostHog: {} daily entries, {} went on.",
            e.step,
            e.next_step,
            all.entries,
            pct(all.rate)
        ),
        None => format!("Evidence for {} → {} from PostHog.", e.step, e.next_step),
    }
}

/// The evidence as plain text: `funnelfix evidence` and the prompt.
pub fn evidence_text(e: &Evidence) -> String {
    let mut out = evidence_heading(e);
    out.push('\n');
    for (part, line) in evidence_findings(e) {
        let _ = writeln!(out, "- {part}: {line}");
    }
    if let Some(f) = &e.focus {
        let _ = writeln!(out, "- for whom: {}", focus_sentence(f));
    }
    out
}

/// The segment a proposal is for, and how its change is watched: the PR,
/// the chat and `funnelfix evidence` say it in these words.
pub fn focus_sentence(f: &Focus) -> String {
    let w = &f.segment;
    let watch = if f.watched {
        "the change is watched on these entries only, before and after the merge alike".to_string()
    } else if w.dimension == "visitor" {
        "the change is watched on all of the step's entries".to_string()
    } else {
        "the change is watched on all of the step's entries (with segment_watch = true, on these alone)".to_string()
    };
    format!(
        "entries with {} = {} ({} of the step's), {} went on against {} for the rest; \
         about {:.0} of their conversions are expected during the watch, enough to watch them alone; {watch}.",
        w.dimension,
        quoted(&w.value),
        pct(w.share),
        pct(w.rate.rate),
        pct(w.rest.rate),
        f.expected_conversions,
    )
}

/// The prompt's instruction saying which visitors to help.
pub fn focus_instruction(focus: Option<&Focus>) -> String {
    let Some(f) = focus else {
        return "all of the step's visitors.".to_string();
    };
    let w = &f.segment;
    let judged = if f.watched {
        " The change will be judged on their entries only."
    } else {
        ""
    };
    format!(
        "visitors whose {} is {:?}: {} of the step's entries, of whom {} go on against {} of the others. \
         Make the change for them first, without making the page worse for the others.{judged}",
        w.dimension,
        w.value,
        pct(w.share),
        pct(w.rate.rate),
        pct(w.rest.rate),
    )
}

/// Visitors' own words (and segment values) may hold markup: shown as
/// text, never as HTML.
fn markdown_text(s: &str) -> String {
    s.replace('<', "&lt;").replace('>', "&gt;")
}

/// The PR body's Evidence section: a compact table.
pub fn evidence_markdown(e: &Evidence) -> String {
    let mut out = format!(
        "## Evidence\n\n{}\n\n| part | finding |\n|---|---|\n",
        evidence_heading(e)
    );
    for (part, line) in evidence_findings(e) {
        let cell = markdown_text(&line).replace('|', "\\|");
        let _ = writeln!(out, "| {part} | {cell} |");
    }
    out
}

/// One or two lines for the chat: the strongest findings (a segment much
/// worse than the rest, the action that goes most with going on, what
/// leavers scrolled), and the parts that could not be read.
pub fn evidence_lines(e: &Evidence) -> String {
    let mut lines: Vec<String> = Vec::new();
    if let Some(w) = e.segments.found().and_then(|s| s.worst.as_ref()) {
        lines.push(format!(
            "{} {}: {} of entries, {} went on vs {}",
            w.dimension,
            w.value,
            pct(w.share),
            pct(w.rate.rate),
            pct(w.rest.rate)
        ));
    }
    if let Some(a) = e.actions.found().and_then(|v| v.iter().find(|a| a.clear)) {
        lines.push(format!(
            "{} {}: {} went on vs {} ({:.1}×)",
            a.did.entries,
            action_name(a),
            pct(a.did.rate),
            pct(a.others.rate),
            a.lift
        ));
    }
    if lines.len() < 2
        && let Some(a) = e.attention.found()
    {
        lines.push(format!(
            "{} of leavers scrolled less than a quarter of the page",
            pct(a.left.share_under_quarter())
        ));
    }
    lines.truncate(2);
    let failed: Vec<&str> = evidence_findings(e)
        .into_iter()
        .filter(|(_, l)| l.starts_with("not read"))
        .map(|(p, _)| p)
        .collect();
    if !failed.is_empty() {
        lines.push(format!("not read: {}", failed.join(", ")));
    }
    if lines.is_empty() {
        return String::new();
    }
    format!("Evidence: {}\n", escape(&lines.join("; ")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::experiment::State;
    use crate::funnel::{Choice, FunnelCounts, StepRate};

    fn report() -> FunnelReport {
        let step =
            |index: usize, name: &str, next: &str, n: u64, x: u64, low: f64, high: f64| StepRate {
                index,
                name: name.into(),
                next_name: next.into(),
                entrants: n,
                converted: x,
                rate: x as f64 / n as f64,
                low,
                high,
                judged: true,
            };
        FunnelReport {
            funnel: "signup".into(),
            counts: FunnelCounts {
                entries: vec![10000, 4500, 1125, 675],
                converted: vec![4500, 1125, 675],
            },
            steps: vec![
                step(0, "Visited homepage", "Viewed pricing", 10000, 4500, 0.4402, 0.4598),
                step(1, "Viewed pricing", "Started signup", 4500, 1125, 0.2374, 0.2629),
                step(2, "Started signup", "Completed signup", 1125, 675, 0.5712, 0.6279),
            ],
            overall: 0.0675,
            choice: Some(Choice {
                step: 1,
                reason: "Viewed pricing → Started signup converts 25.0% (95% CI 23.7–26.3%), the lowest upper bound among 3 judged steps".into(),
                expected_conversions: 0.0,
            }),
            reason_none: None,
            evidence: None,
        }
    }

    fn experiment() -> Experiment {
        crate::store::sample_experiment()
    }

    pub(crate) fn thresholds() -> Thresholds {
        crate::config::parse(include_str!("../config/funnelfix.example.toml"))
            .expect("example config")
            .thresholds
    }

    pub(crate) fn assessment(change: f64) -> Assessment {
        Assessment {
            p_baseline: 0.25,
            p_expected: 0.25,
            p_post: 0.25 * (1.0 + change),
            theta: 0.25 * change,
            variance: 1e-4,
            tau2: 1e-3,
            lambda: 31.4,
            relative_change: change,
            relative_interval: (change - 0.08, change + 0.08),
            post_conversions: 412,
            design_effect: (1.0, 1.0),
            revert: change < -0.1,
            why: String::new(),
            early: None,
            control: None,
        }
    }

    #[test]
    fn a_watch_with_the_drift_control_says_against_what_it_was_judged() {
        let a = Assessment {
            control: Some(crate::stats::ControlLook {
                watched_change: -0.227,
                upstream_change: -0.08,
                upstream_entrants: 9120,
            }),
            ..assessment(-0.16)
        };
        assert!(
            verdict_reverted(&a, 0.001).starts_with(
                "reverted: -16.0% relative change, against the upstream step's -8.0% (the step alone -22.7%)"
            ),
            "{}",
            verdict_reverted(&a, 0.001)
        );
        assert!(verdict_kept(&assessment(0.01)).starts_with("kept: +1.0% relative change (always"));
        assert!(watch_line(&a).contains("(-16.0% relative, against the upstream step's -8.0%"));
        let e = Experiment {
            control_baseline: Some("{}".into()),
            ..experiment()
        };
        assert!(watch_chart_caption(&e).ends_with(
            "day by day (the step's own rate; it is judged against the upstream step's)"
        ));
        assert!(watch_chart_caption(&experiment()).ends_with("day by day"));
    }

    #[test]
    fn the_baseline_record_says_how_soon_conversions_came() {
        use crate::stats::Counts;
        let counts = [Counts::new(1000, 200); 7];
        let early = crate::lifecycle::EarlyBaseline {
            window: std::time::Duration::from_secs(3600),
            counts: [Counts::new(1000, 142); 7],
        };
        assert_eq!(
            baseline_fetched_with_early(&counts, &early),
            "baseline fetched; 71% of its conversions came within 1 hour (the early looks' window)"
        );
        let none = [Counts::new(10, 0); 7];
        assert!(baseline_fetched_with_early(&none, &early).contains("none of its conversions"));
    }

    #[test]
    fn durations_read_as_people_write_them() {
        let d = |s| human_duration(std::time::Duration::from_secs(s));
        assert_eq!(d(14 * 86_400), "14 days");
        assert_eq!(d(86_400), "1 day");
        assert_eq!(d(5 * 3_600), "5 hours");
        assert_eq!(d(90), "90 seconds");
        assert_eq!(d(120), "2 minutes");
    }

    #[test]
    fn terminal_table() {
        insta::assert_snapshot!(funnel_table(&report()), @"
        funnel signup
          step                                 entries    went on     rate     95% interval
          Visited homepage → Viewed pricing      10000       4500    45.0%      44.0%–46.0%
        ▶ Viewed pricing → Started signup         4500       1125    25.0%      23.7%–26.3%
          Started signup → Completed signup       1125        675    60.0%      57.1%–62.8%
          overall (the product of the step rates): 6.8%
          An entry is a person's first visit to a step on a UTC day; it went on if that person reached the next step within the conversion window after it.
          would work on: Viewed pricing → Started signup converts 25.0% (95% CI 23.7–26.3%), the lowest upper bound among 3 judged steps
        ");
    }

    #[test]
    fn telegram_proposal_is_escaped_html() {
        let msg = proposal_message(
            &experiment(),
            &report(),
            "+1 −0 lines in site/pricing.html",
            &thresholds(),
            Duration::from_secs(900),
        );
        assert!(msg.contains("&lt;b&gt;bold&lt;/b&gt; &amp; clear"));
        insta::assert_snapshot!(msg, @r#"
        <b>funnelfix proposal #3</b> · funnel <b>signup</b>
        Step <b>Viewed pricing → Started signup</b>: 25.0% (1125 of 4500 daily entries went on, 95% CI 23.7%–26.3%)

        <b>Pricing: &lt;b&gt;bold&lt;/b&gt; &amp; clear CTA</b>
        People do not see a next step.

        Change: +1 −0 lines in site/pricing.html
        PR: <a href="https://github.com/acme/website/pull/12">https://github.com/acme/website/pull/12</a>

        If merged, it is watched for 14 days and reverted if the rate drops by more than 10.0% with 95.0% confidence.
        "#);
    }

    #[test]
    fn the_proposal_shows_the_changed_lines_before_and_after() {
        let e = Experiment {
            diff: Some(
                "--- a/site/pricing.html\n+++ b/site/pricing.html\n@@ -5,3 +5,3 @@\n   <h1>Pricing</h1>\n-  <footer><a href=\"/signup\">sign up</a></footer>\n+  <footer><a class=\"cta\" href=\"/signup\">Start your free trial</a></footer>\n </body>\n"
                    .into(),
            ),
            ..experiment()
        };
        let msg = proposal_message(
            &e,
            &report(),
            "+1 −1 lines in site/pricing.html",
            &thresholds(),
            Duration::from_secs(900),
        );
        insta::assert_snapshot!(msg, @r#"
        <b>funnelfix proposal #3</b> · funnel <b>signup</b>
        Step <b>Viewed pricing → Started signup</b>: 25.0% (1125 of 4500 daily entries went on, 95% CI 23.7%–26.3%)

        <b>Pricing: &lt;b&gt;bold&lt;/b&gt; &amp; clear CTA</b>
        People do not see a next step.

        Change: +1 −1 lines in site/pricing.html
        <pre>− &lt;footer&gt;&lt;a href="/signup"&gt;sign up&lt;/a&gt;&lt;/footer&gt;
        + &lt;footer&gt;&lt;a class="cta" href="/signup"&gt;Start your free trial&lt;/a&gt;&lt;/footer&gt;</pre>
        PR: <a href="https://github.com/acme/website/pull/12">https://github.com/acme/website/pull/12</a>

        If merged, it is watched for 14 days and reverted if the rate drops by more than 10.0% with 95.0% confidence.
        "#);
        let long = format!("+{}\n", "x".repeat(500)).repeat(20);
        let excerpt = change_excerpt(&long);
        assert!(excerpt.contains("… 12 more"), "{excerpt}");
        assert!(excerpt.chars().count() < 1000);
    }

    #[test]
    fn the_proposal_shows_ci_and_the_preview() {
        let e = Experiment {
            diff: Some(
                "--- a/site/pricing.html\n+++ b/site/pricing.html\n@@ -5 +5 @@\n-  <a href=\"/signup\">sign up</a>\n+  <a class=\"cta\" href=\"/signup\">Start your free trial</a>\n"
                    .into(),
            ),
            head_checks: Some(r#"{"Pending":{"names":["build","e2e <chrome>"]}}"#.into()),
            preview_url: Some("https://website-git-funnelfix-acme.vercel.app/?a=1&b=2".into()),
            ..experiment()
        };
        let msg = proposal_message(
            &e,
            &report(),
            "+1 −1 lines in site/pricing.html",
            &thresholds(),
            Duration::from_secs(900),
        );
        insta::assert_snapshot!(msg, @r#"
        <b>funnelfix proposal #3</b> · funnel <b>signup</b>
        Step <b>Viewed pricing → Started signup</b>: 25.0% (1125 of 4500 daily entries went on, 95% CI 23.7%–26.3%)

        <b>Pricing: &lt;b&gt;bold&lt;/b&gt; &amp; clear CTA</b>
        People do not see a next step.

        Change: +1 −1 lines in site/pricing.html
        <pre>− &lt;a href="/signup"&gt;sign up&lt;/a&gt;
        + &lt;a class="cta" href="/signup"&gt;Start your free trial&lt;/a&gt;</pre>
        PR: <a href="https://github.com/acme/website/pull/12">https://github.com/acme/website/pull/12</a>
        CI: ⏳ still running after 15 minutes (build, e2e &lt;chrome&gt;); read again before merging
        Preview: <a href="https://website-git-funnelfix-acme.vercel.app/?a=1&amp;b=2">https://website-git-funnelfix-acme.vercel.app/?a=1&amp;b=2</a>

        If merged, it is watched for 14 days and reverted if the rate drops by more than 10.0% with 95.0% confidence.
        "#);
        let passed = Experiment {
            head_checks: Some(r#""Passed""#.into()),
            preview_url: None,
            ..e.clone()
        };
        assert!(head_lines(&passed, Duration::ZERO).starts_with("CI: ✅ checks passed\n"));
        let none = Experiment {
            head_checks: Some(r#""None""#.into()),
            ..passed
        };
        assert_eq!(
            head_lines(&none, Duration::ZERO),
            "CI: none on this repository\n"
        );
    }

    #[test]
    fn pr_body_states_the_rule_and_carries_the_marker() {
        let config =
            crate::config::parse(include_str!("../config/funnelfix.example.toml")).expect("config");
        let body = pr_body(&PrBody {
            experiment_id: 3,
            report: &report(),
            step: 1,
            hypothesis: "People do not see a next step.",
            diff: "--- a/site/pricing.html\n+++ b/site/pricing.html\n@@ -1 +1,2 @@\n <h1>Pricing</h1>\n+<a class=\"cta\">Start</a>",
            config: &config,
        });
        insta::assert_snapshot!(body, @r#"
        funnelfix proposes one change to the step **Viewed pricing → Started signup** of the funnel `signup`.

        ## Why this step

        25.0% of 4500 entries at this step went on (1125 did; 95% interval 23.7%–26.3%).

        | step | entries | went on | rate | 95% interval |
        |---|---:|---:|---:|---:|
        | Visited homepage → Viewed pricing | 10000 | 4500 | 45.0% | 44.0%–46.0% |
        | **Viewed pricing → Started signup** | 4500 | 1125 | 25.0% | 23.7%–26.3% |
        | Started signup → Completed signup | 1125 | 675 | 60.0% | 57.1%–62.8% |

        An *entry* is a person's first visit to a step on a UTC day; it went on if that person reached the next step within the conversion window after it.

        ## Hypothesis

        People do not see a next step.

        ## What changed

        ```diff
        --- a/site/pricing.html
        +++ b/site/pricing.html
        @@ -1 +1,2 @@
         <h1>Pricing</h1>
        +<a class="cta">Start</a>
        ```

        ## What happens next

        - An approver decides in Telegram: Approve merges exactly this head; Reject closes this PR.
        - Unanswered after 3 days, it is closed.
        - After the merge funnelfix watches the entries at this step in the 14 days after it, against the 28 days before it (the same rate as above, weekday-standardised, skipping the deploy hour). It reverts the change at the first look where an always-valid test (mSPRT) is confident at 95.0% that the rate fell (or, at the last look, a fixed-horizon z-test gives z ≤ −2.5), the rate is down by at least 10.0% relative, and at least 30 conversions were seen since the merge. Otherwise it keeps the change and reports the measured lift.

        <!-- funnelfix:experiment=3 -->
        "#);
    }

    #[test]
    fn verdicts() {
        insta::assert_snapshot!(verdict_kept(&assessment(0.12)), @"kept: +12.0% relative change (always-valid interval +4.0% to +20.0%), 28.0% vs 25.0% expected");
        insta::assert_snapshot!(verdict_reverted(&assessment(-0.3), 0.0123), @"reverted: -30.0% relative change (always-valid p = 0.0123), 17.5% vs 25.0% expected, 412 conversions");
        insta::assert_snapshot!(watch_line(&assessment(-0.05)), @"rate 23.8% vs expected 25.0% (-5.0% relative), Λ = 31.40, 412 conversions since the merge");
    }

    #[test]
    fn revert_pr_body() {
        let mut e = experiment();
        e.state = State::Reverting;
        let a = assessment(-0.3);
        insta::assert_snapshot!(super::revert_pr_body(&e, &verdict_reverted(&a, 0.01), &a, &thresholds()), @"
        funnelfix reverts PR #12 (experiment 3) on the step **Viewed pricing → Started signup**.

        **reverted: -30.0% relative change (always-valid p = 0.0100), 17.5% vs 25.0% expected, 412 conversions**

        | | rate |
        |---|---:|
        | expected from the baseline (weekday-weighted) | 25.0% |
        | since the merge | 17.5% |

        Conversions since the merge: 412. Λ = 31.40 (threshold 20).

        Rule: After the merge funnelfix watches the entries at this step in the 14 days after it, against the 28 days before it (the same rate as above, weekday-standardised, skipping the deploy hour). It reverts the change at the first look where an always-valid test (mSPRT) is confident at 95.0% that the rate fell (or, at the last look, a fixed-horizon z-test gives z ≤ −2.5), the rate is down by at least 10.0% relative, and at least 30 conversions were seen since the merge. Otherwise it keeps the change and reports the measured lift.

        <!-- funnelfix:experiment=3 -->
        ");
    }

    #[test]
    fn status_and_notes() {
        let e = experiment();
        insta::assert_snapshot!(status_line(&e), @"#3 signup · Viewed pricing → Started signup · awaiting_approval · PR #12 · rate before 25.0%");
        insta::assert_snapshot!(head_moved_note(&e), @"⚠️ Not merged: the branch of PR #12 moved after the proposal, so it is not what was approved. funnelfix reads the new head and asks again once its checks pass.");
        insta::assert_snapshot!(expired_note(&e, std::time::Duration::from_secs(72 * 3600)), @"⌛ Proposal #3 got no answer within 3 days: PR #12 closed.");
        insta::assert_snapshot!(failed_note("signup", "Viewed pricing", &["attempt 1: edit 1: \"site/x.html\" is not a file of this step".into()]), @r#"
        ❌ No change proposed for <b>signup</b> / <b>Viewed pricing</b>: the model's edits were refused.
        • attempt 1: edit 1: "site/x.html" is not a file of this step
        "#);
        insta::assert_snapshot!(revert_approval_note(&e, "reverted: -30.0% <x>", "https://github.com/a/b/pull/13"), @"
        ⚠️ Experiment #3 on <b>Viewed pricing → Started signup</b> should be reverted: reverted: -30.0% &lt;x&gt;. The revert PR is ready: https://github.com/a/b/pull/13
        Tap to merge it.
        ");
    }

    /// Evidence as the pure core reads it from rows: a demo video that goes
    /// with going on, mobile much worse, shallow scrolling, rage clicks,
    /// survey answers; web vitals not captured; one query failed.
    pub(crate) fn sample_evidence() -> Evidence {
        let mut e = Evidence::new("signup", "Viewed pricing", "Started signup");
        use crate::evidence::Kind;
        use serde_json::json;
        let read = |e: &mut Evidence, kind, rows| e.read(kind, &rows).expect("rows");
        read(
            &mut e,
            Kind::Actions,
            json!([
                ["", "", 4500, 1125],
                ["event", "demo video played", 900, 450],
                ["click", "Compare plans | yearly", 1200, 310],
                ["rageclick", "Choose monthly", 400, 20],
            ]),
        );
        read(
            &mut e,
            Kind::Segments,
            json!([
                ["$device_type", "Desktop", 2700, 855],
                ["$device_type", "Mobile", 1800, 270],
                ["visitor", "new", 3000, 750],
                ["visitor", "returning", 1500, 375],
            ]),
        );
        read(
            &mut e,
            Kind::Attention,
            json!([
                [0, 3375, 3000, 2100, 2500, 2800, 9.4],
                [1, 1125, 1100, 110, 300, 600, 41.0]
            ]),
        );
        read(&mut e, Kind::Speed, json!([[4500, 0, 0, 0, 0, 0, 0, 0]]));
        read(
            &mut e,
            Kind::Said,
            json!([[7, 1, [[1774600000, "Is there no <monthly> plan?", 0]]]]),
        );
        e.fail(
            Kind::Speed,
            "PostHog answered 504: The query timed out.".into(),
        );
        e
    }

    #[test]
    fn evidence_in_the_pr_body_and_the_chat() {
        let e = sample_evidence();
        insta::assert_snapshot!(evidence_markdown(&e), @r#"
        ## Evidence

        Evidence for Viewed pricing → Started signup from PostHog: 4500 daily entries, 25.0% went on.

        | part | finding |
        |---|---|
        | secondary actions | 900 entries (20.0% of the step's) sent the event “demo video played”: 50.0% (95% 46.7%–53.3%) went on, against 18.8% of the others (2.7×) |
        | secondary actions | 1200 entries (26.7% of the step's) clicked “Compare plans \| yearly”: 25.8% (95% 23.4%–28.4%) went on, against 24.7% of the others (1.0×, intervals overlap) |
        | segments | $device_type = “Mobile” is much worse: 40.0% of the step's entries, 15.0% (95% 13.4%–16.7%) went on, against 31.7% for the rest |
        | attention | 70.0% of the entries that left with a reading (3000) scrolled less than a quarter of the page, 83.3% less than half, 9 s on the page on average |
        | attention | 10.0% of the entries that went on with a reading (1100) scrolled less than a quarter of the page, 27.3% less than half, 41 s on the page on average |
        | frustration | 400 entries (8.9% of the step's) rage-clicked “Choose monthly”: 5.0% (95% 3.3%–7.6%) went on, against 27.0% of the others (0.2×) |
        | speed | not read: the query failed (PostHog answered 504: The query timed out.) |
        | what visitors said | 7 survey answers from this step's entries, 1 from entries that went on; the most recent: |
        | what visitors said | “Is there no &lt;monthly&gt; plan?” (2026-03-27, left) |
        "#);
        insta::assert_snapshot!(evidence_lines(&e), @"Evidence: $device_type Mobile: 40.0% of entries, 15.0% went on vs 31.7%; 900 sent the event “demo video played”: 50.0% went on vs 18.8% (2.7×); not read: speed");
        let msg = proposal_with(&e);
        assert!(msg.contains("Evidence: $device_type Mobile"), "{msg}");
        assert!(!msg.contains("<monthly>"));
        assert!(!msg.contains("For whom"), "{msg}");
    }

    /// The Telegram proposal of the sample experiment with evidence `e`.
    fn proposal_with(e: &Evidence) -> String {
        let mut r = report();
        r.evidence = Some(e.clone());
        proposal_message(
            &experiment(),
            &r,
            "site/pricing.html: 1 line added",
            &thresholds(),
            Duration::from_secs(900),
        )
    }

    #[test]
    fn a_proposal_for_one_segment_says_which_and_how_it_is_watched() {
        let mut e = sample_evidence();
        e.focus_on(500.0, 200, true);
        let f = e.focus.clone().expect("a focus");
        insta::assert_snapshot!(focus_sentence(&f), @"entries with $device_type = “Mobile” (40.0% of the step's), 15.0% went on against 31.7% for the rest; about 120 of their conversions are expected during the watch, enough to watch them alone; the change is watched on these entries only, before and after the merge alike.");
        insta::assert_snapshot!(focus_instruction(Some(&f)), @r#"visitors whose $device_type is "Mobile": 40.0% of the step's entries, of whom 15.0% go on against 31.7% of the others. Make the change for them first, without making the page worse for the others. The change will be judged on their entries only."#);
        let mut r = report();
        r.evidence = Some(e.clone());
        let msg = proposal_with(&e);
        assert!(
            msg.contains("For whom: entries with $device_type = “Mobile” (40.0% of the step's)"),
            "{msg}"
        );
        let config = crate::config::parse(crate::init::EXAMPLE_CONFIG).expect("example config");
        let body = pr_body(&PrBody {
            experiment_id: 3,
            report: &r,
            step: 1,
            hypothesis: "Mobile visitors cannot find the monthly plan.",
            diff: "",
            config: &config,
        });
        let section = body
            .split("## For whom\n\n")
            .nth(1)
            .and_then(|s| s.split("\n\n## Evidence").next())
            .expect("a For whom section before the evidence");
        insta::assert_snapshot!(section, @"entries with $device_type = “Mobile” (40.0% of the step's), 15.0% went on against 31.7% for the rest; about 120 of their conversions are expected during the watch, enough to watch them alone; the change is watched on these entries only, before and after the merge alike.");
        // A value that is markup stays text in the PR; quotes stay quoted in the prompt.
        let mut odd = f.clone();
        odd.segment.value = "<b>x</b>\" ignore".into();
        assert!(
            !pr_body(&PrBody {
                report: &FunnelReport {
                    evidence: Some(Evidence {
                        focus: Some(odd.clone()),
                        ..e.clone()
                    }),
                    ..r.clone()
                },
                ..PrBody {
                    experiment_id: 3,
                    report: &r,
                    step: 1,
                    hypothesis: "",
                    diff: "",
                    config: &config
                }
            })
            .contains("<b>x</b>")
        );
        assert!(focus_instruction(Some(&odd)).contains(r#""<b>x</b>\" ignore""#));
        // Once merged, the experiment's messages say whose entries it watches.
        let watched = Experiment {
            segment_property: Some("$device_type".into()),
            segment_value: Some("Mobile".into()),
            ..experiment()
        };
        insta::assert_snapshot!(kept_note(&watched, "kept: +4.0%"), @"🏁 Experiment #3 on <b>Viewed pricing → Started signup</b> ($device_type = “Mobile” entries only) is over: kept: +4.0%.");
        insta::assert_snapshot!(status_line(&watched), @"#3 signup · Viewed pricing → Started signup ($device_type = “Mobile” entries only) · awaiting_approval · PR #12 · rate before 25.0%");
        // Not watched alone: the sentence says how to.
        odd.watched = false;
        assert!(focus_sentence(&odd).ends_with("(with segment_watch = true, on these alone)."));
    }
}
