//! A PostHog twin: `POST /api/projects/{id}/query/` with bearer auth,
//! PostHog's error shapes, fault injection, and annotations.
//!
//! It holds an event log and answers funnelfix's funnel queries by counting
//! that log itself ([`count_entries`]), a second implementation of the same
//! definition (see [`crate::funnel::hogql`]): per step, each person's first
//! step event of a UTC day in `[date_from, date_to)` is an entry, converted
//! when the person's next-step event follows within the window, in whole
//! seconds. It reads the step conditions and the window from the request's
//! `values`, and from the query text the property each filter compares (with
//! the events it is read from) and the `event IN (...)` prefilter, so a
//! query that means something else gives different counts and the tests
//! notice.
//!
//! It also keeps saved insights, listed as PostHog lists them
//! (`GET /api/projects/{id}/insights/`, paginated, `insight=FUNNELS` taking
//! both the legacy `filters` shape and the `query` one, `saved=true`), and
//! answers `funnelfix init`'s query of the most used pages and events from
//! the same event log.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::DateTime;
use serde_json::{Map, Value, json};

use crate::sandbox::Server;
pub use crate::sandbox::events::Event;
use crate::sandbox::events::EventLog;
use crate::sandbox::posthog_evidence;

/// An annotation as funnelfix created it.
#[derive(Debug, Clone, PartialEq)]
pub struct Annotation {
    pub content: String,
    pub date_marker: String,
    pub scope: String,
}

/// A fault the next queries answer with.
#[derive(Debug, Clone)]
struct Fault {
    status: u16,
    times: usize,
}

#[derive(Default)]
struct Twin {
    project: String,
    key: String,
    log: EventLog,
    annotations: Vec<Annotation>,
    faults: Vec<Fault>,
    /// Queries whose text contains the first string answer the status.
    failing: Vec<(String, u16)>,
    delay: Option<Duration>,
    queries: Vec<Value>,
    /// Saved insights, in the order they were saved.
    insights: Vec<Value>,
    /// The most insights one page lists, whatever `limit` asks.
    max_page: Option<usize>,
    insight_requests: usize,
}

pub struct PostHogTwin {
    state: Arc<Mutex<Twin>>,
    server: Server,
}

fn lock(state: &Mutex<Twin>) -> MutexGuard<'_, Twin> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl PostHogTwin {
    pub async fn start(project_id: &str, key: &str) -> std::io::Result<PostHogTwin> {
        let state = Arc::new(Mutex::new(Twin {
            project: project_id.to_string(),
            key: key.to_string(),
            ..Twin::default()
        }));
        let router = Router::new()
            .route("/api/projects/{project}/query/", post(query))
            .route("/api/projects/{project}/annotations/", post(annotate))
            .route("/api/projects/{project}/insights/", get(list_insights))
            .with_state(state.clone());
        let server = Server::start(router).await?;
        Ok(PostHogTwin { state, server })
    }

    /// The `posthog.host` to configure.
    pub fn url(&self) -> String {
        self.server.url()
    }

    pub fn push_events(&self, events: Vec<Event>) {
        let mut twin = lock(&self.state);
        for e in &events {
            twin.log.push_event(e);
        }
    }

    /// Works on the events table directly (the simulated site writes its
    /// visitors' events this way, without building an [`Event`] each).
    pub fn with_log<R>(&self, f: impl FnOnce(&mut EventLog) -> R) -> R {
        f(&mut lock(&self.state).log)
    }

    pub fn event_count(&self) -> usize {
        lock(&self.state).log.len()
    }

    pub fn annotations(&self) -> Vec<Annotation> {
        lock(&self.state).annotations.clone()
    }

    /// The next `times` queries answer `status` in PostHog's error shape
    /// (429 says when to come back in its `detail`, as PostHog does).
    pub fn fail_next(&self, status: u16, times: usize) {
        lock(&self.state).faults.push(Fault { status, times });
    }

    /// Every query whose text contains `needle` answers `status` from now on
    /// (say, one evidence query that is too expensive).
    pub fn fail_queries_containing(&self, needle: &str, status: u16) {
        lock(&self.state).failing.push((needle.to_string(), status));
    }

    /// Every query answers only after `delay` (a busy ClickHouse).
    pub fn set_delay(&self, delay: Option<Duration>) {
        lock(&self.state).delay = delay;
    }

    /// Request bodies of the queries received, in order.
    pub fn queries(&self) -> Vec<Value> {
        lock(&self.state).queries.clone()
    }

    pub fn query_count(&self) -> usize {
        lock(&self.state).queries.len()
    }

    /// Saves an insight as the PostHog app would: `insight` holds `name`,
    /// and `filters` or `query` in PostHog's JSON; the twin adds `id`,
    /// `short_id` and the other fields PostHog fills, unless given (`saved`
    /// defaults to true). Returns the insight as it is listed.
    pub fn save_insight(&self, insight: Value) -> Value {
        let mut twin = lock(&self.state);
        let id = twin.insights.len() as i64 + 1;
        let mut full = json!({
            "id": id,
            "short_id": format!("Ins{id:05}"),
            "name": null,
            "derived_name": null,
            "filters": {},
            "query": null,
            "dashboards": [],
            "dashboard_tiles": [],
            "description": null,
            "last_refresh": null,
            "refreshing": false,
            "saved": true,
            "deleted": false,
            "tags": [],
            "favorited": false,
            "created_at": "2026-02-02T10:00:00.000000Z",
            "updated_at": "2026-02-02T10:00:00.000000Z",
            "last_modified_at": "2026-02-02T10:00:00.000000Z",
            "created_by": {"id": 1, "first_name": "Ada", "email": "ada@acme.test"},
        });
        if let (Some(full), Some(given)) = (full.as_object_mut(), insight.as_object()) {
            for (k, v) in given {
                full.insert(k.clone(), v.clone());
            }
        }
        twin.insights.push(full.clone());
        full
    }

    /// Pages of the insights list hold at most `n` insights.
    pub fn set_max_page(&self, n: usize) {
        lock(&self.state).max_page = Some(n.max(1));
    }

    /// Requests to the insights list.
    pub fn insight_requests(&self) -> usize {
        lock(&self.state).insight_requests
    }
}

/// PostHog's error body.
fn error(status: StatusCode, kind: &str, code: &str, detail: &str) -> Response {
    (
        status,
        Json(json!({"type": kind, "code": code, "detail": detail, "attr": null})),
    )
        .into_response()
}

/// Checks the key and the project; `Err` is the reply to send.
fn authorize(twin: &Twin, headers: &HeaderMap, project: &str) -> Result<(), Box<Response>> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if auth != Some(twin.key.as_str()) {
        return Err(Box::new(error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "authentication_failed",
            "Incorrect authentication credentials.",
        )));
    }
    if project != twin.project {
        return Err(Box::new(error(
            StatusCode::NOT_FOUND,
            "invalid_request",
            "not_found",
            "Not found.",
        )));
    }
    Ok(())
}

async fn query(
    State(state): State<Arc<Mutex<Twin>>>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let delay = {
        let mut twin = lock(&state);
        if let Err(reply) = authorize(&twin, &headers, &project) {
            return *reply;
        }
        let body: Value = match serde_json::from_str(&body) {
            Ok(v) => v,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "validation_error",
                    "parse_error",
                    &format!("JSON parse error - {e}"),
                );
            }
        };
        let text = body["query"]["query"].as_str().unwrap_or("").to_string();
        twin.queries.push(body);
        let failing = twin
            .failing
            .iter()
            .find(|(needle, _)| text.contains(needle.as_str()))
            .map(|(_, status)| *status);
        let fault = match failing {
            Some(status) => Some(status),
            None => twin.faults.iter_mut().find(|f| f.times > 0).map(|fault| {
                fault.times -= 1;
                fault.status
            }),
        };
        if let Some(fault_status) = fault {
            let status =
                StatusCode::from_u16(fault_status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return match fault_status {
                429 => error(
                    status,
                    "throttled_error",
                    "throttled",
                    "Request was throttled. Expected available in 1 second.",
                ),
                503 => error(
                    status,
                    "server_error",
                    "service_unavailable",
                    "ClickHouse is busy, try again later.",
                ),
                504 => error(status, "server_error", "timeout", "The query timed out."),
                _ => error(status, "server_error", "error", "A server error occurred."),
            };
        }
        twin.delay
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let twin = lock(&state);
    let body = twin.queries.last().cloned().unwrap_or(Value::Null);
    match answer(&twin, &body) {
        Ok(reply) => Json(reply).into_response(),
        Err(detail) => error(
            StatusCode::BAD_REQUEST,
            "validation_error",
            "hogql_query_error",
            &detail,
        ),
    }
}

/// Whether a stored insight is of `kind` ("FUNNELS"...), as PostHog's
/// `?insight=` filter decides: a legacy insight by `filters.insight`, a
/// query insight by the kind of the query its `InsightVizNode` wraps.
fn insight_is(insight: &Value, kind: &str) -> bool {
    let query = &insight["query"];
    if query.is_null() {
        return insight["filters"]["insight"].as_str() == Some(kind);
    }
    let source_kind = match kind {
        "TRENDS" => "TrendsQuery",
        "FUNNELS" => "FunnelsQuery",
        "RETENTION" => "RetentionQuery",
        "PATHS" => "PathsQuery",
        "STICKINESS" => "StickinessQuery",
        "LIFECYCLE" => "LifecycleQuery",
        _ => return false,
    };
    query["kind"].as_str() == Some("InsightVizNode")
        && query["source"]["kind"].as_str() == Some(source_kind)
}

/// `GET /api/projects/{id}/insights/`: limit/offset pages with absolute
/// `next` and `previous` URLs, deleted insights left out.
async fn list_insights(
    State(state): State<Arc<Mutex<Twin>>>,
    Path(project): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let mut twin = lock(&state);
    twin.insight_requests += 1;
    if let Err(reply) = authorize(&twin, &headers, &project) {
        return *reply;
    }
    let param = |k: &str| params.iter().find(|(p, _)| p == k).map(|(_, v)| v.as_str());
    // DRF's LimitOffsetPagination reads a value that is not a number as absent.
    let number = |k: &str, default: usize| param(k).and_then(|v| v.parse().ok()).unwrap_or(default);
    let limit = number("limit", 100)
        .min(twin.max_page.unwrap_or(usize::MAX))
        .max(1);
    let offset = number("offset", 0);
    let saved_only = matches!(param("saved"), Some("true" | "1"));
    let matching: Vec<&Value> = twin
        .insights
        .iter()
        .filter(|i| i["deleted"] != json!(true))
        .filter(|i| param("insight").is_none_or(|kind| insight_is(i, kind)))
        .filter(|i| {
            !saved_only
                || i["saved"] == json!(true)
                || i["dashboards"].as_array().is_some_and(|d| !d.is_empty())
        })
        .collect();
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let page_url = |offset: usize| {
        let mut query: Vec<String> = params
            .iter()
            .filter(|(k, _)| k != "limit" && k != "offset")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        query.push(format!("limit={limit}"));
        query.push(format!("offset={offset}"));
        format!(
            "http://{host}/api/projects/{project}/insights/?{}",
            query.join("&")
        )
    };
    let count = matching.len();
    let next = (offset + limit < count).then(|| page_url(offset + limit));
    let previous = (offset > 0).then(|| page_url(offset.saturating_sub(limit)));
    let results: Vec<&Value> = matching.into_iter().skip(offset).take(limit).collect();
    Json(json!({"count": count, "next": next, "previous": previous, "results": results}))
        .into_response()
}

async fn annotate(
    State(state): State<Arc<Mutex<Twin>>>,
    Path(project): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let mut twin = lock(&state);
    if let Err(reply) = authorize(&twin, &headers, &project) {
        return *reply;
    }
    let field = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let a = Annotation {
        content: field("content"),
        date_marker: field("date_marker"),
        scope: field("scope"),
    };
    if a.content.is_empty() || DateTime::parse_from_rfc3339(&a.date_marker).is_err() {
        return error(
            StatusCode::BAD_REQUEST,
            "validation_error",
            "invalid_input",
            "content and date_marker are required.",
        );
    }
    twin.annotations.push(a.clone());
    let id = twin.annotations.len();
    (
        StatusCode::CREATED,
        Json(json!({"id": id, "content": a.content, "date_marker": a.date_marker, "scope": a.scope, "creation_type": "USR"})),
    )
        .into_response()
}

/// A step's property filter: `name` equals `value`, where the property is
/// read only from events named in `only` (and is empty on others).
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    pub name: String,
    pub value: String,
    pub only: Vec<String>,
}

/// The funnel a query asks about, read back from its text and values.
#[derive(Debug, Clone, PartialEq)]
pub struct Asked {
    /// Per step: the event name and its property filters.
    pub steps: Vec<(String, Vec<Filter>)>,
    pub window_secs: i64,
    /// Entries in `[from, to)` count; events in `[read, until]` are read.
    pub from: i64,
    pub to: i64,
    pub read: i64,
    pub until: i64,
    /// The event names of `event IN (...)`, when the query has that filter.
    pub events: Option<Vec<String>>,
    /// Only the entries of this segment count: (property, value), read
    /// from `coalesce(properties.<name>, '') = {segment_value}`.
    pub segment: Option<(String, String)>,
}

/// Every placeholder must have a value, as in PostHog.
fn placeholders_defined(text: &str, values: &Map<String, Value>) -> Result<(), String> {
    for (i, _) in text.match_indices('{') {
        let name: String = text[i + 1..].chars().take_while(|c| *c != '}').collect();
        if !values.contains_key(&name) {
            return Err(format!("Placeholder {{{name}}} is not defined in values"));
        }
    }
    Ok(())
}

fn read_query(body: &Value) -> Result<Asked, String> {
    let q = body.get("query").ok_or("Missing `query`")?;
    if q.get("kind").and_then(Value::as_str) != Some("HogQLQuery") {
        return Err("Only HogQLQuery is supported by this server.".into());
    }
    let text = q
        .get("query")
        .and_then(Value::as_str)
        .ok_or("Missing query text")?;
    let empty = Map::new();
    let values = q.get("values").and_then(Value::as_object).unwrap_or(&empty);
    placeholders_defined(text, values)?;
    let string = |k: &str| values.get(k).and_then(Value::as_str).map(str::to_string);
    let int = |k: &str| {
        values
            .get(k)
            .and_then(Value::as_i64)
            .ok_or_else(|| format!("value {k} missing or not a number"))
    };
    // Names in `event IN ({a}, {b})`, from the values.
    let names = |list: &str| -> Result<Vec<String>, String> {
        list.split(',')
            .map(|p| {
                let name = p.trim().trim_start_matches('{').trim_end_matches('}');
                string(name).ok_or_else(|| format!("event IN takes {p:?}, not a string value"))
            })
            .collect()
    };
    let mut steps = Vec::new();
    while let Some(event) = string(&format!("s{}_event", steps.len())) {
        let i = steps.len();
        let mut filters = Vec::new();
        while let Some(value) = string(&format!("s{i}_p{}", filters.len())) {
            let needle = format!(" = {{s{i}_p{}}}", filters.len());
            let at = text.find(&needle).ok_or("filter placeholder not used")?;
            let operand = text[..at]
                .rsplit([' ', '\n', '('])
                .next()
                .ok_or("filter without an operand")?;
            // `f<k>`: `if(event IN (...), properties.<name>, '') AS f<k>`.
            let definition = format!(", '') AS {operand},");
            let def = text
                .find(&definition)
                .ok_or_else(|| format!("{operand} is not defined"))?;
            let (head, name) = text[..def]
                .rsplit_once(", properties.")
                .ok_or("a property column without a property")?;
            let (_, list) = head
                .rsplit_once("if(event IN (")
                .ok_or("a property column without its events")?;
            let only = names(list.trim_end_matches(')'))?;
            filters.push(Filter {
                name: name.to_string(),
                value,
                only,
            });
        }
        steps.push((event, filters));
    }
    if steps.len() < 2 {
        return Err("not a funnel query".into());
    }
    let events = match text.split_once("AND event IN (") {
        None => None,
        Some((_, rest)) => Some(names(rest.split(')').next().unwrap_or(""))?),
    };
    let segment = match string("segment_value") {
        None => None,
        Some(value) => {
            let (head, _) = text
                .split_once(", '') = {segment_value}")
                .ok_or("segment_value is not compared to a property")?;
            let (_, name) = head
                .rsplit_once("coalesce(properties.")
                .ok_or("segment_value is not compared to a property")?;
            Some((name.to_string(), value))
        }
    };
    Ok(Asked {
        segment,
        steps,
        window_secs: int("window")?,
        from: int("date_from")?,
        to: int("date_to")?,
        read: int("date_read")?,
        until: int("date_until")?,
        events,
    })
}

/// The estimand of [`crate::funnel::hogql`], counted from the log: per UTC
/// day of entry (days since 1970-01-01), `[entries_0, converted_0, ...,
/// entries_{n-1}]` and then, per transition, the per-person sums
/// `[entries_sq_i, conversions_entries_i, conversions_sq_i]` (each entry adds
/// its person's entries and, if it converted, conversions of the range at
/// that step; see [`crate::stats::PersonSums`]). An entry at step i is a person's first step-i event of
/// a day (over the events read); it counts if it falls in `[from, to)`, and
/// converted if the person has a step-i+1 event at or after it, at most the
/// window later. Whole seconds, as `toUnixTimestamp`. With a segment, an
/// entry counts only when one of the person's step-i events at its second
/// has the segment's value.
pub fn count_entries(log: &EventLog, asked: &Asked) -> BTreeMap<i64, Vec<u64>> {
    let n = asked.steps.len();
    let ids: Vec<Option<u32>> = asked.steps.iter().map(|(e, _)| log.find_event(e)).collect();
    let mut events: Vec<u32> = ids
        .iter()
        .flatten()
        .copied()
        .filter(|&id| {
            asked
                .events
                .as_ref()
                .is_none_or(|names| names.iter().any(|name| name == log.event_name(id)))
        })
        .collect();
    events.sort_unstable();
    events.dedup();
    let mut masks: HashMap<(u32, u32), u32> = HashMap::new();
    let mut mask = |event: u32, props: u32| -> u32 {
        *masks.entry((event, props)).or_insert_with(|| {
            let props = log.props(props);
            let name = log.event_name(event);
            (0..n)
                .filter(|&i| {
                    ids[i] == Some(event)
                        && asked.steps[i].1.iter().all(|f| {
                            if f.only.iter().any(|o| o == name) {
                                props.get(&f.name).is_some_and(|p| *p == f.value)
                            } else {
                                f.value.is_empty()
                            }
                        })
                })
                .fold(0, |m, i| m | 1 << i)
        })
    };
    let in_segment = |props: u32| {
        asked.segment.as_ref().is_none_or(|(name, value)| {
            log.props(props).get(name).map_or("", String::as_str) == value
        })
    };
    // Each person's step times, per step, in whole seconds, and (with a
    // segment) the times of the step events in it.
    type Times = (Vec<i64>, Vec<i64>);
    let mut people: HashMap<u32, Vec<Times>> = HashMap::new();
    for (event, row) in log.scan(&events, asked.read * 1000, asked.until * 1000 + 999) {
        let m = mask(event, row.props);
        if m == 0 {
            continue;
        }
        let seg = in_segment(row.props);
        let times = people
            .entry(row.person)
            .or_insert_with(|| vec![Default::default(); n]);
        for (i, (t, g)) in times.iter_mut().enumerate() {
            if m & (1 << i) != 0 {
                t.push(row.ms.div_euclid(1000));
                if seg {
                    g.push(row.ms.div_euclid(1000));
                }
            }
        }
    }
    let width = 2 * n - 1 + 3 * (n - 1);
    let mut rows: BTreeMap<i64, Vec<u64>> = BTreeMap::new();
    for mut times in people.into_values() {
        for (t, g) in &mut times {
            t.sort_unstable();
            g.sort_unstable();
        }
        for i in 0..n {
            // This person's entries at step i in the range: (day, converted).
            let mut entries: Vec<(i64, bool)> = Vec::new();
            let mut last_day = None;
            for &x in &times[i].0 {
                let day = x.div_euclid(86_400);
                if last_day == Some(day) {
                    continue;
                }
                last_day = Some(day);
                if x < asked.from || x >= asked.to || times[i].1.binary_search(&x).is_err() {
                    continue;
                }
                let converted = times.get(i + 1).is_some_and(|(next, _)| {
                    let first = next.partition_point(|&y| y < x);
                    next.get(first).is_some_and(|&y| y <= x + asked.window_secs)
                });
                entries.push((day, converted));
            }
            let total = entries.len() as u64;
            let total_converted = entries.iter().filter(|(_, c)| *c).count() as u64;
            for (day, converted) in entries {
                let row = rows.entry(day).or_insert_with(|| vec![0; width]);
                row[2 * i] += 1;
                if i + 1 < n {
                    let sums = 2 * n - 1 + 3 * i;
                    row[sums] += total;
                    if converted {
                        row[2 * i + 1] += 1;
                        row[sums + 1] += total;
                        row[sums + 2] += total_converted;
                    }
                }
            }
        }
    }
    rows
}

/// `funnelfix init`'s listing: per (event, `$pathname`), how many events
/// were sent in `[date_from, date_to)`, `$pageview` and the events whose
/// names do not start with the system prefix only; most first.
fn top_events(log: &EventLog, body: &Value) -> Result<Value, String> {
    let q = &body["query"];
    let text = q["query"].as_str().unwrap_or("");
    let empty = Map::new();
    placeholders_defined(text, q["values"].as_object().unwrap_or(&empty))?;
    let values = &q["values"];
    for needed in [
        "properties.$pathname AS path",
        "count() AS hits",
        "(event = {pageview} OR NOT startsWith(event, {system_prefix}))",
        "GROUP BY event, path",
        "ORDER BY hits DESC",
    ] {
        if !text.contains(needed) {
            return Err(format!(
                "this server cannot answer a query without {needed:?}"
            ));
        }
    }
    let int = |k: &str| {
        values[k]
            .as_i64()
            .ok_or_else(|| format!("value {k} missing or not a number"))
    };
    let (from, to) = (int("date_from")? * 1000, int("date_to")? * 1000);
    let pageview = values["pageview"].as_str().unwrap_or_default();
    let prefix = values["system_prefix"].as_str().unwrap_or_default();
    let limit: usize = text
        .rsplit_once("LIMIT ")
        .and_then(|(_, n)| n.trim().parse().ok())
        .unwrap_or(100);
    let mut hits: HashMap<(&str, Option<&str>), u64> = HashMap::new();
    for (event, row) in log.all() {
        let name = log.event_name(event);
        if row.ms < from || row.ms >= to || (name != pageview && name.starts_with(prefix)) {
            continue;
        }
        let path = log.props(row.props).get("$pathname").map(String::as_str);
        *hits.entry((name, path)).or_default() += 1;
    }
    let mut rows: Vec<((&str, Option<&str>), u64)> = hits.into_iter().collect();
    rows.sort_by(|(a, x), (b, y)| y.cmp(x).then(a.cmp(b)));
    let results: Vec<Value> = rows
        .into_iter()
        .take(limit)
        .map(|((event, path), n)| json!([event, path, n]))
        .collect();
    Ok(json!({
        "columns": ["event", "path", "hits"],
        "types": [["event", "String"], ["path", "Nullable(String)"], ["hits", "UInt64"]],
        "results": results,
        "hasMore": false,
        "is_cached": false,
        "limit": limit,
        "offset": 0,
        "timezone": "UTC",
        "error": null,
    }))
}

fn answer(twin: &Twin, body: &Value) -> Result<Value, String> {
    if body["query"]["values"].get("pageview").is_some() {
        return top_events(&twin.log, body);
    }
    let asked = read_query(body)?;
    let text = body["query"]["query"].as_str().unwrap_or("");
    if let Some(part) = posthog_evidence::part_of(text) {
        let (columns, results) = posthog_evidence::answer(&twin.log, &asked, part);
        return Ok(reply(
            columns.into_iter().map(String::from).collect(),
            results,
        ));
    }
    let n = asked.steps.len();
    // The per-person sums only when the query counts them.
    let sums = text.contains("AS entries_sq_0");
    let width = if sums {
        2 * n - 1 + 3 * (n - 1)
    } else {
        2 * n - 1
    };
    let results: Vec<Value> = count_entries(&twin.log, &asked)
        .into_iter()
        .map(|(day, r)| {
            let mut row = vec![json!(day)];
            row.extend(r[..width].iter().map(|c| json!(c)));
            Value::Array(row)
        })
        .collect();
    let mut columns = vec!["day".to_string()];
    for i in 0..n {
        columns.push(format!("entries_{i}"));
        if i + 1 < n {
            columns.push(format!("converted_{i}"));
        }
    }
    for i in (0..n - 1).filter(|_| sums) {
        columns.extend([
            format!("entries_sq_{i}"),
            format!("conversions_entries_{i}"),
            format!("conversions_sq_{i}"),
        ]);
    }
    Ok(reply(columns, results))
}

/// PostHog's reply to a query: rows with their columns.
fn reply(columns: Vec<String>, results: Vec<Value>) -> Value {
    let types: Vec<Value> = columns.iter().map(|c| json!([c, "UInt64"])).collect();
    json!({
        "cache_key": "sandbox",
        "columns": columns,
        "types": types,
        "results": results,
        "hasMore": false,
        "is_cached": false,
        "limit": 100,
        "offset": 0,
        "timezone": "UTC",
        "error": null,
        "modifiers": {},
        "timings": [],
    })
}
