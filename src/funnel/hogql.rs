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
    // One row per UTC date the range touches, so nothing is cut off.
    let dates = range.to.timestamp().div_euclid(DAY) - range.from.timestamp().div_euclid(DAY) + 1;
    let query = format!(
        "SELECT\n    intDiv(toUnixTimestamp(entry_time), {DAY}) AS day,\n    count() AS entrants{reached}\n\
         FROM (\n    SELECT\n        person_id,\n        minIf(timestamp, {entry}) AS entry_time,\n        \
         countIf({entry}) AS entries,\n        \
         windowFunnel({window_secs})(toDateTime(timestamp), {chain}) AS level\n    \
         FROM events\n    \
         WHERE timestamp >= fromUnixTimestamp({{date_from}}) AND timestamp <= fromUnixTimestamp({{date_until}})\n    \
         GROUP BY person_id\n    HAVING entries > 0\n)\nGROUP BY day\nORDER BY day\nLIMIT {dates}",
        chain = chain.join(", "),
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
    fn every_date_of_the_range_is_returned() {
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
        // Censored to 28 March 09:30: 1 to 28 March is 28 dates, all returned.
        assert!(q.query.ends_with("LIMIT 28"), "{}", q.query);
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
