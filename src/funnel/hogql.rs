//! The one HogQL query per funnel.
//!
//! What it counts, exactly: a person *enters* when they have at least one
//! first-step event in the entry range `[from, to)`. Their *level* is the
//! longest ordered chain of steps they completed starting from a first-step
//! event in that range, each later step no later than `window` after the
//! chain's first event (ClickHouse `windowFunnel`, as PostHog's own funnels).
//! Rows are grouped by the UTC date of the person's first entry (as days since
//! 1970-01-01), and give the number of entrants and of entrants reaching each
//! further step; the weekday split the monitor needs and the recent pace the
//! step choice needs both come from these rows.
//!
//! Cost: besides the time range, the query reads only the funnel's own event
//! names (`event IN (...)`). PostHog's events table is sorted by date and
//! then event, so on a project where the funnel's events are a small share
//! of all events this skips most of the data. An inner SELECT evaluates each
//! step's condition once per row (`s0`, `s1`, ...), reading each filtered
//! property once (`f0`, ...) and only from the events whose steps filter on
//! it, and keeps only the rows that match a step, so the per-person
//! aggregation sees nothing else. No count changes: a row that matches no
//! step plays no part in `windowFunnel`, `minIf` or `countIf`.
//!
//! Right-censoring: `to` is clamped to `now - window`, so only entrants whose
//! whole conversion window has elapsed are counted.
//!
//! Every value from the config (event names, property values, times) is a
//! `{placeholder}` in `values`. Property *names* cannot be placeholders in
//! HogQL, so they are spliced only after [`is_property_name`] accepted them.
//! The window is a number of seconds computed here, spliced because
//! `windowFunnel`'s parameter must be a literal.

use std::fmt::Write;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde_json::{Map, Value, json};

use super::{ByDay, DayCounts, EntryRange, FunnelCounts};
use crate::config::{StepConfig, is_property_name};

/// Seconds in a day: rows are per UTC date.
const DAY: i64 = 86_400;

#[derive(Debug, Clone, PartialEq)]
pub struct HogQlQuery {
    pub query: String,
    pub values: Map<String, Value>,
}

/// The entry range after right-censoring.
pub fn censored(range: EntryRange, window: Duration, now: DateTime<Utc>) -> EntryRange {
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    let latest = now.checked_sub_signed(window).unwrap_or(range.from);
    EntryRange {
        from: range.from,
        to: range.to.min(latest).max(range.from),
    }
}

pub fn funnel_query(
    steps: &[StepConfig],
    window: Duration,
    range: EntryRange,
    now: DateTime<Utc>,
) -> Result<HogQlQuery, String> {
    if steps.len() < 2 {
        return Err("a funnel query needs at least two steps".into());
    }
    let range = censored(range, window, now);
    let mut values = Map::new();
    // Each event name once, by the placeholder of its first step.
    let mut event_of: Vec<(&str, String)> = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let key = format!("s{i}_event");
        if !event_of.iter().any(|(e, _)| *e == s.event) {
            event_of.push((&s.event, format!("{{{key}}}")));
        }
        values.insert(key, json!(s.event));
    }
    let placeholder = |event: &str| {
        event_of
            .iter()
            .find(|(e, _)| *e == event)
            .map(|(_, p)| p.clone())
            .unwrap_or_default()
    };
    // Each property a filter reads, extracted once per row as `f<k>`, and
    // only from the events whose steps filter on it.
    let mut props: Vec<(&str, Vec<String>)> = Vec::new();
    for s in steps {
        for prop in s.filters.keys() {
            if !is_property_name(prop) {
                return Err(format!(
                    "property name {prop:?} of step {:?} is not allowed",
                    s.name
                ));
            }
            let event = placeholder(&s.event);
            match props.iter_mut().find(|(p, _)| p == prop) {
                Some((_, events)) if events.contains(&event) => {}
                Some((_, events)) => events.push(event),
                None => props.push((prop, vec![event])),
            }
        }
    }
    let mut columns = String::new();
    for (k, (prop, events)) in props.iter().enumerate() {
        let _ = write!(
            columns,
            "\n            if(event IN ({}), properties.{prop}, '') AS f{k},",
            events.join(", ")
        );
    }
    // Step i's condition as `s<i>`: the property comparisons first, so each
    // reads the extracted column rather than extracting again.
    for (i, s) in steps.iter().enumerate() {
        let mut cond: Vec<String> = Vec::new();
        for (j, (prop, value)) in s.filters.iter().enumerate() {
            let k = props.iter().position(|(p, _)| p == prop).unwrap_or(0);
            let key = format!("s{i}_p{j}");
            cond.push(format!("f{k} = {{{key}}}"));
            values.insert(key, json!(value));
        }
        cond.push(format!("event = {{s{i}_event}}"));
        // The first step only counts when it happens inside the entry range.
        if i == 0 {
            cond.push("timestamp < fromUnixTimestamp({date_to})".into());
        }
        let _ = write!(columns, "\n            {} AS s{i},", cond.join(" AND "));
    }
    let columns = columns.trim_end_matches(',');
    values.insert("date_from".into(), json!(range.from.timestamp()));
    values.insert("date_to".into(), json!(range.to.timestamp()));
    let window_secs = window.as_secs().max(1);
    values.insert(
        "date_until".into(),
        json!(range.to.timestamp() + window_secs as i64),
    );
    let chain: Vec<String> = (0..steps.len()).map(|i| format!("s{i}")).collect();
    let reached: String = (1..steps.len())
        .map(|k| format!(",\n    countIf(level >= {}) AS reached_{k}", k + 1))
        .collect();
    let events: Vec<&str> = event_of.iter().map(|(_, p)| p.as_str()).collect();
    // One row per UTC date the range touches, so nothing is cut off.
    let dates = range.to.timestamp().div_euclid(DAY) - range.from.timestamp().div_euclid(DAY) + 1;
    let query = format!(
        "SELECT\n    intDiv(toUnixTimestamp(entry_time), {DAY}) AS day,\n    count() AS entrants{reached}\n\
         FROM (\n    SELECT\n        person_id,\n        minIf(timestamp, s0) AS entry_time,\n        \
         countIf(s0) AS entries,\n        \
         windowFunnel({window_secs})(toDateTime(timestamp), {chain}) AS level\n    \
         FROM (\n        SELECT\n            person_id,\n            timestamp,{columns}\n        \
         FROM events\n        \
         WHERE timestamp >= fromUnixTimestamp({{date_from}}) AND timestamp <= fromUnixTimestamp({{date_until}})\n            \
         AND event IN ({events})\n            \
         AND ({any_step})\n    )\n    \
         GROUP BY person_id\n    HAVING entries > 0\n)\nGROUP BY day\nORDER BY day\nLIMIT {dates}",
        chain = chain.join(", "),
        events = events.join(", "),
        any_step = chain.join(" OR "),
    );
    Ok(HogQlQuery { query, values })
}

/// Rows `[day, entrants, reached_1, ...]` into counts per date of entry;
/// `range` is the censored entry range the query counted.
pub fn parse_days(steps: usize, range: EntryRange, results: &Value) -> Result<ByDay, String> {
    let rows = results
        .as_array()
        .ok_or_else(|| "the reply has no results list".to_string())?;
    let mut days: Vec<DayCounts> = Vec::with_capacity(rows.len());
    for row in rows {
        let cells = row
            .as_array()
            .ok_or_else(|| format!("a result row is not a list: {row}"))?;
        if cells.len() != steps + 1 {
            return Err(format!(
                "a result row has {} columns, expected {}",
                cells.len(),
                steps + 1
            ));
        }
        let number = |v: &Value| -> Result<u64, String> {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| format!("not a count: {v}"))
        };
        let day = number(&cells[0])?;
        let date = i64::try_from(day)
            .ok()
            .and_then(|d| DateTime::from_timestamp(d.checked_mul(DAY)?, 0))
            .map(|t| t.date_naive())
            .ok_or_else(|| format!("day {day} is out of range"))?;
        let first = range.from.date_naive();
        let last = range.to.date_naive();
        if date < first || date > last {
            return Err(format!(
                "day {date} is outside the entry range {first} to {last}"
            ));
        }
        if days.iter().any(|d| d.date == date) {
            return Err(format!("day {date} appears twice"));
        }
        let reached = cells[1..]
            .iter()
            .map(number)
            .collect::<Result<Vec<_>, _>>()?;
        days.push(DayCounts {
            date,
            counts: FunnelCounts { reached },
        });
    }
    days.sort_by_key(|d| d.date);
    Ok(ByDay { range, days })
}

/// Midnight UTC that starts `date`, as a Unix time.
pub fn day_start(date: NaiveDate) -> i64 {
    date.and_time(chrono::NaiveTime::MIN).and_utc().timestamp()
}

/// The UTC weekday index of [`super::ByWeekday`] (0 = Monday).
pub fn weekday(t: DateTime<Utc>) -> usize {
    t.weekday().num_days_from_monday() as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn step(name: &str, event: &str, filters: &[(&str, &str)]) -> StepConfig {
        StepConfig {
            name: name.into(),
            event: event.into(),
            filters: filters
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            files: vec![],
        }
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    #[test]
    fn values_are_placeholders_and_names_are_checked() {
        let steps = [
            step("Home", "$pageview", &[("$pathname", "/' OR 1=1 --")]),
            step("Signed up", "signup", &[]),
        ];
        let q = funnel_query(
            &steps,
            Duration::from_secs(86400),
            EntryRange {
                from: t("2026-03-01T00:00:00Z"),
                to: t("2026-03-10T00:00:00Z"),
            },
            t("2026-03-10T00:00:00Z"),
        )
        .expect("query");
        assert!(!q.query.contains("OR 1=1"));
        assert!(!q.query.contains("$pageview"));
        assert_eq!(q.values["s0_p0"], json!("/' OR 1=1 --"));
        assert_eq!(q.values["s0_event"], json!("$pageview"));
        // Censored: entries only until a day before now.
        assert_eq!(
            q.values["date_to"],
            json!(t("2026-03-09T00:00:00Z").timestamp())
        );
        assert!(
            q.query
                .contains("if(event IN ({s0_event}), properties.$pathname, '') AS f0")
        );
        assert!(q.query.contains("f0 = {s0_p0} AND event = {s0_event}"));
        assert!(q.query.contains("windowFunnel(86400)"));

        let bad = [
            step("Home", "$pageview", &[("a) OR (1", "x")]),
            step("B", "b", &[]),
        ];
        assert!(
            funnel_query(
                &bad,
                Duration::from_secs(60),
                EntryRange {
                    from: t("2026-03-01T00:00:00Z"),
                    to: t("2026-03-02T00:00:00Z")
                },
                t("2026-03-05T00:00:00Z")
            )
            .is_err()
        );
    }

    #[test]
    fn censoring_never_inverts_the_range() {
        let r = censored(
            EntryRange {
                from: t("2026-03-01T00:00:00Z"),
                to: t("2026-03-10T00:00:00Z"),
            },
            Duration::from_secs(86400 * 30),
            t("2026-03-10T00:00:00Z"),
        );
        assert_eq!(r.from, r.to);
    }

    #[test]
    fn only_the_funnels_events_are_read() {
        let steps = [
            step("Home", "$pageview", &[("$pathname", "/")]),
            step("Pricing", "$pageview", &[("$pathname", "/pricing")]),
            step("Started", "signup_started", &[]),
            step("Done", "signup_completed", &[]),
        ];
        let q = funnel_query(
            &steps,
            Duration::from_secs(86400),
            EntryRange {
                from: t("2026-03-01T09:30:00Z"),
                to: t("2026-03-29T09:30:00Z"),
            },
            t("2026-03-29T09:30:00Z"),
        )
        .expect("query");
        // Each event name once, as a placeholder.
        assert!(
            q.query
                .contains("AND event IN ({s0_event}, {s2_event}, {s3_event})"),
            "{}",
            q.query
        );
        // Each property read once per row, from the events that filter on it.
        assert_eq!(q.query.matches("properties.").count(), 1, "{}", q.query);
        assert!(
            q.query
                .contains("f0 = {s1_p0} AND event = {s1_event} AS s1")
        );
        // Censored to 28 March 09:30: 1 to 28 March is 28 dates, all returned.
        assert!(q.query.ends_with("LIMIT 28"), "{}", q.query);

        let steps = [
            step(
                "Cart",
                "$pageview",
                &[("$host", "shop"), ("$pathname", "/cart")],
            ),
            step("Paid", "order paid", &[("$host", "pay"), ("plan", "pro")]),
            step("Thanks", "$pageview", &[("$pathname", "/thanks")]),
        ];
        let q = funnel_query(
            &steps,
            Duration::from_secs(1800),
            EntryRange {
                from: t("2026-03-01T00:00:00Z"),
                to: t("2026-03-02T00:00:00Z"),
            },
            t("2026-03-05T00:00:00Z"),
        )
        .expect("query");
        for column in [
            "if(event IN ({s0_event}, {s1_event}), properties.$host, '') AS f0,",
            "if(event IN ({s0_event}), properties.$pathname, '') AS f1,",
            "if(event IN ({s1_event}), properties.plan, '') AS f2,",
            "f0 = {s0_p0} AND f1 = {s0_p1} AND event = {s0_event} AND timestamp < fromUnixTimestamp({date_to}) AS s0,",
            "f0 = {s1_p0} AND f2 = {s1_p1} AND event = {s1_event} AS s1,",
            "f1 = {s2_p0} AND event = {s2_event} AS s2\n",
            "AND event IN ({s0_event}, {s1_event})\n",
        ] {
            assert!(q.query.contains(column), "{column}\n{}", q.query);
        }
    }

    fn range(from: &str, to: &str) -> EntryRange {
        EntryRange {
            from: t(from),
            to: t(to),
        }
    }

    #[test]
    fn rows_become_counts_per_day_and_weekday() {
        // 20520 = Sunday 8 March 2026, 20523 = Wednesday 11 March.
        let r = range("2026-03-02T12:00:00Z", "2026-03-12T12:00:00Z");
        let rows = json!([[20523, "7", "3", "1"], [20520, 10, 5, 2]]);
        let by = parse_days(3, r, &rows).expect("rows");
        assert_eq!(by.range, r);
        let dates: Vec<String> = by.days.iter().map(|d| d.date.to_string()).collect();
        assert_eq!(dates, ["2026-03-08", "2026-03-11"], "oldest first");
        assert_eq!(by.days[0].counts.reached, vec![10, 5, 2]);
        assert_eq!(by.total().reached, vec![17, 8, 3]);
        let week = by.by_weekday(3);
        assert_eq!(week.days[6].reached, vec![10, 5, 2]);
        assert_eq!(week.days[2].reached, vec![7, 3, 1]);
        assert_eq!(week.days[0].reached, vec![0, 0, 0]);
        assert_eq!(week.total().reached, vec![17, 8, 3]);
        assert_eq!(
            day_start(by.days[0].date),
            t("2026-03-08T00:00:00Z").timestamp()
        );

        // A day outside the range, twice the same day, the wrong width.
        assert!(parse_days(3, r, &json!([[20000, 1, 1, 1]])).is_err());
        assert!(parse_days(3, r, &json!([[20520, 1, 1, 1], [20520, 1, 1, 1]])).is_err());
        assert!(parse_days(3, r, &json!([[20520, 1]])).is_err());
        assert!(parse_days(3, r, &json!({"x": 1})).is_err());
    }
}
