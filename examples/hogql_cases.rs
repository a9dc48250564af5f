//! Prints, as JSON, every funnel query funnelfix sends for the first funnel of
//! config/funnelfix.example.toml, for tests/hogql/bench.py:
//! `cargo run --example hogql_cases > cases.json`.
//!
//! Three queries: the lookback query of `funnelfix funnel` and the propose
//! pass (every step), and the monitor's two (the watched step and the next):
//! the baseline window before a merge, and the entrants after it at the end
//! of the observation window, when that query covers the most days. The
//! watched step is the second ("Viewed pricing"). `now` is fixed, 2026-03-30
//! 10:17 UTC, so a benchmark table generated once keeps matching the
//! queries; `--now <RFC 3339 time>` moves it.
//!
//! Then the queries that have no earlier version to compare with (each
//! with `"new": true`): the five evidence queries of the propose pass for
//! the watched step over the lookback, and the watch restricted to mobile
//! entries (`segment_watch`).

use chrono::{DateTime, Utc};
use funnelfix::config::{self, StepConfig};
use funnelfix::evidence::hogql::{Kind, evidence_query};
use funnelfix::funnel::hogql::{Sums, segment_funnel_query};
use funnelfix::funnel::{EntryRange, WatchSegment};
use serde_json::{Value, json};

/// The hour after a merge that the watch skips (the deploy settling).
const SETTLE_HOURS: i64 = 1;

fn main() {
    let text = include_str!("../config/funnelfix.example.toml");
    let config = config::parse(text).unwrap_or_else(|problems| {
        for p in problems {
            eprintln!("{p}");
        }
        std::process::exit(1)
    });
    let args: Vec<String> = std::env::args().collect();
    let now: DateTime<Utc> = match args.iter().position(|a| a == "--now") {
        Some(i) => args
            .get(i + 1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                eprintln!("--now takes an RFC 3339 time, such as 2026-03-30T10:17:00Z");
                std::process::exit(2)
            }),
        None => "2026-03-30T10:17:00Z".parse().expect("a time"),
    };
    let funnel = &config.funnels[0];
    let t = &config.thresholds;
    let days = |d: std::time::Duration| chrono::Duration::from_std(d).expect("a duration");
    let window = funnel.conversion_window;
    let watched = &funnel.steps[1..=2];
    // The merge whose observation window (and conversion window) ends now.
    let merge = now - days(t.observation) - days(window) - chrono::Duration::hours(SETTLE_HOURS);

    let steps_json = |steps: &[StepConfig]| -> Vec<Value> {
        steps
            .iter()
            .map(|s| json!({"event": s.event, "filters": s.filters}))
            .collect()
    };
    let segment_case = |name: &str,
                        steps: &[StepConfig],
                        segment: Option<&WatchSegment>,
                        sums: Sums,
                        range|
     -> Value {
        let q = segment_funnel_query(steps, segment, sums, window, range, now).expect("query");
        json!({
            "name": name,
            "query": q.query,
            "values": q.values,
            "window_secs": window.as_secs(),
            "steps": steps_json(steps),
            "new": segment.is_some(),
        })
    };
    // The monitor's queries count the per-person sums, the lookback's not.
    let case = |name: &str, steps: &[StepConfig], range| {
        segment_case(name, steps, None, Sums::Count, range)
    };
    let lookback = EntryRange {
        from: now - days(t.lookback),
        to: now,
    };
    let evidence_case = |kind: Kind| -> Value {
        let q =
            evidence_query(kind, &watched[0], &watched[1], window, lookback, now).expect("query");
        json!({
            "name": format!("evidence {kind:?}: the watched step, 28 days"),
            "kind": kind,
            "query": q.query,
            "values": q.values,
            "window_secs": window.as_secs(),
            "steps": steps_json(watched),
            "new": true,
        })
    };
    let watch = EntryRange {
        from: merge + chrono::Duration::hours(SETTLE_HOURS),
        to: merge + chrono::Duration::hours(SETTLE_HOURS) + days(t.observation),
    };
    let mut cases = vec![
        segment_case(
            "lookback: every step, 28 days",
            &funnel.steps,
            None,
            Sums::Skip,
            lookback,
        ),
        case(
            "baseline: the watched step, 28 days before the merge",
            watched,
            EntryRange {
                from: merge - days(t.baseline),
                to: merge,
            },
        ),
        case(
            "watch: the watched step, 14 days after the merge",
            watched,
            watch,
        ),
        case(
            "watch with the drift control: the step and its upstream step, 14 days after the merge",
            &funnel.steps[0..=2],
            watch,
        ),
        segment_case(
            "watch: mobile entries of the watched step, 14 days after the merge",
            watched,
            Some(&WatchSegment {
                property: "$device_type".into(),
                value: "Mobile".into(),
            }),
            Sums::Count,
            watch,
        ),
    ];
    cases.extend(Kind::ALL.map(evidence_case));
    println!("{}", serde_json::to_string_pretty(&cases).expect("json"));
}
