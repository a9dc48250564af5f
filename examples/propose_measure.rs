//! What one propose pass costs against the twins: GitHub requests per opened
//! PR, PostHog queries, and the wall time without the model's.
//!
//!     cargo run --release --example propose_measure
//!
//! Runs 20 passes, each in a fresh sandbox with five weeks of traffic. The
//! stand-in model answers at once over loopback, so the wall time is the
//! pass without the model's latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use funnelfix::app::ProposeOutcome;
use funnelfix::sandbox::world::{self, World};

const RUNS: usize = 20;

fn github_total(world: &World) -> usize {
    ["GET", "POST", "PATCH", "PUT", "DELETE"]
        .iter()
        .map(|m| world.github.requests(m, ""))
        .sum()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let start: DateTime<Utc> = "2026-03-02T08:00:00Z".parse()?;
    let mut walls = Vec::new();
    let mut github_requests = Vec::new();
    let mut github_writes = Vec::new();
    let mut posthog_queries = Vec::new();
    for _ in 0..RUNS {
        let dir = tempfile::tempdir()?;
        let world = World::start(
            dir.path().to_path_buf(),
            start,
            Duration::from_secs(35 * 86400),
            world::CONFIG_TEMPLATE,
        )
        .await?;
        world.llm.set_responder(Arc::new(|_messages| {
            serde_json::json!({
                "title": "Pricing: a clear call to action",
                "hypothesis": "Visitors on pricing do not see a clear next step.",
                "edits": [{"path": "site/pricing.html", "search": "  <h1>Pricing</h1>\n",
                           "replace": "  <h1>Pricing</h1>\n  <a class=\"cta\" href=\"/signup\">Start</a>\n"}]
            })
            .to_string()
        }));
        let app = world.app()?;
        let gh_before = github_total(&world);
        let ph_before = world.posthog.query_count();
        let t = Instant::now();
        let out = app.propose_pass(false).await;
        let wall = t.elapsed();
        anyhow::ensure!(
            matches!(out[0].1, Ok(ProposeOutcome::Proposed { .. })),
            "no PR: {:?}",
            out[0].1
        );
        walls.push(wall);
        github_requests.push(github_total(&world) - gh_before);
        github_writes.push(world.github.write_requests());
        posthog_queries.push(world.posthog.query_count() - ph_before);
    }
    walls.sort();
    println!(
        "propose pass, {RUNS} runs: GitHub requests per opened PR {:?} (writes {:?}), PostHog queries {:?}",
        github_requests
            .iter()
            .min()
            .zip(github_requests.iter().max()),
        github_writes.iter().min().zip(github_writes.iter().max()),
        posthog_queries
            .iter()
            .min()
            .zip(posthog_queries.iter().max()),
    );
    println!(
        "wall time without the model: median {:.1} ms, max {:.1} ms",
        walls[RUNS / 2].as_secs_f64() * 1000.0,
        walls[RUNS - 1].as_secs_f64() * 1000.0
    );
    Ok(())
}
