//! `funnelfix demo`: the whole loop against the sandbox, with no account
//! anywhere. The twins run on loopback, a simulated site produces traffic
//! whose conversion depends on the pages on the base branch, and simulated
//! time moves in steps so weeks pass in seconds. The real orchestrator drives
//! the real adapters; the demo only narrates and taps Approve.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use crate::app::{App, ProposeOutcome};
use crate::sandbox::site::Effect;
use crate::sandbox::world::{self, APPROVER, CHAT_ID, World};
use crate::stats::Assessment;
use crate::store::Experiment;
use crate::text;

const HOUR: Duration = Duration::from_secs(3600);

/// What the stand-in model writes: first a change that hurts (fine print on
/// the pricing page), then one that helps (a call to action on whatever page
/// it is asked about).
fn stand_in_model(messages: &[serde_json::Value]) -> String {
    let prompt: String = messages
        .iter()
        .filter_map(|m| m.get("content").and_then(|c| c.as_str()))
        .collect();
    let on_pricing = prompt.contains("<h1>Pricing</h1>") && !prompt.contains("fine-print");
    let earlier_reverted = prompt.contains("reverted");
    if on_pricing && !earlier_reverted {
        proposal(
            "Pricing: state the full price up front",
            "Visitors who reach pricing may distrust prices that change at checkout; stating VAT and the setup fee up front could build trust.",
            "site/pricing.html",
            "  <h1>Pricing</h1>\n",
            "  <h1>Pricing</h1>\n  <p class=\"fine-print\">Prices exclude VAT and a one-time setup fee.</p>\n",
        )
    } else if prompt.contains("<h1>Acme keeps your books in order</h1>") {
        proposal(
            "Homepage: a clear call to action above the fold",
            "The homepage's only link to pricing is small text; a visible button should send more visitors on.",
            "site/index.html",
            "  <a href=\"/pricing\">See pricing</a>\n",
            "  <a class=\"cta\" href=\"/pricing\">See plans and start free</a>\n",
        )
    } else {
        proposal(
            "Pricing: a clear call to action",
            "Visitors on pricing do not see a clear next step.",
            "site/pricing.html",
            "  <h1>Pricing</h1>\n",
            "  <h1>Pricing</h1>\n  <a class=\"cta\" href=\"/signup\">Start your free trial</a>\n",
        )
    }
}

fn proposal(title: &str, hypothesis: &str, path: &str, search: &str, replace: &str) -> String {
    serde_json::json!({
        "title": title,
        "hypothesis": hypothesis,
        "edits": [{"path": path, "search": search, "replace": replace}],
    })
    .to_string()
}

/// Telegram HTML as plain terminal text.
fn plain(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

pub struct DemoOptions {
    /// Ask the person at the terminal instead of approving automatically.
    pub interactive: bool,
    /// Where the state goes; a temporary directory when `None`.
    pub state_dir: Option<PathBuf>,
}

/// Verdicts of the two experiments, for the caller and the tests.
pub struct DemoResult {
    pub verdicts: Vec<(String, String)>,
    pub wall_time: Duration,
}

pub async fn run(opts: DemoOptions) -> Result<DemoResult> {
    let started = Instant::now();
    let temp;
    let state_dir = match opts.state_dir {
        Some(d) => d,
        None => {
            temp = tempfile::tempdir().context("cannot create a temporary directory")?;
            temp.path().to_path_buf()
        }
    };
    let start: DateTime<Utc> = "2026-03-02T08:00:00Z".parse().context("start time")?;
    println!(
        "funnelfix demo: simulated PostHog, GitHub, Telegram and LLM on loopback; no credentials."
    );
    println!("State: {}", state_dir.display());
    let mut world = World::start(
        state_dir.clone(),
        start,
        Duration::from_secs(35 * 86400),
        world::CONFIG_TEMPLATE,
    )
    .await?;
    world.site.effects = vec![
        Effect {
            marker: "fine-print".into(),
            multiplier: 0.6,
        },
        Effect {
            marker: "class=\"cta\"".into(),
            multiplier: 1.3,
        },
    ];
    world.llm.set_responder(std::sync::Arc::new(stand_in_model));
    println!(
        "Simulated site: about {} visitors a day, 35 days of history, time now {}.\n",
        world.site.visitors_per_day,
        world.now().format("%a %Y-%m-%d %H:%M UTC")
    );
    let app = world.app()?;
    let mut verdicts = Vec::new();
    for round in 1..=2 {
        println!("━━ Experiment {round} ━━");
        let Some(e) = propose(&app, &world, opts.interactive).await? else {
            break;
        };
        let ended = watch(&app, &mut world, e).await?;
        verdicts.push((
            ended.title.clone().unwrap_or_default(),
            ended
                .verdict
                .clone()
                .unwrap_or_else(|| ended.state.to_string()),
        ));
        // The next proposal comes on a later propose run.
        world.advance(Duration::from_secs(2 * 86400), HOUR);
        println!();
    }
    println!("━━ Summary ━━");
    for e in app.store.all()?.iter().rev() {
        println!("  {}", text::status_line(e));
    }
    let wall_time = started.elapsed();
    println!(
        "\nDone in {:.1} s of wall time ({} simulated days).",
        wall_time.as_secs_f64(),
        (world.now() - start).num_days()
    );
    Ok(DemoResult {
        verdicts,
        wall_time,
    })
}

async fn propose(app: &App, world: &World, interactive: bool) -> Result<Option<Experiment>> {
    let funnel = &app.config.funnels[0];
    let report = app.report(funnel).await?;
    println!(
        "PostHog says (last {}):",
        text::human_duration(app.config.thresholds.lookback)
    );
    print!("{}", indent(&text::funnel_table(&report)));
    let outcomes = app.propose_pass(false).await;
    let outcome = outcomes
        .into_iter()
        .next()
        .map(|(_, o)| o)
        .context("no funnel is configured")??;
    match outcome {
        ProposeOutcome::Proposed { experiment, pr_url } => {
            let e = app.store.get(experiment)?.context("experiment")?;
            println!(
                "\nThe model proposed: \"{}\"",
                e.title.as_deref().unwrap_or("")
            );
            println!("GitHub PR opened: {pr_url}");
            print!("{}", indent(e.diff.as_deref().unwrap_or("")));
            let sent = world.telegram.messages();
            if let Some(m) = sent.iter().rev().find(|m| !m.buttons.is_empty()) {
                println!("\nTelegram (chat {CHAT_ID}), with buttons [Approve] [Reject]:");
                print!("{}", indent(&plain(&m.text)));
            }
            let approve = if interactive {
                ask("Approve this change? [y/N] ")?
            } else {
                true
            };
            let action = if approve { "a" } else { "r" };
            println!(
                "\n{} taps {} in Telegram.",
                if interactive { "You" } else { "The approver" },
                if approve { "Approve" } else { "Reject" }
            );
            world.telegram.press_button(
                CHAT_ID,
                APPROVER,
                e.message_id.unwrap_or_default() as i32,
                &format!("{action}:{}:{}", e.id, e.nonce),
            );
            app.poll_once(0).await?;
            let e = app.store.get(experiment)?.context("experiment")?;
            for m in world.telegram.messages().iter().rev().take(1) {
                println!("Telegram: {}", plain(&m.text));
            }
            Ok(Some(e))
        }
        ProposeOutcome::Skipped(why) => {
            println!("Nothing to propose: {why}");
            Ok(None)
        }
        ProposeOutcome::Failed(why) => {
            println!("The model's changes were refused: {why}");
            Ok(None)
        }
        ProposeOutcome::DryRun { .. } => Ok(None),
    }
}

fn ask(question: &str) -> Result<bool> {
    print!("{question}");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

/// Moves time in six-hour steps, running the monitor, until the experiment ends.
async fn watch(app: &App, world: &mut World, e: Experiment) -> Result<Experiment> {
    if e.state.is_final() {
        return Ok(e);
    }
    println!("Watching \"{} → {}\":", e.step_name, e.next_step_name);
    let mut last_day = -1;
    for _ in 0..(20 * 4) {
        world.advance(6 * HOUR, HOUR);
        app.monitor_pass().await;
        let now = app.store.get(e.id)?.context("experiment")?;
        if let (Some(a), Some(merged)) = (&now.assessment, now.merged_at) {
            let day = (world.now() - merged).num_days();
            if day != last_day {
                if let Ok(a) = serde_json::from_str::<Assessment>(a) {
                    println!("  day {day:>2}: {}", text::watch_line(&a));
                }
                last_day = day;
            }
        }
        if now.state.is_final() {
            println!(
                "Verdict: {}",
                now.verdict.as_deref().unwrap_or(now.state.as_str())
            );
            if let Some(m) = world.telegram.messages().last() {
                println!("Telegram: {}", plain(&m.text));
            }
            return Ok(now);
        }
    }
    app.store.get(e.id)?.context("experiment")
}
