//! `funnelfix init`, the pure parts: a saved PostHog funnel insight read into
//! the steps funnelfix can count (and what it cannot, listed, never dropped
//! silently), the page files behind each step guessed from the repository's
//! paths, the HogQL query of a project's most used pages and events, and the
//! draft config assembled from the example file.
//!
//! A saved insight comes in one of two shapes: legacy `filters`
//! (`insight: "FUNNELS"`, `events`/`actions` with `order` and `properties`,
//! `funnel_window_interval` and `_unit`), or a `query` (`InsightVizNode`
//! around a `FunnelsQuery` with `series`, `properties` and `funnelsFilter`).
//! Both are read into the same [`DraftFunnel`].

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::config::is_property_name;
use crate::funnel::hogql::HogQlQuery;
use crate::text::init as text;

/// One saved insight as PostHog's insights API lists it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SavedInsight {
    pub id: i64,
    #[serde(default)]
    pub short_id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub derived_name: Option<String>,
    #[serde(default)]
    pub filters: Value,
    #[serde(default)]
    pub query: Value,
}

impl SavedInsight {
    /// The name a person gave it, else the one PostHog derived.
    pub fn title(&self) -> &str {
        [&self.name, &self.derived_name]
            .into_iter()
            .flatten()
            .map(|s| s.trim())
            .find(|s| !s.is_empty())
            .unwrap_or("")
    }

    /// `--insight` takes the numeric id or the short id in the insight's URL.
    pub fn is(&self, wanted: &str) -> bool {
        let wanted = wanted.trim();
        wanted == self.id.to_string() || (!self.short_id.is_empty() && wanted == self.short_id)
    }
}

/// A step of the draft.
#[derive(Debug, Clone, PartialEq)]
pub struct DraftStep {
    pub name: String,
    pub event: String,
    /// Property equality filters.
    pub filters: BTreeMap<String, String>,
    /// The URL path the step happens on, when known: what the page files are
    /// guessed from.
    pub page: Option<Page>,
    /// Guessed page files, for the person to confirm.
    pub files: Vec<String>,
}

/// Where a step's URL path comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    /// The step's own `$pathname` (or `$current_url`) filter.
    Filter(String),
    /// The path the event was sent from most in the last days.
    Traffic(String),
}

impl Page {
    pub fn path(&self) -> &str {
        match self {
            Page::Filter(p) | Page::Traffic(p) => p,
        }
    }
}

/// What the saved funnel has that funnelfix cannot express.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dropped {
    /// A whole step (1-based, as PostHog numbers them): an action, "All
    /// events", a data warehouse table.
    Step { step: usize, what: String },
    /// A property filter of a step (1-based), or of the whole funnel (`None`).
    Filter {
        step: Option<usize>,
        filter: String,
        why: FilterWhy,
    },
    /// A funnel-wide setting funnelfix does not have.
    Setting(Setting),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterWhy {
    /// Only `exact` is an equality.
    Operator(String),
    /// Person, cohort, element, session... properties are not on the event.
    NotEventProperty(String),
    /// A number, a boolean, or no value.
    NotText,
    /// `exact` with several values (any of them).
    SeveralValues,
    /// A property name HogQL cannot be given safely.
    Name,
    /// One of several alternatives (an OR group).
    Alternative,
    /// A second value for a property the step already filters on.
    Repeated,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting {
    /// "strict" or "unordered".
    Order(String),
    Exclusions(usize),
    TestAccounts,
    /// Counting groups (companies...) instead of people.
    Groups,
    Breakdown,
}

/// A saved funnel as funnelfix can count it.
#[derive(Debug, Clone, PartialEq)]
pub struct DraftFunnel {
    /// A slug of the insight's title, usable in branch names.
    pub name: String,
    pub window: Duration,
    pub steps: Vec<DraftStep>,
    pub dropped: Vec<Dropped>,
}

/// The example config: the draft keeps its other sections and comments.
pub const EXAMPLE_CONFIG: &str = include_str!("../config/funnelfix.example.toml");

/// PostHog's default conversion window.
const DEFAULT_WINDOW: Duration = Duration::from_secs(14 * 86_400);

/// One entry of a funnel's series, from either shape.
struct Series {
    /// The event name; `None` for a step that is not an event.
    event: Option<String>,
    /// What the step is, when it is not an event.
    other: String,
    custom_name: Option<String>,
    properties: Value,
}

/// Reads a saved funnel insight (either shape).
pub fn read_funnel(insight: &SavedInsight) -> Result<DraftFunnel, String> {
    let (series, global, window, mut dropped) = if insight.query.is_object() {
        read_query(&insight.query)?
    } else {
        read_filters(&insight.filters)?
    };
    let mut steps: Vec<DraftStep> = Vec::new();
    let mut global_filters = BTreeMap::new();
    for (prop, why) in equalities(&global) {
        match why {
            Ok((key, value)) if !global_filters.contains_key(&key) => {
                global_filters.insert(key, value);
            }
            Ok((key, value)) => dropped.push(Dropped::Filter {
                step: None,
                filter: format!("{key} = {value:?}"),
                why: FilterWhy::Repeated,
            }),
            Err(why) => dropped.push(Dropped::Filter {
                step: None,
                filter: prop,
                why,
            }),
        }
    }
    for (i, s) in series.into_iter().enumerate() {
        let Some(event) = s.event else {
            dropped.push(Dropped::Step {
                step: i + 1,
                what: s.other,
            });
            continue;
        };
        let mut filters = global_filters.clone();
        for (prop, result) in equalities(&s.properties) {
            match result {
                Ok((key, value)) if !filters.contains_key(&key) => {
                    filters.insert(key, value);
                }
                Ok((key, value)) => dropped.push(Dropped::Filter {
                    step: Some(i + 1),
                    filter: format!("{key} = {value:?}"),
                    why: FilterWhy::Repeated,
                }),
                Err(why) => dropped.push(Dropped::Filter {
                    step: Some(i + 1),
                    filter: prop,
                    why,
                }),
            }
        }
        let page = filters
            .get("$pathname")
            .cloned()
            .or_else(|| filters.get("$current_url").and_then(|u| url_path(u)))
            .map(|p| Page::Filter(normalize_path(&p)));
        let name = s
            .custom_name
            .filter(|n| !n.trim().is_empty())
            .map(|n| n.trim().to_string())
            .unwrap_or_else(|| match (&page, event.as_str()) {
                (Some(p), "$pageview") => text::pageview_step_name(p.path()),
                _ => event.clone(),
            });
        steps.push(DraftStep {
            name: unique_name(&steps, name),
            event,
            filters,
            page,
            files: Vec::new(),
        });
    }
    Ok(DraftFunnel {
        name: slug(insight.title()),
        window,
        steps,
        dropped,
    })
}

type Read = (Vec<Series>, Value, Duration, Vec<Dropped>);

/// `query`: `{"kind": "InsightVizNode", "source": {"kind": "FunnelsQuery", ...}}`.
fn read_query(query: &Value) -> Result<Read, String> {
    let source = match query.get("kind").and_then(Value::as_str) {
        Some("InsightVizNode") => &query["source"],
        _ => query,
    };
    let kind = source.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind != "FunnelsQuery" {
        return Err(text::not_a_funnel(kind));
    }
    let series = source["series"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|node| {
            let kind = node["kind"].as_str().unwrap_or("");
            let event = node["event"].as_str().filter(|_| kind == "EventsNode");
            Series {
                event: event.map(str::to_string),
                other: text::not_an_event(kind, node.get("name").or(node.get("id"))),
                custom_name: node["custom_name"].as_str().map(str::to_string),
                properties: node["properties"].clone(),
            }
        })
        .collect();
    let filter = &source["funnelsFilter"];
    let window = window(
        filter["funnelWindowInterval"].as_u64(),
        filter["funnelWindowIntervalUnit"].as_str(),
        None,
    );
    let mut dropped = Vec::new();
    settings(
        &mut dropped,
        filter["funnelOrderType"].as_str(),
        &filter["exclusions"],
        source["filterTestAccounts"].as_bool(),
        &source["aggregation_group_type_index"],
        &source["breakdownFilter"]["breakdown"],
    );
    Ok((series, source["properties"].clone(), window, dropped))
}

/// Legacy `filters`: `events` and `actions` together, in `order`.
fn read_filters(filters: &Value) -> Result<Read, String> {
    let insight = filters["insight"].as_str().unwrap_or("");
    if !insight.eq_ignore_ascii_case("FUNNELS") {
        return Err(text::not_a_funnel(insight));
    }
    let mut entities: Vec<(i64, Series)> = Vec::new();
    for (list, is_event) in [("events", true), ("actions", false)] {
        for (i, e) in filters[list]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let event = e["id"].as_str().filter(|_| is_event);
            let kind = if is_event { "event" } else { "action" };
            let label = e.get("name").filter(|n| !n.is_null()).or(e.get("id"));
            entities.push((
                e["order"].as_i64().unwrap_or(i as i64),
                Series {
                    event: event.map(str::to_string),
                    other: text::not_an_event(kind, label),
                    custom_name: e["custom_name"].as_str().map(str::to_string),
                    properties: e["properties"].clone(),
                },
            ));
        }
    }
    entities.sort_by_key(|(order, _)| *order);
    let window = window(
        filters["funnel_window_interval"].as_u64(),
        filters["funnel_window_interval_unit"].as_str(),
        filters["funnel_window_days"].as_u64(),
    );
    let mut dropped = Vec::new();
    settings(
        &mut dropped,
        filters["funnel_order_type"].as_str(),
        &filters["exclusions"],
        filters["filter_test_accounts"].as_bool(),
        &filters["aggregation_group_type_index"],
        &filters["breakdown"],
    );
    Ok((
        entities.into_iter().map(|(_, s)| s).collect(),
        filters["properties"].clone(),
        window,
        dropped,
    ))
}

fn window(interval: Option<u64>, unit: Option<&str>, days: Option<u64>) -> Duration {
    let unit_secs = match unit.unwrap_or("day") {
        "second" => 1,
        "minute" => 60,
        "hour" => 3600,
        "week" => 7 * 86_400,
        "month" => 30 * 86_400,
        _ => 86_400,
    };
    match (interval, days) {
        (Some(n), _) if n > 0 => Duration::from_secs(n * unit_secs),
        (_, Some(d)) if d > 0 => Duration::from_secs(d * 86_400),
        _ => DEFAULT_WINDOW,
    }
}

fn settings(
    dropped: &mut Vec<Dropped>,
    order: Option<&str>,
    exclusions: &Value,
    test_accounts: Option<bool>,
    groups: &Value,
    breakdown: &Value,
) {
    if let Some(order) = order.filter(|o| *o != "ordered") {
        dropped.push(Dropped::Setting(Setting::Order(order.to_string())));
    }
    let exclusions = exclusions.as_array().map_or(0, Vec::len);
    if exclusions > 0 {
        dropped.push(Dropped::Setting(Setting::Exclusions(exclusions)));
    }
    if test_accounts == Some(true) {
        dropped.push(Dropped::Setting(Setting::TestAccounts));
    }
    if !groups.is_null() {
        dropped.push(Dropped::Setting(Setting::Groups));
    }
    if !breakdown.is_null() && breakdown != &json!([]) && breakdown != &json!("") {
        dropped.push(Dropped::Setting(Setting::Breakdown));
    }
}

/// A filter as `(key, value)`, or why it is not an equality.
type Equality = Result<(String, String), FilterWhy>;

/// Each property filter in `props` (a list, or AND/OR groups of lists):
/// `Ok((key, value))` if it is an equality funnelfix can express, else the
/// filter as written and why not.
fn equalities(props: &Value) -> Vec<(String, Equality)> {
    let mut flat = Vec::new();
    flatten(props, false, &mut flat);
    flat.into_iter()
        .map(|(p, alternative)| {
            let written = text::property_filter(&p);
            let result = if alternative {
                Err(FilterWhy::Alternative)
            } else {
                equality(&p)
            };
            (written, result)
        })
        .collect()
}

fn flatten(props: &Value, alternative: bool, out: &mut Vec<(Value, bool)>) {
    match props {
        Value::Array(items) => {
            for item in items {
                flatten(item, alternative, out);
            }
        }
        Value::Object(o) if o.contains_key("values") && !o.contains_key("key") => {
            let values = o["values"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            let or = o.get("type").and_then(Value::as_str) == Some("OR") && values.len() > 1;
            for v in values {
                flatten(v, alternative || or, out);
            }
        }
        Value::Object(_) => out.push((props.clone(), alternative)),
        _ => {}
    }
}

fn equality(p: &Value) -> Result<(String, String), FilterWhy> {
    let kind = p["type"].as_str().unwrap_or("event");
    if kind != "event" {
        return Err(FilterWhy::NotEventProperty(kind.to_string()));
    }
    let operator = p["operator"].as_str().unwrap_or("exact");
    if operator != "exact" {
        return Err(FilterWhy::Operator(operator.to_string()));
    }
    let key = p["key"].as_str().unwrap_or("");
    if !is_property_name(key) {
        return Err(FilterWhy::Name);
    }
    let value = match &p["value"] {
        Value::String(s) => s.clone(),
        Value::Array(list) if list.len() > 1 => return Err(FilterWhy::SeveralValues),
        Value::Array(list) => match list.first() {
            Some(Value::String(s)) => s.clone(),
            _ => return Err(FilterWhy::NotText),
        },
        _ => return Err(FilterWhy::NotText),
    };
    Ok((key.to_string(), value))
}

fn unique_name(steps: &[DraftStep], name: String) -> String {
    let taken = |n: &str| steps.iter().any(|s| s.name == n);
    if !taken(&name) {
        return name;
    }
    (2..)
        .map(|i| format!("{name} ({i})"))
        .find(|n| !taken(n))
        .unwrap_or(name)
}

/// A funnel name funnelfix accepts (a-z, 0-9, - and _; at most 40).
pub fn slug(title: &str) -> String {
    let mut out = String::new();
    for c in title.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let out: String = out.chars().take(40).collect();
    let out = out.trim_matches('-');
    if out.is_empty() {
        "funnel".to_string()
    } else {
        out.to_string()
    }
}

/// The path of a URL: `https://acme.com/pricing?x=1` → `/pricing`.
fn url_path(url: &str) -> Option<String> {
    let rest = url.split_once("://").map(|(_, r)| r)?;
    let path = rest.find('/').map_or("/", |i| &rest[i..]);
    Some(path.to_string())
}

/// `/pricing/?a=1#b` → `/pricing`; `""` → `/`.
fn normalize_path(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let trimmed = path.trim_matches('/');
    format!("/{trimmed}")
}

// ---------------------------------------------------------------------------
// Guessing the page files.

/// Script and markup files a page route can be written in.
const ROUTE_EXTENSIONS: &[&str] = &[
    "tsx", "jsx", "ts", "js", "mdx", "md", "astro", "vue", "svelte", "html",
];

/// At most this many files are proposed for one step.
const MAX_FILES: usize = 3;

/// The files that serve URL `path` among the repository's `files`: static
/// HTML under the site's root (the folder of the shallowest `index.html`),
/// and the routes of Next.js (`pages/`, `app/**/page.tsx`), Astro, Nuxt,
/// SvelteKit (`src/routes/**/+page.svelte`) and Remix (`app/routes/`).
pub fn files_for(path: &str, files: &[String]) -> Vec<String> {
    let wanted = normalize_path(path);
    let roots = html_roots(files);
    let mut found: Vec<String> = files
        .iter()
        .filter(|f| route_of(f, &roots).is_some_and(|r| r == wanted))
        .cloned()
        .collect();
    found.sort_by_key(|f| (f.matches('/').count(), f.clone()));
    found.truncate(MAX_FILES);
    found
}

/// Folders that hold the site's top `index.html`: the shallowest ones.
fn html_roots(files: &[String]) -> Vec<String> {
    let indexes: Vec<&str> = files
        .iter()
        .filter(|f| !ignored(f))
        .filter_map(|f| {
            f.strip_suffix("index.html")
                .filter(|dir| dir.is_empty() || dir.ends_with('/'))
        })
        .collect();
    let depth = indexes.iter().map(|d| d.matches('/').count()).min();
    match depth {
        None => vec![String::new()],
        Some(depth) => indexes
            .into_iter()
            .filter(|d| d.matches('/').count() == depth)
            .map(str::to_string)
            .collect(),
    }
}

fn ignored(file: &str) -> bool {
    file.split('/')
        .any(|s| s.starts_with('.') || s == "node_modules" || s == "vendor")
}

/// The URL path `file` serves, if it is a page.
fn route_of(file: &str, html_roots: &[String]) -> Option<String> {
    if ignored(file) {
        return None;
    }
    let (stem_path, ext) = file.rsplit_once('.')?;
    if !ROUTE_EXTENSIONS.contains(&ext) {
        return None;
    }
    let route = |segments: Vec<&str>| -> String {
        let kept: Vec<&str> = segments
            .into_iter()
            .filter(|s| !(s.is_empty() || s.starts_with('(') && s.ends_with(')')))
            .collect();
        format!("/{}", kept.join("/"))
    };
    // Next.js app router: app/pricing/page.tsx; (groups) add nothing.
    for root in ["app/", "src/app/"] {
        if let Some(dir) = stem_path.strip_prefix(root).and_then(|s| {
            s.strip_suffix("/page")
                .or((s == "page").then_some(""))
                .filter(|_| ext != "html")
        }) {
            if dir
                .split('/')
                .any(|s| s.starts_with('_') || s.starts_with('@'))
            {
                return None;
            }
            return Some(route(dir.split('/').collect()));
        }
    }
    // SvelteKit: src/routes/pricing/+page.svelte.
    if let Some(rest) = stem_path.strip_prefix("src/routes/") {
        let dir = rest
            .strip_suffix("/+page")
            .or((rest == "+page").then_some(""))?;
        return (ext == "svelte").then(|| route(dir.split('/').collect()));
    }
    // Remix flat routes: app/routes/pricing.tsx, app/routes/_index.tsx.
    if let Some(name) = stem_path.strip_prefix("app/routes/") {
        if name.contains('/') || ext == "html" {
            return None;
        }
        let segments = name
            .split('.')
            .filter(|s| *s != "_index" && !s.starts_with('_'))
            .collect();
        return Some(route(segments));
    }
    // File-based pages: Next.js pages router, Astro, Nuxt, Gatsby.
    for root in ["pages/", "src/pages/"] {
        if let Some(rest) = stem_path.strip_prefix(root) {
            let segments: Vec<&str> = rest.split('/').collect();
            if segments[0] == "api" || segments.iter().any(|s| s.starts_with('_')) {
                return None;
            }
            return Some(route(without_index(segments)));
        }
    }
    // Static HTML under the site's root.
    if ext == "html" {
        let rest = html_roots
            .iter()
            .find_map(|root| stem_path.strip_prefix(root.as_str()))?;
        return Some(route(without_index(rest.split('/').collect())));
    }
    None
}

fn without_index(mut segments: Vec<&str>) -> Vec<&str> {
    if segments.last() == Some(&"index") {
        segments.pop();
    }
    segments
}

/// `allowed_paths` for the draft: the top folder of each guessed file
/// (`site/**`), or the file itself at the repository's root.
pub fn allowed_paths(funnel: &DraftFunnel) -> Vec<String> {
    let mut globs: Vec<String> = Vec::new();
    for file in funnel.steps.iter().flat_map(|s| &s.files) {
        let glob = match file.split_once('/') {
            Some((top, _)) => format!("{top}/**"),
            None => file.clone(),
        };
        if !globs.contains(&glob) {
            globs.push(glob);
        }
    }
    globs
}

// ---------------------------------------------------------------------------
// The project's most used pages and events.

/// Days of traffic the listing looks at.
pub const TOP_DAYS: i64 = 30;
/// Rows the listing reads: (event, path) pairs, most sent first.
const TOP_ROWS: usize = 200;

/// One query: how often each page was viewed and each custom event sent,
/// per path, over the last [`TOP_DAYS`] days. PostHog's own events
/// (`$autocapture`, `$pageleave`...) but `$pageview` are left out.
pub fn top_events_query(now: DateTime<Utc>) -> HogQlQuery {
    let from = now - chrono::Duration::days(TOP_DAYS);
    let mut values = Map::new();
    values.insert("date_from".into(), json!(from.timestamp()));
    values.insert("date_to".into(), json!(now.timestamp()));
    values.insert("pageview".into(), json!("$pageview"));
    values.insert("system_prefix".into(), json!("$"));
    let query = format!(
        "SELECT event, properties.$pathname AS path, count() AS hits\n\
         FROM events\n\
         WHERE timestamp >= fromUnixTimestamp({{date_from}}) AND timestamp < fromUnixTimestamp({{date_to}})\n    \
         AND (event = {{pageview}} OR NOT startsWith(event, {{system_prefix}}))\n\
         GROUP BY event, path\n\
         ORDER BY hits DESC, event, path\n\
         LIMIT {TOP_ROWS}"
    );
    HogQlQuery { query, values }
}

/// The listing: pages by views, custom events by count with the path each
/// is sent from most.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopEvents {
    pub pages: Vec<(String, u64)>,
    pub events: Vec<EventUse>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventUse {
    pub event: String,
    pub hits: u64,
    pub top_path: Option<String>,
}

impl TopEvents {
    /// Where `event` is sent from most, if it carries a path.
    pub fn top_path(&self, event: &str) -> Option<&str> {
        self.events
            .iter()
            .find(|e| e.event == event)
            .and_then(|e| e.top_path.as_deref())
    }

    pub fn is_empty(&self) -> bool {
        self.pages.is_empty() && self.events.is_empty()
    }
}

/// Rows `[event, path, hits]`, most hits first.
pub fn parse_top_events(results: &Value) -> Result<TopEvents, String> {
    let rows = results
        .as_array()
        .ok_or_else(|| "the reply has no results list".to_string())?;
    let mut top = TopEvents::default();
    for row in rows {
        let (Some(event), Some(hits)) = (
            row.get(0).and_then(Value::as_str),
            row.get(2)
                .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok())),
        ) else {
            return Err(format!("a result row is not [event, path, hits]: {row}"));
        };
        let path = row.get(1).and_then(Value::as_str).filter(|p| !p.is_empty());
        if event == "$pageview" {
            if let Some(path) = path {
                top.pages.push((path.to_string(), hits));
            }
            continue;
        }
        match top.events.iter_mut().find(|e| e.event == event) {
            // Rows come most hits first: the first path seen is the top one.
            Some(e) => {
                e.hits += hits;
                if e.top_path.is_none() {
                    e.top_path = path.map(str::to_string);
                }
            }
            None => top.events.push(EventUse {
                event: event.to_string(),
                hits,
                top_path: path.map(str::to_string),
            }),
        }
    }
    top.events.sort_by_key(|e| std::cmp::Reverse(e.hits));
    Ok(top)
}

// ---------------------------------------------------------------------------
// The draft file.

/// What `init` knows of the other sections.
#[derive(Debug, Clone, PartialEq)]
pub struct DraftSettings {
    pub posthog_host: String,
    pub project_id: String,
    pub github_api_url: String,
    pub repo: String,
    pub base_branch: String,
}

/// The example config with the known values set, its funnel replaced by
/// the draft's.
pub fn draft_config(
    example: &str,
    settings: &DraftSettings,
    insight: &SavedInsight,
    funnel: &DraftFunnel,
) -> String {
    let head = example.split("\n[[funnel]]").next().unwrap_or(example);
    let string = |s: &str| toml::Value::String(s.to_string()).to_string();
    let mut text = head.to_string();
    let mut set = |section: &str, key: &str, value: String| {
        text = set_value(&text, section, key, &value);
    };
    set("posthog", "host", string(&settings.posthog_host));
    set("posthog", "project_id", string(&settings.project_id));
    set("github", "api_url", string(&settings.github_api_url));
    set("github", "repo", string(&settings.repo));
    set("github", "base_branch", string(&settings.base_branch));
    let globs = allowed_paths(funnel);
    if !globs.is_empty() {
        let list: Vec<String> = globs.iter().map(|g| string(g)).collect();
        set("github", "allowed_paths", format!("[{}]", list.join(", ")));
    }
    format!(
        "{}{}\n{}",
        text::draft_header(insight),
        text.trim_end(),
        text::draft_funnel(insight, funnel)
    )
}

/// `text` with `key`'s value in `[section]` replaced, its comment kept in
/// its column. Unchanged if the key is not there.
fn set_value(text: &str, section: &str, key: &str, value: &str) -> String {
    let header = format!("[{section}]");
    let mut in_section = false;
    let mut done = false;
    let mut out = String::with_capacity(text.len() + value.len());
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            in_section = trimmed.starts_with(&header);
        }
        let is_key = trimmed
            .strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with('='));
        if in_section && !done && is_key {
            done = true;
            let indent = &line[..line.len() - trimmed.len()];
            let comment = comment_start(trimmed).map(|at| (at, &trimmed[at..]));
            let mut new = format!("{indent}{key} = {value}");
            if let Some((at, comment)) = comment {
                let column = indent.len() + at;
                let pad = column.saturating_sub(new.chars().count()).max(1);
                new.push_str(&" ".repeat(pad));
                new.push_str(comment.trim_end());
            }
            out.push_str(&new);
            out.push('\n');
        } else {
            out.push_str(line);
        }
    }
    out
}

/// Where a `#` comment starts on a TOML line, outside strings.
fn comment_start(line: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match quote {
            Some('"') if escaped => escaped = false,
            Some('"') if c == '\\' => escaped = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' => return Some(i),
            None => {}
        }
    }
    None
}

#[cfg(test)]
mod tests;
