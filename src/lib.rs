//! funnelfix: finds the worst step of a PostHog funnel, proposes one change to
//! the page behind it as a GitHub pull request, asks for approval in Telegram,
//! and watches the step after the merge, reverting the change if it hurt.
//!
//! Layout (data flows one way):
//! - [`config`]: the TOML file, validated, and secrets from the environment.
//! - [`funnel`]: pure: the HogQL query, step rates, intervals, the worst step.
//! - [`store`]: SQLite state: experiments, their audit log, schedule runs.
//! - `sandbox`: simulated PostHog, GitHub, Telegram and LLM servers on loopback,
//!   used by `funnelfix demo` and the tests.

pub mod config;
pub mod funnel;
