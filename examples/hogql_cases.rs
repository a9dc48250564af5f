//! Prints, as JSON, the funnel query funnelfix sends for the first funnel of
//! config/funnelfix.example.toml over its lookback window, for
//! tests/hogql/bench.py: `cargo run --example hogql_cases > cases.json`.

use chrono::Utc;
use funnelfix::config;
use funnelfix::funnel::EntryRange;
use funnelfix::funnel::hogql::funnel_query;
use serde_json::json;

fn main() {
    let text = include_str!("../config/funnelfix.example.toml");
    let config = config::parse(text).unwrap_or_else(|problems| {
        for p in problems {
            eprintln!("{p}");
        }
        std::process::exit(1)
    });
    let funnel = &config.funnels[0];
    let now = Utc::now();
    let lookback = chrono::Duration::from_std(config.thresholds.lookback).expect("lookback");
    let range = EntryRange {
        from: now - lookback,
        to: now,
    };
    let q = funnel_query(&funnel.steps, funnel.conversion_window, range, now).expect("query");
    let case = json!({
        "name": funnel.name,
        "query": q.query,
        "values": q.values,
        "window_secs": funnel.conversion_window.as_secs(),
        "steps": funnel.steps.iter().map(|s| json!({"event": s.event, "filters": s.filters})).collect::<Vec<_>>(),
    });
    println!("{}", serde_json::to_string_pretty(&[case]).expect("json"));
}
