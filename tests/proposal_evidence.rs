//! A proposal with PostHog's evidence, through the real adapters against
//! the twins: the model receives the evidence fenced in its prompt, the PR
//! body has the Evidence table, the Telegram proposal its strongest
//! findings; an evidence query that fails delays nothing, and the proposal
//! says which part is missing. No secret reaches any of them.

mod common;

use common::*;

fn assert_no_secret(what: &str, text: &str) {
    for secret in world::ALL_SECRETS {
        assert!(!text.contains(secret), "a secret in the {what}");
    }
}

/// Proposes a change; returns the prompt, the PR body and the chat's proposal.
async fn propose(ctx: &Ctx) -> (String, String, String) {
    ctx.world.llm.script(vec![Reply::Content(proposal_json(
        "Pricing change",
        HELPFUL,
    ))]);
    assert!(matches!(
        ctx.propose().await,
        ProposeOutcome::Proposed { .. }
    ));
    let prompt = ctx.world.llm.requests()[0].contents().join("\n");
    let body = ctx.world.github.pulls()[0].body.clone();
    let message = ctx
        .messages()
        .into_iter()
        .find(|m| m.contains("funnelfix proposal"))
        .expect("the proposal in the chat");
    (prompt, body, message)
}

#[tokio::test]
async fn the_model_the_pr_and_the_chat_see_the_evidence() {
    let ctx = Ctx::new().await;
    let (prompt, body, message) = propose(&ctx).await;
    let evidence = prompt
        .split("```text\nEvidence for")
        .nth(1)
        .expect("the evidence, fenced");
    let evidence = evidence.split("\n```").next().unwrap_or("");
    for finding in [
        "demo video played",
        "$device_type = “Mobile” is much worse",
        "scrolled less than a quarter",
        "rage-clicked “Choose monthly”",
        "LCP p75",
        "monthly plan",
    ] {
        assert!(evidence.contains(finding), "{finding} in\n{evidence}");
    }
    assert!(prompt.contains("Ground your hypothesis in this evidence"));
    assert_no_secret("prompt", &prompt);

    assert!(body.contains("## Evidence\n"), "{body}");
    assert!(
        body.contains("| segments | $device_type = “Mobile” is much worse"),
        "{body}"
    );
    assert_no_secret("PR body", &body);

    assert!(
        message.contains("Evidence: $device_type Mobile"),
        "{message}"
    );
    assert_no_secret("chat", &message);
}

#[tokio::test]
async fn a_failed_evidence_query_delays_nothing_and_is_said() {
    let ctx = Ctx::new().await;
    ctx.world
        .posthog
        .fail_queries_containing("AS dimension", 504);
    let (prompt, body, message) = propose(&ctx).await;
    assert!(
        prompt.contains("- segments: not read: the query failed"),
        "{prompt}"
    );
    assert!(
        body.contains("| segments | not read: the query failed"),
        "{body}"
    );
    // The other parts are still there.
    assert!(body.contains("demo video played"), "{body}");
    assert!(message.contains("not read: segments"), "{message}");
}
