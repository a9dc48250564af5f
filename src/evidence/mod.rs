//! Evidence: what PostHog says about why people stop at the chosen step,
//! counted in the funnel's own unit (daily entries at the step that went on
//! to the next step within the conversion window; see
//! [`crate::funnel::hogql`]).
//!
//! Pure: the queries' text ([`hogql`]) and the rows they return turned into
//! findings: which secondary actions go with going on (their rate against
//! the other entries', Wilson intervals, ranked by lift × reach), the rate
//! by segment and the segment to name, scroll depth and time on the page of
//! those who went on against those who left, rage and dead clicks, web
//! vitals, and what visitors said. A part with no data is [`Part::Absent`];
//! a part whose query failed is [`Part::Failed`], and the proposal goes on
//! without it.

pub mod hogql;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::funnel::hogql::count_cell;
use crate::funnel::rates::wilson;
pub use hogql::Kind;

/// An action or a segment needs this many entries before its rate is
/// compared: fewer say little, however large the difference.
pub const MIN_ENTRIES: u64 = 30;
/// A segment is named only with at least this many entries and this share
/// of the step's entries: too small a group is not worth a change.
pub const MIN_SEGMENT_ENTRIES: u64 = 100;
pub const MIN_SEGMENT_SHARE: f64 = 0.05;
/// A segment is "much worse" when its rate is at most this share of the
/// rest's, and the two 95% intervals do not overlap.
pub const MUCH_WORSE: f64 = 0.75;
/// How many actions, frustration signals and segments are kept per part.
pub const TOP: usize = 5;

/// One part of the evidence: found, absent from PostHog, or not read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", content = "data", rename_all = "snake_case")]
pub enum Part<T> {
    Found(T),
    /// PostHog has no such data for this step's entries.
    Absent,
    /// The query failed; the message says how.
    Failed(String),
}

impl<T> Part<T> {
    pub fn found(&self) -> Option<&T> {
        match self {
            Part::Found(t) => Some(t),
            _ => None,
        }
    }
}

/// A rate with its 95% Wilson interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    pub entries: u64,
    pub converted: u64,
    pub rate: f64,
    pub low: f64,
    pub high: f64,
}

impl Rate {
    pub fn new(entries: u64, converted: u64) -> Rate {
        let converted = converted.min(entries);
        let (low, high) = wilson(converted, entries);
        Rate {
            entries,
            converted,
            rate: if entries == 0 {
                0.0
            } else {
                converted as f64 / entries as f64
            },
            low,
            high,
        }
    }

    /// The entries of `all` that are not in `self`.
    pub fn rest(&self, all: &Rate) -> Rate {
        Rate::new(
            all.entries.saturating_sub(self.entries),
            all.converted.saturating_sub(self.converted),
        )
    }

    /// Whether the two 95% intervals are apart.
    pub fn apart(&self, other: &Rate) -> bool {
        self.high < other.low || other.high < self.low
    }
}

/// Something entries did on the step's page, and how those entries fared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// "click", "event", "rageclick" or "deadclick".
    pub kind: String,
    /// The element's text, or the event's name.
    pub label: String,
    /// The entries that did it.
    pub did: Rate,
    /// The step's other entries.
    pub others: Rate,
    /// did.rate / others.rate (0 when the others never went on).
    pub lift: f64,
    /// The share of the step's entries that did it.
    pub reach: f64,
    /// Whether the two intervals are apart.
    pub clear: bool,
}

/// The step's rate in one segment, against the rest of its entries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    /// "$device_type", "$browser", "$referring_domain", "utm_source" or
    /// "visitor" (new or returning: an entry by a person whose first
    /// step event read falls on an earlier day).
    pub dimension: String,
    pub value: String,
    pub rate: Rate,
    pub rest: Rate,
    /// The segment's share of the step's entries.
    pub share: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segments {
    /// Per dimension, its values with enough entries, most entries first.
    pub segments: Vec<Segment>,
    /// A segment much worse than the rest with enough entries, if any: the
    /// one that loses the most conversions against the rest's rate.
    pub worst: Option<Segment>,
}

/// A segment of the chosen step the change should help first: much worse
/// than the rest (see [`Segments::worst`]) and with the traffic to be
/// watched on its own, by the rule the step's choice uses (enough entries
/// to be judged, and at the step's pace enough conversions expected during
/// the observation window for the revert test).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Focus {
    pub segment: Segment,
    /// The segment's conversions expected during the observation window.
    pub expected_conversions: f64,
    /// The experiment is watched on this segment's entries only
    /// (`segment_watch` is on and the segment is a property of the step
    /// event).
    pub watched: bool,
}

impl Focus {
    /// The segment as the funnel query restricts to it, when the watch is.
    pub fn watch_segment(&self) -> Option<crate::funnel::WatchSegment> {
        self.watched.then(|| crate::funnel::WatchSegment {
            property: self.segment.dimension.clone(),
            value: self.segment.value.clone(),
        })
    }
}

/// The focus for a step expected to bring `step_expected` conversions
/// during the observation window: the worst segment, when its share of
/// those conversions is enough to be watched alone.
pub fn focus(
    worst: &Segment,
    step_expected: f64,
    min_visitors: u64,
    segment_watch: bool,
) -> Option<Focus> {
    let all_converted = worst.rate.converted + worst.rest.converted;
    let expected = if all_converted == 0 {
        0.0
    } else {
        step_expected * worst.rate.converted as f64 / all_converted as f64
    };
    let watchable = worst.rate.entries >= min_visitors
        && expected >= crate::funnel::rates::MIN_WATCH_CONVERSIONS;
    watchable.then(|| Focus {
        segment: worst.clone(),
        expected_conversions: expected,
        // "visitor" (new or returning) is not a property the query can
        // restrict to.
        watched: segment_watch
            && crate::config::is_property_name(&worst.dimension)
            && worst.dimension != "visitor",
    })
}

/// Scroll depth and time on the page of one group of entries, from the
/// first page leave (or next page view) that reports on the page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub entries: u64,
    /// Entries with a reading.
    pub measured: u64,
    /// Of those, how many scrolled less than a quarter, half, three
    /// quarters of the page.
    pub under_quarter: u64,
    pub under_half: u64,
    pub under_three_quarters: u64,
    pub mean_seconds: Option<f64>,
}

impl Reading {
    /// The share of measured entries that scrolled less than a quarter.
    pub fn share_under_quarter(&self) -> f64 {
        share(self.under_quarter, self.measured)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attention {
    pub went_on: Reading,
    pub left: Reading,
}

/// Web vitals on the page: the 75th percentile over entries, each entry's
/// worst value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Speed {
    pub entries: u64,
    pub measured: u64,
    /// Milliseconds.
    pub lcp_p75: Option<f64>,
    /// Milliseconds.
    pub inp_p75: Option<f64>,
    pub cls_p75: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub at: DateTime<Utc>,
    pub text: String,
    pub went_on: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Said {
    /// Survey answers given on the page by the step's entries.
    pub answers: u64,
    pub from_converters: u64,
    /// The most recent few, newest first, verbatim.
    pub recent: Vec<Answer>,
}

/// Everything funnelfix read about the chosen step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub funnel: String,
    pub step: String,
    pub next_step: String,
    /// The step's entries and how many went on, as the evidence counted
    /// them (equal to the funnel's own count).
    pub all: Option<Rate>,
    /// Secondary actions that go with going on (or with leaving).
    pub actions: Part<Vec<Action>>,
    pub segments: Part<Segments>,
    pub attention: Part<Attention>,
    /// Rage clicks and dead clicks, by element.
    pub frustration: Part<Vec<Action>>,
    pub speed: Part<Speed>,
    pub said: Part<Said>,
    /// HogQL queries the evidence took.
    pub queries: usize,
    /// The segment the change should help first, if one stands out and
    /// can be watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub focus: Option<Focus>,
}

impl Evidence {
    /// Nothing read yet about `step` → `next_step` of `funnel`.
    pub fn new(funnel: &str, step: &str, next_step: &str) -> Evidence {
        Evidence {
            funnel: funnel.to_string(),
            step: step.to_string(),
            next_step: next_step.to_string(),
            all: None,
            actions: Part::Absent,
            segments: Part::Absent,
            attention: Part::Absent,
            frustration: Part::Absent,
            speed: Part::Absent,
            said: Part::Absent,
            queries: 0,
            focus: None,
        }
    }

    /// Names the worst segment as the focus when it can be watched (see
    /// [`focus`]); `step_expected` is the step's expected conversions
    /// during the observation window.
    pub fn focus_on(&mut self, step_expected: f64, min_visitors: u64, segment_watch: bool) {
        self.focus = self
            .segments
            .found()
            .and_then(|s| s.worst.as_ref())
            .and_then(|w| focus(w, step_expected, min_visitors, segment_watch));
    }

    /// Takes in the rows of part `kind`'s query.
    pub fn read(&mut self, kind: Kind, results: &Value) -> Result<(), String> {
        match kind {
            Kind::Actions => {
                let (all, actions, frustration) = actions(results)?;
                self.all = Some(all);
                self.actions = actions;
                self.frustration = frustration;
            }
            Kind::Segments => {
                let (all, segments) = segments(results)?;
                self.all.get_or_insert(all);
                self.segments = segments;
            }
            Kind::Attention => self.attention = attention(results)?,
            Kind::Speed => self.speed = speed(results)?,
            Kind::Said => self.said = said(results)?,
        }
        Ok(())
    }

    /// Marks part `kind` as not read, saying why.
    pub fn fail(&mut self, kind: Kind, why: String) {
        match kind {
            Kind::Actions => {
                self.actions = Part::Failed(why.clone());
                self.frustration = Part::Failed(why);
            }
            Kind::Segments => self.segments = Part::Failed(why),
            Kind::Attention => self.attention = Part::Failed(why),
            Kind::Speed => self.speed = Part::Failed(why),
            Kind::Said => self.said = Part::Failed(why),
        }
    }
}

fn share(part: u64, all: u64) -> f64 {
    if all == 0 {
        0.0
    } else {
        part as f64 / all as f64
    }
}

fn rows(results: &Value) -> Result<&Vec<Value>, String> {
    results
        .as_array()
        .ok_or_else(|| "the reply has no results list".to_string())
}

fn cells(row: &Value, n: usize) -> Result<&Vec<Value>, String> {
    let cells = row
        .as_array()
        .ok_or_else(|| format!("a result row is not a list: {row}"))?;
    if cells.len() != n {
        return Err(format!(
            "a result row has {} columns, expected {n}",
            cells.len()
        ));
    }
    Ok(cells)
}

/// A count, or a flag (ClickHouse's booleans are 0 and 1, or true/false).
fn count(v: &Value) -> Result<u64, String> {
    match v.as_bool() {
        Some(b) => Ok(u64::from(b)),
        None => count_cell(v),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A number, or `None` for null, NaN or a negative "not measured".
fn measure(v: &Value) -> Option<f64> {
    let x = v
        .as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))?;
    (x.is_finite() && x >= 0.0).then_some(x)
}

/// Rows `[kind, label, entries, converted]` of the actions query into the
/// step's total, its secondary actions and its frustration signals.
pub type ActionsFound = (Rate, Part<Vec<Action>>, Part<Vec<Action>>);

pub fn actions(results: &Value) -> Result<ActionsFound, String> {
    let mut all = None;
    let mut found: Vec<(String, String, Rate)> = Vec::new();
    for row in rows(results)? {
        let c = cells(row, 4)?;
        let (kind, label) = (text(&c[0]), text(&c[1]));
        let rate = Rate::new(count(&c[2])?, count(&c[3])?);
        if kind.is_empty() && label.is_empty() {
            all = Some(rate);
        } else if !label.is_empty() {
            found.push((kind, label, rate));
        }
    }
    let all = all.unwrap_or(Rate::new(0, 0));
    let action = |(kind, label, did): &(String, String, Rate)| {
        let others = did.rest(&all);
        Action {
            kind: kind.clone(),
            label: label.clone(),
            did: *did,
            others,
            lift: if others.rate > 0.0 {
                did.rate / others.rate
            } else {
                0.0
            },
            reach: share(did.entries, all.entries),
            clear: did.apart(&others),
        }
    };
    let frustrating = |kind: &str| kind == "rageclick" || kind == "deadclick";
    let mut secondary: Vec<Action> = found
        .iter()
        .filter(|(kind, _, did)| !frustrating(kind) && did.entries >= MIN_ENTRIES)
        .map(action)
        .collect();
    // Lift × reach: what most changes the step's rate if more (or fewer)
    // entries did it. Actions that go with leaving rank by how much less.
    let score = |a: &Action| (a.lift - 1.0).abs() * a.reach;
    secondary.sort_by(|a, b| score(b).total_cmp(&score(a)).then(a.label.cmp(&b.label)));
    secondary.truncate(TOP);
    let mut frustration: Vec<Action> = found
        .iter()
        .filter(|(kind, _, _)| frustrating(kind))
        .map(action)
        .collect();
    frustration.sort_by(|a, b| {
        b.did
            .entries
            .cmp(&a.did.entries)
            .then(a.label.cmp(&b.label))
    });
    frustration.truncate(TOP);
    let part = |v: Vec<Action>| {
        if v.is_empty() {
            Part::Absent
        } else {
            Part::Found(v)
        }
    };
    Ok((all, part(secondary), part(frustration)))
}

/// Rows `[dimension, value, entries, converted]` of the segments query.
/// The step's entries are those of the "visitor" dimension (every entry is
/// new or returning).
pub fn segments(results: &Value) -> Result<(Rate, Part<Segments>), String> {
    let mut found: Vec<(String, String, Rate)> = Vec::new();
    for row in rows(results)? {
        let c = cells(row, 4)?;
        found.push((
            text(&c[0]),
            text(&c[1]),
            Rate::new(count(&c[2])?, count(&c[3])?),
        ));
    }
    let (entries, converted) = found
        .iter()
        .filter(|(d, _, _)| d == "visitor")
        .fold((0, 0), |(n, x), (_, _, r)| (n + r.entries, x + r.converted));
    let all = Rate::new(entries, converted);
    let mut segments: Vec<Segment> = found
        .iter()
        .filter(|(_, value, rate)| !value.is_empty() && rate.entries >= MIN_ENTRIES)
        .map(|(dimension, value, rate)| Segment {
            dimension: dimension.clone(),
            value: value.clone(),
            rate: *rate,
            rest: rate.rest(&all),
            share: share(rate.entries, all.entries),
        })
        .collect();
    segments.sort_by(|a, b| {
        a.dimension
            .cmp(&b.dimension)
            .then(b.rate.entries.cmp(&a.rate.entries))
            .then(a.value.cmp(&b.value))
    });
    let lost = |s: &Segment| s.rate.entries as f64 * (s.rest.rate - s.rate.rate);
    let worst = segments
        .iter()
        .filter(|s| {
            s.rate.entries >= MIN_SEGMENT_ENTRIES
                && s.share >= MIN_SEGMENT_SHARE
                && s.rate.rate <= MUCH_WORSE * s.rest.rate
                && s.rate.high < s.rest.low
        })
        .max_by(|a, b| lost(a).total_cmp(&lost(b)).then(b.value.cmp(&a.value)))
        .cloned();
    let part = if all.entries == 0 || (segments.is_empty() && worst.is_none()) {
        Part::Absent
    } else {
        Part::Found(Segments { segments, worst })
    };
    Ok((all, part))
}

/// Rows `[went_on, entries, measured, under_quarter, under_half,
/// under_three_quarters, mean_seconds]` of the attention query.
pub fn attention(results: &Value) -> Result<Part<Attention>, String> {
    let empty = Reading {
        entries: 0,
        measured: 0,
        under_quarter: 0,
        under_half: 0,
        under_three_quarters: 0,
        mean_seconds: None,
    };
    let (mut went_on, mut left) = (empty.clone(), empty);
    for row in rows(results)? {
        let c = cells(row, 7)?;
        let reading = Reading {
            entries: count(&c[1])?,
            measured: count(&c[2])?,
            under_quarter: count(&c[3])?,
            under_half: count(&c[4])?,
            under_three_quarters: count(&c[5])?,
            mean_seconds: measure(&c[6]),
        };
        if count(&c[0])? == 1 {
            went_on = reading;
        } else {
            left = reading;
        }
    }
    Ok(if went_on.measured + left.measured == 0 {
        Part::Absent
    } else {
        Part::Found(Attention { went_on, left })
    })
}

/// The row `[entries, measured, lcp_count, lcp_p75, inp_count, inp_p75,
/// cls_count, cls_p75]` of the speed query.
pub fn speed(results: &Value) -> Result<Part<Speed>, String> {
    let Some(row) = rows(results)?.first() else {
        return Ok(Part::Absent);
    };
    let c = cells(row, 8)?;
    let p75 = |n: &Value, v: &Value| -> Result<Option<f64>, String> {
        Ok(if count(n)? > 0 { measure(v) } else { None })
    };
    let speed = Speed {
        entries: count(&c[0])?,
        measured: count(&c[1])?,
        lcp_p75: p75(&c[2], &c[3])?,
        inp_p75: p75(&c[4], &c[5])?,
        cls_p75: p75(&c[6], &c[7])?,
    };
    Ok(if speed.measured == 0 {
        Part::Absent
    } else {
        Part::Found(speed)
    })
}

/// The row `[answers, from_converters, [[time, text, went_on], ...]]` of
/// the survey query.
pub fn said(results: &Value) -> Result<Part<Said>, String> {
    let Some(row) = rows(results)?.first() else {
        return Ok(Part::Absent);
    };
    let c = cells(row, 3)?;
    let answers = count(&c[0])?;
    let recent = c[2]
        .as_array()
        .ok_or_else(|| format!("not a list of answers: {}", c[2]))?
        .iter()
        .map(|a| {
            let a = cells(a, 3)?;
            let secs = count(&a[0])?;
            Ok(Answer {
                at: i64::try_from(secs)
                    .ok()
                    .and_then(|s| DateTime::from_timestamp(s, 0))
                    .ok_or_else(|| format!("not a time: {}", a[0]))?,
                text: text(&a[1]),
                went_on: count(&a[2])? == 1,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(if answers == 0 {
        Part::Absent
    } else {
        Part::Found(Said {
            answers,
            from_converters: count(&c[1])?,
            recent,
        })
    })
}

#[cfg(test)]
mod tests;
