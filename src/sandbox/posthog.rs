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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
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
    // Every placeholder must have a value, as in PostHog.
    for (i, _) in text.match_indices('{') {
        let name: String = text[i + 1..].chars().take_while(|c| *c != '}').collect();
        if !values.contains_key(&name) {
            return Err(format!("Placeholder {{{name}}} is not defined in values"));
        }
    }
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
    Ok(Asked {
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
/// entries_{n-1}]`. An entry at step i is a person's first step-i event of
/// a day (over the events read); it counts if it falls in `[from, to)`, and
/// converted if the person has a step-i+1 event at or after it, at most the
/// window later. Whole seconds, as `toUnixTimestamp`.
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
    // Each person's step times, per step, in whole seconds.
    let mut people: HashMap<u32, Vec<Vec<i64>>> = HashMap::new();
    for (event, row) in log.scan(&events, asked.read * 1000, asked.until * 1000 + 999) {
        let m = mask(event, row.props);
        if m == 0 {
            continue;
        }
        let times = people
            .entry(row.person)
            .or_insert_with(|| vec![Vec::new(); n]);
        for (i, t) in times.iter_mut().enumerate() {
            if m & (1 << i) != 0 {
                t.push(row.ms.div_euclid(1000));
            }
        }
    }
    let mut rows: BTreeMap<i64, Vec<u64>> = BTreeMap::new();
    for mut times in people.into_values() {
        for t in &mut times {
            t.sort_unstable();
        }
        for i in 0..n {
            let mut last_day = None;
            for &x in &times[i] {
                let day = x.div_euclid(86_400);
                if last_day == Some(day) {
                    continue;
                }
                last_day = Some(day);
                if x < asked.from || x >= asked.to {
                    continue;
                }
                let row = rows.entry(day).or_insert_with(|| vec![0; 2 * n - 1]);
                row[2 * i] += 1;
                if let Some(next) = times.get(i + 1) {
                    let first = next.partition_point(|&y| y < x);
                    if next.get(first).is_some_and(|&y| y <= x + asked.window_secs) {
                        row[2 * i + 1] += 1;
                    }
                }
            }
        }
    }
    rows
}

fn answer(twin: &Twin, body: &Value) -> Result<Value, String> {
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
    let results: Vec<Value> = count_entries(&twin.log, &asked)
        .into_iter()
        .map(|(day, r)| {
            let mut row = vec![json!(day)];
            row.extend(r.iter().map(|c| json!(c)));
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
