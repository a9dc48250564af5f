//! The PostHog twin's answers to the evidence queries, counted from its
//! event log: a second implementation of what those queries mean, written
//! from their definition rather than from their text (see
//! `crate::evidence::hogql`). It learns the steps, the window and the range
//! as the funnel answer does ([`Asked`]), and which part is asked from the
//! columns the query returns.
//!
//! An entry is a person's first step event of a UTC day in `[from, to)`; it
//! went on at the person's first next-step event in `[x, x + window]`. What
//! the entry did is the part's events on the entry's page (`$pathname` of
//! the step event; for page leaves and views, the page they report on)
//! from the entry until it went on, or until its day ends.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use super::events::EventLog;
use super::posthog::Asked;

const DAY: i64 = 86_400;

/// The part a query asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Actions,
    Segments,
    Attention,
    Speed,
    Said,
}

/// Which part the query is, from the columns it returns; `None` for any
/// other query.
pub fn part_of(text: &str) -> Option<Part> {
    [
        ("AS kind,", Part::Actions),
        ("AS dimension,", Part::Segments),
        ("AS under_quarter,", Part::Attention),
        ("AS lcp_p75", Part::Speed),
        ("AS recent\n", Part::Said),
    ]
    .into_iter()
    .find(|(column, _)| text.contains(column))
    .map(|(_, part)| part)
}

/// One event a part reads: when, on which page, and what it says.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    t: i64,
    page: String,
    kind: String,
    label: String,
    /// Scroll and seconds (attention), LCP, INP, CLS (speed); -1 when absent.
    numbers: [f64; 3],
    seconds: Option<f64>,
}

/// The step event of an entry, with what PostHog sends on every event.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct StepSeen {
    t: i64,
    page: String,
    device: String,
    browser: String,
    referrer: String,
    utm: String,
}

/// The texts of an `elements_chain`, as PostHog materializes them:
/// `text="..."` after a `:` or a `"`, each once, in order.
fn chain_texts(chain: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut rest = chain;
    while let Some(i) = rest.find("text=\"") {
        let before = rest[..i].chars().last();
        let after = &rest[i + 6..];
        let Some(end) = after.find('"') else { break };
        if matches!(before, Some(':') | Some('"')) {
            let t = after[..end].to_string();
            if !out.contains(&t) {
                out.push(t);
            }
        }
        rest = &after[end..];
    }
    out
}

fn number(props: &BTreeMap<String, String>, key: &str) -> Option<f64> {
    props.get(key).and_then(|v| v.parse().ok())
}

/// What part `part` reads from an event, if anything.
fn seen(
    part: Part,
    name: &str,
    props: &BTreeMap<String, String>,
    t: i64,
    step: bool,
) -> Option<Seen> {
    let page = props.get("$pathname").cloned().unwrap_or_default();
    let base = |page: String| Seen {
        t,
        page,
        kind: String::new(),
        label: String::new(),
        numbers: [-1.0; 3],
        seconds: None,
    };
    match part {
        Part::Actions => {
            let click = name == "$autocapture"
                && matches!(
                    props.get("$event_type").map(String::as_str),
                    Some("click" | "submit")
                );
            let frustration = name == "$rageclick" || name == "$dead_click";
            let custom = !name.starts_with('$') && !name.starts_with("survey ");
            if step || !(click || frustration || custom) {
                return None;
            }
            let kind = match name {
                "$autocapture" => "click",
                "$rageclick" => "rageclick",
                "$dead_click" => "deadclick",
                _ => "event",
            };
            let label = if name.starts_with('$') {
                let chain = props.get("elements_chain").map(String::as_str);
                chain_texts(chain.unwrap_or(""))
                    .into_iter()
                    .next()
                    .unwrap_or_default()
            } else {
                name.to_string()
            };
            Some(Seen {
                kind: kind.into(),
                label,
                ..base(page)
            })
        }
        Part::Attention => {
            if name != "$pageleave" && name != "$pageview" {
                return None;
            }
            let scroll = number(props, "$prev_pageview_max_scroll_percentage")?;
            let left = props
                .get("$prev_pageview_pathname")
                .cloned()
                .unwrap_or_default();
            Some(Seen {
                numbers: [scroll, -1.0, -1.0],
                seconds: number(props, "$prev_pageview_duration"),
                ..base(left)
            })
        }
        Part::Speed => (name == "$web_vitals").then(|| {
            let metric = |m: &str| number(props, &format!("$web_vitals_{m}_value")).unwrap_or(-1.0);
            Seen {
                numbers: [metric("LCP"), metric("INP"), metric("CLS")],
                ..base(page)
            }
        }),
        Part::Said => {
            let text = props.get("$survey_response").cloned().unwrap_or_default();
            (name == "survey sent" && !text.is_empty()).then(|| Seen {
                label: text,
                ..base(page)
            })
        }
        Part::Segments => None,
    }
}

/// One entry: its step event, when it went on (0 if not), whether the
/// person's first step event read is on an earlier day, what it did.
struct Entry {
    step: StepSeen,
    went_on: i64,
    returning: bool,
    seen: Vec<Seen>,
}

fn entries(log: &EventLog, asked: &Asked, part: Part) -> Vec<Entry> {
    let step_ids: Vec<Option<u32>> = asked.steps.iter().map(|(e, _)| log.find_event(e)).collect();
    let mut ids: Vec<u32> = (0..log.names_len())
        .filter(|&id| {
            let name = log.event_name(id);
            step_ids.contains(&Some(id))
                || match part {
                    Part::Actions => {
                        !name.starts_with('$')
                            || ["$autocapture", "$rageclick", "$dead_click"].contains(&name)
                    }
                    Part::Attention => name == "$pageleave" || name == "$pageview",
                    Part::Speed => name == "$web_vitals",
                    Part::Said => name == "survey sent",
                    Part::Segments => false,
                }
        })
        .collect();
    ids.sort_unstable();
    let matches = |i: usize, event: u32, props: &BTreeMap<String, String>| {
        step_ids[i] == Some(event)
            && asked.steps[i].1.iter().all(|f| {
                if f.only.iter().any(|o| o == log.event_name(event)) {
                    props.get(&f.name).is_some_and(|p| *p == f.value)
                } else {
                    f.value.is_empty()
                }
            })
    };
    type Person = (Vec<StepSeen>, Vec<i64>, Vec<Seen>);
    let mut people: HashMap<u32, Person> = HashMap::new();
    for (event, row) in log.scan(&ids, asked.read * 1000, asked.until * 1000 + 999) {
        let props = log.props(row.props);
        let t = row.ms.div_euclid(1000);
        let (s0, s1) = (matches(0, event, props), matches(1, event, props));
        let person = people.entry(row.person).or_default();
        let get = |k: &str| props.get(k).cloned().unwrap_or_default();
        if s0 {
            person.0.push(StepSeen {
                t,
                page: get("$pathname"),
                device: get("$device_type"),
                browser: get("$browser"),
                referrer: get("$referring_domain"),
                utm: get("utm_source"),
            });
        }
        if s1 {
            person.1.push(t);
        }
        if let Some(s) = seen(part, log.event_name(event), props, t, s0 || s1) {
            person.2.push(s);
        }
    }
    let mut out = Vec::new();
    for (mut steps, mut next, mut acts) in people.into_values() {
        steps.sort();
        next.sort_unstable();
        acts.sort_by(|a, b| {
            a.t.cmp(&b.t)
                .then(a.page.cmp(&b.page))
                .then(a.numbers[0].total_cmp(&b.numbers[0]))
        });
        let first_day = steps.first().map(|s| s.t.div_euclid(DAY));
        let mut last_day = None;
        for s in &steps {
            let day = s.t.div_euclid(DAY);
            if last_day == Some(day) {
                continue;
            }
            last_day = Some(day);
            if s.t < asked.from || s.t >= asked.to {
                continue;
            }
            let went_on = next
                .iter()
                .copied()
                .find(|&y| y >= s.t && y <= s.t + asked.window_secs)
                .unwrap_or(0);
            let end = (day + 1) * DAY;
            let until = if went_on > 0 && went_on < end {
                went_on
            } else {
                end - 1
            };
            out.push(Entry {
                step: s.clone(),
                went_on,
                returning: first_day.is_some_and(|d| d < day),
                seen: acts
                    .iter()
                    .filter(|a| a.t >= s.t && a.t <= until && a.page == s.page)
                    .cloned()
                    .collect(),
            });
        }
    }
    out
}

/// Groups of entries by key, with how many went on, as rows `[key.0,
/// key.1, entries, converted]`.
fn grouped(groups: HashMap<(String, String), (u64, u64)>) -> Vec<(String, String, u64, u64)> {
    groups
        .into_iter()
        .map(|((a, b), (n, x))| (a, b, n, x))
        .collect()
}

/// The reply's `(columns, results)` for part `part`.
pub fn answer(log: &EventLog, asked: &Asked, part: Part) -> (Vec<&'static str>, Vec<Value>) {
    let es = entries(log, asked, part);
    match part {
        Part::Actions => {
            let mut groups: HashMap<(String, String), (u64, u64)> = HashMap::new();
            for e in &es {
                let mut keys: Vec<(String, String)> = vec![(String::new(), String::new())];
                for s in &e.seen {
                    let key = (s.kind.clone(), s.label.clone());
                    if !keys.contains(&key) {
                        keys.push(key);
                    }
                }
                for key in keys {
                    let g = groups.entry(key).or_default();
                    g.0 += 1;
                    g.1 += u64::from(e.went_on > 0);
                }
            }
            let mut rows = grouped(groups);
            rows.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)).then(a.1.cmp(&b.1)));
            rows.truncate(200);
            let rows = rows
                .into_iter()
                .map(|(k, l, n, x)| json!([k, l, n, x]))
                .collect();
            (vec!["kind", "label", "entries", "converted"], rows)
        }
        Part::Segments => {
            let mut groups: HashMap<(String, String), (u64, u64)> = HashMap::new();
            for e in &es {
                let visitor = if e.returning { "returning" } else { "new" };
                for (d, v) in [
                    ("$device_type", &e.step.device),
                    ("$browser", &e.step.browser),
                    ("$referring_domain", &e.step.referrer),
                    ("utm_source", &e.step.utm),
                    ("visitor", &visitor.to_string()),
                ] {
                    let g = groups.entry((d.to_string(), v.clone())).or_default();
                    g.0 += 1;
                    g.1 += u64::from(e.went_on > 0);
                }
            }
            let mut rows = grouped(groups);
            rows.sort_by(|a, b| a.0.cmp(&b.0).then(b.2.cmp(&a.2)).then(a.1.cmp(&b.1)));
            let mut per: HashMap<String, usize> = HashMap::new();
            rows.retain(|r| {
                let n = per.entry(r.0.clone()).or_default();
                *n += 1;
                *n <= 20
            });
            let rows = rows
                .into_iter()
                .map(|(d, v, n, x)| json!([d, v, n, x]))
                .collect();
            (vec!["dimension", "value", "entries", "converted"], rows)
        }
        Part::Attention => {
            let mut rows = Vec::new();
            for flag in [0u64, 1] {
                let group: Vec<&Entry> = es
                    .iter()
                    .filter(|e| u64::from(e.went_on > 0) == flag)
                    .collect();
                if group.is_empty() {
                    continue;
                }
                let firsts: Vec<&Seen> = group.iter().filter_map(|e| e.seen.first()).collect();
                let under = |x: f64| firsts.iter().filter(|s| s.numbers[0] < x).count();
                let secs: Vec<f64> = firsts.iter().filter_map(|s| s.seconds).collect();
                let mean = (!secs.is_empty()).then(|| secs.iter().sum::<f64>() / secs.len() as f64);
                rows.push(json!([
                    flag,
                    group.len(),
                    firsts.len(),
                    under(0.25),
                    under(0.5),
                    under(0.75),
                    mean
                ]));
            }
            (
                vec![
                    "went_on",
                    "entries",
                    "measured",
                    "under_quarter",
                    "under_half",
                    "under_three_quarters",
                    "mean_seconds",
                ],
                rows,
            )
        }
        Part::Speed => {
            let mut row = vec![
                json!(es.len()),
                json!(es.iter().filter(|e| !e.seen.is_empty()).count()),
            ];
            for i in 0..3 {
                let mut values: Vec<f64> = es
                    .iter()
                    .map(|e| {
                        e.seen
                            .iter()
                            .map(|s| s.numbers[i])
                            .filter(|v| *v >= 0.0)
                            .fold(-1.0, f64::max)
                    })
                    .filter(|v| *v >= 0.0)
                    .collect();
                values.sort_by(f64::total_cmp);
                let p75 = values.get(values.len() * 3 / 4).copied().unwrap_or(0.0);
                row.push(json!(values.len()));
                row.push(json!(p75));
            }
            (
                vec![
                    "entries",
                    "measured",
                    "lcp_count",
                    "lcp_p75",
                    "inp_count",
                    "inp_p75",
                    "cls_count",
                    "cls_p75",
                ],
                vec![Value::Array(row)],
            )
        }
        Part::Said => {
            let mut answers: Vec<(i64, String, u64)> = es
                .iter()
                .flat_map(|e| {
                    e.seen
                        .iter()
                        .map(move |s| (s.t, s.label.clone(), u64::from(e.went_on > 0)))
                })
                .collect();
            answers.sort_by(|a, b| b.cmp(a));
            let from_converters: u64 = answers.iter().map(|a| a.2).sum();
            let recent: Vec<Value> = answers
                .iter()
                .take(5)
                .map(|(t, text, w)| json!([t, text, w]))
                .collect();
            (
                vec!["answers", "from_converters", "recent"],
                vec![json!([answers.len(), from_converters, recent])],
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_texts_as_posthog_materializes_them() {
        assert_eq!(
            chain_texts(
                "button.btn:text=\"Choose monthly\"nth-child=\"2\";div:text=\"Plans\";a:href=\"/x\"text=\"Plans\""
            ),
            vec!["Choose monthly".to_string(), "Plans".to_string()]
        );
        assert!(chain_texts("button.btn:nth-child=\"2\"").is_empty());
    }
}
