//! funnelfix: finds the worst step of a PostHog funnel, proposes one change to
//! the page behind it as a GitHub pull request, asks for approval in Telegram,
//! and watches the step after the merge, reverting the change if it hurt.
//!
//! Layout (data flows one way):
//! - [`config`]: the TOML file, validated, and secrets from the environment.
//! - [`funnel`]: pure: the HogQL query, step rates, intervals, the worst step.
//! - [`stats`]: pure: the always-valid revert test.
//! - [`evidence`]: pure: the evidence queries for the chosen step, and
//!   their rows turned into findings (secondary actions, segments,
//!   attention, frustration, speed, what visitors said).
//! - [`proposal`]: the prompt, and the LLM's edits parsed, checked and applied.
//! - [`gate`]: pure: what no edit may bring to a page (scripts, handlers,
//!   new origins, form targets, tracking snippets).
//! - [`experiment`]: pure: an experiment's states and its time windows.
//! - [`lifecycle`]: pure: what each event does to an experiment, and what
//!   must be done next.
//! - [`driver`]: runs the lifecycle's commands and feeds their results back.
//! - [`app`]: the propose pass, the monitor pass, the chat's commands.
//! - [`daemon`]: the schedules, the heartbeat and the Telegram poller.
//! - [`digest`]: pure: the weekly digest's content, from the store's experiments.
//! - [`chart`]: the funnel chart sent to Telegram, drawn in-process.
//! - [`init`]: pure: a saved PostHog funnel read into a draft config, and
//!   the page files behind its steps guessed from the repository's paths.
//! - [`watch_chart`]: the watch chart of an experiment, sent with each verdict.
//! - [`posthog`], [`github`], [`telegram`], [`llm`]: one adapter per service.
//! - [`github_app`]: pure: the GitHub App's key, its JWT, when a token is renewed.
//! - [`retry`]: the retry policy the adapters share.
//! - [`sandbox`]: simulated PostHog, GitHub, Telegram and LLM servers on
//!   loopback, used by `funnelfix demo` and the tests.

pub mod app;
pub mod chart;
pub mod clock;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod digest;
pub mod driver;
pub mod evidence;
pub mod experiment;
pub mod funnel;
pub mod gate;
pub mod github;
pub mod github_app;
pub mod init;
pub mod lifecycle;
pub mod llm;
pub mod posthog;
pub mod proposal;
pub mod report;
pub mod retry;
pub mod sandbox;
pub mod stats;
pub mod store;
pub mod telegram;
pub mod text;
pub mod watch_chart;
