//! The evidence queries: one HogQL query per part, each over the chosen
//! step's entries in the funnel's own unit (see [`crate::funnel::hogql`]):
//! an entry is a person's first step event of a UTC day in the (censored)
//! lookback; it *went on* if the person's next-step event follows within
//! the conversion window.
//!
//! What an entry did is read from the person's events on the entry's page
//! (the `$pathname` of the step event) from the entry until it went on, or
//! until the end of its UTC day when it did not (a person's later visit
//! that day is part of the same entry; the next day is another entry).
//!
//! Every query reads the step's and the next step's events plus only the
//! event names its part needs (`event IN (...)`), and, like the funnel
//! query, takes every config value as a `{placeholder}`; property names
//! come from the config only after [`crate::config::is_property_name`]
//! accepted them, or are PostHog's own (`$device_type`, ...).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Map;

use crate::config::StepConfig;
use crate::funnel::EntryRange;
use crate::funnel::hogql::{DAY, HogQlQuery, censored, property_once, range_values, step_columns};

/// The evidence parts, one query each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Other events and autocaptured clicks, rage clicks and dead clicks.
    Actions,
    Segments,
    Attention,
    Speed,
    Said,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Actions,
        Kind::Segments,
        Kind::Attention,
        Kind::Speed,
        Kind::Said,
    ];
}

/// Rows of groups per part are capped: the top ones are what matters.
pub const MAX_ACTIONS: usize = 200;
/// Values per segment dimension.
pub const MAX_SEGMENT_VALUES: usize = 20;
/// Survey answers quoted verbatim.
pub const RECENT_ANSWERS: usize = 5;

/// What a part reads besides the two steps' events: the WHERE prefilter,
/// the condition of its rows (`k`: `rows` on the event name, then, for the
/// rows on the entry's page, `then` on their properties, so properties are
/// read only from the rows that need them), the row's columns after `(t,
/// page)` with the value they take on the other rows (each read only on
/// the part's rows), and the per-entry columns it adds (`entry.5` onwards,
/// read only from the step's events).
struct Reads {
    events: &'static str,
    rows: &'static str,
    then: &'static str,
    columns: &'static [(&'static str, &'static str)],
    entry_columns: &'static [&'static str],
}

fn reads(kind: Kind) -> Reads {
    match kind {
        Kind::Actions => Reads {
            events: "event IN ('$autocapture', '$rageclick', '$dead_click') OR NOT startsWith(event, '$')",
            rows: "(event IN ('$autocapture', '$rageclick', '$dead_click') \
                   OR (NOT startsWith(event, '$') AND NOT startsWith(event, 'survey '))) \
                   AND NOT s0 AND NOT s1",
            then: "(event != '$autocapture' OR coalesce(properties.$event_type, '') IN ('click', 'submit'))",
            columns: &[
                (
                    "multiIf(event = '$autocapture', 'click', event = '$rageclick', 'rageclick', event = '$dead_click', 'deadclick', 'event')",
                    "''",
                ),
                (
                    "if(startsWith(event, '$'), coalesce(elements_chain_texts[1], ''), event)",
                    "''",
                ),
            ],
            entry_columns: &[],
        },
        Kind::Segments => Reads {
            events: "",
            rows: "",
            then: "",
            columns: &[],
            entry_columns: &[
                "coalesce(properties.$device_type, '')",
                "coalesce(properties.$browser, '')",
                "coalesce(properties.$referring_domain, '')",
                "coalesce(properties.utm_source, '')",
            ],
        },
        Kind::Attention => Reads {
            events: "event IN ('$pageleave', '$pageview')",
            rows: "event IN ('$pageleave', '$pageview')",
            then: "properties.$prev_pageview_max_scroll_percentage IS NOT NULL",
            columns: &[
                (
                    "toFloat(properties.$prev_pageview_max_scroll_percentage)",
                    "NULL",
                ),
                ("toFloat(properties.$prev_pageview_duration)", "NULL"),
            ],
            entry_columns: &[],
        },
        Kind::Speed => Reads {
            events: "event = '$web_vitals'",
            rows: "event = '$web_vitals'",
            then: "",
            columns: &[
                (
                    "coalesce(toFloat(properties.$web_vitals_LCP_value), -1)",
                    "-1",
                ),
                (
                    "coalesce(toFloat(properties.$web_vitals_INP_value), -1)",
                    "-1",
                ),
                (
                    "coalesce(toFloat(properties.$web_vitals_CLS_value), -1)",
                    "-1",
                ),
            ],
            entry_columns: &[],
        },
        Kind::Said => Reads {
            events: "event = 'survey sent'",
            rows: "event = 'survey sent'",
            then: "coalesce(properties.$survey_response, '') != ''",
            columns: &[("coalesce(properties.$survey_response, '')", "''")],
            entry_columns: &[],
        },
    }
}

/// The page a part's row is about: for the page leaves and page views of
/// the attention part the page just left, otherwise the page it is on.
fn part_page(kind: Kind) -> &'static str {
    match kind {
        Kind::Attention => "coalesce(properties.$prev_pageview_pathname, '')",
        _ => "page",
    }
}

/// Per entry (one row each, `seen` the part's rows in its span, their
/// columns from position `c` on), what the outer query makes of them.
fn outer(kind: Kind, c: usize) -> String {
    match kind {
        Kind::Actions => format!(
            "SELECT\n    action.1 AS kind,\n    action.2 AS label,\n    count() AS entries,\n    countIf(went_on) AS converted\n\
             FROM (\n    SELECT\n        went_on,\n        \
             arrayJoin(arrayConcat([tuple('', '')], arrayDistinct(arrayMap(a -> tuple(a.{c}, a.{}), seen)))) AS action\n    \
             FROM ({{entries}})\n)\n\
             GROUP BY kind, label\nORDER BY entries DESC, kind, label\nLIMIT {MAX_ACTIONS}",
            c + 1
        ),
        Kind::Segments => format!(
            "SELECT\n    segment.1 AS dimension,\n    segment.2 AS value,\n    count() AS entries,\n    countIf(went_on) AS converted\n\
             FROM (\n    SELECT\n        went_on,\n        \
             arrayJoin([tuple('$device_type', entry.5), tuple('$browser', entry.6), tuple('$referring_domain', entry.7), \
             tuple('utm_source', entry.8), tuple('visitor', if(entry.4, 'returning', 'new'))]) AS segment\n    \
             FROM ({{entries}})\n)\n\
             GROUP BY dimension, value\nORDER BY dimension, entries DESC, value\nLIMIT {MAX_SEGMENT_VALUES} BY dimension"
        ),
        Kind::Attention => format!(
            "SELECT\n    went_on,\n    count() AS entries,\n    countIf(has_reading) AS measured,\n    \
             countIf(has_reading AND scroll < 0.25) AS under_quarter,\n    \
             countIf(has_reading AND scroll < 0.5) AS under_half,\n    \
             countIf(has_reading AND scroll < 0.75) AS under_three_quarters,\n    \
             avgIf(seconds, has_reading AND seconds IS NOT NULL) AS mean_seconds\n\
             FROM (\n    SELECT\n        went_on,\n        length(seen) > 0 AS has_reading,\n        \
             seen[1].{c} AS scroll,\n        seen[1].{} AS seconds\n    FROM ({{entries}})\n)\n\
             GROUP BY went_on\nORDER BY went_on",
            c + 1
        ),
        Kind::Speed => {
            let metric = |i: usize| {
                format!(
                    "if(length(arrayFilter(v -> v >= 0, arrayMap(a -> a.{i}, seen))) > 0, arrayMax(arrayFilter(v -> v >= 0, arrayMap(a -> a.{i}, seen))), -1)"
                )
            };
            let p75 =
                |name: &str| format!("{name}s[intDiv(length({name}s) * 3, 4) + 1] AS {name}_p75");
            format!(
                "SELECT\n    entries,\n    measured,\n    length(lcps) AS lcp_count,\n    {},\n    length(inps) AS inp_count,\n    {},\n    length(clss) AS cls_count,\n    {}\n\
                 FROM (\n    SELECT\n        count() AS entries,\n        countIf(has_reading) AS measured,\n        \
                 arraySort(groupArrayIf(lcp, lcp >= 0)) AS lcps,\n        \
                 arraySort(groupArrayIf(inp, inp >= 0)) AS inps,\n        \
                 arraySort(groupArrayIf(cls, cls >= 0)) AS clss\n    \
                 FROM (\n        SELECT\n            length(seen) > 0 AS has_reading,\n            \
                 {} AS lcp,\n            {} AS inp,\n            {} AS cls\n        FROM ({{entries}})\n    )\n)",
                p75("lcp"),
                p75("inp"),
                p75("cls"),
                metric(c),
                metric(c + 1),
                metric(c + 2),
            )
        }
        Kind::Said => format!(
            "SELECT\n    count() AS answers,\n    countIf(answer.3) AS from_converters,\n    \
             arraySlice(arrayReverseSort(groupArray(answer)), 1, {RECENT_ANSWERS}) AS recent\n\
             FROM (\n    SELECT\n        arrayJoin(arrayMap(a -> tuple(a.1, a.{c}, went_on), seen)) AS answer\n    \
             FROM ({{entries}})\n)"
        ),
    }
}

/// `,\n<expr> AS <prefix>1, ...`: a part's columns in the rows' SELECT.
fn aliased(columns: &[String], prefix: &str) -> String {
    columns
        .iter()
        .enumerate()
        .map(|(j, c)| format!(",\n                {c} AS {prefix}{}", j + 1))
        .collect()
}

/// `, <prefix>1, ...`: the same columns by name.
fn names(count: usize, prefix: &str) -> String {
    (1..=count).map(|j| format!(", {prefix}{j}")).collect()
}

/// The query of part `kind` for the transition `step` → `next`.
pub fn evidence_query(
    kind: Kind,
    step: &StepConfig,
    next: &StepConfig,
    window: Duration,
    range: EntryRange,
    now: DateTime<Utc>,
) -> Result<HogQlQuery, String> {
    let range = censored(range, window, now);
    let mut values = Map::new();
    let steps = [step.clone(), next.clone()];
    let (columns, events) = step_columns(&steps, &mut values)?;
    range_values(range, window, &mut values);

    let r = reads(kind);
    let has_rows = !r.rows.is_empty();
    let read_events = if r.events.is_empty() {
        format!("event IN ({})", events.join(", "))
    } else {
        format!("(event IN ({}) OR {})", events.join(", "), r.events)
    };
    // The page, read once: the step columns already hold it on the
    // events whose steps filter on it. Only the step's events need it,
    // unless the part's rows are about the page they are on.
    let pathname = format!("coalesce({}, '')", property_once(&steps, "$pathname")?);
    let rows_on_page = has_rows && part_page(kind) == "page";
    // A step filtered on its page: every entry's page is that one, so rows
    // on other pages are dropped before they are grouped per person, and
    // no row carries its page into the per-person arrays (the entry's page
    // is the value).
    let page_value = step
        .filters
        .keys()
        .position(|p| p == "$pathname")
        .map(|j| format!("{{s0_p{j}}}"));
    let on_page = page_value
        .as_ref()
        .map(|v| format!(" AND part_page = {v}"))
        .unwrap_or_default();
    let carried = if page_value.is_some() { "" } else { ", page" };
    let page_column = match (&page_value, rows_on_page) {
        (Some(_), false) => String::new(),
        (_, true) => format!(",\n                {pathname} AS page"),
        (None, false) => format!(",\n                if(s0, {pathname}, '') AS page"),
    };
    // Where a part's row's own columns start in its tuple.
    let first = if page_value.is_some() { 2 } else { 3 };
    let (k_column, k_filter, acts_column, acts, seen) = if has_rows {
        let then = if r.then.is_empty() {
            String::new()
        } else {
            format!(" AND {}", r.then)
        };
        let part_columns: Vec<String> = r
            .columns
            .iter()
            .map(|(c, other)| format!("if(k, {c}, {other})"))
            .collect();
        let same_page = if page_value.is_some() {
            ""
        } else {
            " AND a.2 = entry.2"
        };
        (
            format!(
                ",\n                {} AS part_page,\n                {}{on_page}{then} AS k{}",
                part_page(kind),
                r.rows,
                aliased(&part_columns, "c"),
            ),
            " OR k",
            format!(
                ",\n            arraySort(groupArrayIf(tuple(t{}{}), k)) AS acts",
                if page_value.is_some() {
                    ""
                } else {
                    ", part_page"
                },
                names(r.columns.len(), "c")
            ),
            ", acts",
            format!(
                ",\n        arrayFilter(a -> a.1 >= entry.1 AND a.1 <= if(entry.3 > 0 AND entry.3 < (intDiv(entry.1, {DAY}) + 1) * {DAY}, entry.3, (intDiv(entry.1, {DAY}) + 1) * {DAY} - 1)\
                 {same_page}, acts) AS seen"
            ),
        )
    } else {
        (String::new(), "", String::new(), "", String::new())
    };
    let entry_columns: Vec<String> = r
        .entry_columns
        .iter()
        .map(|c| format!("if(s0, {c}, '')"))
        .collect();
    let extra: String = (0..r.entry_columns.len())
        .map(|j| format!(", x.{}", j + first))
        .collect();
    let entry_page = page_value.unwrap_or_else(|| "x.2".to_string());
    // With nothing carried beside it, a step event is its time alone.
    let (step_row, time) = if carried.is_empty() && r.entry_columns.is_empty() {
        ("t".to_string(), "x")
    } else {
        (
            format!("tuple(t{carried}{})", names(r.entry_columns.len(), "e")),
            "x.1",
        )
    };
    let times = if time == "x" {
        "ts".to_string()
    } else {
        "arrayMap(x -> x.1, ts)".to_string()
    };
    // An entry: (time, page, time it went on or 0, returning, attributes...).
    // Each step event's time is set beside the one before it, and the
    // person's first day is read once, so no array is captured per entry
    // but the next step's times.
    let entries = format!(
        "\n    SELECT\n        entry,\n        entry.3 > 0 AS went_on{seen}\n    \
         FROM (\n        SELECT\n            \
         arrayJoin(arrayMap(x -> tuple({time}, {entry_page}, arrayFirst(y -> y >= {time} AND y <= {time} + {{window}}, tn), \
         first_day < intDiv({time}, {DAY}){extra}), \
         arrayFilter((x, p) -> intDiv({time}, {DAY}) != intDiv(p, {DAY}) AND {time} >= {{date_from}} AND {time} < {{date_to}}, \
         ts, arrayPopBack(arrayPushFront({times}, 0))))) AS entry{acts}\n        \
         FROM (\n            SELECT\n                person_id,\n                \
         arraySort(groupArrayIf({step_row}, s0)) AS ts,\n                \
         intDiv(minIf(t, s0), {DAY}) AS first_day,\n                \
         arraySort(groupArrayIf(t, s1)) AS tn{acts_column}\n            \
         FROM (\n                SELECT\n                    person_id,\n                    \
         toUnixTimestamp(timestamp) AS t{columns}{page_column}{entry_columns}{k_column}\n                \
         FROM events\n                \
         WHERE timestamp >= fromUnixTimestamp({{date_read}}) AND timestamp <= fromUnixTimestamp({{date_until}})\n                    \
         AND {read_events}\n                    \
         AND (s0 OR s1{k_filter})\n            )\n            \
         GROUP BY person_id\n        )\n    )\n",
        acts_column = acts_column.replace("\n            ", "\n                "),
        page_column = page_column.replace("\n                ", "\n                    "),
        entry_columns =
            aliased(&entry_columns, "e").replace("\n                ", "\n                    "),
        columns = columns.replace("\n                ", "\n                    "),
        k_column = k_column.replace("\n                ", "\n                    "),
    );
    let query = outer(kind, first).replace("{entries}", &entries);
    Ok(HogQlQuery { query, values })
}
