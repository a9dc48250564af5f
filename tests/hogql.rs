//! The HogQL funnelfix sends, checked for real: PostHog's own parser reads
//! every query text, and ClickHouse (chdb) runs it over synthetic events
//! with counts equal to an independent computation (tests/hogql/check.py)
//! and to the PostHog twin's answer to the same query over the same events.
//!
//! Needs `pip install -r tests/hogql/requirements.txt` (.ci/run does it).
//! Outside CI, a machine without those packages skips with a notice; in CI
//! (CI=true) their absence fails the test.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, Utc};
use funnelfix::config::StepConfig;
use funnelfix::evidence::hogql::{Kind, evidence_query};
use funnelfix::funnel::hogql::{Sums, segment_funnel_query};
use funnelfix::funnel::{EntryRange, WatchSegment};
use funnelfix::sandbox::posthog::{Event, PostHogTwin};
use serde_json::{Map, Value, json};

fn t(s: &str) -> DateTime<Utc> {
    s.parse().expect("a time")
}

fn step(name: &str, event: &str, filters: &[(&str, &str)]) -> StepConfig {
    StepConfig::new(name, event, filters)
}

/// A funnel query's case as the monitor sends it: with the per-person sums.
fn case(
    name: &str,
    steps: &[StepConfig],
    window: Duration,
    range: EntryRange,
    now: DateTime<Utc>,
) -> Value {
    segment_case(name, steps, None, Sums::Count, window, range, now)
}

/// A funnel query's case as `funnelfix funnel` and the propose pass send
/// it: without the per-person sums.
fn lookback_case(
    name: &str,
    steps: &[StepConfig],
    window: Duration,
    range: EntryRange,
    now: DateTime<Utc>,
) -> Value {
    segment_case(name, steps, None, Sums::Skip, window, range, now)
}

/// A funnel query's case counting only `segment`'s entries (all if `None`).
fn segment_case(
    name: &str,
    steps: &[StepConfig],
    segment: Option<&WatchSegment>,
    sums: Sums,
    window: Duration,
    range: EntryRange,
    now: DateTime<Utc>,
) -> Value {
    let q = segment_funnel_query(steps, segment, sums, window, range, now).expect("a query");
    json!({
        "name": name,
        "query": q.query,
        "values": q.values,
        "window_secs": window.as_secs(),
        "steps": steps.iter().map(|s| json!({"event": s.event, "filters": s.filters})).collect::<Vec<_>>(),
        "segment": segment,
    })
}

/// An evidence query's case: `pages` are where the synthetic visitors see
/// each step.
fn evidence_case(
    name: &str,
    kind: Kind,
    steps: &[StepConfig; 2],
    pages: [&str; 2],
    window: Duration,
    range: EntryRange,
    now: DateTime<Utc>,
) -> Value {
    let q = evidence_query(kind, &steps[0], &steps[1], window, range, now).expect("a query");
    json!({
        "name": name,
        "kind": serde_json::to_value(kind).expect("a kind"),
        "query": q.query,
        "values": q.values,
        "window_secs": window.as_secs(),
        "steps": steps.iter().zip(pages).map(|(s, page)| json!({"event": s.event, "filters": s.filters, "page": page})).collect::<Vec<_>>(),
    })
}

fn python_ready() -> bool {
    Command::new("python3")
        .args(["-c", "import chdb, hogql_parser"])
        .env("PYTHONPATH", "tests/hogql/stub")
        .status()
        .is_ok_and(|s| s.success())
}

/// A synthetic event as check.py writes it: `[person, event, unix
/// seconds, properties as JSON, elements_chain]`, as the twin stores it
/// (property values as text, a null property absent).
fn twin_event(e: &Value) -> Event {
    let cell = |i: usize| e.get(i).unwrap_or_else(|| panic!("an event: {e}"));
    let text = |i: usize| cell(i).as_str().unwrap_or_default().to_string();
    let props: Map<String, Value> =
        serde_json::from_str(cell(3).as_str().unwrap_or("{}")).expect("properties as JSON");
    let mut properties: BTreeMap<String, String> = props
        .into_iter()
        .filter_map(|(k, v)| match v {
            Value::Null => None,
            Value::String(s) => Some((k, s)),
            other => Some((k, other.to_string())),
        })
        .collect();
    if !text(4).is_empty() {
        properties.insert("elements_chain".into(), text(4));
    }
    Event {
        person_id: text(0),
        event: text(1),
        timestamp: DateTime::from_timestamp(cell(2).as_i64().expect("seconds"), 0).expect("a time"),
        properties,
    }
}

/// Puts into each case, as `"twin"`, the PostHog twin's rows for its query
/// over the events check.py simulates for it.
async fn add_twin_answers(cases: &mut [Value], path: &Path) {
    let events_path = path.with_file_name("events.json");
    let out = Command::new("python3")
        .arg("tests/hogql/check.py")
        .arg("--events")
        .arg(&events_path)
        .arg(path)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: Vec<Vec<Value>> =
        serde_json::from_slice(&std::fs::read(&events_path).expect("events")).expect("json");
    assert_eq!(all.len(), cases.len());
    let http = reqwest::Client::new();
    for (case, events) in cases.iter_mut().zip(all) {
        let twin = PostHogTwin::start("1", "phx_check").await.expect("a twin");
        twin.push_events(events.iter().map(twin_event).collect());
        let reply: Value = http
            .post(format!("{}/api/projects/1/query/", twin.url()))
            .bearer_auth("phx_check")
            .json(&json!({"query": {"kind": "HogQLQuery", "query": case["query"], "values": case["values"]}}))
            .send()
            .await
            .expect("the twin answers")
            .json()
            .await
            .expect("json");
        let rows = reply
            .get("results")
            .unwrap_or_else(|| panic!("{}: the twin answered {reply}", case["name"]))
            .clone();
        case["twin"] = rows;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_parses_in_hogql_and_counts_right_on_clickhouse() {
    // Never skipped: a check that did not run must not read as a pass.
    assert!(
        python_ready(),
        "the HogQL check needs Python 3 with chdb and hogql-parser: python3 -m pip install -r tests/hogql/requirements.txt"
    );
    let signup = [
        step("Home", "$pageview", &[("$pathname", "/")]),
        step("Pricing", "$pageview", &[("$pathname", "/pricing")]),
        step("Started", "signup_started", &[]),
        step("Done", "signup_completed", &[]),
    ];
    let checkout = [
        step(
            "Cart",
            "$pageview",
            &[("$pathname", "/cart"), ("$host", "shop.example.com")],
        ),
        step("Paid", "order paid", &[("plan", "it's \"pro\"")]),
    ];
    // One property read by two events, another by one; an event in two steps.
    let shop = [
        step(
            "Cart",
            "$pageview",
            &[("$pathname", "/cart"), ("$host", "shop.example.com")],
        ),
        step(
            "Checkout",
            "checkout started",
            &[("$host", "shop.example.com")],
        ),
        step("Thanks", "$pageview", &[("$pathname", "/thanks")]),
    ];
    let day = Duration::from_secs(86_400);
    let now = t("2026-03-30T10:17:00Z");
    let merge = t("2026-03-20T15:00:00Z");
    let lookback = EntryRange {
        from: now - chrono::Duration::days(28),
        to: now,
    };
    let pricing = [signup[1].clone(), signup[2].clone()];
    let started = [signup[2].clone(), signup[3].clone()];
    let mut cases = vec![
        // `funnel` and the propose pass: the lookback window.
        lookback_case(
            "lookback, 4 steps, 1 day",
            &signup,
            day,
            EntryRange {
                from: now - chrono::Duration::days(28),
                to: now,
            },
            now,
        ),
        // The monitor: the baseline before a merge, and the post-merge
        // entrants from the hour after the deploy, right-censored.
        case(
            "baseline before a merge",
            &signup[1..],
            day,
            EntryRange {
                from: merge - chrono::Duration::days(14),
                to: merge,
            },
            now,
        ),
        case(
            "after a merge, censored",
            &signup[1..],
            Duration::from_secs(3 * 3600),
            EntryRange {
                from: merge + chrono::Duration::hours(1),
                to: now,
            },
            now,
        ),
        // The watch with the drift control: the upstream step, the watched
        // step and the next, in one query.
        case(
            "after a merge with the drift control, censored",
            &signup[..3],
            day,
            EntryRange {
                from: merge + chrono::Duration::hours(1),
                to: now,
            },
            now,
        ),
        case(
            "2 steps, 2 filters, quotes in values, 30 minutes",
            &checkout,
            Duration::from_secs(1800),
            EntryRange {
                from: now - chrono::Duration::days(9),
                to: now,
            },
            now,
        ),
        lookback_case(
            "3 steps, a property shared by two events",
            &shop,
            Duration::from_secs(2 * 3600),
            EntryRange {
                from: now - chrono::Duration::days(7),
                to: now,
            },
            now,
        ),
        // The watch of an experiment restricted to a segment: its entries
        // only, baseline and watch alike.
        segment_case(
            "after a merge, mobile entries only",
            &signup[1..],
            Some(&WatchSegment {
                property: "$device_type".into(),
                value: "Mobile".into(),
            }),
            Sums::Count,
            day,
            EntryRange {
                from: merge - chrono::Duration::days(14),
                to: now,
            },
            now,
        ),
    ];
    for kind in Kind::ALL {
        cases.push(evidence_case(
            &format!("evidence {kind:?}, pricing → signup started"),
            kind,
            &pricing,
            ["/pricing", "/signup"],
            day,
            lookback,
            now,
        ));
    }
    // A step that is not a page view: its page is its event's $pathname.
    cases.push(evidence_case(
        "evidence Actions, signup started → completed, 2 hours",
        Kind::Actions,
        &started,
        ["/signup", "/welcome"],
        Duration::from_secs(2 * 3600),
        lookback,
        now,
    ));
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("cases.json");
    std::fs::write(&path, serde_json::to_string(&cases).expect("json")).expect("written");
    add_twin_answers(&mut cases, &path).await;
    std::fs::write(&path, serde_json::to_string(&cases).expect("json")).expect("written");
    let out = Command::new("python3")
        .arg("tests/hogql/check.py")
        .arg(&path)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "HogQL check failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(stdout.matches(": ok (").count(), cases.len(), "{stdout}");
    assert_eq!(
        stdout.matches(", the twin agrees)").count(),
        cases.len(),
        "{stdout}"
    );
}
