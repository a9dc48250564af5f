//! The sequences real deployments meet, through the real adapters against
//! the twins: a person closing the revert PR, a tap Telegram will no longer
//! answer, a merge noticed late, a revert branch that moved, a PR that could
//! not be opened, a revert GitHub refuses; and a crash after every command
//! of a whole lifecycle; CI that runs, fails or never ends on the PR head,
//! and a preview deployment.

mod common;

use common::*;
use funnelfix::sandbox::github::{CheckRun, CommitStatus, PreviewDeployer, Workflow};

fn revert_approve() -> String {
    world::CONFIG_TEMPLATE.replace(
        "cooldown = \"28d\"",
        "cooldown = \"1d\"\nrevert = \"approve\"",
    )
}

/// Proposes HARMFUL, approves it, and watches until the revert is under way.
async fn until_reverting(ctx: &mut Ctx) {
    ctx.world.llm.script(vec![Reply::Content(proposal_json(
        "Pricing change",
        HARMFUL,
    ))]);
    assert!(matches!(
        ctx.propose().await,
        ProposeOutcome::Proposed { .. }
    ));
    ctx.press("Approve", APPROVER, CHAT_ID).await;
    for _ in 0..(17 * 4) {
        ctx.run_for(6 * HOUR, 6 * HOUR).await;
        if ctx.experiment().state != State::Observing {
            break;
        }
    }
    assert_eq!(ctx.experiment().state, State::Reverting);
}

fn revert_button(ctx: &Ctx) -> (i32, String) {
    let m = ctx
        .world
        .telegram
        .messages()
        .into_iter()
        .find(|m| {
            m.buttons
                .iter()
                .any(|(l, _)| l.contains("Merge the revert"))
        })
        .expect("the chat is asked to merge the revert");
    (m.message_id, m.buttons[0].1.clone())
}

/// Hole 1: with revert = "approve", a person closes the revert PR on GitHub.
#[tokio::test]
async fn a_revert_pr_closed_by_a_person_ends_the_experiment_and_frees_the_funnel() {
    let mut ctx = Ctx::with_config(&revert_approve()).await;
    until_reverting(&mut ctx).await;
    let revert_pr = ctx.experiment().revert_pr.expect("revert PR");
    ctx.world.github.close_by_human(revert_pr);
    ctx.monitor().await;
    let e = ctx.experiment();
    assert_eq!(e.state, State::KeptByPerson, "{:?}", e.verdict);
    assert!(e.state.is_final());
    assert!(
        ctx.messages()
            .iter()
            .any(|m| m.contains("revert PR was closed on GitHub")),
        "the chat is told"
    );
    // The change stays on main.
    assert!(
        ctx.world
            .github
            .file_on_branch("main", "site/pricing.html")
            .expect("page")
            .contains("fine-print")
    );
    // The funnel is free: after the cooldown a new proposal opens.
    ctx.world.advance(2 * DAY, HOUR);
    ctx.world
        .llm
        .script(vec![Reply::Content(proposal_json("Pricing CTA", HELPFUL))]);
    let outcome = ctx.propose().await;
    assert!(
        matches!(outcome, ProposeOutcome::Proposed { .. }),
        "{outcome:?}"
    );
    assert_eq!(ctx.app.store.open_experiments().expect("open").len(), 1);
}

/// Hole 2: the tap waited behind a long pass; Telegram refuses its answer.
#[tokio::test]
async fn a_tap_too_old_to_answer_still_merges() {
    let ctx = Ctx::new().await;
    ctx.world
        .llm
        .script(vec![Reply::Content(proposal_json("Pricing CTA", HELPFUL))]);
    ctx.propose().await;
    ctx.world
        .telegram
        .set_callback_answer_window(std::time::Duration::ZERO);
    ctx.press("Approve", APPROVER, CHAT_ID).await;
    let e = ctx.experiment();
    assert_eq!(e.state, State::Merged);
    assert_eq!(e.decided_by, Some(APPROVER));
    assert_eq!(ctx.world.github.pulls()[0].state, PullState::Merged);
    assert!(
        ctx.world.telegram.callback_answers().is_empty(),
        "Telegram refused the answer"
    );
    // The proposal still says who decided.
    let proposal = ctx
        .world
        .telegram
        .messages()
        .into_iter()
        .find(|m| m.text.contains("funnelfix proposal"))
        .expect("proposal");
    assert!(proposal.text.contains("Approved"), "{}", proposal.text);
    assert!(proposal.buttons.is_empty());
}

/// Hole 4: a person merges on GitHub; the daemon notices hours later.
#[tokio::test]
async fn a_merge_noticed_late_keeps_githubs_time_and_sha() {
    let mut ctx = Ctx::new().await;
    ctx.world
        .llm
        .script(vec![Reply::Content(proposal_json("Pricing CTA", HELPFUL))]);
    ctx.propose().await;
    let number = ctx.experiment().pr_number.expect("PR");
    let merged_at = ctx.world.now();
    let sha = ctx.world.github.merge_by_human(number);
    // The daemon was down for five hours.
    ctx.world.advance(5 * HOUR, HOUR);
    ctx.monitor().await;
    let e = ctx.experiment();
    assert_eq!(e.state, State::Merged);
    assert_eq!(e.merge_sha.as_deref(), Some(sha.as_str()));
    let at = e.merged_at.expect("merged_at");
    assert!(
        (at - merged_at).num_seconds().abs() <= 1,
        "merged_at {at} is GitHub's {merged_at}, not when it was noticed"
    );
    // The baseline ends at the real merge: no post-merge traffic in it.
    ctx.monitor().await;
    assert_eq!(ctx.experiment().state, State::Observing);
    let annotation = ctx.world.posthog.annotations();
    assert!(!annotation.is_empty());
}

/// Hole 5: the revert PR's branch moves between the question and the tap.
#[tokio::test]
async fn a_revert_tap_merges_only_the_head_that_was_shown() {
    let mut ctx = Ctx::with_config(&revert_approve()).await;
    until_reverting(&mut ctx).await;
    let (message_id, data) = revert_button(&ctx);
    let branch = format!("funnelfix/revert-{}", ctx.experiment().id);
    ctx.world
        .github
        .push_to_branch(&branch, "site/pricing.html", "<p>someone else's page</p>\n");
    ctx.world
        .telegram
        .press_button(CHAT_ID, APPROVER, message_id, &data);
    ctx.deliver_updates().await;
    let e = ctx.experiment();
    assert_eq!(e.state, State::Reverting);
    assert_eq!(
        ctx.world.github.merge_requests(),
        2,
        "the change, and one refused attempt pinned to the shown head"
    );
    assert!(
        ctx.world
            .github
            .file_on_branch("main", "site/pricing.html")
            .expect("page")
            .contains("fine-print"),
        "nothing unseen reached main"
    );
    assert!(
        ctx.messages()
            .iter()
            .any(|m| m.contains("branch moved after it was opened"))
    );
}

/// Hole 6: the PR could not be opened at the propose run.
#[tokio::test]
async fn a_pr_that_could_not_be_opened_is_opened_on_the_next_monitor_tick() {
    let mut ctx = Ctx::new().await;
    ctx.world
        .llm
        .script(vec![Reply::Content(proposal_json("Pricing CTA", HELPFUL))]);
    ctx.world.github.fail_next("POST /pulls", 502, 1);
    let mut out = ctx.app.propose_pass(false).await;
    assert!(out.remove(0).1.is_err(), "the PR creation failed");
    assert_eq!(ctx.experiment().state, State::Proposed);
    ctx.world.advance(HOUR, HOUR);
    ctx.monitor().await;
    let e = ctx.experiment();
    assert_eq!(e.state, State::AwaitingApproval);
    assert!(e.message_id.is_some(), "the chat was asked");
    assert_eq!(ctx.world.github.pulls().len(), 1);
    assert_eq!(
        ctx.world.llm.requests().len(),
        1,
        "the model was asked once"
    );
}

/// Hole 10: merge mode, GitHub refuses the revert merge for its own reason.
#[tokio::test]
async fn a_refused_revert_merge_is_reported_with_githubs_reason() {
    let mut ctx = Ctx::new().await;
    ctx.world.llm.script(vec![Reply::Content(proposal_json(
        "Pricing change",
        HARMFUL,
    ))]);
    ctx.propose().await;
    ctx.press("Approve", APPROVER, CHAT_ID).await;
    ctx.world.github.fail_next("PUT /merge", 405, 1);
    for _ in 0..(17 * 4) {
        ctx.run_for(6 * HOUR, 6 * HOUR).await;
        if ctx.experiment().state != State::Observing {
            break;
        }
    }
    let e = ctx.experiment();
    assert_eq!(e.state, State::Reverting);
    let told: Vec<String> = ctx
        .messages()
        .into_iter()
        .filter(|m| m.contains("should be reverted"))
        .collect();
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0].contains("Pull Request is not mergeable"),
        "{}",
        told[0]
    );
    assert!(!told[0].contains("changed by someone"), "{}", told[0]);
    // A person merges it on GitHub: the experiment ends as reverted.
    ctx.world
        .github
        .merge_by_human(e.revert_pr.expect("revert PR"));
    ctx.run_for(HOUR, HOUR).await;
    assert_eq!(ctx.experiment().state, State::Reverted);
}

/// Runs propose → approve → merge → watch → revert on a world where the
/// app stops right after its `crash_after`-th command (none: never) and is
/// restarted.
async fn lifecycle_with_crash(crash_after: Option<u64>) -> Ctx {
    let mut ctx = Ctx::new().await;
    ctx.world.llm.script(vec![Reply::Content(proposal_json(
        "Pricing change",
        HARMFUL,
    ))]);
    if let Some(n) = crash_after {
        ctx.app.crash_after(n);
    }
    let restart_if_crashed = |ctx: &mut Ctx| {
        if ctx.app.crashed() {
            ctx.restart();
        }
    };
    let _ = ctx.app.propose_pass(false).await;
    restart_if_crashed(&mut ctx);
    let mut tapped = false;
    for _ in 0..(17 * 4) {
        let e = ctx.experiment();
        if e.state.is_final() {
            break;
        }
        if !tapped && let Some(message) = e.message_id {
            let data = format!("a:{}:{}", e.id, e.nonce);
            let message = message as i32;
            ctx.world
                .telegram
                .press_button(CHAT_ID, APPROVER, message, &data);
            tapped = true;
            let _ = ctx.app.poll_once(0).await;
            restart_if_crashed(&mut ctx);
        }
        ctx.world.advance(6 * HOUR, HOUR);
        let _ = ctx.app.monitor_pass().await;
        restart_if_crashed(&mut ctx);
    }
    // The next tick after the end: what the last transition asked is done.
    let _ = ctx.app.monitor_pass().await;
    ctx
}

/// A crash right after each command of a whole lifecycle, then a restart:
/// every run ends reverted with exactly 2 PRs, 2 merges, one proposal
/// message, one revert message and one watch chart.
#[tokio::test]
async fn a_crash_after_any_command_changes_nothing_the_world_sees() {
    let clean = lifecycle_with_crash(None).await;
    assert_eq!(clean.experiment().state, State::Reverted);
    let total = clean.app.commands_done();
    assert!(total >= 15, "a whole lifecycle runs {total} commands");
    eprintln!("{total} crash points");
    for n in 1..=total {
        let ctx = lifecycle_with_crash(Some(n)).await;
        let e = ctx.experiment();
        assert_eq!(e.state, State::Reverted, "crash after command {n}");
        let pulls = ctx.world.github.pulls();
        assert_eq!(pulls.len(), 2, "crash after command {n}: {pulls:?}");
        assert!(pulls.iter().all(|p| p.state == PullState::Merged));
        assert_eq!(ctx.world.github.merge_requests(), 2, "crash after {n}");
        let messages = ctx.world.telegram.messages();
        let proposals = messages
            .iter()
            .filter(|m| m.text.contains("funnelfix proposal"))
            .count();
        let reverts = messages.iter().filter(|m| m.text.starts_with("↩️")).count();
        let charts = messages
            .iter()
            .filter(|m| m.is_photo && m.text.contains("the watch, day by day"))
            .count();
        assert_eq!(
            (proposals, reverts, charts),
            (1, 1, 1),
            "crash after command {n}"
        );
    }
}

fn check_run(name: &str, status: &str, conclusion: Option<&str>) -> CheckRun {
    CheckRun {
        name: name.into(),
        status: status.into(),
        conclusion: conclusion.map(str::to_string),
        html_url: format!("https://ci.acme.test/{name}"),
        summary: None,
    }
}

/// Approve on a phone merges nothing while CI is red or still running on
/// the head, and merges once it is green.
#[tokio::test]
async fn a_head_whose_checks_failed_or_still_run_is_not_merged() {
    let ctx = Ctx::new().await;
    ctx.world
        .llm
        .script(vec![Reply::Content(proposal_json("Pricing CTA", HELPFUL))]);
    ctx.propose().await;
    let head = ctx.experiment().head_sha.expect("head");
    ctx.world
        .github
        .set_check_run(&head, check_run("build", "completed", Some("failure")));
    ctx.press("Approve", APPROVER, CHAT_ID).await;
    assert_eq!(ctx.experiment().state, State::AwaitingApproval);
    assert_eq!(
        ctx.world.github.merge_requests(),
        0,
        "a red head is never merged"
    );
    assert!(
        ctx.messages()
            .iter()
            .any(|m| m.contains("<b>build</b> failed") && m.contains("https://ci.acme.test/build")),
        "the chat is told which check failed"
    );
    // Re-run: still running, then green.
    ctx.world
        .github
        .set_check_run(&head, check_run("build", "in_progress", None));
    ctx.press("Approve", APPROVER, CHAT_ID).await;
    assert_eq!(ctx.world.github.merge_requests(), 0);
    assert!(ctx.messages().iter().any(|m| m.contains("still running")));
    ctx.world
        .github
        .set_check_run(&head, check_run("build", "completed", Some("success")));
    ctx.world.github.set_status(
        &head,
        CommitStatus {
            context: "vercel".into(),
            state: "success".into(),
            target_url: Some("https://preview.acme.test".into()),
        },
    );
    ctx.press("Approve", APPROVER, CHAT_ID).await;
    assert_eq!(ctx.experiment().state, State::Merged);
    assert_eq!(ctx.world.github.merge_requests(), 1);
}

const MINUTE: Duration = Duration::from_secs(60);

/// CI on every push that takes `takes` and fails when a page holds `fails_on`.
fn workflow(takes: Duration, fails_on: Option<&str>) -> Workflow {
    Workflow {
        name: "build".into(),
        takes,
        fails_on: fails_on.map(String::from),
    }
}

fn proposals(ctx: &Ctx) -> Vec<String> {
    ctx.messages()
        .into_iter()
        .filter(|m| m.contains("funnelfix proposal #") && m.contains("If merged"))
        .collect()
}

/// The proposal waits for CI on its head; once green it comes with the
/// preview linked in the chat and in the PR.
#[tokio::test]
async fn the_approver_is_asked_once_ci_passed_with_the_preview_linked() {
    let mut ctx = Ctx::new().await;
    ctx.world.github.run_ci_on_push(workflow(12 * MINUTE, None));
    ctx.world.github.deploy_previews(PreviewDeployer {
        domain: "preview.acme.test".into(),
        takes: 5 * MINUTE,
    });
    ctx.world
        .llm
        .script(vec![Reply::Content(proposal_json("Pricing CTA", HELPFUL))]);
    ctx.propose().await;
    assert!(proposals(&ctx).is_empty(), "not asked while CI runs");
    ctx.run_for(10 * MINUTE, 5 * MINUTE).await;
    assert!(proposals(&ctx).is_empty(), "still running after 10 minutes");
    ctx.run_for(5 * MINUTE, 5 * MINUTE).await;
    let asked = proposals(&ctx);
    assert_eq!(asked.len(), 1, "asked once CI passed: {asked:?}");
    let branch = ctx.experiment().branch.expect("branch").replace('/', "-");
    let preview = format!("https://{branch}.preview.acme.test");
    assert!(asked[0].contains("CI: ✅ checks passed"), "{}", asked[0]);
    assert!(
        asked[0].contains(&format!("Preview: <a href=\"{preview}\">")),
        "{}",
        asked[0]
    );
    let pr = &ctx.world.github.pulls()[0];
    assert!(
        pr.body.contains(&format!("**Preview:** {preview}")),
        "{}",
        pr.body
    );
    ctx.press("Approve", APPROVER, CHAT_ID).await;
    assert_eq!(ctx.experiment().state, State::Merged);
}

/// CI that never finishes delays the question by `checks_wait`, then the
/// approver is asked with the checks shown as running, and Approve still
/// merges only once they pass.
#[tokio::test]
async fn checks_that_run_too_long_are_shown_running_and_block_the_merge() {
    let mut ctx = Ctx::new().await;
    ctx.world.github.run_ci_on_push(workflow(3 * HOUR, None));
    ctx.world
        .llm
        .script(vec![Reply::Content(proposal_json("Pricing CTA", HELPFUL))]);
    ctx.propose().await;
    ctx.run_for(20 * MINUTE, 5 * MINUTE).await;
    let asked = proposals(&ctx);
    assert_eq!(asked.len(), 1);
    assert!(
        asked[0].contains("CI: ⏳ still running after 15 minutes (build)"),
        "{}",
        asked[0]
    );
    ctx.press("Approve", APPROVER, CHAT_ID).await;
    assert_eq!(ctx.world.github.merge_requests(), 0);
    ctx.run_for(3 * HOUR, HOUR).await;
    ctx.press("Approve", APPROVER, CHAT_ID).await;
    assert_eq!(ctx.experiment().state, State::Merged);
}

/// The sandbox config with `github.failed_checks = policy`.
fn failed_checks(policy: &str) -> String {
    world::CONFIG_TEMPLATE.replace(
        "max_changed_lines = 40",
        &format!("max_changed_lines = 40\nfailed_checks = \"{policy}\""),
    )
}

/// Proposes HELPFUL where CI fails on it, and runs an hour of ticks; the
/// model's later replies are `then`.
async fn propose_where_ci_fails(ctx: &mut Ctx, then: Vec<Reply>) {
    ctx.world
        .github
        .run_ci_on_push(workflow(5 * MINUTE, Some("free trial")));
    let mut replies = vec![Reply::Content(proposal_json("Pricing CTA", HELPFUL))];
    replies.extend(then);
    ctx.world.llm.script(replies);
    ctx.propose().await;
    ctx.run_for(HOUR, 5 * MINUTE).await;
}

/// A head whose CI fails is never offered: the chat is told which check
/// failed; a person pushes a fix and the fixed head is offered and merged.
#[tokio::test]
async fn a_red_head_is_never_offered_and_a_fixed_one_is() {
    let mut ctx = Ctx::new().await;
    propose_where_ci_fails(&mut ctx, Vec::new()).await;
    assert!(proposals(&ctx).is_empty(), "a red head is not offered");
    let told: Vec<String> = ctx
        .messages()
        .into_iter()
        .filter(|m| m.contains("<b>build</b> failed"))
        .collect();
    assert_eq!(told.len(), 1, "told once, not on every tick: {told:?}");
    assert!(told[0].contains("/actions/runs/"), "{}", told[0]);
    assert_eq!(ctx.experiment().state, State::AwaitingApproval);
    // A person fixes the branch.
    let e = ctx.experiment();
    let branch = e.branch.expect("branch");
    let fixed = ctx.world.github.push_to_branch(
        &branch,
        "site/pricing.html",
        &world::PRICING_HTML.replace("sign up", "Start now"),
    );
    ctx.run_for(10 * MINUTE, 5 * MINUTE).await;
    assert_eq!(proposals(&ctx).len(), 1, "the fixed head is offered");
    assert_eq!(ctx.experiment().head_sha.as_deref(), Some(fixed.as_str()));
    ctx.press("Approve", APPROVER, CHAT_ID).await;
    assert_eq!(ctx.experiment().state, State::Merged);
    assert!(
        ctx.world
            .github
            .file_on_branch("main", "site/pricing.html")
            .expect("page")
            .contains("Start now")
    );
}

/// With `failed_checks = "close"` a red PR is closed and the funnel freed.
#[tokio::test]
async fn a_red_head_is_closed_when_configured() {
    let mut ctx = Ctx::with_config(&failed_checks("close")).await;
    propose_where_ci_fails(&mut ctx, Vec::new()).await;
    let e = ctx.experiment();
    assert_eq!(e.state, State::Failed, "{:?}", e.failure);
    assert_eq!(ctx.world.github.pulls()[0].state, PullState::Closed);
    assert!(
        !ctx.world
            .github
            .branches()
            .contains(&e.branch.expect("branch"))
    );
    assert!(
        ctx.messages()
            .iter()
            .any(|m| m.contains("<b>build</b> failed") && m.contains("PR is closed"))
    );
    assert_eq!(ctx.world.github.merge_requests(), 0);
}

/// With `failed_checks = "fix"` the model gets the failed check's report
/// and one chance to fix the change on the same branch; the fixed head is
/// offered once its CI passes, and merged.
#[tokio::test]
async fn a_red_head_is_fixed_by_the_model_on_the_same_branch() {
    let mut ctx = Ctx::with_config(&failed_checks("fix")).await;
    let fix = serde_json::json!({
        "title": "Say start now instead of free trial",
        "hypothesis": "The copy test forbids the phrase.",
        "edits": [{"path": "site/pricing.html", "search": "Start your free trial",
                   "replace": "Start now"}],
    });
    propose_where_ci_fails(&mut ctx, vec![Reply::Content(fix.to_string())]).await;
    let asked = ctx.world.llm.requests();
    let fix_request = asked.last().expect("the model was asked for a fix");
    assert!(
        fix_request.body.contains("must not contain")
            && fix_request.body.contains("+  <a class=\\\"cta\\\""),
        "the report and the change are quoted: {}",
        fix_request.body
    );
    assert!(
        ctx.messages()
            .iter()
            .any(|m| m.contains("asked once for a fix")),
        "the chat is told"
    );
    let asked = proposals(&ctx);
    assert_eq!(
        asked.len(),
        1,
        "the fixed head is offered: {:?}",
        ctx.messages()
    );
    assert!(asked[0].contains("CI: ✅ checks passed"), "{}", asked[0]);
    assert!(asked[0].contains("Start now"), "{}", asked[0]);
    ctx.press("Approve", APPROVER, CHAT_ID).await;
    assert_eq!(ctx.experiment().state, State::Merged);
    let page = ctx
        .world
        .github
        .file_on_branch("main", "site/pricing.html")
        .expect("page");
    assert!(
        page.contains("Start now") && !page.contains("free trial"),
        "{page}"
    );
}

/// A person pushes to the PR's branch after the approver was asked: Approve
/// merges nothing unseen; the new head is offered afresh with its own diff
/// once its CI passes, and that one merges.
#[tokio::test]
async fn a_branch_moved_after_the_ask_is_offered_again_with_its_new_diff() {
    let mut ctx = Ctx::new().await;
    ctx.world.github.run_ci_on_push(workflow(5 * MINUTE, None));
    ctx.world
        .llm
        .script(vec![Reply::Content(proposal_json("Pricing CTA", HELPFUL))]);
    ctx.propose().await;
    ctx.run_for(10 * MINUTE, 5 * MINUTE).await;
    let first = ctx.experiment();
    let first_message = first.message_id.expect("asked once CI passed");
    let branch = first.branch.expect("branch");
    let page = ctx
        .world
        .github
        .file_on_branch(&branch, "site/pricing.html")
        .expect("page");
    let pushed = ctx.world.github.push_to_branch(
        &branch,
        "site/pricing.html",
        &page.replace("Start your free trial", "Try it free for 30 days"),
    );
    ctx.press("Approve", APPROVER, CHAT_ID).await;
    assert_eq!(ctx.world.github.merge_requests(), 1, "one refused attempt");
    assert_eq!(ctx.experiment().state, State::AwaitingApproval);
    let edited = ctx
        .world
        .telegram
        .messages()
        .into_iter()
        .find(|m| m.message_id == first_message as i32)
        .expect("first proposal");
    assert!(edited.text.contains("branch moved"), "{}", edited.text);
    assert!(edited.buttons.is_empty(), "the old buttons are gone");
    ctx.run_for(10 * MINUTE, 5 * MINUTE).await;
    let again = ctx.experiment();
    assert_eq!(again.head_sha.as_deref(), Some(pushed.as_str()));
    assert_ne!(again.message_id, Some(first_message), "asked again");
    assert!(
        again
            .diff
            .as_deref()
            .unwrap_or("")
            .contains("Try it free for 30 days"),
        "the new proposal shows the change as it now is"
    );
    ctx.press("Approve", APPROVER, CHAT_ID).await;
    assert_eq!(ctx.experiment().state, State::Merged);
    assert!(
        ctx.world
            .github
            .file_on_branch("main", "site/pricing.html")
            .expect("page")
            .contains("Try it free for 30 days")
    );
}
