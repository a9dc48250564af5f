use std::time::Duration;

use serde_json::json;

use super::hogql::{Kind, evidence_query};
use super::*;
use crate::config::StepConfig;
use crate::funnel::EntryRange;

fn step(name: &str, event: &str, filters: &[(&str, &str)]) -> StepConfig {
    StepConfig::new(name, event, filters)
}

fn t(s: &str) -> DateTime<Utc> {
    s.parse().expect("time")
}

#[test]
fn the_action_that_goes_with_going_on_ranks_first() {
    // 1000 entries, 200 went on. 100 watched the demo, 50 of them went on
    // (50% against 150 / 900 = 16.7%); 600 clicked "Continue" at the
    // others' rate; 40 rage-clicked a disabled button, 2 went on.
    let rows = json!([
        ["", "", 1000, 200],
        ["click", "Continue", 600, 120],
        ["event", "demo video played", 100, 50],
        ["rageclick", "Choose monthly", 40, 2],
        ["click", "", 300, 60],
        ["event", "rare", 5, 5],
    ]);
    let (all, actions, frustration) = super::actions(&rows).expect("rows");
    assert_eq!((all.entries, all.converted), (1000, 200));
    let actions = actions.found().expect("actions");
    assert_eq!(actions[0].label, "demo video played");
    assert!((actions[0].lift - 3.0).abs() < 1e-9, "{}", actions[0].lift);
    assert!((actions[0].reach - 0.1).abs() < 1e-9);
    assert!(actions[0].clear);
    // "Continue" goes with nothing in particular: lift 1, score 0.
    assert_eq!(actions[1].label, "Continue");
    assert!(!actions[1].clear);
    // Too few to compare, and clicks without a text, are left out.
    assert!(
        actions
            .iter()
            .all(|a| a.label != "rare" && !a.label.is_empty())
    );
    let frustration = frustration.found().expect("frustration");
    assert_eq!(frustration.len(), 1);
    assert_eq!(frustration[0].did.converted, 2);
    assert!(frustration[0].lift < 0.3);

    // Only the total: nothing to show.
    let (all, actions, frustration) = super::actions(&json!([["", "", 10, 1]])).expect("rows");
    assert_eq!(all.entries, 10);
    assert_eq!(actions, Part::Absent);
    assert_eq!(frustration, Part::Absent);
    assert!(super::actions(&json!([["", "", 10]])).is_err());
}

#[test]
fn a_much_worse_segment_with_enough_entries_is_named_with_its_share() {
    // Mobile: 400 entries at 10%; desktop 600 at 20%.
    let rows = json!([
        ["$device_type", "Desktop", 600, 120],
        ["$device_type", "Mobile", 400, 40],
        ["$browser", "Chrome", 700, 112],
        ["$browser", "Safari", 300, 48],
        ["$referring_domain", "", 500, 80],
        ["visitor", "new", 700, 110],
        ["visitor", "returning", 300, 50],
    ]);
    let (all, part) = super::segments(&rows).expect("rows");
    assert_eq!((all.entries, all.converted), (1000, 160));
    let found = part.found().expect("segments");
    let worst = found.worst.as_ref().expect("a worst segment");
    assert_eq!(
        (worst.dimension.as_str(), worst.value.as_str()),
        ("$device_type", "Mobile")
    );
    assert!((worst.share - 0.4).abs() < 1e-9);
    assert!((worst.rest.rate - 0.2).abs() < 1e-9);
    // Unknown values are not segments.
    assert!(found.segments.iter().all(|s| !s.value.is_empty()));

    // Worse, but not by enough: no segment named.
    let rows = json!([
        ["$device_type", "Desktop", 600, 120],
        ["$device_type", "Mobile", 400, 70],
        ["visitor", "new", 1000, 190],
    ]);
    let (_, part) = super::segments(&rows).expect("rows");
    assert_eq!(part.found().expect("segments").worst, None);
    // A small group is never named, however bad.
    let rows = json!([
        ["$device_type", "Desktop", 1900, 400],
        ["$device_type", "TV", 60, 0],
        ["visitor", "new", 1960, 400],
    ]);
    let (_, part) = super::segments(&rows).expect("rows");
    assert_eq!(part.found().expect("segments").worst, None);
    assert_eq!(super::segments(&json!([])).expect("rows").1, Part::Absent);
}

#[test]
fn attention_speed_and_answers_read_their_rows() {
    let rows = json!([
        [0, 800, 700, 560, 600, 650, 12.5],
        [1, 200, 180, 20, 40, 80, null],
    ]);
    let a = super::attention(&rows).expect("rows");
    let a = a.found().expect("attention");
    assert!((a.left.share_under_quarter() - 0.8).abs() < 1e-9);
    assert_eq!(a.left.mean_seconds, Some(12.5));
    assert_eq!(a.went_on.mean_seconds, None);
    assert_eq!(
        super::attention(&json!([[0, 800, 0, 0, 0, 0, null]])).expect("rows"),
        Part::Absent
    );

    let s = super::speed(&json!([[1000, 400, 400, 3100.0, 0, 0, 400, 0.02]])).expect("row");
    let s = s.found().expect("speed");
    assert_eq!(s.lcp_p75, Some(3100.0));
    assert_eq!(s.inp_p75, None);
    assert_eq!(s.cls_p75, Some(0.02));
    assert_eq!(
        super::speed(&json!([[1000, 0, 0, 0, 0, 0, 0, 0]])).expect("row"),
        Part::Absent
    );

    let said = super::said(&json!([[
        3,
        0,
        [
            [1_772_500_000, "No monthly plan?", 0],
            [1_772_400_000, "Too dear", 0]
        ]
    ]]))
    .expect("row");
    let said = said.found().expect("answers");
    assert_eq!(said.answers, 3);
    assert_eq!(said.recent[0].text, "No monthly plan?");
    assert!(!said.recent[0].went_on);
    assert_eq!(
        super::said(&json!([[0, 0, []]])).expect("row"),
        Part::Absent
    );
}

#[test]
fn every_query_takes_values_as_placeholders_and_reads_only_what_it_needs() {
    let pricing = step("Pricing", "$pageview", &[("$pathname", "/pricing' OR 1=1")]);
    let started = step("Started", "signup_started", &[]);
    let range = EntryRange {
        from: t("2026-03-01T09:00:00Z"),
        to: t("2026-03-29T09:00:00Z"),
    };
    for kind in Kind::ALL {
        let q = evidence_query(
            kind,
            &pricing,
            &started,
            Duration::from_secs(86_400),
            range,
            t("2026-03-29T09:00:00Z"),
        )
        .expect("query");
        assert!(!q.query.contains("OR 1=1"), "{kind:?}");
        assert!(!q.query.contains("signup_started"), "{kind:?}");
        assert_eq!(q.values["s0_p0"], json!("/pricing' OR 1=1"));
        assert_eq!(q.values["window"], json!(86_400));
        assert!(
            q.query.contains("event IN ({s0_event}, {s1_event})"),
            "{kind:?}\n{}",
            q.query
        );
        // Every placeholder has a value.
        for (i, _) in q.query.match_indices('{') {
            let name: String = q.query[i + 1..].chars().take_while(|c| *c != '}').collect();
            assert!(q.values.contains_key(&name), "{kind:?}: {name}");
        }
    }
    let bad = step("Pricing", "$pageview", &[("a) OR (1", "x")]);
    assert!(
        evidence_query(
            Kind::Actions,
            &bad,
            &started,
            Duration::from_secs(60),
            range,
            t("2026-03-29T09:00:00Z")
        )
        .is_err()
    );
}

#[test]
fn a_much_worse_segment_is_the_focus_only_with_the_traffic_to_watch_it() {
    // 4500 entries, 1125 went on; mobile 1800 of them, 270 went on (15%
    // against 31.7%): 270 of the 1125 conversions, 24%.
    let rows = json!([
        ["$device_type", "Desktop", 2700, 855],
        ["$device_type", "Mobile", 1800, 270],
        ["visitor", "new", 3000, 750],
        ["visitor", "returning", 1500, 375],
    ]);
    let mut e = Evidence::new("signup", "Viewed pricing", "Started signup");
    e.read(Kind::Segments, &rows).expect("rows");
    // The step brings 500 conversions in the observation window: mobile
    // about 120, enough for the revert test (30).
    e.focus_on(500.0, 200, true);
    let f = e.focus.clone().expect("a focus");
    assert_eq!(
        (f.segment.dimension.as_str(), f.segment.value.as_str()),
        ("$device_type", "Mobile")
    );
    assert!((f.expected_conversions - 120.0).abs() < 1e-9);
    assert!(f.watched);
    assert_eq!(
        f.watch_segment(),
        Some(crate::funnel::WatchSegment {
            property: "$device_type".into(),
            value: "Mobile".into()
        })
    );
    // Without segment_watch it is named, but the whole step is watched.
    e.focus_on(500.0, 200, false);
    let f = e.focus.clone().expect("a focus");
    assert!(!f.watched);
    assert_eq!(f.watch_segment(), None);
    // At 100 conversions for the step, mobile brings about 24: too few.
    e.focus_on(100.0, 200, true);
    assert_eq!(e.focus, None);
    // Fewer entries than min_visitors: not judged, not the focus.
    e.focus_on(500.0, 2000, true);
    assert_eq!(e.focus, None);
    // No segment much worse: no focus.
    let even = json!([
        ["$device_type", "Desktop", 2700, 675],
        ["$device_type", "Mobile", 1800, 450],
        ["visitor", "new", 4500, 1125],
    ]);
    let mut e = Evidence::new("signup", "Viewed pricing", "Started signup");
    e.read(Kind::Segments, &even).expect("rows");
    e.focus_on(500.0, 200, true);
    assert_eq!(e.focus, None);
}

#[test]
fn new_visitors_can_be_the_focus_but_are_not_watched_alone() {
    let rows = json!([
        ["visitor", "new", 3000, 300],
        ["visitor", "returning", 1500, 600],
    ]);
    let mut e = Evidence::new("signup", "Viewed pricing", "Started signup");
    e.read(Kind::Segments, &rows).expect("rows");
    e.focus_on(500.0, 200, true);
    let f = e.focus.expect("a focus");
    assert_eq!(f.segment.value, "new");
    assert!(!f.watched);
}
