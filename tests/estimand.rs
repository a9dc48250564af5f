//! The watched rate measures the same thing before and after a merge,
//! whatever the windows' lengths: on a simulated site where half the visits
//! are people who came before and nothing ever changes, the rate of entries
//! over a 2-day and a 14-day window after a "merge" equals the rate over the
//! 28 days before it. Counting people once per window instead (what PostHog's
//! funnels and funnelfix's earlier query do) reads the same site as a drop
//! after every merge, because a returning person has more chances to convert
//! in 28 days than in 2.
//!
//! Both counts run on the twin's event log with the real query's ranges: the
//! baseline is the 28 days before the merge as seen at the merge (censored a
//! conversion window before it), the watch starts an hour after the merge
//! and is read once its last entries' window has passed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use funnelfix::config::{FunnelConfig, Selection, StepConfig};
use funnelfix::sandbox::events::EventLog;
use funnelfix::sandbox::posthog::{Asked, Filter, count_entries};
use funnelfix::sandbox::site::{Behaviour, Site};

const DAY: i64 = 86_400;

fn funnel() -> FunnelConfig {
    let step = |name: &str, event: &str, path: Option<&str>, file: Option<&str>| StepConfig {
        name: name.into(),
        event: event.into(),
        filters: path
            .map(|p| [("$pathname".to_string(), p.to_string())].into())
            .unwrap_or_default(),
        files: file.map(|f| vec![f.to_string()]).unwrap_or_default(),
    };
    FunnelConfig {
        segment_watch: false,
        name: "signup".into(),
        conversion_window: Duration::from_secs(DAY as u64),
        selection: Selection::LowestRate,
        steps: vec![
            step("Home", "$pageview", Some("/"), Some("site/index.html")),
            step(
                "Pricing",
                "$pageview",
                Some("/pricing"),
                Some("site/pricing.html"),
            ),
            step("Started", "signup_started", None, Some("site/signup.html")),
            step("Done", "signup_completed", None, None),
        ],
    }
}

/// Pricing → Started signup, the demo's weak step.
fn steps() -> Vec<(String, Vec<Filter>)> {
    vec![
        (
            "$pageview".into(),
            vec![Filter {
                name: "$pathname".into(),
                value: "/pricing".into(),
                only: vec!["$pageview".into()],
            }],
        ),
        ("signup_started".into(), vec![]),
    ]
}

/// The query's ranges for entries in `[from, to)` read at `now`.
fn asked(from: i64, to: i64, now: i64) -> Asked {
    let to = to.min(now - DAY).max(from);
    Asked {
        steps: steps(),
        window_secs: DAY,
        from,
        to,
        read: from.div_euclid(DAY) * DAY,
        until: to + DAY,
        events: None,
        segment: None,
    }
}

/// (entries, conversions) of the transition, as funnelfix counts them.
fn entries(log: &EventLog, a: &Asked) -> (u64, u64) {
    count_entries(log, a)
        .values()
        .fold((0, 0), |(n, x), r| (n + r[0], x + r[1]))
}

/// (people, converted people) as a per-person funnel counts them: a person
/// enters with a pricing view in the range and converts if any such view is
/// followed by a signup start within the window.
fn people(log: &EventLog, a: &Asked) -> (u64, u64) {
    let ids: Vec<u32> = ["$pageview", "signup_started"]
        .iter()
        .filter_map(|e| log.find_event(e))
        .collect();
    let mut by_person: std::collections::HashMap<u32, (Vec<i64>, Vec<i64>)> = Default::default();
    for (event, row) in log.scan(&ids, a.from * 1000, a.until * 1000 + 999) {
        let t = row.ms.div_euclid(1000);
        let name = log.event_name(event);
        let entry = by_person.entry(row.person).or_default();
        if name == "signup_started" {
            entry.1.push(t);
        } else if log.props(row.props).get("$pathname").map(String::as_str) == Some("/pricing")
            && t < a.to
        {
            entry.0.push(t);
        }
    }
    let mut n = 0;
    let mut x = 0;
    for (views, starts) in by_person.values() {
        if views.is_empty() {
            continue;
        }
        n += 1;
        if views
            .iter()
            .any(|v| starts.iter().any(|s| *s >= *v && *s <= v + a.window_secs))
        {
            x += 1;
        }
    }
    (n, x)
}

#[derive(Default)]
struct Pooled {
    n: u64,
    x: u64,
}

impl Pooled {
    fn add(&mut self, (n, x): (u64, u64)) {
        self.n += n;
        self.x += x;
    }
    fn rate(&self) -> f64 {
        self.x as f64 / self.n.max(1) as f64
    }
}

#[test]
fn the_watched_rate_does_not_depend_on_the_window_length() {
    let start: DateTime<Utc> = "2026-01-05T00:00:00Z".parse().expect("a time");
    let days = 110;
    let mut site = Site::new(funnel(), "main", vec![0.45, 0.25, 0.6], 700.0, 11)
        .with_behaviour(Behaviour::realistic());
    let mut log = EventLog::default();
    let rates = site.base_rates.clone();
    site.record(
        start,
        start + chrono::Duration::days(days),
        &rates,
        &mut log,
    );

    // Merges every 3 days at 14:00, once 35 days of history exist.
    let mut rows = Vec::new();
    let [mut base, mut post2, mut post14] = [(); 3].map(|_| (Pooled::default(), Pooled::default()));
    let first = start.timestamp() + 35 * DAY + 14 * 3600;
    let last = start.timestamp() + (days - 16) * DAY;
    let mut merge = first;
    while merge <= last {
        let watch_from = merge + 3600;
        let baseline = asked(merge - 28 * DAY, merge, merge);
        let short = asked(watch_from, watch_from + 2 * DAY, watch_from + 3 * DAY);
        let long = asked(watch_from, watch_from + 14 * DAY, watch_from + 15 * DAY);
        for (pair, a) in [
            (&mut base, &baseline),
            (&mut post2, &short),
            (&mut post14, &long),
        ] {
            pair.0.add(entries(&log, a));
            pair.1.add(people(&log, a));
        }
        merge += 3 * DAY;
    }
    for (name, pick) in [
        ("entries (funnelfix)", 0),
        ("people (per-person funnel)", 1),
    ] {
        let rate = |p: &(Pooled, Pooled)| if pick == 0 { p.0.rate() } else { p.1.rate() };
        let (b, s, l) = (rate(&base), rate(&post2), rate(&post14));
        rows.push((name, b, s, l));
        println!(
            "{name}: baseline 28 d {:.2}%, watch 2 d {:.2}% ({:+.1}%), watch 14 d {:.2}% ({:+.1}%)",
            b * 100.0,
            s * 100.0,
            (s / b - 1.0) * 100.0,
            l * 100.0,
            (l / b - 1.0) * 100.0
        );
    }
    println!(
        "entries counted: baseline {}, watch 2 d {}, watch 14 d {}",
        base.0.n, post2.0.n, post14.0.n
    );
    let (_, b, s, l) = rows[0];
    // Within noise (2-day windows pool about 19,000 entries: one standard
    // error is about 1.3% of the rate).
    assert!((s / b - 1.0).abs() < 0.05, "2 days vs 28: {s} vs {b}");
    assert!((l / b - 1.0).abs() < 0.03, "14 days vs 28: {l} vs {b}");
    // Counting people, the same unchanged site looks like a drop.
    let (_, b, s, l) = rows[1];
    assert!(s / b - 1.0 < -0.08, "people, 2 days vs 28: {s} vs {b}");
    assert!(l / b - 1.0 < -0.03, "people, 14 days vs 28: {l} vs {b}");
}
