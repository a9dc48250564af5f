//! The PostHog adapter against the twin: counts equal a hand count of the
//! event log, and every failure PostHog can give ends in a clear outcome.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use funnelfix::config::StepConfig;
use funnelfix::funnel::{EntryRange, FunnelCounts};
use funnelfix::posthog::{PostHog, PostHogError};
use funnelfix::retry::RetryPolicy;
use funnelfix::sandbox::posthog::{Event, PostHogTwin};
use secrecy::SecretString;

const KEY: &str = "phx_test_key_0c9f2d71";
const KEY_ENV: &str = "POSTHOG_API_KEY";

const POLICY: RetryPolicy = RetryPolicy {
    max_attempts: 3,
    base_delay: Duration::from_millis(5),
    max_delay: Duration::from_millis(50),
    timeout: Duration::from_millis(500),
};

fn t(s: &str) -> DateTime<Utc> {
    s.parse().expect("a time")
}

fn step(name: &str, event: &str, path: Option<&str>) -> StepConfig {
    StepConfig {
        name: name.into(),
        event: event.into(),
        filters: path
            .map(|p| BTreeMap::from([("$pathname".to_string(), p.to_string())]))
            .unwrap_or_default(),
        files: vec![],
    }
}

fn steps() -> Vec<StepConfig> {
    vec![
        step("Home", "$pageview", Some("/")),
        step("Pricing", "$pageview", Some("/pricing")),
        step("Signed up", "signup_completed", None),
    ]
}

fn ev(person: &str, event: &str, path: Option<&str>, at: &str) -> Event {
    Event {
        person_id: person.into(),
        event: event.into(),
        timestamp: t(at),
        properties: path
            .map(|p| BTreeMap::from([("$pathname".to_string(), p.to_string())]))
            .unwrap_or_default(),
    }
}

fn client(twin: &PostHogTwin, key: &str) -> PostHog {
    PostHog::new(&twin.url(), "7", SecretString::from(key), KEY_ENV, POLICY).expect("client")
}

const DAY: Duration = Duration::from_secs(86_400);

/// Entry range Mon 2 Mar – Mon 9 Mar 2026, one-day window, asked on 11 Mar.
fn range() -> EntryRange {
    EntryRange {
        from: t("2026-03-02T00:00:00Z"),
        to: t("2026-03-09T00:00:00Z"),
    }
}

/// Entries at each step and conversions of each transition, as a pair.
fn counts(entries: [u64; 3], converted: [u64; 2]) -> FunnelCounts {
    FunnelCounts {
        entries: entries.to_vec(),
        converted: converted.to_vec(),
    }
}

#[tokio::test]
async fn counts_equal_a_hand_count_of_the_log() {
    let twin = PostHogTwin::start("7", KEY).await.expect("twin");
    twin.push_events(vec![
        // a, Monday: home → pricing → signup within minutes: an entry at
        // each step, both converted.
        ev("a", "$pageview", Some("/"), "2026-03-02T10:00:00Z"),
        ev("a", "$pageview", Some("/pricing"), "2026-03-02T10:05:00Z"),
        ev("a", "signup_completed", None, "2026-03-02T10:09:00Z"),
        // b, Tuesday: home → pricing converted; signup came before the
        // pricing view, so pricing did not convert (signup is still an entry).
        ev("b", "$pageview", Some("/"), "2026-03-03T09:00:00Z"),
        ev("b", "signup_completed", None, "2026-03-03T09:01:00Z"),
        ev("b", "$pageview", Some("/pricing"), "2026-03-03T09:02:00Z"),
        // c: pricing more than a day after home: home (Tuesday) did not
        // convert; the pricing view is Wednesday's entry, not converted.
        ev("c", "$pageview", Some("/"), "2026-03-03T08:00:00Z"),
        ev("c", "$pageview", Some("/pricing"), "2026-03-04T08:00:01Z"),
        // d comes back: Wednesday's home entry did not convert, Friday's
        // did, all the way. Two entries at home for one person.
        ev("d", "$pageview", Some("/"), "2026-03-04T12:00:00Z"),
        ev("d", "$pageview", Some("/"), "2026-03-06T12:00:00Z"),
        ev("d", "$pageview", Some("/pricing"), "2026-03-06T12:30:00Z"),
        ev("d", "signup_completed", None, "2026-03-06T13:00:00Z"),
        // e: home before the range (not counted); pricing on Monday is an
        // entry there, not converted.
        ev("e", "$pageview", Some("/"), "2026-03-01T23:59:59Z"),
        ev("e", "$pageview", Some("/pricing"), "2026-03-02T00:10:00Z"),
        // f, Sunday: another pricing path does not match the step.
        ev("f", "$pageview", Some("/"), "2026-03-08T10:00:00Z"),
        ev(
            "f",
            "$pageview",
            Some("/pricing/enterprise"),
            "2026-03-08T10:01:00Z",
        ),
        // g: home after the range → not counted.
        ev("g", "$pageview", Some("/"), "2026-03-09T00:00:00Z"),
        // h, Thursday: a pricing entry without a home view.
        ev("h", "$pageview", Some("/pricing"), "2026-03-05T10:00:00Z"),
        // i, Thursday: two home views; the entry is the first, and pricing
        // comes 26 hours after it (14 after the second): not converted.
        // Friday: pricing entry, not converted.
        ev("i", "$pageview", Some("/"), "2026-03-05T08:00:00Z"),
        ev("i", "$pageview", Some("/"), "2026-03-05T20:00:00Z"),
        ev("i", "$pageview", Some("/pricing"), "2026-03-06T10:00:00Z"),
        // j, Saturday: two visits, one entry, converted in the second.
        ev("j", "$pageview", Some("/"), "2026-03-07T09:00:00Z"),
        ev("j", "$pageview", Some("/"), "2026-03-07T15:00:00Z"),
        ev("j", "$pageview", Some("/pricing"), "2026-03-07T15:05:00Z"),
        // Events no step counts.
        ev("j", "$pageleave", Some("/pricing"), "2026-03-07T15:06:00Z"),
        ev("k", "$autocapture", Some("/"), "2026-03-04T10:00:00Z"),
    ]);
    let ph = client(&twin, KEY);
    let by = ph
        .funnel_counts(&steps(), DAY, range(), t("2026-03-11T00:00:00Z"))
        .await
        .expect("counts");
    assert_eq!(by.days[0], counts([1, 2, 1], [1, 1]), "Monday: a, e");
    assert_eq!(by.days[1], counts([2, 1, 1], [1, 0]), "Tuesday: b, c");
    assert_eq!(by.days[2], counts([1, 1, 0], [0, 0]), "Wednesday: d, c");
    assert_eq!(by.days[3], counts([1, 1, 0], [0, 0]), "Thursday: i, h");
    assert_eq!(by.days[4], counts([1, 2, 1], [1, 1]), "Friday: d, i");
    assert_eq!(by.days[5], counts([1, 1, 0], [1, 0]), "Saturday: j");
    assert_eq!(by.days[6], counts([1, 0, 0], [0, 0]), "Sunday: f");
    assert_eq!(by.total(), counts([8, 8, 3], [4, 2]));
    assert_eq!(twin.query_count(), 1, "one query per funnel");

    // The request carries every value as a placeholder, fresh from ClickHouse.
    let body = &twin.queries()[0];
    assert_eq!(body["refresh"], "force_blocking");
    assert_eq!(body["query"]["kind"], "HogQLQuery");
    let text = body["query"]["query"].as_str().expect("text");
    assert!(!text.contains("/pricing") && !text.contains("signup_completed"));

    // The per-person sums, by hand. Home: d has two entries (Wednesday, not
    // converted; Friday, converted); a, b, j one converted; c, i, f one not:
    // Σ N² = 7·1 + 3 = 10, Σ X·N = 3 + 2 = 5, Σ X² = 3 + 1 = 4. Pricing: eight
    // people with one entry each, a and d converted: 8, 2, 2.
    let days = ph
        .segment_days(&steps(), None, DAY, range(), t("2026-03-11T00:00:00Z"))
        .await
        .expect("days");
    let total = |i: usize| {
        days.days.iter().fold((0, 0, 0), |(a, b, c), d| {
            let p = d.people[i];
            (
                a + p.entries_sq,
                b + p.conversions_entries,
                c + p.conversions_sq,
            )
        })
    };
    assert_eq!(total(0), (10, 5, 4));
    assert_eq!(total(1), (8, 2, 2));
    let friday = days
        .days
        .iter()
        .find(|d| d.date.to_string() == "2026-03-06");
    let d_on_friday = friday.expect("Friday").people[0];
    assert_eq!(
        (
            d_on_friday.entries_sq,
            d_on_friday.conversions_entries,
            d_on_friday.conversions_sq
        ),
        (2, 2, 1),
        "Friday's home entry is d's, who has two entries and one conversion"
    );
}

#[tokio::test]
async fn entrants_whose_window_has_not_elapsed_are_not_counted() {
    let twin = PostHogTwin::start("7", KEY).await.expect("twin");
    twin.push_events(vec![
        ev("a", "$pageview", Some("/"), "2026-03-05T10:00:00Z"),
        ev("b", "$pageview", Some("/"), "2026-03-08T10:00:00Z"),
    ]);
    let ph = client(&twin, KEY);
    // Asked on Sunday 8 Mar 12:00: b's day has not passed, a's has.
    let by = ph
        .funnel_counts(&steps(), DAY, range(), t("2026-03-08T12:00:00Z"))
        .await
        .expect("counts");
    assert_eq!(by.total(), counts([1, 0, 0], [0, 0]));
}

#[tokio::test]
async fn throttling_is_waited_out() {
    let twin = PostHogTwin::start("7", KEY).await.expect("twin");
    twin.fail_next(429, 1);
    twin.fail_next(503, 1);
    let by = client(&twin, KEY)
        .funnel_counts(&steps(), DAY, range(), t("2026-03-11T00:00:00Z"))
        .await
        .expect("counts after a 429 and a 503");
    assert_eq!(by.total(), counts([0, 0, 0], [0, 0]));
    assert_eq!(twin.query_count(), 3);
}

#[tokio::test]
async fn server_errors_give_up_after_the_policy() {
    let twin = PostHogTwin::start("7", KEY).await.expect("twin");
    twin.fail_next(512, 10);
    let err = client(&twin, KEY)
        .funnel_counts(&steps(), DAY, range(), t("2026-03-11T00:00:00Z"))
        .await
        .expect_err("exhausted");
    assert!(
        matches!(err, PostHogError::Exhausted { attempts: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("512"), "{err}");
    assert_eq!(twin.query_count(), 3);
}

#[tokio::test]
async fn a_slow_reply_times_out_and_is_retried() {
    let twin = PostHogTwin::start("7", KEY).await.expect("twin");
    twin.set_delay(Some(Duration::from_secs(2)));
    let err = client(&twin, KEY)
        .funnel_counts(&steps(), DAY, range(), t("2026-03-11T00:00:00Z"))
        .await
        .expect_err("timed out");
    assert!(
        matches!(err, PostHogError::Exhausted { attempts: 3, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_bad_key_is_named_and_not_shown() {
    let twin = PostHogTwin::start("7", KEY).await.expect("twin");
    let err = client(&twin, "phx_wrong")
        .funnel_counts(&steps(), DAY, range(), t("2026-03-11T00:00:00Z"))
        .await
        .expect_err("refused");
    let msg = err.to_string();
    assert_eq!(
        msg,
        "PostHog refused the key in $POSTHOG_API_KEY (401): check it is a personal API key"
    );
    assert_eq!(twin.query_count(), 0, "a 401 is not retried");
}

#[tokio::test]
async fn a_wrong_project_and_a_rejected_query_are_clear() {
    let twin = PostHogTwin::start("7", KEY).await.expect("twin");
    let other =
        PostHog::new(&twin.url(), "8", SecretString::from(KEY), KEY_ENV, POLICY).expect("client");
    let err = other
        .funnel_counts(&steps(), DAY, range(), t("2026-03-11T00:00:00Z"))
        .await
        .expect_err("not found");
    assert!(err.to_string().contains("project 8 not found"), "{err}");

    let bad = funnelfix::funnel::hogql::HogQlQuery {
        query: "SELECT {missing}".into(),
        values: Default::default(),
    };
    let err = client(&twin, KEY).query(&bad).await.expect_err("400");
    assert!(matches!(err, PostHogError::BadQuery { .. }), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
}

#[tokio::test]
async fn annotations_are_created() {
    let twin = PostHogTwin::start("7", KEY).await.expect("twin");
    client(&twin, KEY)
        .annotate("funnelfix: merged PR #3", t("2026-03-11T09:00:00Z"))
        .await
        .expect("annotated");
    let a = twin.annotations();
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].content, "funnelfix: merged PR #3");
    assert_eq!(a[0].date_marker, "2026-03-11T09:00:00Z");
    assert_eq!(a[0].scope, "project");
}

#[tokio::test]
async fn counts_come_per_date_of_entry_for_the_funnels_events_only() {
    let twin = PostHogTwin::start("7", KEY).await.expect("twin");
    twin.push_events(vec![
        ev("a", "$pageview", Some("/"), "2026-03-02T10:00:00Z"),
        ev("a", "$autocapture", Some("/"), "2026-03-02T10:01:00Z"),
        ev("a", "$pageview", Some("/pricing"), "2026-03-02T10:05:00Z"),
        ev("b", "$pageview", Some("/"), "2026-03-05T23:59:59Z"),
        ev("b", "$pageleave", Some("/"), "2026-03-06T00:00:30Z"),
        ev("b", "$pageview", Some("/pricing"), "2026-03-06T00:01:00Z"),
        ev("b", "signup_completed", None, "2026-03-06T00:02:00Z"),
        ev("c", "$pageview", Some("/"), "2026-03-05T08:00:00Z"),
        ev("d", "$autocapture", Some("/"), "2026-03-05T08:00:00Z"),
    ]);
    let ph = client(&twin, KEY);
    // Asked on 9 March 12:00 with a one-day window: entries until 8 March 12:00.
    let by = ph
        .funnel_days(&steps(), DAY, range(), t("2026-03-09T12:00:00Z"))
        .await
        .expect("counts");
    assert_eq!(by.range.from, t("2026-03-02T00:00:00Z"));
    assert_eq!(by.range.to, t("2026-03-08T12:00:00Z"));
    let days: Vec<(String, FunnelCounts)> = by
        .days
        .iter()
        .map(|d| (d.date.to_string(), d.counts.clone()))
        .collect();
    assert_eq!(
        days,
        [
            ("2026-03-02".to_string(), counts([1, 1, 0], [1, 0])),
            ("2026-03-05".to_string(), counts([2, 0, 0], [1, 0])),
            ("2026-03-06".to_string(), counts([0, 1, 1], [0, 1])),
        ],
        "an entry counts on its own date, converted the day after or not"
    );
    assert_eq!(twin.query_count(), 1);
    let text = twin.queries()[0]["query"]["query"]
        .as_str()
        .expect("text")
        .to_string();
    assert!(
        text.contains("AND event IN ({s0_event}, {s2_event})"),
        "{text}"
    );
}
