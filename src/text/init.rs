//! What `funnelfix init` says and writes: the draft config's funnel with its
//! comments, the listings, and the one-line messages.

use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::init::{DraftFunnel, Dropped, FilterWhy, Page, SavedInsight, Setting, TopEvents};

/// The column comments start at in the example config.
const COMMENT_COLUMN: usize = 37;

/// "Viewed /pricing": a pageview step named by its path.
pub fn pageview_step_name(path: &str) -> String {
    format!("Viewed {path}")
}

pub fn not_a_funnel(kind: &str) -> String {
    if kind.is_empty() {
        "it is not a funnel".to_string()
    } else {
        format!("it is a {kind}, not a funnel")
    }
}

/// A step funnelfix cannot count: "the action \"Signed up\"".
pub fn not_an_event(kind: &str, label: Option<&Value>) -> String {
    let kind = match kind {
        "ActionsNode" | "action" => "the action",
        "DataWarehouseNode" => "the data warehouse table",
        "EventsNode" | "event" => return "all events (no event named)".to_string(),
        _ => "the series",
    };
    match label {
        Some(Value::String(s)) => format!("{kind} {s:?}"),
        Some(v) if !v.is_null() => format!("{kind} {v}"),
        _ => kind.to_string(),
    }
}

/// A property filter as PostHog holds it, in one line: `$browser icontains "Chrome"`.
pub fn property_filter(p: &Value) -> String {
    let key = p["key"]
        .as_str()
        .map_or_else(|| p["key"].to_string(), str::to_string);
    let operator = p["operator"].as_str().unwrap_or("exact");
    let value = &p["value"];
    match p["type"].as_str() {
        Some("cohort") => format!("in cohort {value}"),
        _ if value.is_null() => format!("{key} {operator}"),
        _ => format!("{key} {operator} {value}"),
    }
}

fn dropped_line(d: &Dropped) -> String {
    match d {
        Dropped::Step { step, what } => {
            format!("step {step} is {what}: funnelfix counts events only, so the step was left out")
        }
        Dropped::Filter { step, filter, why } => {
            let at = match step {
                Some(step) => format!("step {step}"),
                None => "every step".to_string(),
            };
            let why = match why {
                FilterWhy::Operator(op) => {
                    format!("operator {op:?}; only \"exact\" (equals) can be expressed")
                }
                FilterWhy::NotEventProperty(kind) => {
                    format!("a {kind} filter; only event properties can be expressed")
                }
                FilterWhy::NotText => "the value is not text".to_string(),
                FilterWhy::SeveralValues => {
                    "several values (any of them); only one can be expressed".to_string()
                }
                FilterWhy::Name => {
                    "a property name funnelfix cannot query (letters, digits, _ and a leading $ only)"
                        .to_string()
                }
                FilterWhy::Alternative => "one of several alternatives (an OR group)".to_string(),
                FilterWhy::Repeated => "a second value for a property already filtered".to_string(),
            };
            format!("{at}: {filter} ({why})")
        }
        Dropped::Setting(s) => match s {
            Setting::Order(order) => format!(
                "the step order {order:?}: funnelfix counts each step's next step within the window"
            ),
            Setting::Exclusions(n) => format!("{n} exclusion step(s)"),
            Setting::TestAccounts => {
                "\"filter out internal and test users\": their events are counted".to_string()
            }
            Setting::Groups => "counting by group: funnelfix counts people".to_string(),
            Setting::Breakdown => "the breakdown (it splits the chart only)".to_string(),
        },
    }
}

/// The top of the draft file.
pub fn draft_header(insight: &SavedInsight) -> String {
    format!(
        "# Draft written by `funnelfix init` from the saved PostHog funnel {} {:?}{}.\n\
         # Set telegram.chat_id and telegram.approvers, confirm every line marked\n\
         # \"guessed\", then run `funnelfix check-config`.\n#\n",
        insight.id,
        insight.title(),
        short_id(insight),
    )
}

fn short_id(insight: &SavedInsight) -> String {
    if insight.short_id.is_empty() {
        String::new()
    } else {
        format!(" (short id {})", insight.short_id)
    }
}

/// `key = value`, its comment in the example's column.
fn with_comment(line: &str, comment: &str) -> String {
    let pad = COMMENT_COLUMN.saturating_sub(line.chars().count()).max(1);
    format!("{line}{}# {comment}", " ".repeat(pad))
}

/// A duration as the config writes it: "14d", "6h", "90m", "45s".
pub fn config_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{}s", s.max(1)),
    }
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// The draft's `[[funnel]]`, with what was not carried over listed above it.
pub fn draft_funnel(insight: &SavedInsight, funnel: &DraftFunnel) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n# The funnel, from PostHog's saved funnel {} {:?}.",
        insight.id,
        insight.title()
    );
    if !funnel.dropped.is_empty() {
        out.push_str(
            "# Not carried over (funnelfix counts events with property equality filters):\n",
        );
        for d in &funnel.dropped {
            let _ = writeln!(out, "#   - {}", dropped_line(d));
        }
    }
    let _ = writeln!(out, "{}", with_comment("[[funnel]]", "one or more funnels"));
    let _ = writeln!(out, "name = {}", toml_string(&funnel.name));
    let _ = writeln!(
        out,
        "{}",
        with_comment(
            &format!(
                "conversion_window = {}",
                toml_string(&config_duration(funnel.window))
            ),
            "the saved funnel's conversion window"
        )
    );
    let _ = writeln!(
        out,
        "{}",
        with_comment(
            "selection = \"lowest_rate\"",
            "or \"most_lost\" (entrants × (1 − rate))"
        )
    );
    let last = funnel.steps.len().saturating_sub(1);
    for (i, step) in funnel.steps.iter().enumerate() {
        let _ = writeln!(out, "\n  [[funnel.step]]");
        let _ = writeln!(out, "  name = {}", toml_string(&step.name));
        let _ = writeln!(out, "  event = {}", toml_string(&step.event));
        if !step.filters.is_empty() {
            let pairs: Vec<String> = step
                .filters
                .iter()
                .map(|(k, v)| format!("{} = {}", toml_string(k), toml_string(v)))
                .collect();
            let _ = writeln!(out, "  filters = {{ {} }}", pairs.join(", "));
        }
        if i == last {
            continue;
        }
        let files: Vec<String> = step.files.iter().map(|f| toml_string(f)).collect();
        let line = format!("  files = [{}]", files.join(", "));
        let comment = match (&step.page, step.files.is_empty()) {
            (Some(Page::Filter(path)), false) => format!("guessed from {path}: confirm"),
            (Some(Page::Traffic(path)), false) => {
                format!("guessed: {} is sent from {path} most: confirm", step.event)
            }
            (Some(page), true) => format!(
                "TODO: no file of the repository serves {}: list the page(s) where people decide to go on",
                page.path()
            ),
            (None, _) => {
                "TODO: list the page(s) where people decide to go on (the event carries no path)"
                    .to_string()
            }
        };
        let _ = writeln!(out, "{}", with_comment(&line, &comment));
    }
    out
}

/// The saved funnels to choose from, numbered.
pub fn insight_list(project: &str, insights: &[SavedInsight]) -> String {
    let mut out = format!("Saved funnels in PostHog project {project}:\n");
    for (i, insight) in insights.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {}. {} (id {}{})",
            i + 1,
            display_title(insight),
            insight.id,
            if insight.short_id.is_empty() {
                String::new()
            } else {
                format!(", short id {}", insight.short_id)
            }
        );
    }
    out
}

fn display_title(insight: &SavedInsight) -> &str {
    match insight.title() {
        "" => "(unnamed)",
        t => t,
    }
}

pub const CHOOSE_PROMPT: &str = "Which funnel? Its number, id or short id: ";

pub fn choice_not_understood(answer: &str) -> String {
    format!("{answer:?} is none of the numbers, ids or short ids listed")
}

pub fn choose_with_flag(project: &str, count: usize) -> String {
    format!(
        "{count} saved funnels in PostHog project {project}: choose one with --insight ID (an id or short id listed above)"
    )
}

pub fn no_such_insight(wanted: &str, project: &str, insights: &[SavedInsight]) -> String {
    let known: Vec<String> = insights
        .iter()
        .map(|i| format!("{} ({}) {:?}", i.id, i.short_id, display_title(i)))
        .collect();
    format!(
        "no saved funnel with id or short id {wanted:?} in PostHog project {project}; its saved funnels: {}",
        known.join(", ")
    )
}

pub fn too_few_steps(insight: &SavedInsight, funnel: &DraftFunnel) -> String {
    let left_out: Vec<String> = funnel
        .dropped
        .iter()
        .filter(|d| matches!(d, Dropped::Step { .. }))
        .map(dropped_line)
        .collect();
    format!(
        "the saved funnel {} {:?} has {} step(s) funnelfix can count, and a funnel needs two ({}); nothing written",
        insight.id,
        insight.title(),
        funnel.steps.len(),
        left_out.join("; ")
    )
}

pub fn unreadable_insight(insight: &SavedInsight, why: &str) -> String {
    format!(
        "cannot read the saved insight {} {:?}: {why}",
        insight.id,
        insight.title()
    )
}

pub fn exists(path: &Path) -> String {
    format!(
        "{} already exists: funnelfix init does not overwrite it; use --force, or -c to write elsewhere",
        path.display()
    )
}

pub fn missing_env(var: &str, what: &str) -> String {
    format!("environment variable {var} is not set: {what}")
}

pub const POSTHOG_KEY_NEED: &str =
    "a PostHog personal API key with the scopes insight:read and query:read";
pub const GITHUB_TOKEN_NEED: &str = "a GitHub token that can read the repository";

/// Where a truncated tree listing leaves the guesses.
pub fn tree_truncated(repo: &str) -> String {
    format!(
        "warning: GitHub listed only part of {repo}'s files (a very large repository); some pages may not be found"
    )
}

/// The project's most used pages and events, when it has no saved funnel.
pub fn top_events(project: &str, days: i64, top: &TopEvents) -> String {
    let mut out = format!(
        "PostHog project {project} has no saved funnel. Its most viewed pages and custom events of the last {days} days, to build one from:\n"
    );
    if top.is_empty() {
        let _ = writeln!(out, "  (no pageviews or custom events)");
        return out;
    }
    const ROWS: usize = 15;
    let _ = writeln!(
        out,
        "\n  {:<40} {:>9}",
        "page ($pageview $pathname)", "views"
    );
    for (path, views) in top.pages.iter().take(ROWS) {
        let _ = writeln!(out, "  {path:<40} {views:>9}");
    }
    let _ = writeln!(
        out,
        "\n  {:<40} {:>9}   sent most from",
        "custom event", "count"
    );
    for e in top.events.iter().take(ROWS) {
        let _ = writeln!(
            out,
            "  {:<40} {:>9}   {}",
            e.event,
            e.hits,
            e.top_path.as_deref().unwrap_or("-")
        );
    }
    out
}

pub fn no_saved_funnel(project: &str) -> String {
    format!(
        "no saved funnel in PostHog project {project}: save one (Product analytics → New insight → Funnel) from the events above, then run funnelfix init again; nothing written"
    )
}

pub fn written(path: &Path, insight: &SavedInsight, funnel: &DraftFunnel) -> String {
    let mut out = format!(
        "wrote {}: funnel {:?} with {} steps from the saved funnel {} {:?}",
        path.display(),
        funnel.name,
        funnel.steps.len(),
        insight.id,
        insight.title()
    );
    if !funnel.dropped.is_empty() {
        let _ = write!(
            out,
            "\n{} filter(s), step(s) or setting(s) could not be carried over: they are listed above the funnel in the file",
            funnel.dropped.len()
        );
    }
    out.push_str(
        "\nnext: confirm the files marked \"guessed\", set telegram.chat_id and telegram.approvers, then run funnelfix check-config",
    );
    out
}

pub const STILL_TO_DO: &str = "still to do before check-config passes:";
