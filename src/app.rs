//! The orchestrator: the propose pass, the monitor pass and the handling of
//! Telegram updates. The propose pass chooses a step and asks the model for a
//! change; from then on every decision about the experiment is the
//! lifecycle's (`lifecycle.rs`), run by the driver (`driver.rs`). Only the
//! daemon's single event loop calls into it, so nothing here races.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use tracing::{Instrument, info, info_span, warn};

use crate::clock::Clock;
use crate::config::{Config, FunnelConfig, GithubCredentials, Secrets};
use crate::digest;
use crate::experiment::{ExperimentId, State};
use crate::funnel::FunnelReport;
use crate::github::GitHub;
use crate::lifecycle::{self, Event, Tap};
use crate::llm::Llm;
use crate::posthog::PostHog;
use crate::proposal::{self, EditRules, PastExperiment, PromptInput, ProposeError};
use crate::report::funnel_report;
use crate::retry::RetryPolicy;
use crate::store::{self, Experiment, NewExperiment, Store, Transition};
use crate::telegram::{Incoming, Telegram};
use crate::text;

/// The adapters, one per service.
pub struct Services {
    pub posthog: PostHog,
    pub github: GitHub,
    pub telegram: Telegram,
    pub llm: Llm,
}

impl Services {
    /// The adapters for `config`; a GitHub App's tokens are renewed on `clock`.
    pub fn connect(
        config: &Config,
        secrets: &Secrets,
        retry: RetryPolicy,
        clock: &Clock,
    ) -> Result<Services> {
        let gh = &config.github;
        let github = match &secrets.github {
            GithubCredentials::Token { token, env } => GitHub::new(
                &gh.api_url,
                token.clone(),
                env,
                &gh.repo,
                &gh.base_branch,
                retry,
            )?,
            GithubCredentials::App(app) => GitHub::with_app(
                &gh.api_url,
                app.clone(),
                &gh.repo,
                &gh.base_branch,
                retry,
                clock.clone(),
            )?,
        };
        Ok(Services {
            posthog: PostHog::new(
                &config.posthog.host,
                &config.posthog.project_id,
                secrets.posthog_api_key.clone(),
                &config.posthog.api_key_env,
                retry,
            )?,
            github,
            telegram: Telegram::new(
                &config.telegram.api_url,
                secrets.telegram_token.clone(),
                &config.telegram.token_env,
                config.telegram.chat_id,
                retry,
            )?,
            llm: Llm::new(
                &config.llm.base_url,
                &config.llm.model,
                secrets.llm_api_key.clone(),
                &config.llm.api_key_env,
                // A model's answer may take far longer than an API call.
                RetryPolicy {
                    timeout: config.llm.timeout,
                    ..retry
                },
            )?,
        })
    }
}

/// The propose pass's outcome for one funnel, for the CLI and the demo.
#[derive(Debug, Clone, PartialEq)]
pub enum ProposeOutcome {
    Skipped(String),
    Proposed {
        experiment: ExperimentId,
        pr_url: String,
    },
    DryRun {
        title: String,
        diff: String,
    },
    Failed(String),
}

pub struct App {
    pub config: Config,
    pub store: Store,
    pub services: Services,
    pub clock: Clock,
    pub(crate) prompt_template: String,
    /// The report the propose pass just read, so opening its PR and asking
    /// the chat need no second query.
    pub(crate) last_report: std::sync::Mutex<Option<FunnelReport>>,
    /// Test-only crash points: see [`CrashPoint`].
    pub(crate) crash: CrashPoint,
}

/// A test-only fault: the driver stops right after its N-th command (its
/// result persisted), as a crash there would. With
/// `FUNNELFIX_CRASH_AFTER_COMMANDS=N` the process exits; in-process tests
/// set it with [`App::crash_after`] and then restart the app.
#[derive(Default)]
pub(crate) struct CrashPoint {
    pub(crate) after: Option<u64>,
    pub(crate) exit_process: bool,
    pub(crate) done: std::sync::atomic::AtomicU64,
    pub(crate) crashed: std::sync::atomic::AtomicBool,
}

impl App {
    pub fn new(config: Config, store: Store, services: Services, clock: Clock) -> Result<App> {
        let prompt_template = match std::fs::read_to_string(&config.llm.prompt) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                proposal::DEFAULT_TEMPLATE.to_string()
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot read llm.prompt {}", config.llm.prompt.display())
                });
            }
        };
        let crash = match std::env::var("FUNNELFIX_CRASH_AFTER_COMMANDS") {
            Ok(n) => CrashPoint {
                after: Some(n.parse().with_context(|| {
                    format!("FUNNELFIX_CRASH_AFTER_COMMANDS must be a number, got {n:?}")
                })?),
                exit_process: true,
                ..CrashPoint::default()
            },
            Err(_) => CrashPoint::default(),
        };
        Ok(App {
            config,
            store,
            services,
            clock,
            prompt_template,
            last_report: std::sync::Mutex::new(None),
            crash,
        })
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn funnel(&self, name: &str) -> Option<&FunnelConfig> {
        self.config.funnels.iter().find(|f| f.name == name)
    }

    fn paused(&self) -> Result<bool> {
        Ok(self.store.setting("paused")?.as_deref() == Some("1"))
    }

    /// The funnel's report over the lookback window, with steps in cooldown excluded.
    pub async fn report(&self, funnel: &FunnelConfig) -> Result<FunnelReport> {
        funnel_report(
            &self.services.posthog,
            Some(&self.store),
            &self.config,
            funnel,
            self.now(),
        )
        .await
    }

    /// What PostHog says about step `step` of `funnel` over the lookback.
    pub async fn evidence(&self, funnel: &FunnelConfig, step: usize) -> crate::evidence::Evidence {
        let now = self.now();
        let range = crate::funnel::EntryRange {
            from: now - crate::experiment::chrono_duration(self.config.thresholds.lookback),
            to: now,
        };
        self.services
            .posthog
            .evidence(funnel, step, range, now)
            .await
    }

    /// One propose pass over every funnel.
    pub async fn propose_pass(&self, dry_run: bool) -> Vec<(String, Result<ProposeOutcome>)> {
        let mut out = Vec::new();
        for funnel in &self.config.funnels {
            let span = info_span!(
                "propose",
                funnel = %funnel.name,
                step = tracing::field::Empty,
                experiment = tracing::field::Empty
            );
            let result = self
                .propose_funnel(funnel, dry_run)
                .instrument(span.clone())
                .await;
            span.in_scope(|| match &result {
                Ok(o) => info!(outcome = ?o, "propose pass"),
                Err(e) => warn!(error = %format!("{e:#}"), "propose pass failed"),
            });
            out.push((funnel.name.clone(), result));
        }
        out
    }

    async fn propose_funnel(&self, funnel: &FunnelConfig, dry_run: bool) -> Result<ProposeOutcome> {
        // A restart may have left a proposal half-made: finish it first.
        if let Some(open) = self
            .store
            .open_experiments()?
            .into_iter()
            .find(|e| e.funnel == funnel.name)
        {
            if open.state == State::Proposed && !dry_run {
                return self.resume_proposal(open.id).await;
            }
            return Ok(ProposeOutcome::Skipped(format!(
                "experiment #{} is {} on this funnel",
                open.id, open.state
            )));
        }
        if !dry_run && self.paused()? {
            return Ok(ProposeOutcome::Skipped(
                "proposals are paused (/resume)".into(),
            ));
        }
        let report = self.report(funnel).await?;
        let Some(choice) = report.choice.clone() else {
            let why = report
                .reason_none
                .clone()
                .unwrap_or_else(|| "no step can be judged".into());
            if !dry_run {
                self.store.audit(
                    None,
                    "skipped",
                    None,
                    &format!("{}: {why}", funnel.name),
                    self.now(),
                )?;
            }
            return Ok(ProposeOutcome::Skipped(why));
        };
        let step = &funnel.steps[choice.step];
        tracing::Span::current().record("step", step.name.as_str());
        let github = &self.services.github;
        let base = github.base_head().await?;
        let files: BTreeMap<String, String> = github
            .read_files(&base, &step.files)
            .await?
            .into_iter()
            .filter_map(|(path, content)| content.map(|c| (path, c)))
            .collect();
        anyhow::ensure!(
            !files.is_empty(),
            "none of the files of step {:?} exist on {}: {:?}",
            step.name,
            self.config.github.base_branch,
            step.files
        );
        let history: Vec<PastExperiment> = self
            .store
            .history(&funnel.name, &step.name)?
            .into_iter()
            .map(|e| PastExperiment {
                title: e.title.clone().unwrap_or_default(),
                hypothesis: e.hypothesis.clone().unwrap_or_default(),
                outcome: e
                    .verdict
                    .clone()
                    .or(e.failure.clone())
                    .unwrap_or_else(|| e.state.to_string()),
            })
            .collect();
        let mut evidence = self.evidence(funnel, choice.step).await;
        evidence.focus_on(
            choice.expected_conversions,
            self.config.thresholds.min_visitors,
            funnel.segment_watch,
        );
        let watched = evidence.focus.as_ref().and_then(|f| f.watch_segment());
        let mut report = report;
        report.evidence = Some(evidence);
        let input = PromptInput {
            report: &report,
            step: choice.step,
            files: &files,
            history: &history,
            allowed_paths: &self.config.github.allowed_paths,
            max_changed_lines: self.config.github.max_changed_lines,
            evidence: report.evidence.as_ref(),
        };
        let rules = EditRules {
            allowed: &self.config.github.allowed,
            step_files: &step.files,
            max_changed_lines: self.config.github.max_changed_lines,
            allowed_origins: &self.config.github.allowed_origins,
        };
        let accepted = match proposal::propose(
            &self.services.llm,
            &self.prompt_template,
            &input,
            &rules,
            self.config.llm.max_attempts,
        )
        .await
        {
            Ok(a) => a,
            Err(ProposeError::Rejected(rejected)) => {
                if dry_run {
                    return Ok(ProposeOutcome::Failed(rejected.reasons.join("; ")));
                }
                let now = self.now();
                let nonce = new_nonce();
                let id = self
                    .store
                    .create(&Self::new_experiment(funnel, choice.step, &nonce), now)?;
                let why = rejected.reasons.join("; ");
                self.store
                    .transition(
                        id,
                        Transition::new(State::Proposed, State::Failed, &why).with(&[(
                            "failure",
                            store::text(format!(
                                "no valid edit after {} attempts: {why}",
                                rejected.attempts
                            )),
                        )]),
                        now,
                    )?
                    .map_err(anyhow::Error::from)?;
                self.notify(&text::failed_note(
                    &funnel.name,
                    &step.name,
                    &rejected.reasons,
                ))
                .await;
                return Ok(ProposeOutcome::Failed(why));
            }
            Err(ProposeError::Llm(e)) => return Err(e).context("asking the model for a change"),
        };
        let diff = proposal::unified_diff(&accepted.changes);
        if dry_run {
            return Ok(ProposeOutcome::DryRun {
                title: accepted.proposal.title,
                diff,
            });
        }
        let now = self.now();
        let nonce = new_nonce();
        let id = self
            .store
            .create(&Self::new_experiment(funnel, choice.step, &nonce), now)?;
        tracing::Span::current().record("experiment", id.0);
        let s = &report.steps[choice.step];
        // A change watched on one segment is judged against that
        // segment's rate before.
        let before = match report.evidence.as_ref().and_then(|e| e.focus.as_ref()) {
            Some(f) if f.watched => f.segment.rate,
            _ => crate::evidence::Rate::new(s.entrants, s.converted),
        };
        let changes: Vec<(String, Option<String>)> = accepted
            .changes
            .iter()
            .map(|c| (c.path.clone(), Some(c.after.clone())))
            .collect();
        self.store.update(
            id,
            &[
                ("title", store::text(&accepted.proposal.title)),
                ("hypothesis", store::text(&accepted.proposal.hypothesis)),
                ("diff", store::text(&diff)),
                ("report", store::text(serde_json::to_string(&report)?)),
                (
                    "changed_files",
                    store::text(serde_json::to_string(&changes)?),
                ),
                ("base_sha", store::text(&base)),
                ("rate_before", store::real(before.rate)),
                ("entrants_before", store::int(before.entries)),
                ("converted_before", store::int(before.converted)),
                (
                    "segment_property",
                    store::opt_text(watched.as_ref().map(|w| w.property.as_str())),
                ),
                (
                    "segment_value",
                    store::opt_text(watched.as_ref().map(|w| w.value.as_str())),
                ),
                (
                    "branch",
                    store::text(crate::github::branch_name(
                        &self.config.github.branch_prefix,
                        &funnel.name,
                        &step.name,
                        id,
                    )),
                ),
            ],
            now,
        )?;
        self.remember_report(report);
        self.resume_proposal(id).await
    }

    fn new_experiment<'a>(
        funnel: &'a FunnelConfig,
        step: usize,
        nonce: &'a str,
    ) -> NewExperiment<'a> {
        NewExperiment {
            funnel: &funnel.name,
            step,
            step_name: &funnel.steps[step].name,
            next_step_name: &funnel.steps[step + 1].name,
            nonce,
        }
    }

    pub(crate) fn get(&self, id: ExperimentId) -> Result<Experiment> {
        self.store
            .get(id)?
            .with_context(|| format!("experiment {id} vanished from the state database"))
    }

    /// Stops after the `n`-th command from now on (in-process tests).
    pub fn crash_after(&mut self, n: u64) {
        self.crash = CrashPoint {
            after: Some(n),
            ..CrashPoint::default()
        };
    }

    /// Commands the driver has run since this app started.
    pub fn commands_done(&self) -> u64 {
        self.crash.done.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether a test-only crash point was reached.
    pub fn crashed(&self) -> bool {
        self.crash.crashed.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn remember_report(&self, report: FunnelReport) {
        *self.last_report.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
    }

    /// Finishes a proposal: its PR and the question in the chat.
    async fn resume_proposal(&self, id: ExperimentId) -> Result<ProposeOutcome> {
        let result = self.advance(id).await;
        *self.last_report.lock().unwrap_or_else(|p| p.into_inner()) = None;
        result?;
        let e = self.get(id)?;
        Ok(match (e.state, e.pr_url) {
            (State::Failed, _) => ProposeOutcome::Failed(e.failure.unwrap_or_default()),
            (_, Some(pr_url)) => ProposeOutcome::Proposed {
                experiment: id,
                pr_url,
            },
            (state, None) => anyhow::bail!("experiment {id} is {state} without a PR"),
        })
    }

    pub(crate) async fn notify(&self, html: &str) {
        if let Err(e) = self.services.telegram.send_html(html, &[]).await {
            warn!(error = %format!("{e:#}"), "could not tell the chat");
        }
    }

    // -----------------------------------------------------------------------
    // Telegram updates.

    /// Polls Telegram once and handles what arrived, confirming each update
    /// only after it was handled (the demo and the tests; the daemon runs the
    /// same steps with a background poller). Returns how many were handled.
    pub async fn poll_once(&self, timeout_secs: u32) -> Result<usize> {
        let offset = self
            .store
            .setting("telegram_offset")?
            .and_then(|s| s.parse::<i32>().ok());
        let updates = self.services.telegram.poll(offset, timeout_secs).await?;
        let n = updates.len();
        for (update_id, incoming) in updates {
            if let Err(e) = self.handle(update_id, incoming).await {
                warn!(error = %format!("{e:#}"), "handling a Telegram update failed");
            }
            self.store
                .set_setting("telegram_offset", &(update_id + 1).to_string())?;
        }
        Ok(n)
    }

    /// Acts on one update from the chat. Problems are logged and, where a
    /// person is waiting, answered.
    pub async fn handle(&self, update_id: i32, incoming: Incoming) -> Result<()> {
        match incoming {
            Incoming::Callback {
                id,
                from,
                chat_id,
                message_id,
                data,
            } => {
                self.handle_tap(update_id, id, from, chat_id, message_id, &data)
                    .await
            }
            Incoming::Command {
                from,
                chat_id,
                command,
                args,
            } => self.handle_command(from, chat_id, &command, &args).await,
        }
    }

    fn is_approver(&self, user: u64, chat_id: i64) -> bool {
        chat_id == self.config.telegram.chat_id && self.config.telegram.approvers.contains(&user)
    }

    /// A tap on one of our buttons goes to its experiment's lifecycle; any
    /// other tap is refused here.
    async fn handle_tap(
        &self,
        update_id: i32,
        callback_id: String,
        from: u64,
        chat_id: i64,
        message_id: i32,
        data: &str,
    ) -> Result<()> {
        let parsed = lifecycle::parse_callback(data);
        let experiment = match &parsed {
            Some((_, id, _)) => self.store.get(*id)?,
            None => None,
        };
        let (Some((action, _, nonce)), Some(e)) = (parsed, experiment) else {
            self.store.audit(
                None,
                "refused_tap",
                Some(from),
                &format!("chat {chat_id}, message {message_id}, valid button: false"),
                self.now(),
            )?;
            // Best effort: Telegram refuses answers to old taps.
            if let Err(err) = self
                .services
                .telegram
                .answer_callback(&callback_id, text::TAP_REFUSED)
                .await
            {
                warn!(error = %format!("{err:#}"), "could not answer the tap");
            }
            return Ok(());
        };
        let span = info_span!("decision", funnel = %e.funnel, step = %e.step_name, experiment = %e.id, by = from);
        let tap = Tap {
            callback_id,
            user: from,
            chat: chat_id,
            message_id,
            action,
            nonce,
        };
        info!(parent: &span, action = ?action, "tap from the chat");
        self.feed_update(e.id, Event::Tap(tap), update_id)
            .instrument(span)
            .await
    }

    async fn handle_command(
        &self,
        from: u64,
        chat_id: i64,
        command: &str,
        args: &str,
    ) -> Result<()> {
        if !self.is_approver(from, chat_id) {
            self.store.audit(
                None,
                "refused_command",
                Some(from),
                &format!("{command} in chat {chat_id}"),
                self.now(),
            )?;
            if chat_id == self.config.telegram.chat_id {
                self.notify(text::ONLY_APPROVERS).await;
            }
            return Ok(());
        }
        match command
            .trim_start_matches('/')
            .split('@')
            .next()
            .unwrap_or("")
        {
            "status" if !args.is_empty() => self.experiment_status(args).await?,
            "status" => {
                let open = self.store.open_experiments()?;
                let recent: Vec<Experiment> = self
                    .store
                    .all()?
                    .into_iter()
                    .filter(|e| e.state.is_final())
                    .take(5)
                    .collect();
                let mut out = String::from("<b>Open experiments</b>\n");
                if open.is_empty() {
                    out.push_str("none\n");
                }
                for e in &open {
                    out.push_str(&text::escape(&text::status_line(e)));
                    out.push('\n');
                }
                if !recent.is_empty() {
                    out.push_str("\n<b>Recent verdicts</b>\n");
                    for e in &recent {
                        out.push_str(&text::escape(&text::status_line(e)));
                        out.push('\n');
                    }
                }
                if self.paused()? {
                    out.push_str("\nProposals are paused.");
                }
                self.notify(&out).await;
            }
            "funnel" => {
                for funnel in &self.config.funnels {
                    match self.report(funnel).await {
                        Ok(report) => {
                            if let Ok(png) = crate::chart::funnel_chart(&report) {
                                let _ = self
                                    .services
                                    .telegram
                                    .send_photo(png, &text::chart_caption(&funnel.name))
                                    .await;
                            }
                            self.notify(&format!(
                                "<pre>{}</pre>",
                                text::escape(&text::funnel_table(&report))
                            ))
                            .await;
                        }
                        Err(e) => {
                            self.notify(&text::funnel_unreadable(&funnel.name, &e))
                                .await
                        }
                    }
                }
            }
            "pause" => {
                self.store.set_setting("paused", "1")?;
                self.store
                    .audit(None, "paused", Some(from), "", self.now())?;
                self.notify(text::PAUSED).await;
            }
            "resume" => {
                self.store.set_setting("paused", "0")?;
                self.store
                    .audit(None, "resumed", Some(from), "", self.now())?;
                self.notify(text::RESUMED).await;
            }
            _ => self.notify(&text::escape(text::help())).await,
        }
        Ok(())
    }

    /// `/status N`: the experiment's line and, once it was merged, its
    /// watch chart.
    async fn experiment_status(&self, args: &str) -> Result<()> {
        let Some(id) = text::parse_experiment_number(args) else {
            self.notify(&text::escape(&text::status_usage(args))).await;
            return Ok(());
        };
        let Some(e) = self.store.get(id)? else {
            self.notify(&text::no_such_experiment(id)).await;
            return Ok(());
        };
        let line = text::escape(&text::status_line(&e));
        let chart = crate::watch_chart::for_experiment(&self.store, &self.config.thresholds, &e);
        match chart {
            Ok(Some(png)) => {
                let caption = format!(
                    "{}
{line}",
                    text::watch_chart_caption(&e)
                );
                if let Err(err) = self.services.telegram.send_photo(png, &caption).await {
                    warn!(error = %format!("{err:#}"), "could not send the watch chart");
                    self.notify(&line).await;
                }
            }
            Ok(None) => {
                self.notify(&format!(
                    "{line}
{}",
                    text::NO_WATCH_CHART
                ))
                .await
            }
            Err(err) => {
                warn!(error = %format!("{err:#}"), "could not draw the watch chart");
                self.notify(&line).await;
            }
        }
        Ok(())
    }

    // -----------------------------------------------------------------------
    // The weekly digest.

    /// Sends the digest of the seven days before `at` (the run's scheduled
    /// time, so a retry tells of the same week). What comes next on each
    /// funnel needs PostHog; if it cannot be asked, the digest says so in
    /// its line and is sent anyway. Fails only if Telegram did not take it.
    pub async fn digest_pass(&self, at: DateTime<Utc>) -> Result<()> {
        let experiments = self.store.all()?;
        let paused = self.paused()?;
        let mut next = Vec::new();
        for funnel in &self.config.funnels {
            let open = experiments
                .iter()
                .find(|e| e.funnel == funnel.name && !e.state.is_final());
            let what = match open {
                Some(e) => digest::Next::Busy {
                    id: e.id,
                    state: e.state,
                },
                None if paused => digest::Next::Paused,
                None => match self.report(funnel).await {
                    Ok(report) => match (&report.choice, report.reason_none) {
                        (Some(c), _) => digest::Next::Step {
                            step: report.steps[c.step].name.clone(),
                            next_step: report.steps[c.step].next_name.clone(),
                            reason: c.reason.clone(),
                        },
                        (None, why) => digest::Next::Nothing(
                            why.unwrap_or_else(|| "no step can be judged".into()),
                        ),
                    },
                    Err(e) => {
                        let error = format!("{e:#}");
                        warn!(funnel = %funnel.name, %error, "the digest could not ask PostHog");
                        digest::Next::Unknown(error.lines().next().unwrap_or("").to_string())
                    }
                },
            };
            next.push((funnel.name.clone(), what));
        }
        let from = at - chrono::Duration::days(7);
        let next_run = self.config.schedule.propose.after(&at).next();
        let d = digest::digest(&experiments, from, at, next, next_run);
        self.services
            .telegram
            .send_html(&text::digest_message(&d), &[])
            .await
            .context("sending the weekly digest")?;
        info!(week_to = %at, quiet = d.is_quiet(), "weekly digest sent");
        Ok(())
    }

    // -----------------------------------------------------------------------
    // The monitor pass.

    /// Every open experiment (and ended ones with notes still to send): what
    /// is pending is done, then the lifecycle hears a tick (expire approvals,
    /// follow PRs, watch, revert).
    pub async fn monitor_pass(&self) -> Vec<(ExperimentId, Result<()>)> {
        let mut out = Vec::new();
        let open = match self.store.experiments_to_advance() {
            Ok(o) => o,
            Err(e) => return vec![(ExperimentId(0), Err(e))],
        };
        for e in open {
            let span = info_span!("monitor", funnel = %e.funnel, step = %e.step_name, experiment = %e.id, state = %e.state);
            let result = self.advance(e.id).instrument(span.clone()).await;
            if let Err(err) = &result {
                span.in_scope(|| warn!(error = %format!("{err:#}"), "monitor failed"));
            }
            out.push((e.id, result));
        }
        out
    }
}

/// 16 random hex characters.
fn new_nonce() -> String {
    use rand::Rng;
    let n: u64 = rand::rng().random();
    format!("{n:016x}")
}
