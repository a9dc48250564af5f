//! The evidence through the real PostHog adapter against the twin, on the
//! realistic simulated site: each planted truth on the pricing page comes
//! out on top of its part, the counts are the funnel's own, and a part
//! whose query fails is marked as not read while the others still come.

use std::time::Duration;

use chrono::{DateTime, Utc};
use funnelfix::config::{FunnelConfig, Selection, StepConfig};
use funnelfix::evidence::{Evidence, Part};
use funnelfix::funnel::EntryRange;
use funnelfix::posthog::PostHog;
use funnelfix::retry::RetryPolicy;
use funnelfix::sandbox::posthog::PostHogTwin;
use funnelfix::sandbox::site::{self, Site};
use funnelfix::text;
use secrecy::SecretString;

fn funnel() -> FunnelConfig {
    let step = |name: &str, event: &str, path: Option<&str>| {
        StepConfig::new(
            name,
            event,
            &path
                .map(|p| ("$pathname", p))
                .into_iter()
                .collect::<Vec<_>>(),
        )
    };
    FunnelConfig {
        segment_watch: false,
        name: "signup".into(),
        conversion_window: Duration::from_secs(86_400),
        selection: Selection::LowestRate,
        steps: vec![
            step("Home", "$pageview", Some("/")),
            step("Pricing", "$pageview", Some("/pricing")),
            step("Started", "signup_started", None),
            step("Done", "signup_completed", None),
        ],
    }
}

/// 28 days of the realistic site (the demo's rates; pricing is the weak
/// step), and PostHog's evidence on pricing → started over them.
async fn evidence(fail: Option<u16>) -> (Evidence, PostHogTwin, u64) {
    let twin = PostHogTwin::start("1", "phx_test").await.expect("twin");
    let start: DateTime<Utc> = "2026-03-02T00:00:00Z".parse().expect("time");
    let now = start + chrono::Duration::days(28);
    let mut s = Site::new(funnel(), "main", vec![0.45, 0.25, 0.6], 600.0, 11);
    assert_eq!(s.troubled, Some(1));
    twin.with_log(|log| s.record(start, now, &[0.45, 0.25, 0.6], log));
    let posthog = PostHog::new(
        &twin.url(),
        "1",
        SecretString::from("phx_test"),
        "POSTHOG_API_KEY",
        RetryPolicy::FAST,
    )
    .expect("adapter");
    let range = EntryRange {
        from: start + chrono::Duration::days(1),
        to: now,
    };
    let days = posthog
        .funnel_days(&funnel().steps, Duration::from_secs(86_400), range, now)
        .await
        .expect("funnel");
    let entries = days.total().entries[1];
    if let Some(status) = fail {
        // The funnel query is done: every evidence query fails.
        twin.fail_next(status, 100);
    }
    let e = posthog.evidence(&funnel(), 1, range, now).await;
    (e, twin, entries)
}

#[tokio::test]
async fn the_planted_truths_come_out_on_top() {
    let (e, twin, entries) = evidence(None).await;
    println!("{}", text::evidence_text(&e));
    // Five queries, each within PostHog's limits, in the funnel's own unit.
    assert_eq!(e.queries, 5);
    assert_eq!(twin.query_count(), 6);
    let all = e.all.expect("entries");
    assert_eq!(all.entries, entries);

    let actions = e.actions.found().expect("actions");
    // The demo: its button's click and the player's event, both 20% of entries.
    assert!(
        ["Watch the demo", site::DEMO_EVENT].contains(&actions[0].label.as_str())
            && ["Watch the demo", site::DEMO_EVENT].contains(&actions[1].label.as_str()),
        "{actions:#?}"
    );
    assert!((2.0..3.2).contains(&actions[0].lift), "{}", actions[0].lift);
    assert!(actions[0].clear);

    let worst = e
        .segments
        .found()
        .and_then(|s| s.worst.clone())
        .expect("a segment");
    assert_eq!(
        (worst.dimension.as_str(), worst.value.as_str()),
        ("$device_type", "Mobile")
    );
    assert!((0.35..0.45).contains(&worst.share), "{}", worst.share);
    let ratio = worst.rate.rate / worst.rest.rate;
    assert!(
        (0.4..0.65).contains(&ratio),
        "mobile at {ratio:.2} of the rest"
    );

    let attention = e.attention.found().expect("attention");
    assert!(attention.left.share_under_quarter() > 0.6, "{attention:?}");
    assert!(
        attention.went_on.share_under_quarter() < 0.3,
        "{attention:?}"
    );

    let frustration = e.frustration.found().expect("frustration");
    assert_eq!(frustration[0].label, site::DISABLED_BUTTON);
    assert_eq!(frustration[0].kind, "rageclick");

    let speed = e.speed.found().expect("speed");
    assert!(speed.lcp_p75.is_some_and(|v| v > 1000.0), "{speed:?}");

    let said = e.said.found().expect("answers");
    assert!(said.answers >= 5, "{said:?}");
    let monthly = said
        .recent
        .iter()
        .filter(|a| site::MONTHLY_ANSWERS.contains(&a.text.as_str()))
        .count();
    assert!(monthly >= 1, "{said:?}");
}

#[tokio::test]
async fn a_failing_evidence_query_leaves_its_part_out_and_says_so() {
    // Every evidence query answers 504 until the retries give up: each part
    // is marked not read; nothing else fails.
    let (e, _twin, _) = evidence(Some(504)).await;
    assert!(
        matches!(e.actions, Part::Failed(ref why) if why.contains("504")),
        "{:?}",
        e.actions
    );
    let lines = text::evidence_lines(&e);
    assert!(
        lines.contains("not read: secondary actions, segments"),
        "{lines}"
    );
}
