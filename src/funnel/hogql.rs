//! The one HogQL query per funnel.
//!
//! What it counts, exactly: a person *enters* when they have at least one
//! first-step event in the entry range `[from, to)`. Their *level* is the
//! longest ordered chain of steps they completed starting from a first-step
//! event in that range, each later step no later than `window` after the
//! chain's first event (ClickHouse `windowFunnel`, as PostHog's own funnels).
//! Rows are grouped by the UTC weekday of the person's first entry, and give
//! the number of entrants and of entrants reaching each further step.
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

use chrono::{DateTime, Datelike, Utc};
use serde_json::{Map, Value, json};

use super::{ByWeekday, EntryRange, FunnelCounts};
use crate::config::{StepConfig, is_property_name};

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

/// The condition a step's events meet, with its values' placeholders.
fn step_condition(
    i: usize,
    step: &StepConfig,
    values: &mut Map<String, Value>,
) -> Result<String, String> {
    let key = format!("s{i}_event");
    let mut cond = format!("event = {{{key}}}");
    values.insert(key, json!(step.event));
    for (j, (prop, value)) in step.filters.iter().enumerate() {
        if !is_property_name(prop) {
            return Err(format!(
                "property name {prop:?} of step {:?} is not allowed",
                step.name
            ));
        }
        let key = format!("s{i}_p{j}");
        let _ = write!(cond, " AND properties.{prop} = {{{key}}}");
        values.insert(key, json!(value));
    }
    Ok(format!("({cond})"))
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
    let conditions = steps
        .iter()
        .enumerate()
        .map(|(i, s)| step_condition(i, s, &mut values))
        .collect::<Result<Vec<_>, _>>()?;
    values.insert("date_from".into(), json!(range.from.timestamp()));
    values.insert("date_to".into(), json!(range.to.timestamp()));
    let window_secs = window.as_secs().max(1);
    values.insert(
        "date_until".into(),
        json!(range.to.timestamp() + window_secs as i64),
    );
    // The first step only counts when it happens inside the entry range.
    let entry = format!(
        "{} AND timestamp < fromUnixTimestamp({{date_to}})",
        conditions[0]
    );
    let mut chain = vec![format!("({entry})")];
    chain.extend(conditions[1..].iter().cloned());
    let reached: String = (1..steps.len())
        .map(|k| format!(",\n    countIf(level >= {}) AS reached_{k}", k + 1))
        .collect();
    let query = format!(
        "SELECT\n    toDayOfWeek(toTimeZone(entry_time, 'UTC')) - 1 AS weekday,\n    count() AS entrants{reached}\n\
         FROM (\n    SELECT\n        person_id,\n        minIf(timestamp, {entry}) AS entry_time,\n        \
         countIf({entry}) AS entries,\n        \
         windowFunnel({window_secs})(toDateTime(timestamp), {chain}) AS level\n    \
         FROM events\n    \
         WHERE timestamp >= fromUnixTimestamp({{date_from}}) AND timestamp <= fromUnixTimestamp({{date_until}})\n    \
         GROUP BY person_id\n    HAVING entries > 0\n)\nGROUP BY weekday\nORDER BY weekday\nLIMIT 7",
        chain = chain.join(", "),
    );
    Ok(HogQlQuery { query, values })
}

/// Rows `[weekday, entrants, reached_1, ...]` into counts per weekday.
pub fn parse_rows(steps: usize, results: &Value) -> Result<ByWeekday, String> {
    let rows = results
        .as_array()
        .ok_or_else(|| "the reply has no results list".to_string())?;
    let mut out = ByWeekday::default_for(steps);
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
        let day = number(&cells[0])? as usize;
        if day > 6 {
            return Err(format!("weekday {day} is out of range"));
        }
        let reached = cells[1..]
            .iter()
            .map(number)
            .collect::<Result<Vec<_>, _>>()?;
        out.days[day] = FunnelCounts { reached };
    }
    Ok(out)
}

/// The UTC weekday index used in the rows (0 = Monday).
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
        assert!(q.query.contains("properties.$pathname = {s0_p0}"));
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
    fn rows_become_counts_per_weekday() {
        let rows = json!([[0, 10, 5, 2], [4, "7", "3", "1"]]);
        let by = parse_rows(3, &rows).expect("rows");
        assert_eq!(by.days[0].reached, vec![10, 5, 2]);
        assert_eq!(by.days[4].reached, vec![7, 3, 1]);
        assert_eq!(by.days[1].reached, vec![0, 0, 0]);
        assert_eq!(by.total().reached, vec![17, 8, 3]);
        assert!(parse_rows(3, &json!([[9, 1, 1, 1]])).is_err());
        assert!(parse_rows(3, &json!([[0, 1]])).is_err());
        assert!(parse_rows(3, &json!({"x": 1})).is_err());
    }
}
