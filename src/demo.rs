//! `funnelfix demo`: the whole loop against the sandbox, with no account
//! anywhere. The twins run on loopback, a simulated site produces traffic
//! whose conversion depends on the pages on the base branch, and the real
//! daemon (`funnelfix run`'s loop) runs against them on a clock that makes
//! weeks pass in seconds. The demo only narrates what the daemon does, from
//! the state database and the twins, and taps Approve.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

use crate::app::App;
use crate::clock::Clock;
use crate::daemon;
use crate::experiment::State;
use crate::funnel::Choice;
use crate::report;
use crate::sandbox::github::{PreviewDeployer, Workflow};
use crate::sandbox::world::{self, APPROVER, CHAT_ID, World};
use crate::stats::Assessment;
use crate::store::Experiment;
use crate::text;
use crate::watch_chart;

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
    // The stand-in grounds its hypothesis in the strongest evidence it was given.
    let cited = crate::sandbox::llm::strongest_evidence(&prompt)
        .map(|finding| format!(" Evidence used: {finding}."))
        .unwrap_or_default();
    if on_pricing && !earlier_reverted {
        proposal(
            "Pricing: state the full price up front",
            &format!(
                "Visitors who reach pricing may distrust prices that change at checkout; stating VAT and the setup fee up front could build trust.{cited}"
            ),
            "site/pricing.html",
            "  <h1>Pricing</h1>\n",
            "  <h1>Pricing</h1>\n  <p class=\"fine-print\">Prices exclude VAT and a one-time setup fee.</p>\n",
        )
    } else if prompt.contains("<h1>Acme keeps your books in order</h1>") {
        proposal(
            "Homepage: a clear call to action above the fold",
            &format!(
                "The homepage's only link to pricing is small text; a visible button should send more visitors on.{cited}"
            ),
            "site/index.html",
            "  <a href=\"/pricing\">See pricing</a>\n",
            "  <a class=\"cta\" href=\"/pricing\">See plans and start free</a>\n",
        )
    } else {
        proposal(
            "Pricing: a clear call to action",
            &format!("Visitors on pricing do not see a clear next step.{cited}"),
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

/// Simulated time runs this many times faster than real time: an hour in
/// 60 ms, the whole demo (about three simulated weeks) in well under a minute.
const SPEED: f64 = 60_000.0;

pub async fn run(opts: DemoOptions) -> Result<DemoResult> {
    let started = Instant::now();
    let temp;
    let keep = opts.state_dir.is_some();
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
    world.llm.set_responder(std::sync::Arc::new(stand_in_model));
    // The site's repository runs CI and deploys previews, as most do: each
    // proposal is asked once its checks pass, with its preview linked.
    world.github.run_ci_on_push(Workflow {
        name: "build".into(),
        takes: Duration::from_secs(8 * 60),
        fails_on: None,
    });
    world.github.deploy_previews(PreviewDeployer {
        domain: "preview.acme.test".into(),
        takes: Duration::from_secs(5 * 60),
    });
    // From here simulated time runs by itself, fast; the site keeps up with it.
    world.set_clock(Clock::scaled(start, SPEED));
    println!(
        "Simulated site: about {} visitors a day, 35 days of history, time now {}.",
        world.site.visitors_per_day,
        world.now().format("%a %Y-%m-%d %H:%M UTC")
    );
    println!(
        "The daemon runs as `funnelfix run` does (propose daily at 09:00, monitor hourly), with one simulated hour every {} ms.\n",
        (3_600_000.0 / SPEED).round()
    );
    // One App runs the daemon; the other only reads, to narrate.
    let view = world.app()?;
    // The daemon and the narration run side by side on this task (the
    // daemon's state is not shared across threads); the narration stops it.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = daemon::run(world.app()?, async {
        let _ = stopped.await;
    });
    let narration = async {
        let result = narrate(&view, &mut world, opts.interactive).await;
        let _ = stop.send(());
        result
    };
    let (daemon_result, narrated) = tokio::join!(daemon, narration);
    daemon_result.context("the daemon failed")?;
    let verdicts = narrated?;
    println!("━━ Summary ━━");
    for e in view.store.all()?.iter().rev() {
        println!("  {}", text::status_line(e));
    }
    write_watch_charts(&view, &state_dir, keep)?;
    let wall_time = started.elapsed();
    println!(
        "\nDone in {:.1} s of wall time ({} simulated days). The daemon stopped; nothing is left running.",
        wall_time.as_secs_f64(),
        (world.now() - start).num_days()
    );
    Ok(DemoResult {
        verdicts,
        wall_time,
    })
}

/// Follows the daemon's work through the state database and the twins,
/// taps Approve when a proposal arrives, and stops after two verdicts.
async fn narrate(
    view: &App,
    world: &mut World,
    interactive: bool,
) -> Result<Vec<(String, String)>> {
    let deadline = world.now() + chrono::Duration::days(60);
    let mut told: BTreeMap<i64, (State, i64)> = BTreeMap::new();
    let mut verdicts = Vec::new();
    while verdicts.len() < 2 {
        anyhow::ensure!(
            world.now() < deadline,
            "the demo did not finish in 60 simulated days"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        world.catch_up();
        for e in view.store.all()?.into_iter().rev() {
            let (last_state, last_day) =
                told.get(&e.id.0).copied().unwrap_or((State::Proposed, -1));
            if e.state == last_state && e.state != State::Observing {
                continue;
            }
            match e.state {
                State::AwaitingApproval if e.message_id.is_some() => {
                    world.clock.set_paused(true);
                    show_proposal(view, world, &e).await?;
                    let approve = if interactive {
                        ask("Approve this change? [y/N] ")?
                    } else {
                        true
                    };
                    println!(
                        "\n{} taps {} in Telegram.",
                        if interactive { "You" } else { "The approver" },
                        if approve { "Approve" } else { "Reject" }
                    );
                    world.telegram.press_button(
                        CHAT_ID,
                        APPROVER,
                        e.message_id.unwrap_or_default() as i32,
                        &format!("{}:{}:{}", if approve { "a" } else { "r" }, e.id, e.nonce),
                    );
                    world.clock.set_paused(false);
                    told.insert(e.id.0, (e.state, -1));
                }
                State::Merged => {
                    last_message(world);
                    println!("Watching \"{} → {}\":", e.step_name, e.next_step_name);
                    told.insert(e.id.0, (e.state, -1));
                }
                State::Observing => {
                    let (Some(a), Some(merged)) = (&e.assessment, e.merged_at) else {
                        continue;
                    };
                    let day = (world.now() - merged).num_days();
                    if day != last_day {
                        match serde_json::from_str::<Assessment>(a) {
                            Ok(a) if a.post_conversions > 0 => {
                                println!("  day {day:>2}: {}", text::watch_line(&a))
                            }
                            _ => println!(
                                "  day {day:>2}: waiting for post-merge visitors whose conversion window has passed"
                            ),
                        }
                        told.insert(e.id.0, (e.state, day));
                    }
                }
                s if s.is_final() => {
                    let verdict = e.verdict.clone().unwrap_or_else(|| s.to_string());
                    if let Some(Ok(a)) = e
                        .assessment
                        .as_deref()
                        .map(serde_json::from_str::<Assessment>)
                    {
                        let day = e.merged_at.map_or(0, |m| (world.now() - m).num_days());
                        println!("  day {day:>2}: {}", text::watch_line(&a));
                    }
                    println!("Verdict: {verdict}");
                    last_message(world);
                    println!();
                    verdicts.push((e.title.clone().unwrap_or_default(), verdict));
                    told.insert(e.id.0, (e.state, -1));
                }
                _ => {}
            }
        }
    }
    Ok(verdicts)
}

/// The watch chart of each merged experiment, as `watch-chart-N.png` in the
/// state directory; named only when that directory is kept.
fn write_watch_charts(view: &App, dir: &std::path::Path, keep: bool) -> Result<()> {
    let mut written = Vec::new();
    for e in view.store.all()?.iter().rev() {
        if let Some(png) = watch_chart::for_experiment(&view.store, &view.config.thresholds, e)? {
            let path = dir.join(format!("watch-chart-{}.png", e.id));
            std::fs::write(&path, png)
                .with_context(|| format!("cannot write {}", path.display()))?;
            written.push(path);
        }
    }
    if keep {
        for path in &written {
            println!("  watch chart: {}", path.display());
        }
    } else if !written.is_empty() {
        println!("  (with --state-dir DIR the watch charts are kept there as watch-chart-N.png)");
    }
    Ok(())
}

fn last_message(world: &World) {
    if let Some(m) = world.telegram.messages().last() {
        println!("Telegram: {}", plain(&m.text));
    }
}

/// The funnel as the daemon saw it, the PR with its diff, and the message.
async fn show_proposal(view: &App, world: &World, e: &Experiment) -> Result<()> {
    println!(
        "━━ Experiment {} ━━ ({})",
        e.id,
        world.now().format("%a %Y-%m-%d %H:%M UTC")
    );
    let funnel = view.funnel(&e.funnel).context("the demo funnel")?;
    // The table as PostHog has it now, marked with the step the daemon took
    // (it skips steps in cooldown or with an experiment open).
    let mut report = report::funnel_report(
        &view.services.posthog,
        None,
        &view.config,
        funnel,
        world.now(),
    )
    .await?;
    report.choice = Some(Choice {
        step: e.step,
        reason: format!("{:?}, the weakest step not in cooldown", e.step_name),
        expected_conversions: 0.0,
    });
    println!(
        "PostHog says (last {}):",
        text::human_duration(view.config.thresholds.lookback)
    );
    print!("{}", indent(&text::funnel_table(&report)));
    let evidence = view.evidence(funnel, e.step).await;
    print!("\n{}", indent(&text::evidence_text(&evidence)));
    println!(
        "\nThe model proposed: \"{}\"",
        e.title.as_deref().unwrap_or("")
    );
    println!("GitHub PR opened: {}", e.pr_url.as_deref().unwrap_or(""));
    print!("{}", indent(e.diff.as_deref().unwrap_or("")));
    if let Some(m) = world
        .telegram
        .messages()
        .iter()
        .rev()
        .find(|m| !m.buttons.is_empty())
    {
        println!("\nTelegram (chat {CHAT_ID}), with buttons [Approve] [Reject]:");
        print!("{}", indent(&plain(&m.text)));
    }
    Ok(())
}

fn ask(question: &str) -> Result<bool> {
    print!("{question}");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}
