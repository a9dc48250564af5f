//! Every sentence funnelfix shows a person, in one pure module so a reviewer
//! sees the exact wording in the snapshot tests: the terminal table, the PR
//! bodies, and the Telegram messages (HTML, escaped).

use std::fmt::Write;

use chrono::{DateTime, Utc};

use crate::config::{Config, Thresholds};
use crate::funnel::FunnelReport;
use crate::stats::Assessment;
use crate::store::Experiment;

/// A hidden line in the PR body that ties the PR to its experiment.
pub fn pr_marker(experiment_id: i64) -> String {
    format!("<!-- funnelfix:experiment={experiment_id} -->")
}

pub fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

fn signed_pct(x: f64) -> String {
    format!("{:+.1}%", x * 100.0)
}

pub fn human_duration(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// HTML for Telegram: only `&`, `<` and `>` need escaping.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

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
        "step", "entrants", "reached", "rate", "95% interval"
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
    let _ = writeln!(out, "  overall conversion: {}", pct(report.overall));
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
        "| step | entrants | reached next | rate | 95% interval |\n|---|---:|---:|---:|---:|\n",
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
    out
}

/// The revert rule in words, with the configured numbers.
pub fn revert_rule(t: &Thresholds) -> String {
    format!(
        "After the merge funnelfix watches this step for {} against the {} before it \
         (weekday-standardised, skipping the deploy hour). It reverts the change at the first look where an \
         always-valid test (mSPRT) is confident at {} that the rate fell, the rate is down by at least {} \
         relative, and at least 30 conversions were seen since the merge. Otherwise it keeps the change \
         and reports the measured lift.",
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
         {rate} of {entrants} people went on ({converted} did; 95% interval {low}–{high}).\n\n\
         {table}\n\
         ## Hypothesis\n\n{hypothesis}\n\n\
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
) -> String {
    let s = &report.steps[e.step];
    let title = e.title.as_deref().unwrap_or("");
    let hypothesis = e.hypothesis.as_deref().unwrap_or("");
    let pr = e.pr_url.as_deref().unwrap_or("");
    format!(
        "<b>funnelfix proposal #{id}</b> · funnel <b>{funnel}</b>\n\
         Step <b>{step} → {next}</b>: {rate} ({converted}/{entrants}, 95% CI {low}–{high})\n\n\
         <b>{title}</b>\n{hypothesis}\n\n\
         Change: {summary}\n\
         PR: <a href=\"{pr}\">{pr}</a>\n\n\
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
        summary = escape(summary),
        pr = escape(pr),
        obs = human_duration(thresholds.observation),
        drop = pct(thresholds.max_relative_drop),
        conf = pct(1.0 - thresholds.false_revert_rate),
    )
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
        "⚠️ Not merged: the branch of PR #{} moved after the proposal, so it is not what was approved. Review it on GitHub.",
        e.pr_number.unwrap_or_default()
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
        "rate {} vs expected {} ({} relative), Λ = {:.2}, {} conversions since the merge",
        pct(a.p_post),
        pct(a.p_expected),
        signed_pct(a.relative_change),
        a.lambda,
        a.post_conversions
    )
}

pub fn verdict_kept(a: &Assessment) -> String {
    format!(
        "kept: {} relative change (always-valid interval {} to {}), {} vs {} expected",
        signed_pct(a.relative_change),
        signed_pct(a.relative_interval.0),
        signed_pct(a.relative_interval.1),
        pct(a.p_post),
        pct(a.p_expected),
    )
}

pub fn verdict_reverted(a: &Assessment, p_value: f64) -> String {
    format!(
        "reverted: {} relative change (always-valid p = {:.4}), {} vs {} expected, {} conversions",
        signed_pct(a.relative_change),
        p_value,
        pct(a.p_post),
        pct(a.p_expected),
        a.post_conversions
    )
}

pub fn kept_note(e: &Experiment, verdict: &str) -> String {
    format!(
        "🏁 Experiment #{} on <b>{} → {}</b> is over: {}.",
        e.id,
        escape(&e.step_name),
        escape(&e.next_step_name),
        escape(verdict)
    )
}

pub fn reverted_note(e: &Experiment, verdict: &str, revert_url: &str) -> String {
    format!(
        "↩️ Experiment #{} on <b>{} → {}</b>: {}. Revert: {}",
        e.id,
        escape(&e.step_name),
        escape(&e.next_step_name),
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
        "#{} {} · {} → {} · {}",
        e.id, e.funnel, e.step_name, e.next_step_name, e.state
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

pub fn help() -> &'static str {
    "/status: open experiments and their state\n\
     /funnel: the funnel table and chart\n\
     /pause: no new proposals (watching and reverting go on)\n\
     /resume: proposals again\n\
     /help: this list"
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(7)]
}
