use super::*;

/// A legacy funnel as PostHog stores one made in the app: pageviews with
/// `$pathname` filters (values as lists, as the app writes them), custom
/// events, and what funnelfix cannot express.
fn legacy() -> SavedInsight {
    serde_json::from_value(json!({
        "id": 12,
        "short_id": "Ab3dEf9x",
        "name": "Signup flow",
        "derived_name": "Pageview → Pageview → signup_started → signup_completed",
        "filters": {
            "insight": "FUNNELS",
            "events": [
                {"id": "$pageview", "name": "$pageview", "type": "events", "order": 0,
                 "properties": [{"key": "$pathname", "value": ["/"], "operator": "exact", "type": "event"}]},
                {"id": "$pageview", "name": "$pageview", "type": "events", "order": 1,
                 "properties": [
                    {"key": "$pathname", "value": "/pricing/", "operator": "exact", "type": "event"},
                    {"key": "$browser", "value": "Chrome", "operator": "icontains", "type": "event"},
                    {"key": "email", "value": ["a@b.c"], "operator": "exact", "type": "person"}
                 ]},
                {"id": "signup_started", "name": "signup_started", "type": "events", "order": 2,
                 "properties": [{"key": "plan", "value": ["pro", "team"], "operator": "exact", "type": "event"}]},
                {"id": "signup_completed", "name": "signup_completed", "type": "events", "order": 4,
                 "custom_name": "Signed up"}
            ],
            "actions": [
                {"id": 7, "name": "Clicked the CTA", "type": "actions", "order": 3}
            ],
            "properties": {"type": "AND", "values": [
                {"type": "OR", "values": [
                    {"key": "$host", "value": ["acme.com"], "operator": "exact", "type": "event"},
                    {"key": "$host", "value": ["www.acme.com"], "operator": "exact", "type": "event"}
                ]},
                {"type": "AND", "values": [
                    {"key": "$lib", "value": "web", "operator": "exact", "type": "event"}
                ]}
            ]},
            "funnel_window_interval": 2,
            "funnel_window_interval_unit": "hour",
            "funnel_viz_type": "steps",
            "filter_test_accounts": true,
            "exclusions": [{"id": "$pageleave", "type": "events", "funnel_from_step": 0, "funnel_to_step": 1}]
        },
        "query": null,
        "saved": true
    }))
    .expect("a saved insight")
}

/// A funnel in the `query` shape.
fn query_shaped() -> SavedInsight {
    serde_json::from_value(json!({
        "id": 31,
        "short_id": "Qz81Lm0p",
        "name": null,
        "derived_name": "Checkout",
        "filters": {},
        "query": {"kind": "InsightVizNode", "source": {
            "kind": "FunnelsQuery",
            "series": [
                {"kind": "EventsNode", "event": "$pageview", "name": "$pageview",
                 "properties": [{"key": "$current_url", "value": "https://shop.acme.com/cart?x=1", "operator": "exact", "type": "event"}]},
                {"kind": "EventsNode", "event": "checkout started", "name": "checkout started", "custom_name": "Checkout"},
                {"kind": "EventsNode", "event": null, "name": "All events"},
                {"kind": "EventsNode", "event": "order paid", "name": "order paid"}
            ],
            "funnelsFilter": {"funnelWindowInterval": 3, "funnelWindowIntervalUnit": "day", "funnelOrderType": "strict"},
            "breakdownFilter": {"breakdown": "$browser", "breakdown_type": "event"}
        }}
    }))
    .expect("a saved insight")
}

#[test]
fn a_legacy_funnel_keeps_its_equalities_and_lists_the_rest() {
    let f = read_funnel(&legacy()).expect("a funnel");
    assert_eq!(f.name, "signup-flow");
    assert_eq!(f.window, Duration::from_secs(2 * 3600));
    let names: Vec<&str> = f.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["Viewed /", "Viewed /pricing", "signup_started", "Signed up"]
    );
    let filters = |i: usize| -> Vec<(&str, &str)> {
        f.steps[i]
            .filters
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    };
    // The funnel-wide `$lib` equality is on every step; the OR group is not.
    assert_eq!(filters(0), [("$lib", "web"), ("$pathname", "/")]);
    assert_eq!(filters(1), [("$lib", "web"), ("$pathname", "/pricing/")]);
    assert_eq!(filters(2), [("$lib", "web")]);
    assert_eq!(f.steps[1].page, Some(Page::Filter("/pricing".into())));
    assert_eq!(f.steps[2].page, None);
    let lines: Vec<String> = f.dropped.iter().map(|d| format!("{d:?}")).collect();
    insta::assert_snapshot!(lines.join("\n"), @r#"
    Setting(Exclusions(1))
    Setting(TestAccounts)
    Filter { step: None, filter: "$host exact [\"acme.com\"]", why: Alternative }
    Filter { step: None, filter: "$host exact [\"www.acme.com\"]", why: Alternative }
    Filter { step: Some(2), filter: "$browser icontains \"Chrome\"", why: Operator("icontains") }
    Filter { step: Some(2), filter: "email exact [\"a@b.c\"]", why: NotEventProperty("person") }
    Filter { step: Some(3), filter: "plan exact [\"pro\",\"team\"]", why: SeveralValues }
    Step { step: 4, what: "the action \"Clicked the CTA\"" }
    "#);
}

#[test]
fn a_query_funnel_reads_the_same_way() {
    let insight = query_shaped();
    assert_eq!(insight.title(), "Checkout");
    assert!(insight.is("31") && insight.is("Qz81Lm0p") && !insight.is("3"));
    let f = read_funnel(&insight).expect("a funnel");
    assert_eq!(f.name, "checkout");
    assert_eq!(f.window, Duration::from_secs(3 * 86_400));
    let steps: Vec<(&str, &str)> = f
        .steps
        .iter()
        .map(|s| (s.name.as_str(), s.event.as_str()))
        .collect();
    assert_eq!(
        steps,
        [
            ("Viewed /cart", "$pageview"),
            ("Checkout", "checkout started"),
            ("order paid", "order paid")
        ]
    );
    // A URL filter is kept, and gives the page its path.
    assert_eq!(
        f.steps[0].filters["$current_url"],
        "https://shop.acme.com/cart?x=1"
    );
    assert_eq!(f.steps[0].page, Some(Page::Filter("/cart".into())));
    assert_eq!(
        f.dropped,
        vec![
            Dropped::Setting(Setting::Order("strict".into())),
            Dropped::Setting(Setting::Breakdown),
            Dropped::Step {
                step: 3,
                what: "all events (no event named)".into()
            },
        ]
    );
}

#[test]
fn other_insights_are_not_funnels() {
    let mut trends = legacy();
    trends.filters["insight"] = json!("TRENDS");
    assert_eq!(
        read_funnel(&trends).unwrap_err(),
        "it is a TRENDS, not a funnel"
    );
    let mut sql = query_shaped();
    sql.query = json!({"kind": "DataVisualizationNode", "source": {"kind": "HogQLQuery"}});
    assert_eq!(
        read_funnel(&sql).unwrap_err(),
        "it is a DataVisualizationNode, not a funnel"
    );
}

#[test]
fn the_default_window_is_postgogs_14_days() {
    let mut f = legacy();
    let filters = f.filters.as_object_mut().expect("object");
    filters.remove("funnel_window_interval");
    filters.remove("funnel_window_interval_unit");
    assert_eq!(
        read_funnel(&f).expect("funnel").window,
        Duration::from_secs(14 * 86_400)
    );
    f.filters["funnel_window_days"] = json!(7);
    assert_eq!(
        read_funnel(&f).expect("funnel").window,
        Duration::from_secs(7 * 86_400)
    );
}

fn paths(list: &[&str]) -> Vec<String> {
    list.iter().map(|p| p.to_string()).collect()
}

#[test]
fn static_pages_are_found_under_the_sites_root() {
    let repo = paths(&[
        "README.md",
        "site/index.html",
        "site/pricing.html",
        "site/signup/index.html",
        "site/blog/index.html",
        "site/assets/app.js",
        "node_modules/x/index.html",
        "docs/pricing.md",
    ]);
    assert_eq!(files_for("/", &repo), ["site/index.html"]);
    assert_eq!(files_for("/pricing", &repo), ["site/pricing.html"]);
    assert_eq!(files_for("/pricing/", &repo), ["site/pricing.html"]);
    assert_eq!(files_for("/signup", &repo), ["site/signup/index.html"]);
    assert!(files_for("/about", &repo).is_empty());
    // A site at the repository's root.
    let root = paths(&["index.html", "pricing.html", "css/site.css"]);
    assert_eq!(files_for("/pricing", &root), ["pricing.html"]);
    assert_eq!(files_for("/", &root), ["index.html"]);
}

#[test]
fn framework_routes_are_found() {
    let next_app = paths(&[
        "app/layout.tsx",
        "app/page.tsx",
        "app/(marketing)/pricing/page.tsx",
        "app/_components/page.tsx",
        "app/api/signup/route.ts",
    ]);
    assert_eq!(files_for("/", &next_app), ["app/page.tsx"]);
    assert_eq!(
        files_for("/pricing", &next_app),
        ["app/(marketing)/pricing/page.tsx"]
    );
    let next_pages = paths(&[
        "src/pages/index.tsx",
        "src/pages/pricing.tsx",
        "src/pages/_app.tsx",
        "src/pages/api/pricing.ts",
        "src/pages/signup/index.jsx",
    ]);
    assert_eq!(
        files_for("/pricing", &next_pages),
        ["src/pages/pricing.tsx"]
    );
    assert_eq!(
        files_for("/signup", &next_pages),
        ["src/pages/signup/index.jsx"]
    );
    assert_eq!(files_for("/", &next_pages), ["src/pages/index.tsx"]);
    let svelte = paths(&["src/routes/+page.svelte", "src/routes/pricing/+page.svelte"]);
    assert_eq!(
        files_for("/pricing", &svelte),
        ["src/routes/pricing/+page.svelte"]
    );
    let remix = paths(&["app/routes/_index.tsx", "app/routes/pricing.tsx"]);
    assert_eq!(files_for("/", &remix), ["app/routes/_index.tsx"]);
    assert_eq!(files_for("/pricing", &remix), ["app/routes/pricing.tsx"]);
    let astro = paths(&["src/pages/pricing.astro", "public/pricing.html"]);
    assert_eq!(files_for("/pricing", &astro), ["src/pages/pricing.astro"]);
}

#[test]
fn the_listing_rows_become_pages_and_events() {
    let rows = json!([
        ["$pageview", "/", 1000],
        ["$pageview", "/pricing", "600"],
        ["signup_started", "/signup", 290],
        ["signup_completed", "/welcome", 240],
        ["signup_started", "/pricing", 10],
        ["$pageview", null, 3],
        ["server_event", null, 2]
    ]);
    let top = parse_top_events(&rows).expect("rows");
    assert_eq!(
        top.pages,
        [("/".to_string(), 1000), ("/pricing".to_string(), 600)]
    );
    assert_eq!(top.events[0].event, "signup_started");
    assert_eq!(top.events[0].hits, 300);
    assert_eq!(top.top_path("signup_started"), Some("/signup"));
    assert_eq!(top.top_path("server_event"), None);
    assert!(parse_top_events(&json!([["x"]])).is_err());
    let q = top_events_query("2026-03-31T00:00:00Z".parse().expect("time"));
    assert_eq!(q.values["pageview"], json!("$pageview"));
    assert!(!q.query.contains("'$"), "{}", q.query);
}

#[test]
fn set_value_keeps_the_comment_in_its_column() {
    let text = "[posthog]\nhost = \"https://us.posthog.com\"      # default \"x\"; # not a comment start\n\n[github]\nhost = 1\n";
    let out = set_value(text, "posthog", "host", "\"http://127.0.0.1:4000\"");
    insta::assert_snapshot!(out, @r#"
    [posthog]
    host = "http://127.0.0.1:4000"       # default "x"; # not a comment start

    [github]
    host = 1
    "#);
    assert_eq!(set_value(text, "llm", "host", "2"), text);
}

#[test]
fn the_draft_is_a_valid_config_with_the_funnel_and_the_known_values() {
    let insight = legacy();
    let mut funnel = read_funnel(&insight).expect("a funnel");
    funnel.steps[0].files = vec!["site/index.html".into()];
    funnel.steps[1].files = vec!["site/pricing.html".into()];
    funnel.steps[2].page = Some(Page::Traffic("/signup".into()));
    funnel.steps[2].files = vec!["site/signup.html".into()];
    let settings = DraftSettings {
        posthog_host: "https://eu.posthog.com".into(),
        project_id: "4242".into(),
        github_api_url: "https://api.github.com".into(),
        repo: "acme/site".into(),
        base_branch: "prod".into(),
    };
    let draft = draft_config(EXAMPLE_CONFIG, &settings, &insight, &funnel);
    let config = crate::config::parse(&draft).expect("the draft parses");
    assert_eq!(config.posthog.host, "https://eu.posthog.com");
    assert_eq!(config.posthog.project_id, "4242");
    assert_eq!(config.github.repo, "acme/site");
    assert_eq!(config.github.base_branch, "prod");
    assert_eq!(config.github.allowed_paths, ["site/**"]);
    assert_eq!(config.funnels.len(), 1);
    assert_eq!(config.funnels[0].steps.len(), 4);
    assert!(
        draft.contains(
            "project_id = \"4242\"                  # required: Project settings → Project ID"
        ),
        "{draft}"
    );
    let funnel_part = &draft[draft.find("\n# The funnel").expect("the funnel part")..];
    insta::assert_snapshot!(funnel_part, @r#"
    # The funnel, from PostHog's saved funnel 12 "Signup flow".
    # Not carried over (funnelfix counts events with property equality filters):
    #   - 1 exclusion step(s)
    #   - "filter out internal and test users": their events are counted
    #   - every step: $host exact ["acme.com"] (one of several alternatives (an OR group))
    #   - every step: $host exact ["www.acme.com"] (one of several alternatives (an OR group))
    #   - step 2: $browser icontains "Chrome" (operator "icontains"; only "exact" (equals) can be expressed)
    #   - step 2: email exact ["a@b.c"] (a person filter; only event properties can be expressed)
    #   - step 3: plan exact ["pro","team"] (several values (any of them); only one can be expressed)
    #   - step 4 is the action "Clicked the CTA": funnelfix counts events only, so the step was left out
    [[funnel]]                           # one or more funnels
    name = "signup-flow"
    conversion_window = "2h"             # the saved funnel's conversion window
    selection = "lowest_rate"            # or "most_lost" (entrants × (1 − rate))

      [[funnel.step]]
      name = "Viewed /"
      event = "$pageview"
      filters = { "$lib" = "web", "$pathname" = "/" }
      files = ["site/index.html"]        # guessed from /: confirm

      [[funnel.step]]
      name = "Viewed /pricing"
      event = "$pageview"
      filters = { "$lib" = "web", "$pathname" = "/pricing/" }
      files = ["site/pricing.html"]      # guessed from /pricing: confirm

      [[funnel.step]]
      name = "signup_started"
      event = "signup_started"
      filters = { "$lib" = "web" }
      files = ["site/signup.html"]       # guessed: signup_started is sent from /signup most: confirm

      [[funnel.step]]
      name = "Signed up"
      event = "signup_completed"
      filters = { "$lib" = "web" }
    "#);
}
