//! `funnelfix funnel` as a user runs it: the real binary against the
//! PostHog twin, with the example config pointed at the twin.

use std::collections::BTreeMap;
use std::process::Command;

use chrono::{Duration, Utc};
use funnelfix::sandbox::posthog::{Event, PostHogTwin};

const KEY: &str = "phx_cli_test_key_91b2";

fn pageview(person: &str, path: &str, at: chrono::DateTime<Utc>) -> Event {
    Event {
        person_id: person.into(),
        event: "$pageview".into(),
        timestamp: at,
        properties: BTreeMap::from([("$pathname".to_string(), path.to_string())]),
    }
}

fn custom(person: &str, event: &str, at: chrono::DateTime<Utc>) -> Event {
    Event {
        person_id: person.into(),
        event: event.into(),
        timestamp: at,
        properties: BTreeMap::new(),
    }
}

/// 1000 visitors a few days ago: 600 see pricing, 300 start signup, 240 finish.
fn traffic() -> Vec<Event> {
    let start = Utc::now() - Duration::days(5);
    let mut events = Vec::new();
    for i in 0..1000 {
        let p = format!("p{i}");
        let t = start + Duration::minutes(i);
        events.push(pageview(&p, "/", t));
        if i < 600 {
            events.push(pageview(&p, "/pricing", t + Duration::minutes(2)));
        }
        if i < 300 {
            events.push(custom(&p, "signup_started", t + Duration::minutes(3)));
        }
        if i < 240 {
            events.push(custom(&p, "signup_completed", t + Duration::minutes(4)));
        }
    }
    events
}

fn funnelfix(dir: &std::path::Path, url: &str, args: &[&str]) -> std::process::Output {
    let config = include_str!("../config/funnelfix.example.toml")
        .replace("https://us.posthog.com", url)
        .replace("project_id = \"12345\"", "project_id = \"5\"")
        .replace(
            "path = \"funnelfix.db\"",
            &format!("path = {:?}", dir.join("state.db")),
        );
    let path = dir.join("funnelfix.toml");
    std::fs::write(&path, config).expect("config written");
    Command::new(env!("CARGO_BIN_EXE_funnelfix"))
        .arg("-c")
        .arg(&path)
        .args(args)
        .env("POSTHOG_API_KEY", KEY)
        .env_remove("RUST_LOG")
        .output()
        .expect("the binary runs")
}

#[tokio::test(flavor = "multi_thread")]
async fn prints_the_table_and_the_chosen_step() {
    let twin = PostHogTwin::start("5", KEY).await.expect("twin");
    twin.push_events(traffic());
    let dir = tempfile::tempdir().expect("dir");
    let url = twin.url();
    let dir_path = dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || funnelfix(&dir_path, &url, &["funnel"]))
        .await
        .expect("joined");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("funnel signup"), "{stdout}");
    // Pricing → Started: 300 of 600 = 50%, the lowest upper bound.
    let chosen = stdout
        .lines()
        .find(|l| l.starts_with('▶'))
        .expect("a chosen step");
    assert!(
        chosen.contains("Viewed pricing → Started signup"),
        "{stdout}"
    );
    assert!(chosen.contains("600") && chosen.contains("300"), "{chosen}");
    assert!(
        stdout.contains("overall (the product of the step rates): 24.0%"),
        "{stdout}"
    );
    assert!(!stdout.contains(KEY) && !String::from_utf8_lossy(&out.stderr).contains(KEY));
    assert_eq!(twin.query_count(), 1, "one query for the one funnel");

    let url = twin.url();
    let dir_path = dir.path().to_path_buf();
    let out =
        tokio::task::spawn_blocking(move || funnelfix(&dir_path, &url, &["funnel", "--json"]))
            .await
            .expect("joined");
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(
        reports[0]["counts"],
        serde_json::json!({"entries": [1000, 600, 300, 240], "converted": [600, 300, 240]})
    );
    assert_eq!(reports[0]["choice"]["step"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_key_is_one_clear_line() {
    let twin = PostHogTwin::start("5", "phx_another_key")
        .await
        .expect("twin");
    let dir = tempfile::tempdir().expect("dir");
    let url = twin.url();
    let dir_path = dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || funnelfix(&dir_path, &url, &["funnel"]))
        .await
        .expect("joined");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "error: funnel \"signup\": PostHog refused the key in $POSTHOG_API_KEY (401): check it is a personal API key"
    );
}

/// A site that launched five days ago: 60 visitors a day, 50 see pricing, 4
/// start signup, 3 finish.
fn new_site() -> Vec<Event> {
    let now = Utc::now();
    let mut events = Vec::new();
    for day in 0..5 {
        let start = now - Duration::days(6 - day);
        for i in 0..60 {
            let p = format!("d{day}p{i}");
            let t = start + Duration::minutes(10 * i);
            events.push(pageview(&p, "/", t));
            if i < 50 {
                events.push(pageview(&p, "/pricing", t + Duration::minutes(2)));
            }
            if i < 4 {
                events.push(custom(&p, "signup_started", t + Duration::minutes(3)));
            }
            if i < 3 {
                events.push(custom(&p, "signup_completed", t + Duration::minutes(4)));
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_site_is_judged_at_its_own_pace() {
    let twin = PostHogTwin::start("5", KEY).await.expect("twin");
    twin.push_events(new_site());
    let dir = tempfile::tempdir().expect("dir");
    let url = twin.url();
    let dir_path = dir.path().to_path_buf();
    let out =
        tokio::task::spawn_blocking(move || funnelfix(&dir_path, &url, &["funnel", "--json"]))
            .await
            .expect("joined");
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(
        reports[0]["counts"],
        serde_json::json!({"entries": [300, 250, 20, 15], "converted": [250, 20, 15]})
    );
    // Pricing → Started: 20 conversions. At the 28-day lookback's average
    // that is 10 in the 14-day observation window, too few to watch (as is
    // the pace of the last 14 days, 20); at the pace of the five or six days
    // the site has existed it is about 50, and it is the weakest step.
    assert_eq!(reports[0]["choice"]["step"], 1, "{reports}");
}

/// A project with only the funnel's own events: the evidence says plainly
/// what PostHog has no data for, and exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn evidence_without_such_data_says_so() {
    let twin = PostHogTwin::start("5", KEY).await.expect("twin");
    twin.push_events(traffic());
    let dir = tempfile::tempdir().expect("dir");
    let url = twin.url();
    let dir_path = dir.path().to_path_buf();
    let (text, json) = tokio::task::spawn_blocking(move || {
        (
            funnelfix(&dir_path, &url, &["evidence"]),
            funnelfix(&dir_path, &url, &["evidence", "--json"]),
        )
    })
    .await
    .expect("joined");
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&text.stderr)
    );
    for absent in [
        "Evidence for Viewed pricing → Started signup from PostHog: 600 daily entries, 50.0% went on.",
        "- secondary actions: PostHog has no clicks or other events",
        "- attention: PostHog has no scroll depth for this page",
        "- speed: PostHog has no web vitals for this page",
        "- what visitors said: no survey answers on this page",
    ] {
        assert!(stdout.contains(absent), "{absent}\n{stdout}");
    }
    let parsed: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(
        parsed[0]["evidence"]["speed"]["status"], "absent",
        "{parsed}"
    );
    assert_eq!(parsed[0]["evidence"]["all"]["entries"], 600, "{parsed}");
    // One funnel query, then five evidence queries, per run.
    assert_eq!(twin.query_count(), 12);
}
