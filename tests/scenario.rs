//! End-to-end scenarios: the real `App` through the real adapters (reqwest,
//! octocrab, teloxide) against the sandbox twins, with a simulated site whose
//! conversion depends on the pages on the base branch, and a hand-moved clock.

mod common;

use common::*;
use funnelfix::sandbox::site::Effect;

#[tokio::test]
async fn a_proposal_opens_one_pr_touching_only_the_step_page() {
    let ctx = Ctx::new().await;
    ctx.world.llm.script(vec![Reply::Content(proposal_json(
        "Pricing: a clear call to action",
        HELPFUL,
    ))]);
    let ProposeOutcome::Proposed { experiment, .. } = ctx.propose().await else {
        panic!("expected a proposal");
    };
    let e = ctx.experiment();
    assert_eq!(e.id, experiment);
    assert_eq!(e.state, State::AwaitingApproval);
    assert_eq!(e.step_name, "Viewed pricing");
    let pulls = ctx.world.github.pulls();
    assert_eq!(pulls.len(), 1);
    let branch = e.branch.clone().expect("branch");
    let page = ctx
        .world
        .github
        .file_on_branch(&branch, "site/pricing.html")
        .expect("page on branch");
    assert_eq!(
        page,
        world::PRICING_HTML.replace(
            "  <h1>Pricing</h1>\n",
            &format!("  <h1>Pricing</h1>\n  {HELPFUL}\n")
        )
    );
    for other in ["site/index.html", "site/signup.html", "README.md"] {
        assert_eq!(
            ctx.world.github.file_on_branch(&branch, other),
            ctx.world.github.file_on_branch("main", other),
            "{other} must not change"
        );
    }
    // The chat was asked, with buttons.
    let asked = ctx.world.telegram.messages();
    assert!(
        asked
            .iter()
            .any(|m| m.text.contains("Pricing: a clear call to action"))
    );

    // A second pass opens no second PR.
    assert!(matches!(ctx.propose().await, ProposeOutcome::Skipped(_)));
    assert_eq!(ctx.world.github.pulls().len(), 1);
}

#[tokio::test]
async fn approve_merges_the_proposed_head_and_a_double_tap_acts_once() {
    let ctx = Ctx::new().await;
    ctx.world
        .llm
        .script(vec![Reply::Content(proposal_json("Pricing CTA", HELPFUL))]);
    ctx.propose().await;
    let head = ctx.experiment().head_sha.expect("head");
    ctx.press("Approve", APPROVER, CHAT_ID).await;
    ctx.press("Approve", APPROVER, CHAT_ID).await;
    let e = ctx.experiment();
    assert_eq!(e.state, State::Merged);
    assert_eq!(e.decided_by, Some(APPROVER));
    let pulls = ctx.world.github.pulls();
    assert_eq!(pulls[0].state, PullState::Merged);
    assert_eq!(ctx.world.github.merge_requests(), 1, "one merge call");
    assert_eq!(ctx.world.github.merged_head(pulls[0].number), Some(head));
    assert!(
        ctx.world
            .github
            .file_on_branch("main", "site/pricing.html")
            .expect("page")
            .contains(HELPFUL)
    );
    let answers = ctx.world.telegram.callback_answers();
    assert_eq!(answers.len(), 2, "every tap is answered");
}

#[tokio::test]
async fn reject_closes_the_pr_and_deletes_its_branch() {
    let ctx = Ctx::new().await;
    ctx.world
        .llm
        .script(vec![Reply::Content(proposal_json("Pricing CTA", HELPFUL))]);
    ctx.propose().await;
    let branch = ctx.experiment().branch.expect("branch");
    ctx.press("Reject", APPROVER, CHAT_ID).await;
    assert_eq!(ctx.experiment().state, State::Rejected);
    assert_eq!(ctx.world.github.pulls()[0].state, PullState::Closed);
    assert_eq!(
        ctx.world
            .github
            .file_on_branch(&branch, "site/pricing.html"),
        None
    );
}

#[tokio::test]
async fn strangers_and_other_chats_cannot_decide() {
    let ctx = Ctx::new().await;
    ctx.world
        .llm
        .script(vec![Reply::Content(proposal_json("Pricing CTA", HELPFUL))]);
    ctx.propose().await;
    ctx.press("Approve", 999, CHAT_ID).await;
    ctx.press("Approve", APPROVER, -2002).await;
    assert_eq!(ctx.experiment().state, State::AwaitingApproval);
    assert_eq!(ctx.world.github.merge_requests(), 0);
    let answers = ctx.world.telegram.callback_answers();
    assert_eq!(answers.len(), 2);
    assert!(
        answers.iter().all(|a| a.1.contains("cannot decide")),
        "{answers:?}"
    );
    let refused = ctx
        .app
        .store
        .audit_log(None)
        .expect("audit")
        .into_iter()
        .filter(|a| a.kind == "refused_tap")
        .count();
    assert_eq!(refused, 2);
}

#[tokio::test]
async fn an_unanswered_proposal_expires() {
    let mut ctx = Ctx::new().await;
    ctx.world
        .llm
        .script(vec![Reply::Content(proposal_json("Pricing CTA", HELPFUL))]);
    ctx.propose().await;
    ctx.run_for(Duration::from_secs(71 * 3600), 6 * HOUR).await;
    assert_eq!(ctx.experiment().state, State::AwaitingApproval);
    ctx.run_for(2 * HOUR, HOUR).await;
    assert_eq!(ctx.experiment().state, State::Expired);
    assert_eq!(ctx.world.github.pulls()[0].state, PullState::Closed);
    assert!(ctx.messages().iter().any(|m| m.contains("got no answer")));
}

#[tokio::test]
async fn an_approval_after_the_timeout_merges_nothing() {
    let mut ctx = Ctx::new().await;
    ctx.world
        .llm
        .script(vec![Reply::Content(proposal_json("Pricing CTA", HELPFUL))]);
    ctx.propose().await;
    // The daemon was down past the deadline; the tap is the first thing it sees.
    ctx.world.advance(Duration::from_secs(73 * 3600), HOUR);
    ctx.press("Approve", APPROVER, CHAT_ID).await;
    assert_eq!(ctx.experiment().state, State::AwaitingApproval);
    assert_eq!(ctx.world.github.merge_requests(), 0);
    assert!(
        ctx.world
            .telegram
            .callback_answers()
            .iter()
            .any(|(_, t)| t == "Too late: this proposal expired after 3 days."),
        "{:?}",
        ctx.world.telegram.callback_answers()
    );
    ctx.monitor().await;
    assert_eq!(ctx.experiment().state, State::Expired);
    assert_eq!(ctx.world.github.pulls()[0].state, PullState::Closed);
}

#[tokio::test]
async fn a_moved_branch_is_not_merged() {
    let ctx = Ctx::new().await;
    ctx.world
        .llm
        .script(vec![Reply::Content(proposal_json("Pricing CTA", HELPFUL))]);
    ctx.propose().await;
    let branch = ctx.experiment().branch.expect("branch");
    ctx.world
        .github
        .push_to_branch(&branch, "site/pricing.html", "<p>someone else's page</p>\n");
    ctx.press("Approve", APPROVER, CHAT_ID).await;
    assert_eq!(ctx.experiment().state, State::AwaitingApproval);
    assert_eq!(ctx.world.github.pulls()[0].state, PullState::Open);
    assert!(ctx.messages().iter().any(|m| m.contains("moved")));
}

#[tokio::test]
async fn a_restart_between_proposal_and_tap_still_merges_once() {
    let mut ctx = Ctx::new().await;
    ctx.world
        .llm
        .script(vec![Reply::Content(proposal_json("Pricing CTA", HELPFUL))]);
    ctx.propose().await;
    ctx.restart();
    ctx.press("Approve", APPROVER, CHAT_ID).await;
    ctx.restart();
    ctx.deliver_updates().await;
    assert_eq!(ctx.experiment().state, State::Merged);
    assert_eq!(ctx.world.github.merge_requests(), 1);
}

#[tokio::test]
async fn a_failed_pr_creation_is_resumed_without_a_second_pr() {
    let ctx = Ctx::new().await;
    ctx.world
        .llm
        .script(vec![Reply::Content(proposal_json("Pricing CTA", HELPFUL))]);
    // The branch is written, then opening the PR fails: like a crash between the two.
    ctx.world.github.fail_next("POST /pulls", 502, 1);
    let first = ctx.app.propose_pass(false).await;
    assert!(first[0].1.is_err(), "{:?}", first[0].1);
    assert_eq!(ctx.experiment().state, State::Proposed);
    assert!(ctx.world.github.pulls().is_empty());
    // The next pass finishes the same experiment: one branch, one PR, no new LLM call.
    let requests_before = ctx.world.llm.requests().len();
    assert!(matches!(
        ctx.propose().await,
        ProposeOutcome::Proposed { .. }
    ));
    assert_eq!(ctx.world.github.pulls().len(), 1);
    assert_eq!(ctx.world.llm.requests().len(), requests_before);
    assert_eq!(ctx.experiment().state, State::AwaitingApproval);
}

#[tokio::test]
async fn a_dry_run_writes_nothing_anywhere() {
    let ctx = Ctx::new().await;
    ctx.world
        .llm
        .script(vec![Reply::Content(proposal_json("Pricing CTA", HELPFUL))]);
    let out = ctx.app.propose_pass(true).await;
    let Ok(ProposeOutcome::DryRun { title, diff }) = &out[0].1 else {
        panic!("expected a dry run, got {out:?}");
    };
    assert_eq!(title, "Pricing CTA");
    assert!(diff.contains(HELPFUL));
    assert!(ctx.world.github.pulls().is_empty());
    assert_eq!(ctx.world.github.write_requests(), 0);
    assert!(ctx.world.telegram.messages().is_empty());
    assert!(ctx.app.store.all().expect("store").is_empty());
    assert!(ctx.app.store.audit_log(None).expect("audit").is_empty());
}

#[tokio::test]
async fn when_every_edit_is_refused_no_pr_is_opened() {
    let ctx = Ctx::new().await;
    let bad = serde_json::json!({
        "title": "Deploy faster",
        "hypothesis": "h",
        "edits": [{"path": ".github/workflows/deploy.yml", "search": "on: push", "replace": "on: pull_request"}]
    })
    .to_string();
    ctx.world.llm.script(vec![
        Reply::Content(bad.clone()),
        Reply::Content(bad.clone()),
        Reply::Content(bad),
    ]);
    let out = ctx.propose().await;
    assert!(matches!(out, ProposeOutcome::Failed(_)), "{out:?}");
    assert!(ctx.world.github.pulls().is_empty());
    let e = ctx.experiment();
    assert_eq!(e.state, State::Failed);
    assert!(e.failure.unwrap_or_default().contains(".github"));
    assert!(
        ctx.messages()
            .iter()
            .any(|m| m.contains("No change proposed"))
    );
    // The model heard why, each time.
    let requests = ctx.world.llm.requests();
    assert_eq!(requests.len(), 3);
}

#[tokio::test]
async fn a_harmful_change_is_reverted_and_the_page_restored() {
    let mut ctx = Ctx::new().await;
    let e = run_experiment(&mut ctx, HARMFUL).await;
    assert_eq!(e.state, State::Reverted, "{:?}", e.verdict);
    assert_eq!(
        ctx.world
            .github
            .file_on_branch("main", "site/pricing.html")
            .as_deref(),
        Some(world::PRICING_HTML)
    );
    assert!(ctx.messages().iter().any(|m| m.contains("reverted")));
    let reverts: Vec<_> = ctx
        .world
        .github
        .pulls()
        .into_iter()
        .filter(|p| p.title.starts_with("Revert"))
        .collect();
    assert_eq!(reverts.len(), 1);
    assert_eq!(reverts[0].state, PullState::Merged);
    assert!(
        ctx.world.posthog.annotations().len() >= 2,
        "merge and revert are annotated"
    );
    // The verdict comes with the watch chart, drawn from every day watched.
    let messages = ctx.world.telegram.messages();
    let verdict = messages
        .iter()
        .position(|m| m.text.starts_with("↩️"))
        .expect("the revert is told");
    let chart = &messages[verdict - 1];
    assert!(chart.is_photo, "{chart:?}");
    assert!(
        chart.text.contains("the watch, day by day"),
        "{}",
        chart.text
    );
    assert_eq!(png_size(&chart.photo), (900, 640));
    let days = ctx.app.store.watch_days(e.id).expect("days");
    assert!(
        days.baseline.len() >= 28,
        "{} baseline days",
        days.baseline.len()
    );
    // A revert on the early look can come before any entry matured; then
    // no day after the merge is drawn yet.
    let early = e
        .assessment
        .as_deref()
        .is_some_and(|a| a.contains("\"early\""));
    assert!(early || !days.watch.is_empty(), "{:?}", e.assessment);
    assert!(
        days.watch
            .iter()
            .all(|(d, _)| *d >= e.merged_at.expect("merged").date_naive())
    );

    // /status N sends it again; a wrong number is answered in words.
    for command in [
        format!("/status {}", e.id),
        "/status #99".into(),
        "/status x".into(),
    ] {
        ctx.world.telegram.send_command(CHAT_ID, APPROVER, &command);
    }
    ctx.deliver_updates().await;
    let answers = &ctx.world.telegram.messages()[messages.len()..];
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert!(answers[0].is_photo && answers[0].text.contains("reverted"));
    assert_eq!(
        answers[0].photo, chart.photo,
        "the same data, the same chart"
    );
    assert_eq!(answers[1].text, "There is no experiment #99.");
    assert!(
        answers[2].text.contains("is not an experiment number"),
        "{}",
        answers[2].text
    );
}

fn png_size(png: &[u8]) -> (u32, u32) {
    let info = png::Decoder::new(png).read_info().expect("a PNG");
    (info.info().width, info.info().height)
}

#[tokio::test]
async fn helpful_and_neutral_changes_are_kept() {
    for line in [HELPFUL, NEUTRAL] {
        let mut ctx = Ctx::new().await;
        let e = run_experiment(&mut ctx, line).await;
        assert_eq!(e.state, State::Kept, "{line}: {:?}", e.verdict);
        assert!(
            ctx.world
                .github
                .file_on_branch("main", "site/pricing.html")
                .expect("page")
                .contains(line)
        );
        assert!(ctx.messages().iter().any(|m| m.contains("is over: kept")));
        assert!(e.verdict.unwrap_or_default().starts_with("kept"));
        let charts = ctx
            .world
            .telegram
            .messages()
            .into_iter()
            .filter(|m| m.is_photo && m.text.contains("the watch, day by day"))
            .count();
        assert_eq!(charts, 1, "{line}: one watch chart, with the verdict");
    }
}

#[tokio::test]
async fn an_interrupted_revert_finishes_once() {
    let mut ctx = Ctx::new().await;
    ctx.world.llm.script(vec![Reply::Content(proposal_json(
        "Pricing change",
        HARMFUL,
    ))]);
    ctx.propose().await;
    ctx.press("Approve", APPROVER, CHAT_ID).await;
    ctx.world.advance(HOUR, HOUR);
    ctx.monitor().await;
    assert_eq!(ctx.experiment().state, State::Observing);
    // Armed now, these hit only the revert: it stops after its commit (the
    // revert PR cannot be opened), then after its PR (the merge fails).
    ctx.world.github.fail_next("POST /pulls", 502, 1);
    ctx.world.github.fail_next("PUT /merge", 502, 4);
    let mut states = Vec::new();
    for _ in 0..(17 * 4) {
        ctx.world.advance(6 * HOUR, HOUR);
        let _ = ctx.app.monitor_pass().await;
        // What a kill and a restart leave: the database and GitHub as they are.
        ctx.restart();
        let e = ctx.experiment();
        states.push((e.state, e.revert_pr));
        if e.state.is_final() {
            break;
        }
    }
    assert_eq!(ctx.experiment().state, State::Reverted, "{states:?}");
    assert!(
        states.contains(&(State::Reverting, None)),
        "stopped after the commit: {states:?}"
    );
    assert!(
        states
            .iter()
            .any(|(s, pr)| *s == State::Reverting && pr.is_some()),
        "stopped after the PR: {states:?}"
    );
    let reverts: Vec<_> = ctx
        .world
        .github
        .pulls()
        .into_iter()
        .filter(|p| p.title.starts_with("Revert"))
        .collect();
    assert_eq!(reverts.len(), 1, "one revert PR");
    assert_eq!(reverts[0].state, PullState::Merged);
    assert_eq!(
        ctx.world
            .github
            .file_on_branch("main", "site/pricing.html")
            .as_deref(),
        Some(world::PRICING_HTML)
    );
    let told = ctx
        .messages()
        .iter()
        .filter(|m| m.starts_with("↩️"))
        .count();
    assert_eq!(told, 1, "the chat is told once");
}

#[tokio::test]
async fn commands_pause_and_resume_proposals() {
    let ctx = Ctx::new().await;
    ctx.world.telegram.send_command(CHAT_ID, APPROVER, "/pause");
    ctx.deliver_updates().await;
    assert!(matches!(ctx.propose().await, ProposeOutcome::Skipped(why) if why.contains("paused")));
    ctx.world.telegram.send_command(CHAT_ID, 999, "/resume");
    ctx.deliver_updates().await;
    assert!(matches!(ctx.propose().await, ProposeOutcome::Skipped(_)));
    ctx.world
        .telegram
        .send_command(CHAT_ID, APPROVER, "/resume");
    ctx.world
        .telegram
        .send_command(CHAT_ID, APPROVER, "/status");
    ctx.deliver_updates().await;
    ctx.world
        .llm
        .script(vec![Reply::Content(proposal_json("Pricing CTA", HELPFUL))]);
    assert!(matches!(
        ctx.propose().await,
        ProposeOutcome::Proposed { .. }
    ));
    assert!(
        ctx.messages()
            .iter()
            .any(|m| m.contains("Open experiments"))
    );
}

/// Everything a secret must never reach: the prompts, the PRs and their
/// comments, the chat, and every row of the database.
fn places_secrets_must_not_reach(ctx: &Ctx) -> Vec<String> {
    let mut haystacks: Vec<String> = Vec::new();
    haystacks.extend(
        ctx.world
            .llm
            .requests()
            .into_iter()
            .map(|r| r.body.to_string()),
    );
    haystacks.extend(
        ctx.world
            .github
            .pulls()
            .into_iter()
            .map(|p| format!("{} {} {}", p.title, p.body, p.comments.join(" "))),
    );
    haystacks.extend(ctx.messages());
    let conn = ctx.app.store.connection();
    let mut stmt = conn.prepare("SELECT * FROM experiments").expect("prepare");
    let columns = stmt.column_count();
    let rows: Vec<String> = stmt
        .query_map([], |r| {
            let mut row = String::new();
            for i in 0..columns {
                let v: rusqlite::types::Value = r.get(i)?;
                row.push_str(&format!("{v:?}|"));
            }
            Ok(row)
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    haystacks.extend(rows);
    haystacks.extend(
        ctx.app
            .store
            .audit_log(None)
            .expect("audit")
            .into_iter()
            .map(|a| a.detail),
    );
    assert!(haystacks.len() > 10);
    haystacks
}

#[tokio::test]
async fn no_secret_reaches_a_prompt_pr_message_log_or_the_database() {
    let mut ctx = Ctx::new().await;
    run_experiment(&mut ctx, HARMFUL).await;
    let haystacks = places_secrets_must_not_reach(&ctx);
    for secret in world::ALL_SECRETS {
        for h in &haystacks {
            assert!(!h.contains(secret), "secret found in {h}");
        }
    }
}

#[tokio::test]
async fn on_github_app_auth_neither_the_key_nor_a_token_reaches_anything() {
    let mut ctx = Ctx::with_github_app().await;
    let e = run_experiment(&mut ctx, HARMFUL).await;
    assert_eq!(e.state, State::Reverted);
    let pulls = ctx.world.github.pulls();
    assert_eq!(pulls.len(), 2, "the change and its revert");
    assert!(pulls.iter().all(|p| p.author == "funnelfix-acme[bot]"));
    let tokens = ctx.world.github.installation_tokens();
    assert!(
        tokens.len() >= 2,
        "renewed as the days passed: {}",
        tokens.len()
    );
    assert_eq!(ctx.world.github.expired_token_refusals(), 0);
    let haystacks = places_secrets_must_not_reach(&ctx);
    for secret in world::pem_secrets(APP_KEY).iter().chain(&tokens) {
        for h in &haystacks {
            assert!(!h.contains(secret.as_str()), "secret found in {h}");
        }
    }
}

#[tokio::test]
async fn service_faults_delay_but_never_corrupt() {
    let mut ctx = Ctx::new().await;
    // Every service stumbles once or twice on the way to a proposal.
    ctx.world.posthog.fail_next(429, 1);
    ctx.world.posthog.fail_next(503, 1);
    // The model: throttled, down, then too slow (the client gives up after
    // its 10 s timeout and asks again).
    ctx.world.llm.script(vec![
        Reply::Status(429),
        Reply::Status(503),
        Reply::Slow(
            Duration::from_secs(12),
            Box::new(Reply::Content(proposal_json("Too late", NEUTRAL))),
        ),
        Reply::Content(proposal_json("Pricing CTA", HELPFUL)),
    ]);
    ctx.world.github.fail_next("/git/blobs", 403, 1);
    ctx.world.github.fail_next("/contents/", 502, 1);
    ctx.world.telegram.fail_next("SendMessage", 429, 1);
    assert!(matches!(
        ctx.propose().await,
        ProposeOutcome::Proposed { .. }
    ));
    assert_eq!(ctx.world.github.pulls().len(), 1);
    assert_eq!(
        ctx.world.github.pulls()[0].title,
        "Pricing CTA",
        "the late answer was dropped"
    );
    let asked: Vec<_> = ctx
        .world
        .telegram
        .messages()
        .into_iter()
        .filter(|m| !m.buttons.is_empty())
        .collect();
    assert_eq!(
        asked.len(),
        1,
        "the proposal was delivered once, after the wait"
    );

    // A merge answered with a 502 is asked again with the same sha: one merge.
    ctx.world.github.fail_next("/merge", 502, 1);
    ctx.press("Approve", APPROVER, CHAT_ID).await;
    assert_eq!(ctx.experiment().state, State::Merged);
    assert_eq!(ctx.world.github.pulls()[0].state, PullState::Merged);
    assert_eq!(ctx.world.github.merge_requests(), 2);

    // The monitor rides out PostHog throttling.
    ctx.world.posthog.fail_next(429, 2);
    ctx.run_for(2 * DAY, 12 * HOUR).await;
    assert_eq!(ctx.experiment().state, State::Observing);
    assert_eq!(ctx.world.github.pulls().len(), 1);
}

#[tokio::test]
async fn restarts_at_every_state_duplicate_nothing() {
    let mut ctx = Ctx::new().await;
    ctx.world.llm.script(vec![Reply::Content(proposal_json(
        "Pricing change",
        HARMFUL,
    ))]);
    ctx.propose().await;
    let mut seen = vec![ctx.experiment().state];
    // Each step is followed by a restart and a repeat of what just ran.
    ctx.restart();
    ctx.propose().await;
    ctx.press("Approve", APPROVER, CHAT_ID).await;
    ctx.restart();
    ctx.deliver_updates().await;
    for _ in 0..(17 * 4) {
        ctx.world.advance(6 * HOUR, HOUR);
        ctx.monitor().await;
        ctx.restart();
        ctx.monitor().await;
        let state = ctx.experiment().state;
        if seen.last() != Some(&state) {
            seen.push(state);
        }
        if state.is_final() {
            break;
        }
    }
    assert_eq!(ctx.experiment().state, State::Reverted, "states: {seen:?}");
    let pulls = ctx.world.github.pulls();
    assert_eq!(pulls.len(), 2, "the change and its revert, once each");
    assert_eq!(ctx.world.github.merge_requests(), 2, "one merge each");
    let proposals = ctx
        .world
        .telegram
        .messages()
        .iter()
        .filter(|m| m.text.contains("proposal #"))
        .count();
    assert_eq!(proposals, 1, "one proposal message");
    let reverted = ctx
        .messages()
        .iter()
        .filter(|m| m.starts_with("↩️"))
        .count();
    assert_eq!(reverted, 1, "one revert message");
}

#[tokio::test]
async fn a_proposal_the_chat_never_got_is_sent_again() {
    let mut ctx = Ctx::new().await;
    ctx.world
        .llm
        .script(vec![Reply::Content(proposal_json("Pricing CTA", HELPFUL))]);
    // Telegram refuses every try of the proposal message.
    ctx.world.telegram.fail_next("SendMessage", 429, 4);
    let out = ctx.app.propose_pass(false).await;
    assert!(out[0].1.is_err());
    let e = ctx.experiment();
    assert_eq!(e.state, State::AwaitingApproval);
    assert!(e.message_id.is_none());
    assert_eq!(ctx.world.github.pulls().len(), 1);
    // The next monitor tick asks again; the tap then works.
    ctx.run_for(HOUR, HOUR).await;
    assert!(ctx.experiment().message_id.is_some());
    ctx.press("Approve", APPROVER, CHAT_ID).await;
    assert_eq!(ctx.experiment().state, State::Merged);
    assert_eq!(ctx.world.github.pulls().len(), 1);
}

#[tokio::test]
async fn with_revert_approve_the_revert_waits_for_a_tap() {
    let template = world::CONFIG_TEMPLATE.replace(
        "cooldown = \"28d\"",
        "cooldown = \"28d\"\nrevert = \"approve\"",
    );
    let mut ctx = Ctx::with_config(&template).await;
    ctx.world.llm.script(vec![Reply::Content(proposal_json(
        "Pricing change",
        HARMFUL,
    ))]);
    ctx.propose().await;
    ctx.press("Approve", APPROVER, CHAT_ID).await;
    for _ in 0..(17 * 4) {
        ctx.run_for(6 * HOUR, 6 * HOUR).await;
        if ctx.experiment().state != State::Observing {
            break;
        }
    }
    assert_eq!(ctx.experiment().state, State::Reverting);
    let page = ctx
        .world
        .github
        .file_on_branch("main", "site/pricing.html")
        .expect("page");
    assert!(
        page.contains("fine-print"),
        "nothing reverted before the tap"
    );
    let ask = ctx
        .world
        .telegram
        .messages()
        .into_iter()
        .find(|m| {
            m.buttons
                .iter()
                .any(|(label, _)| label.contains("Merge the revert"))
        })
        .expect("the chat is asked");
    let data = ask.buttons[0].1.clone();
    // More ticks ask nothing again.
    ctx.run_for(12 * HOUR, 6 * HOUR).await;
    let asks = ctx
        .world
        .telegram
        .messages()
        .iter()
        .filter(|m| !m.buttons.is_empty() && m.buttons[0].0.contains("revert"))
        .count();
    assert_eq!(asks, 1);
    // A stranger cannot; an approver can, once.
    ctx.world
        .telegram
        .press_button(CHAT_ID, 999, ask.message_id, &data);
    ctx.deliver_updates().await;
    assert_eq!(ctx.experiment().state, State::Reverting);
    ctx.world
        .telegram
        .press_button(CHAT_ID, APPROVER, ask.message_id, &data);
    ctx.world
        .telegram
        .press_button(CHAT_ID, APPROVER, ask.message_id, &data);
    ctx.deliver_updates().await;
    assert_eq!(ctx.experiment().state, State::Reverted);
    assert_eq!(
        ctx.world
            .github
            .file_on_branch("main", "site/pricing.html")
            .as_deref(),
        Some(world::PRICING_HTML)
    );
    assert_eq!(
        ctx.world.github.merge_requests(),
        2,
        "the change and its revert"
    );
}

/// Text on the pricing page that halves its conversion.
const HALVING: &str = "<div class=\"modal\">Before you go: fill in this 12-field survey</div>";

/// Runs an experiment whose change ([`HALVING`]) halves the step's rate.
async fn run_halving(ctx: &mut Ctx) -> Experiment {
    ctx.world.site.effects.push(Effect {
        marker: "class=\"modal\"".into(),
        multiplier: 0.5,
    });
    run_experiment(ctx, HALVING).await
}

/// The assessment stored with the verdict.
fn assessment(e: &Experiment) -> funnelfix::stats::Assessment {
    serde_json::from_str(e.assessment.as_deref().expect("assessed")).expect("an assessment")
}

/// Half the funnel visits are by people who came before, so each person has
/// more chances to convert in the 28-day baseline than in the first days of
/// the watch; the watch counts entries, not people, and sees no change.
#[tokio::test]
async fn with_half_the_visits_returning_a_neutral_change_is_kept() {
    let mut ctx = Ctx::new().await;
    let e = run_experiment(&mut ctx, NEUTRAL).await;
    let (visits, returning) = ctx.world.site.visits();
    let share = returning as f64 / visits as f64;
    assert!((0.47..0.53).contains(&share), "{share:.3} returning");
    assert_eq!(e.state, State::Kept, "{:?}", e.verdict);
    let a = assessment(&e);
    println!(
        "{share:.3} of visits returning; {}; smallest p {:?}",
        e.verdict.as_deref().unwrap_or(""),
        e.p_value
    );
    assert!(
        a.relative_change.abs() < 0.08,
        "measured {:+.1}%",
        a.relative_change * 100.0
    );
    // Never close to a revert on the way (the smallest always-valid p).
    assert!(e.p_value.unwrap_or(1.0) > 0.2, "p = {:?}", e.p_value);
}

#[tokio::test]
async fn with_half_the_visits_returning_a_halving_change_is_reverted() {
    let mut ctx = Ctx::new().await;
    let e = run_halving(&mut ctx).await;
    assert_eq!(e.state, State::Reverted, "{:?}", e.verdict);
    let a = assessment(&e);
    let merged = e.merged_at.expect("merged");
    let days = (ctx.world.now() - merged).num_hours() as f64 / 24.0;
    println!(
        "{}; the revert merged within {days:.2} days of the change",
        e.verdict.as_deref().unwrap_or("")
    );
    assert!(
        (-0.6..-0.35).contains(&a.relative_change),
        "measured {:+.1}%",
        a.relative_change * 100.0
    );
    assert_eq!(
        ctx.world
            .github
            .file_on_branch("main", "site/pricing.html")
            .as_deref(),
        Some(world::PRICING_HTML)
    );
}

/// The demo config watching with the drift control.
fn with_drift_control() -> String {
    world::CONFIG_TEMPLATE.replace(
        "cooldown = \"28d\"\n",
        "cooldown = \"28d\"\ndrift_control = \"upstream\"\n",
    )
}

/// Every step of the site loses 0.8% of its rate a day, the change does
/// nothing: the watched step alone reads a drop well past the threshold,
/// the upstream step (home → pricing) reads the same drop, and against it
/// the change is kept.
#[tokio::test]
async fn with_the_drift_control_a_site_wide_drift_is_not_reverted() {
    let mut ctx = Ctx::with_site(&with_drift_control(), |site| {
        site.behaviour.drift_per_day = -0.008;
    })
    .await;
    let e = run_experiment(&mut ctx, NEUTRAL).await;
    assert_eq!(e.state, State::Kept, "{:?}", e.verdict);
    let a = assessment(&e);
    let control = a.control.expect("judged against the upstream step");
    println!("{}; {}", e.verdict.as_deref().unwrap_or(""), a.why);
    assert!(
        control.watched_change < -0.12 && control.upstream_change < -0.12,
        "{control:?}"
    );
    assert!(a.relative_change.abs() < 0.08, "{}", a.relative_change);
    // The step alone would have been reverted.
    assert!(a.why.contains("; without the control: revert"), "{}", a.why);
    let verdict = e.verdict.as_deref().unwrap_or("");
    assert!(verdict.contains("against the upstream step's"), "{verdict}");
    // Every look asked the three steps home → pricing → signup in one query.
    let asked = ctx.world.posthog.queries();
    let watch = asked
        .iter()
        .filter(|q| q["query"]["values"].get("s2_event").is_some())
        .count();
    assert!(watch > 10, "{watch} three-step queries");
}

#[tokio::test]
async fn with_the_drift_control_a_halving_change_is_still_reverted() {
    let mut ctx = Ctx::with_site(&with_drift_control(), |site| {
        site.behaviour.drift_per_day = -0.008;
    })
    .await;
    let e = run_halving(&mut ctx).await;
    assert_eq!(e.state, State::Reverted, "{:?}", e.verdict);
    let a = assessment(&e);
    assert!(a.control.is_some(), "{}", a.why);
    assert!(
        (-0.6..-0.35).contains(&a.relative_change),
        "measured {:+.1}%",
        a.relative_change * 100.0
    );
}
