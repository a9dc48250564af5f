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

/// Entries and conversions of the pricing step in `days`.
fn totals(days: &[(chrono::NaiveDate, funnelfix::stats::Counts)]) -> (u64, u64) {
    days.iter()
        .fold((0, 0), |(n, x), (_, c)| (n + c.entrants, x + c.conversions))
}

#[tokio::test]
async fn a_change_for_mobile_visitors_is_watched_on_mobile_entries_only() {
    let config = world::CONFIG_TEMPLATE.replace(
        "conversion_window = \"1d\"\n",
        "conversion_window = \"1d\"\nsegment_watch = true\n",
    );
    assert_ne!(config, world::CONFIG_TEMPLATE);
    let mut ctx = Ctx::with_config(&config).await;
    let (prompt, body, message) = propose(&ctx).await;

    // The site's mobile visitors go on at half the desktop rate: the
    // proposal is for them, and says how it is watched.
    assert!(
        prompt.contains("Whose visits to help: visitors whose $device_type is \"Mobile\""),
        "{prompt}"
    );
    assert!(
        prompt.contains("The change will be judged on their entries only."),
        "{prompt}"
    );
    let for_whom = "entries with $device_type = “Mobile”";
    assert!(
        body.contains(&format!("## For whom\n\n{for_whom}")),
        "{body}"
    );
    assert!(
        body.contains("the change is watched on these entries only"),
        "{body}"
    );
    assert!(
        message.contains(&format!("For whom: {for_whom}")),
        "{message}"
    );
    assert_no_secret("chat", &message);
    let e = ctx.experiment();
    let mobile = funnelfix::funnel::WatchSegment {
        property: "$device_type".into(),
        value: "Mobile".into(),
    };
    assert_eq!(e.watch_segment(), Some(mobile.clone()));
    let rate_before = e.rate_before.expect("a rate before");

    // Approved and merged; the monitor fetches the baseline, then watches.
    let asked_before = ctx.world.posthog.query_count();
    ctx.press("Approve", APPROVER, CHAT_ID).await;
    assert_eq!(ctx.experiment().state, State::Merged);
    ctx.run_for(4 * DAY, 6 * HOUR).await;
    let e = ctx.experiment();
    assert_eq!(e.state, State::Observing);
    let queries = ctx.world.posthog.queries();
    let watch_queries = &queries[asked_before..];
    assert!(watch_queries.len() >= 2, "a baseline and a look at least");
    for q in watch_queries {
        assert_eq!(
            q["query"]["values"]["segment_value"], "Mobile",
            "every query of the watch counts mobile entries only: {q}"
        );
    }

    // The baseline and the watch are the mobile entries' counts, as the
    // PostHog twin counts them from its events, not the step's.
    let merged_at = e.merged_at.expect("merged");
    let steps = &ctx.app.config.funnels[0].steps[1..=2];
    let posthog = &ctx.app.services.posthog;
    let baseline_range = funnelfix::funnel::EntryRange {
        from: merged_at - chrono::Duration::days(28),
        to: merged_at,
    };
    let count = |segment| async move {
        let days = posthog
            .segment_days(steps, segment, DAY, baseline_range, merged_at)
            .await
            .expect("counts");
        days.total().transition(0)
    };
    let (mobile_n, mobile_x) = count(Some(&mobile)).await;
    let (all_n, all_x) = count(None).await;
    let stored = ctx.app.store.watch_days(e.id).expect("watch days");
    assert_eq!(totals(&stored.baseline), (mobile_n, mobile_x));
    assert!(!stored.watch.is_empty(), "the watch has looked");
    // About 40% of the entries are mobile, at half the desktop rate.
    let share = mobile_n as f64 / all_n as f64;
    assert!((0.3..0.5).contains(&share), "mobile share {share}");
    let (mobile_rate, all_rate) = (
        mobile_x as f64 / mobile_n as f64,
        all_x as f64 / all_n as f64,
    );
    assert!(mobile_rate < 0.8 * all_rate, "{mobile_rate} vs {all_rate}");
    // The rate before is the segment's too (over the lookback, not the
    // baseline window: close, not equal).
    assert!(
        (rate_before - mobile_rate).abs() < 0.05,
        "{rate_before} vs {mobile_rate}"
    );
}
