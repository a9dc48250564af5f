//! The one HogQL query per funnel, and what it counts.
//!
//! The estimand, one for every rate funnelfix shows or judges (the funnel
//! table, the proposal, the PR, the chat, the watch and the verdict):
//!
//! - an *entry* at step `i` is a person's first step-`i` event of a UTC day;
//!   entries are counted on the date they fall in, if they fall in the entry
//!   range `[from, to)` (a person's earlier event of the same day, before
//!   `from`, makes that day's entry fall before the range: it is not counted);
//! - the entry *converted* if the same person has a step-`i + 1` event at or
//!   after it and no later than the conversion window after it;
//! - right-censoring: `to` is clamped to `now - window`, so an entry is only
//!   counted once its whole conversion window has passed.
//!
//! Each entry is one unit whose outcome depends only on the window after it,
//! so the expected rate does not depend on how long the entry range is: a
//! person who comes back on five days is five entries, in a 2-day range and
//! in a 28-day one alike. (Counting people once over the whole range instead
//! gives returning visitors more chances in a long range than in a short one,
//! and reads a harmless change as a drop.) Steps are counted independently:
//! an entry at the pricing page counts whether or not the person came from
//! the home page that day.
//!
//! Times are whole seconds (`toUnixTimestamp`), dates are UTC. Rows come per
//! date of entry (days since 1970-01-01) with, per step, the entries and,
//! but for the last step, the conversions: `[day, entries_0, converted_0,
//! entries_1, converted_1, ..., entries_{n-1}]`, then, when the query asks
//! for them ([`Sums::Count`], the monitor's queries), per transition `i`
//! the per-person sums of [`crate::stats::PersonSums`] (`entries_sq_i`,
//! `conversions_entries_i`, `conversions_sq_i`): one person's entries are
//! not independent, and the revert test's variance needs to know how they
//! cluster without reading any person's data.
//!
//! Cost: besides the time range, the query reads only the funnel's own event
//! names (`event IN (...)`): PostHog's events table is sorted by date and
//! then event, so this skips most of a project's data.
//!
//! Every value from the config (event names, property values, times, the
//! window) is a `{placeholder}` in `values`. Property *names* cannot be
//! placeholders in HogQL, so they are spliced only after
//! [`is_property_name`] accepted them.

use std::fmt::Write;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde_json::{Map, Value, json};

use super::{ByDay, DayCounts, EntryRange, FunnelCounts, WatchSegment};
use crate::config::{StepConfig, is_property_name};
use crate::stats::PersonSums;

/// Seconds in a day: entries are per UTC date.
pub const DAY: i64 = 86_400;

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

/// Each event name once with the placeholder of its first step, and each
/// filtered property with the placeholders of the events whose steps
/// filter on it (`f<k>` is the k-th).
#[allow(clippy::type_complexity)]
fn filtered_properties(
    steps: &[StepConfig],
) -> Result<(Vec<(&str, String)>, Vec<(&str, Vec<String>)>), String> {
    let mut event_of: Vec<(&str, String)> = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        if !event_of.iter().any(|(e, _)| *e == s.event) {
            event_of.push((&s.event, format!("{{s{i}_event}}")));
        }
    }
    let placeholder = |event: &str| {
        event_of
            .iter()
            .find(|(e, _)| *e == event)
            .map(|(_, p)| p.clone())
            .unwrap_or_default()
    };
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
    Ok((event_of, props))
}

/// Property `prop` of a row, read once: from the step columns' `f<k>` on
/// the events whose steps filter on it (where `f<k>` already holds it),
/// from the properties on the others.
pub(crate) fn property_once(steps: &[StepConfig], prop: &str) -> Result<String, String> {
    let (_, props) = filtered_properties(steps)?;
    Ok(match props.iter().position(|(p, _)| *p == prop) {
        Some(k) => format!(
            "if(event IN ({}), f{k}, properties.{prop})",
            props[k].1.join(", ")
        ),
        None => format!("properties.{prop}"),
    })
}

/// The inner SELECT's columns: each filtered property read once per row as
/// `f<k>` (and only from the events whose steps filter on it), then each
/// step's condition as `s<i>`, its property comparisons first so each reads
/// the extracted column rather than extracting again. Also returns each
/// event name's placeholder, once per name.
pub(crate) fn step_columns(
    steps: &[StepConfig],
    values: &mut Map<String, Value>,
) -> Result<(String, Vec<String>), String> {
    for (i, s) in steps.iter().enumerate() {
        values.insert(format!("s{i}_event"), json!(s.event));
    }
    let (event_of, props) = filtered_properties(steps)?;
    let mut columns = String::new();
    for (k, (prop, events)) in props.iter().enumerate() {
        let _ = write!(
            columns,
            ",\n                if(event IN ({}), properties.{prop}, '') AS f{k}",
            events.join(", ")
        );
    }
    for (i, s) in steps.iter().enumerate() {
        let mut cond: Vec<String> = Vec::new();
        for (j, (prop, value)) in s.filters.iter().enumerate() {
            let k = props.iter().position(|(p, _)| p == prop).unwrap_or(0);
            let key = format!("s{i}_p{j}");
            cond.push(format!("f{k} = {{{key}}}"));
            values.insert(key, json!(value));
        }
        cond.push(format!("event = {{s{i}_event}}"));
        let _ = write!(columns, ",\n                {} AS s{i}", cond.join(" AND "));
    }
    let events = event_of.into_iter().map(|(_, p)| p).collect();
    Ok((columns, events))
}

/// The times of the (censored) entry range and the window as values:
/// entries in `[date_from, date_to)`, events read in `[date_read,
/// date_until]`. Returns `(from, to)` in Unix seconds.
pub(crate) fn range_values(
    range: EntryRange,
    window: Duration,
    values: &mut Map<String, Value>,
) -> (i64, i64) {
    let from = range.from.timestamp();
    let to = range.to.timestamp();
    let window_secs = window.as_secs().max(1) as i64;
    values.insert("date_from".into(), json!(from));
    values.insert("date_to".into(), json!(to));
    // The first event of the entry range's first day decides whether that
    // day's entry falls in the range, so reading starts at midnight.
    values.insert("date_read".into(), json!(from.div_euclid(DAY) * DAY));
    values.insert("date_until".into(), json!(to + window_secs));
    values.insert("window".into(), json!(window_secs));
    (from, to)
}

/// A count in a result row: PostHog sends 64-bit integers as numbers or,
/// like ClickHouse's JSON, as strings.
pub(crate) fn count_cell(v: &Value) -> Result<u64, String> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| format!("not a count: {v}"))
}

/// Midnight UTC that starts `date`, as a Unix time.
pub fn day_start(date: NaiveDate) -> i64 {
    date.and_time(chrono::NaiveTime::MIN).and_utc().timestamp()
}

/// Whether a funnel query also counts the per-person sums of
/// [`PersonSums`] (the revert test's variance needs them; the funnel table
/// and the propose pass do not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sums {
    Count,
    Skip,
}

/// The funnel query of `funnelfix funnel` and the propose pass: every
/// entry, without the per-person sums.
pub fn funnel_query(
    steps: &[StepConfig],
    window: Duration,
    range: EntryRange,
    now: DateTime<Utc>,
) -> Result<HogQlQuery, String> {
    segment_funnel_query(steps, None, Sums::Skip, window, range, now)
}

/// The funnel query counting only the entries of `segment` (all entries
/// when `None`): an entry, still a person's first step event of the day,
/// counts when a step event at its time has the segment's value. Whether it
/// converted does not depend on the segment of the next step's event.
pub fn segment_funnel_query(
    steps: &[StepConfig],
    segment: Option<&WatchSegment>,
    sums: Sums,
    window: Duration,
    range: EntryRange,
    now: DateTime<Utc>,
) -> Result<HogQlQuery, String> {
    let n = steps.len();
    if n < 2 {
        return Err("a funnel query needs at least two steps".into());
    }
    let range = censored(range, window, now);
    let mut values = Map::new();
    let (mut columns, events) = step_columns(steps, &mut values)?;
    let (from, to) = range_values(range, window, &mut values);
    if let Some(seg) = segment {
        if !is_property_name(&seg.property) {
            return Err(format!(
                "segment property name {:?} is not allowed",
                seg.property
            ));
        }
        let _ = write!(
            columns,
            ",\n                coalesce(properties.{}, '') = {{segment_value}} AS in_segment",
            seg.property
        );
        values.insert("segment_value".into(), json!(seg.value));
    }

    // With a segment, g<i> holds the times of the step's events in it.
    let times: String = (0..n)
        .map(|i| {
            let mut c = format!(",\n        arraySort(groupArrayIf(t, s{i})) AS t{i}");
            if segment.is_some() {
                let _ = write!(c, ",\n        groupArrayIf(t, s{i} AND in_segment) AS g{i}");
            }
            c
        })
        .collect();
    let in_segment = |i: usize| {
        if segment.is_some() {
            format!(" AND has(g{i}, x)")
        } else {
            String::new()
        }
    };
    // Per step, its entries: the first time of each date (the time before
    // it, p, is on another date; 0 before the first, as no event is on
    // 1 January 1970), in the range.
    let entries: String = (0..n)
        .map(|i| {
            format!(
                ",\n        arrayFilter((x, p) -> intDiv(x, {DAY}) != intDiv(p, {DAY}) \
                 AND x >= {{date_from}} AND x < {{date_to}}{}, t{i}, arrayPopBack(arrayPushFront(t{i}, 0))) AS e{i}",
                in_segment(i)
            )
        })
        .collect();
    // Per step but the last, whether each of its entries converted.
    let converted: String = (0..n - 1)
        .map(|i| {
            format!(
                ",\n        arrayMap(x -> arrayExists(y -> y >= x AND y <= x + {{window}}, t{}), e{i}) AS c{i}",
                i + 1
            )
        })
        .collect();
    // One row per date the range touches, so nothing is cut off.
    let dates = to.div_euclid(DAY) - from.div_euclid(DAY) + 1;
    // Each entry as one number, its unit: day * 2n + 2 * step + converted.
    // With the sums, `entry`: unit * r² + N * r + X, N and X its person's
    // entries and conversions at this step over the range (taken once per
    // person; both at most `dates`, so below r). One number groups cheaper
    // than a tuple.
    let m = 2 * n;
    let r = dates + 1;
    let units: Vec<String> = (0..n)
        .map(|i| {
            // The last step has no conversions of its own.
            let (args, c, lists) = if i + 1 < n {
                ("(x, c) -> ", " + c", format!("e{i}, c{i}"))
            } else {
                ("x -> ", "", format!("e{i}"))
            };
            let step = match i {
                0 => String::new(),
                _ => format!(" + {}", 2 * i),
            };
            let unit = format!("intDiv(x, {DAY}) * {m}{step}{c}");
            match sums {
                Sums::Skip => format!("arrayMap({args}{unit}, {lists})"),
                Sums::Count if i + 1 < n => format!(
                    "arrayMap({args}({unit}) * {} + length(e{i}) * {r} + arraySum(c{i}), {lists})",
                    r * r
                ),
                Sums::Count => format!("arrayMap({args}({unit}) * {}, {lists})", r * r),
            }
        })
        .collect();
    let unit = match sums {
        Sums::Skip => "unit".to_string(),
        Sums::Count => format!("intDiv(entry, {})", r * r),
    };
    let counts: String = (0..n)
        .map(|i| {
            let mut c = format!(",\n    sumIf(k, intDiv({unit} % {m}, 2) = {i}) AS entries_{i}");
            if i + 1 < n {
                let _ = write!(
                    c,
                    ",\n    sumIf(k, {unit} % {m} = {}) AS converted_{i}",
                    2 * i + 1
                );
            }
            c
        })
        .collect();
    // Per transition, the per-person sums of `stats::PersonSums`: each entry
    // adds its person's entries (and, if converted, conversions) of the range.
    let (sums, grouped) = match sums {
        Sums::Skip => (String::new(), "unit"),
        Sums::Count => (
            (0..n - 1)
                .map(|i| {
                    let conv = 2 * i + 1;
                    format!(
                        ",\n    sumIf(k * (intDiv(entry, {r}) % {r}), intDiv({unit} % {m}, 2) = {i}) AS entries_sq_{i}\
                         ,\n    sumIf(k * (intDiv(entry, {r}) % {r}), {unit} % {m} = {conv}) AS conversions_entries_{i}\
                         ,\n    sumIf(k * (entry % {r}), {unit} % {m} = {conv}) AS conversions_sq_{i}"
                    )
                })
                .collect(),
            "entry",
        ),
    };
    let any_step: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
    // Entries are counted per unit first (a handful of distinct values),
    // then spread into one row per date.
    let query = format!(
        "SELECT\n    intDiv({unit}, {m}) AS day{counts}{sums}\n\
         FROM (\n    \
         SELECT\n        arrayJoin(arrayConcat(\n            {units}\n        )) AS {grouped},\n        \
         count() AS k\n    \
         FROM (\n        \
         SELECT\n            person_id{times}{entries}{converted}\n        \
         FROM (\n            \
         SELECT\n                person_id,\n                toUnixTimestamp(timestamp) AS t{columns}\n            \
         FROM events\n            \
         WHERE timestamp >= fromUnixTimestamp({{date_read}}) AND timestamp <= fromUnixTimestamp({{date_until}})\n                \
         AND event IN ({events})\n                \
         AND ({any_step})\n        )\n        \
         GROUP BY person_id\n    )\n    \
         GROUP BY {grouped}\n)\n\
         GROUP BY day\nORDER BY day\nLIMIT {dates}",
        units = units.join(",\n            "),
        times = times.replace("\n        ", "\n            "),
        entries = entries.replace("\n        ", "\n            "),
        converted = converted.replace("\n        ", "\n            "),
        events = events.join(", "),
        any_step = any_step.join(" OR "),
    );
    Ok(HogQlQuery { query, values })
}

/// Rows `[day, entries_0, converted_0, ..., entries_{n-1}]`, then with
/// [`Sums::Count`] `[entries_sq_0, conversions_entries_0, conversions_sq_0,
/// ...]`, of a funnel of `steps` steps into counts per date of entry;
/// `range` is the censored entry range the query counted.
pub fn parse_days(
    steps: usize,
    sums: Sums,
    range: EntryRange,
    results: &Value,
) -> Result<ByDay, String> {
    let rows = results
        .as_array()
        .ok_or_else(|| "the reply has no results list".to_string())?;
    let counted = 2 * steps;
    let columns = match sums {
        Sums::Count => counted + 3 * steps.saturating_sub(1),
        Sums::Skip => counted,
    };
    let mut days: Vec<DayCounts> = Vec::with_capacity(rows.len());
    for row in rows {
        let cells = row
            .as_array()
            .ok_or_else(|| format!("a result row is not a list: {row}"))?;
        if cells.len() != columns {
            return Err(format!(
                "a result row has {} columns, expected {columns}",
                cells.len()
            ));
        }
        let number = count_cell;
        let day = number(&cells[0])?;
        let date = i64::try_from(day)
            .ok()
            .and_then(|d| DateTime::from_timestamp(d.checked_mul(DAY)?, 0))
            .map(|t| t.date_naive())
            .ok_or_else(|| format!("day {day} is out of range"))?;
        let (first, last) = (range.from.date_naive(), range.to.date_naive());
        if date < first || date > last {
            return Err(format!(
                "day {date} is outside the entry range {first} to {last}"
            ));
        }
        if days.iter().any(|d| d.date == date) {
            return Err(format!("day {date} appears twice"));
        }
        let cells = cells[1..]
            .iter()
            .map(number)
            .collect::<Result<Vec<_>, _>>()?;
        let (counts, sums) = cells.split_at(counted - 1);
        let entries: Vec<u64> = counts.iter().step_by(2).copied().collect();
        let converted: Vec<u64> = counts.iter().skip(1).step_by(2).copied().collect();
        let people = sums
            .chunks_exact(3)
            .map(|s| PersonSums {
                entries_sq: s[0],
                conversions_entries: s[1],
                conversions_sq: s[2],
            })
            .collect();
        days.push(DayCounts {
            date,
            counts: FunnelCounts { entries, converted },
            people,
        });
    }
    days.sort_by_key(|d| d.date);
    Ok(ByDay { range, days })
}

/// The UTC weekday index of [`super::ByWeekday`] (0 = Monday).
pub fn weekday(t: DateTime<Utc>) -> usize {
    t.weekday().num_days_from_monday() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, event: &str, filters: &[(&str, &str)]) -> StepConfig {
        StepConfig::new(name, event, filters)
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
        assert_eq!(q.values["window"], json!(86400));
        // Only the funnel's events are read, from midnight of the first day.
        assert!(q.query.contains("AND event IN ({s0_event}, {s1_event})"));
        assert_eq!(
            q.values["date_read"],
            json!(t("2026-03-01T00:00:00Z").timestamp())
        );

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
            "f0 = {s0_p0} AND f1 = {s0_p1} AND event = {s0_event} AS s0,",
            "f0 = {s1_p0} AND f2 = {s1_p1} AND event = {s1_event} AS s1,",
            "f1 = {s2_p0} AND event = {s2_event} AS s2\n",
            "AND event IN ({s0_event}, {s1_event})\n",
        ] {
            assert!(q.query.contains(column), "{column}\n{}", q.query);
        }
    }
    #[test]
    fn each_event_name_is_read_once_and_the_range_starts_at_midnight() {
        let steps = [
            step("Home", "$pageview", &[("$pathname", "/")]),
            step("Pricing", "$pageview", &[("$pathname", "/pricing")]),
            step("Done", "signup_completed", &[]),
        ];
        let q = funnel_query(
            &steps,
            Duration::from_secs(3600),
            EntryRange {
                from: t("2026-03-01T09:30:00Z"),
                to: t("2026-03-29T09:30:00Z"),
            },
            t("2026-03-29T09:30:00Z"),
        )
        .expect("query");
        assert!(
            q.query.contains("AND event IN ({s0_event}, {s2_event})"),
            "{}",
            q.query
        );
        assert_eq!(
            q.values["date_read"],
            json!(t("2026-03-01T00:00:00Z").timestamp())
        );
        assert_eq!(
            q.values["date_until"],
            json!(t("2026-03-29T09:30:00Z").timestamp())
        );
        // One row per date the range touches: 1 to 29 March.
        assert!(q.query.ends_with("LIMIT 29"), "{}", q.query);
        // Every step's entries, every step but the last's conversions.
        for column in [
            "entries_0",
            "converted_0",
            "entries_1",
            "converted_1",
            "entries_2",
        ] {
            assert!(q.query.contains(&format!("AS {column}")), "{column}");
        }
        assert!(!q.query.contains("converted_2"));
    }

    #[test]
    fn rows_become_counts_per_date() {
        let range = EntryRange {
            from: t("2026-03-02T10:00:00Z"),
            to: t("2026-03-09T10:00:00Z"),
        };
        let monday = t("2026-03-02T00:00:00Z").timestamp() / DAY;
        let rows = json!([
            [monday + 4, "7", "3", "4", "1", "2", 9, 4, 3, 5, 1, 1],
            [monday, 10, 5, 6, 2, 1, 14, 7, 5, 8, 3, 2]
        ]);
        let by = parse_days(3, Sums::Count, range, &rows).expect("rows");
        assert_eq!(by.days[0].date, range.from.date_naive());
        assert_eq!(by.days[0].counts.entries, vec![10, 6, 1]);
        assert_eq!(by.days[0].counts.converted, vec![5, 2]);
        assert_eq!(by.days[1].counts.entries, vec![7, 4, 2]);
        assert_eq!(
            by.days[0].people,
            [
                PersonSums {
                    entries_sq: 14,
                    conversions_entries: 7,
                    conversions_sq: 5
                },
                PersonSums {
                    entries_sq: 8,
                    conversions_entries: 3,
                    conversions_sq: 2
                }
            ]
        );
        let week = by.by_weekday(3);
        assert_eq!(week.days[4].entries, vec![7, 4, 2]);
        assert_eq!(week.days[1], FunnelCounts::empty(3));
        let total = by.total();
        assert_eq!(total.entries, vec![17, 10, 3]);
        assert_eq!(total.converted, vec![8, 3]);
        assert_eq!(total.transition(1), (10, 3));
        // Dates outside the range, twice the same date, wrong shapes.
        let row = |day: i64| json!([day, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
        let parse = |rows: Value| parse_days(3, Sums::Count, range, &rows);
        assert!(parse(json!([row(monday - 1)])).is_err());
        assert!(parse(json!([row(monday + 8)])).is_err());
        assert!(parse(json!([row(monday), row(monday)])).is_err());
        assert!(parse(json!([[monday, 1, 1, 1]])).is_err());
        // The layout without the per-person sums is refused, not misread.
        assert!(parse(json!([[monday, 1, 1, 1, 1, 1]])).is_err());
        assert!(parse(json!({"x": 1})).is_err());
        // Without the sums: the counts alone, and no per-person sums.
        let by = parse_days(3, Sums::Skip, range, &json!([[monday, 10, 5, 6, 2, 1]]))
            .expect("rows without the sums");
        assert_eq!(by.days[0].counts.entries, vec![10, 6, 1]);
        assert!(by.days[0].people.is_empty());
        assert!(parse_days(3, Sums::Skip, range, &json!([row(monday)])).is_err());
    }
}
