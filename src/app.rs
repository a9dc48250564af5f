//! The orchestrator: the propose pass, the monitor pass and the handling of
//! Telegram updates. It reads the clock once per action, asks the pure core
//! what to do, talks to the services through their adapters and persists
//! every step before the next one, so a restart resumes where it stopped.
//! Only the daemon's single event loop calls into it, so nothing here races.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use tracing::{Instrument, info, info_span, warn};

use crate::config::{Config, FunnelConfig, RevertMode, Secrets};
use crate::experiment::{self, ExperimentId, State, WatchStep};
use crate::funnel::{EntryRange, FunnelReport};
use crate::github::{GitHub, MergeOutcome, PrState, PullRequest};
use crate::llm::Llm;
use crate::posthog::PostHog;
use crate::proposal::{self, EditRules, PastExperiment, PromptInput, ProposeError};
use crate::report::funnel_report;
use crate::retry::RetryPolicy;
use crate::stats::{self, Assessment, Counts, RevertRule, WatchInput};
use crate::store::{self, Experiment, NewExperiment, Store, Transition};
use crate::telegram::{Incoming, Telegram};
use crate::text;

/// The time source: the system clock, a hand-moved one for tests, or a
/// fast one for the demo (simulated weeks in seconds).
#[derive(Clone)]
pub enum Clock {
    System,
    Manual(Arc<AtomicI64>),
    Scaled(Arc<ScaledClock>),
}

/// Simulated time running `factor` times faster than real time; it can be
/// paused while a person at the terminal decides.
pub struct ScaledClock {
    factor: f64,
    state: std::sync::Mutex<ScaledState>,
}

/// Wall-clock anchors, so separate processes given the same anchors share
/// one simulated timeline (the end-to-end tests restart the daemon).
struct ScaledState {
    real_anchor: DateTime<Utc>,
    sim_anchor: DateTime<Utc>,
    paused: bool,
}

impl ScaledClock {
    fn now(&self) -> DateTime<Utc> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.paused {
            return s.sim_anchor;
        }
        let elapsed = (Utc::now() - s.real_anchor)
            .to_std()
            .unwrap_or_default()
            .mul_f64(self.factor);
        s.sim_anchor + chrono::Duration::from_std(elapsed).unwrap_or_default()
    }

    fn set_paused(&self, paused: bool) {
        let now = self.now();
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.sim_anchor = now;
        s.real_anchor = Utc::now();
        s.paused = paused;
    }
}

impl Clock {
    pub fn manual(start: DateTime<Utc>) -> Clock {
        Clock::Manual(Arc::new(AtomicI64::new(start.timestamp_millis())))
    }

    /// Starts at `start` now and runs `factor` times faster than real time.
    pub fn scaled(start: DateTime<Utc>, factor: f64) -> Clock {
        Clock::scaled_since(start, Utc::now(), factor)
    }

    /// Simulated time that was `start` at the real moment `epoch`.
    pub fn scaled_since(start: DateTime<Utc>, epoch: DateTime<Utc>, factor: f64) -> Clock {
        Clock::Scaled(Arc::new(ScaledClock {
            factor: factor.max(1.0),
            state: std::sync::Mutex::new(ScaledState {
                real_anchor: epoch,
                sim_anchor: start,
                paused: false,
            }),
        }))
    }

    /// The clock `run` and `once` use: the system clock, unless
    /// `FUNNELFIX_SIMULATED_CLOCK` = "START,EPOCH,FACTOR" (RFC 3339 times)
    /// asks for simulated time. That is for end-to-end tests against the
    /// sandbox; a real deployment never sets it.
    pub fn from_env() -> Result<Clock> {
        let Ok(spec) = std::env::var("FUNNELFIX_SIMULATED_CLOCK") else {
            return Ok(Clock::System);
        };
        let parts: Vec<&str> = spec.split(',').collect();
        let [start, epoch, factor] = parts.as_slice() else {
            anyhow::bail!("FUNNELFIX_SIMULATED_CLOCK must be START,EPOCH,FACTOR, got {spec:?}");
        };
        let time = |s: &str| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .with_context(|| {
                    format!("FUNNELFIX_SIMULATED_CLOCK: {s:?} is not an RFC 3339 time")
                })
        };
        let factor: f64 = factor
            .parse()
            .with_context(|| format!("FUNNELFIX_SIMULATED_CLOCK: {factor:?} is not a number"))?;
        Ok(Clock::scaled_since(time(start)?, time(epoch)?, factor))
    }

    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Manual(ms) => {
                DateTime::from_timestamp_millis(ms.load(Ordering::SeqCst)).unwrap_or_default()
            }
            Clock::Scaled(c) => c.now(),
        }
    }

    /// Moves a manual clock forward; other clocks cannot be moved.
    pub fn advance(&self, by: std::time::Duration) {
        if let Clock::Manual(ms) = self {
            ms.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
        }
    }

    /// Stops (or restarts) a scaled clock; other clocks ignore it.
    pub fn set_paused(&self, paused: bool) {
        if let Clock::Scaled(c) = self {
            c.set_paused(paused);
        }
    }

    /// How long to sleep in real time for `wait` of this clock's time to pass.
    /// A stopped clock is looked at again soon.
    pub fn real_wait(&self, wait: std::time::Duration) -> std::time::Duration {
        match self {
            Clock::System => wait,
            // Nothing moves a manual clock while the daemon sleeps.
            Clock::Manual(_) => wait.min(std::time::Duration::from_millis(50)),
            Clock::Scaled(c) => {
                if c.state.lock().unwrap_or_else(|p| p.into_inner()).paused {
                    std::time::Duration::from_millis(50)
                } else {
                    wait.div_f64(c.factor)
                }
            }
        }
    }
}

/// The adapters, one per service.
pub struct Services {
    pub posthog: PostHog,
    pub github: GitHub,
    pub telegram: Telegram,
    pub llm: Llm,
}

impl Services {
    pub fn connect(config: &Config, secrets: &Secrets, retry: RetryPolicy) -> Result<Services> {
        Ok(Services {
            posthog: PostHog::new(
                &config.posthog.host,
                &config.posthog.project_id,
                secrets.posthog_api_key.clone(),
                &config.posthog.api_key_env,
                retry,
            )?,
            github: GitHub::new(
                &config.github.api_url,
                secrets.github_token.clone(),
                &config.github.token_env,
                &config.github.repo,
                &config.github.base_branch,
                retry,
            )?,
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
    prompt_template: String,
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
        Ok(App {
            config,
            store,
            services,
            clock,
            prompt_template,
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
                return self.resume_proposal(open).await;
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
        let input = PromptInput {
            report: &report,
            step: choice.step,
            files: &files,
            history: &history,
            allowed_paths: &self.config.github.allowed_paths,
            max_changed_lines: self.config.github.max_changed_lines,
        };
        let rules = EditRules {
            allowed: &self.config.github.allowed,
            step_files: &step.files,
            max_changed_lines: self.config.github.max_changed_lines,
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
                (
                    "changed_files",
                    store::text(serde_json::to_string(&changes)?),
                ),
                ("base_sha", store::text(&base)),
                ("rate_before", store::real(s.rate)),
                ("entrants_before", store::int(s.entrants)),
                ("converted_before", store::int(s.converted)),
                (
                    "branch",
                    store::text(self.branch_name(funnel, choice.step, id)),
                ),
            ],
            now,
        )?;
        let experiment = self.get(id)?;
        self.resume_proposal_with(experiment, Some(report)).await
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

    /// `funnelfix/<funnel>/<step-slug>-<id>`: deterministic, so a restart finds what it made.
    fn branch_name(&self, funnel: &FunnelConfig, step: usize, id: ExperimentId) -> String {
        format!(
            "{}{}/{}-{}",
            self.config.github.branch_prefix,
            funnel.name,
            slug(&funnel.steps[step].name),
            id
        )
    }

    fn get(&self, id: ExperimentId) -> Result<Experiment> {
        self.store
            .get(id)?
            .with_context(|| format!("experiment {id} vanished from the state database"))
    }

    async fn resume_proposal(&self, e: Experiment) -> Result<ProposeOutcome> {
        self.resume_proposal_with(e, None).await
    }

    /// Opens the PR (or finds the one opened before a restart) and asks the chat.
    async fn resume_proposal_with(
        &self,
        e: Experiment,
        report: Option<FunnelReport>,
    ) -> Result<ProposeOutcome> {
        let funnel = self
            .funnel(&e.funnel)
            .with_context(|| format!("funnel {:?} is no longer configured", e.funnel))?;
        let (Some(branch), Some(base), Some(changes)) = (&e.branch, &e.base_sha, &e.changed_files)
        else {
            // Created but never written: nothing exists outside the database.
            self.store
                .transition(
                    e.id,
                    Transition::new(
                        State::Proposed,
                        State::Failed,
                        "interrupted before the change was written",
                    )
                    .with(&[(
                        "failure",
                        store::text("interrupted before the change was written"),
                    )]),
                    self.now(),
                )?
                .map_err(anyhow::Error::from)?;
            return Ok(ProposeOutcome::Failed(
                "interrupted before the change was written".into(),
            ));
        };
        let report = match report {
            Some(r) => r,
            None => self.report(funnel).await?,
        };
        let github = &self.services.github;
        let pr = match github.find_pr(branch).await? {
            Some(pr) => pr,
            None => {
                if github.branch_head(branch).await?.is_none() {
                    let changes: Vec<(String, Option<String>)> = serde_json::from_str(changes)?;
                    github
                        .commit_files(
                            base,
                            branch,
                            e.title.as_deref().unwrap_or("funnelfix change"),
                            &changes,
                        )
                        .await?;
                }
                let body = text::pr_body(&text::PrBody {
                    experiment_id: e.id.0,
                    report: &report,
                    step: e.step,
                    hypothesis: e.hypothesis.as_deref().unwrap_or(""),
                    diff: e.diff.as_deref().unwrap_or(""),
                    config: &self.config,
                });
                github
                    .open_pr(
                        branch,
                        e.title.as_deref().unwrap_or("funnelfix change"),
                        &body,
                        &self.config.github.labels,
                    )
                    .await?
            }
        };
        let now = self.now();
        self.store
            .transition(
                e.id,
                Transition::new(
                    State::Proposed,
                    State::AwaitingApproval,
                    &format!("PR #{}", pr.number),
                )
                .with(&[
                    ("pr_number", store::int(pr.number)),
                    ("pr_url", store::text(&pr.url)),
                    ("head_sha", store::text(&pr.head_sha)),
                    ("asked_at", store::time(now)),
                ]),
                now,
            )?
            .map_err(anyhow::Error::from)?;
        let e = self.get(e.id)?;
        self.send_proposal(&e, &report).await?;
        Ok(ProposeOutcome::Proposed {
            experiment: e.id,
            pr_url: pr.url,
        })
    }

    async fn send_proposal(&self, e: &Experiment, report: &FunnelReport) -> Result<()> {
        let summary = summarize_diff(e.diff.as_deref().unwrap_or(""));
        let html = text::proposal_message(e, report, &summary, &self.config.thresholds);
        let tg = &self.services.telegram;
        match crate::chart::funnel_chart(report) {
            Ok(png) => {
                if let Err(err) = tg
                    .send_photo(png, &format!("Funnel {}", text::escape(&e.funnel)))
                    .await
                {
                    warn!(error = %format!("{err:#}"), "could not send the chart");
                }
            }
            Err(err) => warn!(error = %format!("{err:#}"), "could not draw the chart"),
        }
        let buttons = vec![
            ("✅ Approve".to_string(), callback_data('a', e)),
            ("❌ Reject".to_string(), callback_data('r', e)),
        ];
        let message_id = tg.send_html(&html, &buttons).await?;
        self.store
            .update(e.id, &[("message_id", store::int(message_id))], self.now())?;
        info!(experiment = %e.id, pr = ?e.pr_number, "proposal sent to the chat");
        Ok(())
    }

    async fn notify(&self, html: &str) {
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
            if let Err(e) = self.handle(incoming).await {
                warn!(error = %format!("{e:#}"), "handling a Telegram update failed");
            }
            self.store
                .set_setting("telegram_offset", &(update_id + 1).to_string())?;
        }
        Ok(n)
    }

    /// Acts on one update from the chat. Never fails the loop: problems are
    /// logged and, where a person is waiting, answered.
    pub async fn handle(&self, incoming: Incoming) -> Result<()> {
        match incoming {
            Incoming::Callback {
                id,
                from,
                chat_id,
                message_id,
                data,
            } => self.handle_tap(&id, from, chat_id, message_id, &data).await,
            Incoming::Command {
                from,
                chat_id,
                command,
                ..
            } => self.handle_command(from, chat_id, &command).await,
        }
    }

    fn is_approver(&self, user: u64, chat_id: i64) -> bool {
        chat_id == self.config.telegram.chat_id && self.config.telegram.approvers.contains(&user)
    }

    async fn handle_tap(
        &self,
        callback_id: &str,
        from: u64,
        chat_id: i64,
        message_id: i32,
        data: &str,
    ) -> Result<()> {
        let tg = &self.services.telegram;
        let now = self.now();
        let parsed = parse_callback(data);
        let experiment = match parsed {
            Some((_, id, _)) => self.store.get(id)?,
            None => None,
        };
        let revert_message = match &experiment {
            Some(e) => self
                .store
                .setting(&format!("revert_message_{}", e.id))?
                .and_then(|m| m.parse::<i32>().ok()),
            None => None,
        };
        let valid = match (&parsed, &experiment) {
            // The revert button lives on the revert message, the others on the proposal.
            (Some(('v', _, nonce)), Some(e)) => {
                e.nonce == *nonce && revert_message == Some(message_id)
            }
            (Some((_, _, nonce)), Some(e)) => {
                e.nonce == *nonce && e.message_id == Some(message_id as i64)
            }
            _ => false,
        };
        if !self.is_approver(from, chat_id) || !valid {
            tg.answer_callback(callback_id, "Sorry, you cannot decide on this proposal.")
                .await?;
            self.store.audit(
                experiment.as_ref().map(|e| e.id),
                "refused_tap",
                Some(from),
                &format!("chat {chat_id}, message {message_id}, valid button: {valid}"),
                now,
            )?;
            return Ok(());
        }
        let (Some((action, _, _)), Some(e)) = (parsed, experiment) else {
            return Ok(());
        };
        if action == 'v' {
            if e.state != State::Reverting {
                tg.answer_callback(callback_id, &format!("Already done: {}.", e.state))
                    .await?;
                return Ok(());
            }
            tg.answer_callback(callback_id, "Merging the revert…")
                .await?;
            let span = info_span!("decision", funnel = %e.funnel, step = %e.step_name, experiment = %e.id, by = from);
            return self.approve_revert(&e, from).instrument(span).await;
        }
        if e.state != State::AwaitingApproval {
            tg.answer_callback(callback_id, &format!("Already decided: {}.", e.state))
                .await?;
            return Ok(());
        }
        let timeout = self.config.thresholds.approval_timeout;
        if action == 'a'
            && experiment::approval_expired(e.asked_at.unwrap_or(e.created_at), now, timeout)
        {
            // Past its deadline a proposal is no longer open to a merge; the
            // next monitor tick closes it as expired.
            let answer = format!(
                "Too late: this proposal expired after {}.",
                text::human_duration(timeout)
            );
            tg.answer_callback(callback_id, &answer).await?;
            self.store.audit(
                Some(e.id),
                "late_tap",
                Some(from),
                "approval after the timeout",
                now,
            )?;
            return Ok(());
        }
        let span = info_span!("decision", funnel = %e.funnel, step = %e.step_name, experiment = %e.id, by = from);
        async {
            info!(
                action = if action == 'a' { "approve" } else { "reject" },
                "decision from the chat"
            );
            match action {
                'a' => {
                    tg.answer_callback(callback_id, "Merging…").await?;
                    self.approve(&e, from).await
                }
                _ => {
                    tg.answer_callback(callback_id, "Closing the PR…").await?;
                    self.reject(&e, from).await
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn approve(&self, e: &Experiment, by: u64) -> Result<()> {
        let (Some(pr), Some(head)) = (e.pr_number, &e.head_sha) else {
            anyhow::bail!("experiment {} has no PR to merge", e.id);
        };
        let outcome = self
            .services
            .github
            .merge(
                pr,
                head,
                self.config.github.merge_method,
                e.title.as_deref().unwrap_or("funnelfix change"),
            )
            .await?;
        let now = self.now();
        match outcome {
            MergeOutcome::Merged { sha } => {
                self.store
                    .transition(
                        e.id,
                        Transition::new(
                            State::AwaitingApproval,
                            State::Merged,
                            &format!("merged as {sha}"),
                        )
                        .with(&[
                            ("decided_by", store::int(by)),
                            ("decided_at", store::time(now)),
                            ("merged_at", store::time(now)),
                            ("merge_sha", store::text(&sha)),
                        ])
                        .by(by),
                        now,
                    )?
                    .map_err(anyhow::Error::from)?;
                self.mark_decided(e, "Approved", by, now).await;
                info!(sha = %sha, "merged");
                self.notify(&text::merged_note(e, &sha, &self.config.thresholds))
                    .await;
                self.annotate(
                    &format!(
                        "funnelfix: merged PR #{pr} ({})",
                        e.title.as_deref().unwrap_or("")
                    ),
                    now,
                )
                .await;
            }
            MergeOutcome::HeadMoved => {
                self.store
                    .audit(Some(e.id), "merge_refused", Some(by), "head moved", now)?;
                warn!("not merged: the branch moved since the proposal");
                self.notify(&text::head_moved_note(e)).await;
            }
            MergeOutcome::NotMergeable(why) => {
                self.store
                    .audit(Some(e.id), "merge_refused", Some(by), &why, now)?;
                self.notify(&text::merge_refused_note(e, &why)).await;
            }
        }
        Ok(())
    }

    async fn reject(&self, e: &Experiment, by: u64) -> Result<()> {
        self.close_pr(e).await?;
        let now = self.now();
        self.store
            .transition(
                e.id,
                Transition::new(
                    State::AwaitingApproval,
                    State::Rejected,
                    "rejected in Telegram",
                )
                .with(&[
                    ("decided_by", store::int(by)),
                    ("decided_at", store::time(now)),
                    ("verdict", store::text("rejected")),
                ])
                .by(by),
                now,
            )?
            .map_err(anyhow::Error::from)?;
        self.mark_decided(e, "Rejected", by, now).await;
        info!("rejected: PR closed, branch deleted");
        self.notify(&text::rejected_note(e)).await;
        Ok(())
    }

    async fn close_pr(&self, e: &Experiment) -> Result<()> {
        if let Some(pr) = e.pr_number {
            self.services.github.close_pr(pr).await?;
        }
        if let Some(branch) = &e.branch {
            self.services.github.delete_branch(branch).await?;
        }
        Ok(())
    }

    /// Removes the buttons and says who decided and when.
    async fn mark_decided(&self, e: &Experiment, verb: &str, by: u64, at: DateTime<Utc>) {
        let Some(message_id) = e.message_id else {
            return;
        };
        let header = format!(
            "<b>funnelfix proposal #{}</b>: {}",
            e.id,
            text::escape(e.title.as_deref().unwrap_or(""))
        );
        let html = text::decided_message(&header, verb, &format!("user {by}"), at);
        if let Err(err) = self
            .services
            .telegram
            .edit_html(message_id as i32, &html)
            .await
        {
            warn!(error = %format!("{err:#}"), "could not update the proposal message");
        }
    }

    async fn annotate(&self, content: &str, at: DateTime<Utc>) {
        if let Err(e) = self.services.posthog.annotate(content, at).await {
            warn!(error = %format!("{e:#}"), "could not add the PostHog annotation");
        }
    }

    async fn handle_command(&self, from: u64, chat_id: i64, command: &str) -> Result<()> {
        if !self.is_approver(from, chat_id) {
            self.store.audit(
                None,
                "refused_command",
                Some(from),
                &format!("{command} in chat {chat_id}"),
                self.now(),
            )?;
            if chat_id == self.config.telegram.chat_id {
                self.notify("Sorry, only approvers can use funnelfix commands.")
                    .await;
            }
            return Ok(());
        }
        match command
            .trim_start_matches('/')
            .split('@')
            .next()
            .unwrap_or("")
        {
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
                                    .send_photo(
                                        png,
                                        &format!("Funnel {}", text::escape(&funnel.name)),
                                    )
                                    .await;
                            }
                            self.notify(&format!(
                                "<pre>{}</pre>",
                                text::escape(&text::funnel_table(&report))
                            ))
                            .await;
                        }
                        Err(e) => {
                            self.notify(&text::escape(&format!(
                                "Could not read funnel {}: {e:#}",
                                funnel.name
                            )))
                            .await
                        }
                    }
                }
            }
            "pause" => {
                self.store.set_setting("paused", "1")?;
                self.store
                    .audit(None, "paused", Some(from), "", self.now())?;
                self.notify(
                    "Paused: no new proposals. Watching and reverting go on. /resume to continue.",
                )
                .await;
            }
            "resume" => {
                self.store.set_setting("paused", "0")?;
                self.store
                    .audit(None, "resumed", Some(from), "", self.now())?;
                self.notify("Resumed: proposals will be made on schedule.")
                    .await;
            }
            _ => self.notify(&text::escape(text::help())).await,
        }
        Ok(())
    }

    // -----------------------------------------------------------------------
    // The monitor pass.

    /// Expires approvals, follows PRs decided on GitHub, watches merged changes.
    pub async fn monitor_pass(&self) -> Vec<(ExperimentId, Result<()>)> {
        let mut out = Vec::new();
        let open = match self.store.open_experiments() {
            Ok(o) => o,
            Err(e) => return vec![(ExperimentId(0), Err(e))],
        };
        for e in open {
            let span = info_span!("monitor", funnel = %e.funnel, step = %e.step_name, experiment = %e.id, state = %e.state);
            let result = self.monitor_one(&e).instrument(span.clone()).await;
            if let Err(err) = &result {
                span.in_scope(|| warn!(error = %format!("{err:#}"), "monitor failed"));
            }
            out.push((e.id, result));
        }
        out
    }

    async fn monitor_one(&self, e: &Experiment) -> Result<()> {
        match e.state {
            State::AwaitingApproval => self.follow_pr(e).await,
            State::Merged => self.start_observing(e).await,
            State::Observing => self.watch(e).await,
            State::Reverting => self.revert(e, None).await,
            _ => Ok(()),
        }
    }

    async fn follow_pr(&self, e: &Experiment) -> Result<()> {
        let now = self.now();
        let Some(number) = e.pr_number else {
            return Ok(());
        };
        let pr = self.services.github.pull_request(number).await?;
        match pr.state {
            PrState::Merged => {
                let sha = pr.merge_commit_sha.clone().unwrap_or_default();
                self.store
                    .transition(
                        e.id,
                        Transition::new(
                            State::AwaitingApproval,
                            State::Merged,
                            "merged on GitHub by a person",
                        )
                        .with(&[
                            ("merged_at", store::time(now)),
                            ("merge_sha", store::text(&sha)),
                        ]),
                        now,
                    )?
                    .map_err(anyhow::Error::from)?;
                self.mark_decided(e, "Merged on GitHub", 0, now).await;
                self.notify(&text::human_closed_note(e, true)).await;
                self.annotate(&format!("funnelfix: merged PR #{number}"), now)
                    .await;
            }
            PrState::Closed => {
                self.store
                    .transition(
                        e.id,
                        Transition::new(
                            State::AwaitingApproval,
                            State::Rejected,
                            "closed on GitHub by a person",
                        )
                        .with(&[("verdict", store::text("closed on GitHub"))]),
                        now,
                    )?
                    .map_err(anyhow::Error::from)?;
                self.mark_decided(e, "Closed on GitHub", 0, now).await;
                self.notify(&text::human_closed_note(e, false)).await;
            }
            PrState::Open => {
                let asked = e.asked_at.unwrap_or(e.created_at);
                if experiment::approval_expired(asked, now, self.config.thresholds.approval_timeout)
                {
                    self.close_pr(e).await?;
                    self.store
                        .transition(
                            e.id,
                            Transition::new(
                                State::AwaitingApproval,
                                State::Expired,
                                "no answer in time",
                            )
                            .with(&[("verdict", store::text("expired"))]),
                            now,
                        )?
                        .map_err(anyhow::Error::from)?;
                    self.mark_decided(e, "Expired", 0, now).await;
                    info!("expired: PR closed");
                    self.notify(&text::expired_note(
                        e,
                        self.config.thresholds.approval_timeout,
                    ))
                    .await;
                } else if e.message_id.is_none() {
                    // The PR is open but the chat never got the proposal
                    // (Telegram was down): ask again, or nobody can approve.
                    let funnel = self.funnel(&e.funnel).with_context(|| {
                        format!("funnel {:?} is no longer configured", e.funnel)
                    })?;
                    let report = self.report(funnel).await?;
                    self.send_proposal(e, &report).await?;
                }
            }
        }
        Ok(())
    }

    /// Fetches the baseline once (the window before the merge, per weekday) and starts watching.
    async fn start_observing(&self, e: &Experiment) -> Result<()> {
        let funnel = self
            .funnel(&e.funnel)
            .with_context(|| format!("funnel {:?} is no longer configured", e.funnel))?;
        let merged_at = e.merged_at.unwrap_or(e.updated_at);
        let range = EntryRange {
            from: merged_at - experiment::chrono_duration(self.config.thresholds.baseline),
            to: merged_at,
        };
        let baseline = self.step_counts(funnel, e.step, range, merged_at).await?;
        let now = self.now();
        self.store
            .transition(
                e.id,
                Transition::new(State::Merged, State::Observing, "baseline fetched")
                    .with(&[("baseline", store::text(serde_json::to_string(&baseline)?))]),
                now,
            )?
            .map_err(anyhow::Error::from)?;
        Ok(())
    }

    /// Counts of step `step` entrants and their conversions to the next step, per weekday.
    async fn step_counts(
        &self,
        funnel: &FunnelConfig,
        step: usize,
        range: EntryRange,
        now: DateTime<Utc>,
    ) -> Result<[Counts; 7]> {
        let by_day = self
            .services
            .posthog
            .funnel_counts(
                &funnel.steps[step..=step + 1],
                funnel.conversion_window,
                range,
                now,
            )
            .await?;
        Ok(std::array::from_fn(|d| {
            let c = &by_day.days[d];
            Counts {
                entrants: c.reached.first().copied().unwrap_or(0),
                conversions: c.reached.get(1).copied().unwrap_or(0),
            }
        }))
    }

    async fn watch(&self, e: &Experiment) -> Result<()> {
        let t = &self.config.thresholds;
        let funnel = self
            .funnel(&e.funnel)
            .with_context(|| format!("funnel {:?} is no longer configured", e.funnel))?;
        let now = self.now();
        let merged_at = e.merged_at.unwrap_or(e.updated_at);
        let settle = experiment::settle_for(t.observation);
        let step = experiment::watch_step(
            merged_at,
            now,
            t.observation,
            settle,
            funnel.conversion_window,
        );
        if step == WatchStep::TooEarly {
            return Ok(());
        }
        let baseline: [Counts; 7] = serde_json::from_str(e.baseline.as_deref().unwrap_or("null"))
            .context("the stored baseline is unreadable")?;
        let (from, to) = experiment::observed_entrants(merged_at, t.observation, settle);
        let post = self
            .step_counts(funnel, e.step, EntryRange { from, to }, now)
            .await?;
        let input = WatchInput {
            baseline,
            post,
            single_stratum: t.baseline < std::time::Duration::from_secs(7 * 86400),
            expected_half_window_entrants: expected_half_window(&baseline, t),
        };
        let rule = RevertRule {
            alpha: t.false_revert_rate,
            max_relative_drop: t.max_relative_drop,
            min_conversions: 30,
        };
        let a = stats::assess(&input, &rule);
        let p_value = stats::p_value(e.p_value.unwrap_or(1.0), a.lambda);
        info!(figures = %text::watch_line(&a), "watch");
        self.store.update(
            e.id,
            &[
                ("assessment", store::text(serde_json::to_string(&a)?)),
                ("p_value", store::real(p_value)),
            ],
            now,
        )?;
        if a.revert {
            let verdict = text::verdict_reverted(&a, p_value);
            self.store
                .transition(
                    e.id,
                    Transition::new(State::Observing, State::Reverting, &verdict)
                        .with(&[("verdict", store::text(&verdict))]),
                    now,
                )?
                .map_err(anyhow::Error::from)?;
            let e = self.get(e.id)?;
            return self.revert(&e, Some(a)).await;
        }
        if step == WatchStep::FinalJudgement {
            let verdict = text::verdict_kept(&a);
            self.store
                .transition(
                    e.id,
                    Transition::new(State::Observing, State::Kept, &verdict)
                        .with(&[("verdict", store::text(&verdict))]),
                    now,
                )?
                .map_err(anyhow::Error::from)?;
            info!(verdict = %verdict, "kept");
            self.notify(&text::kept_note(e, &verdict)).await;
            if let Some(pr) = e.pr_number
                && let Err(err) = self
                    .services
                    .github
                    .comment(pr, &format!("funnelfix verdict: {verdict}"))
                    .await
            {
                warn!(error = %format!("{err:#}"), "could not comment on the PR");
            }
        }
        Ok(())
    }

    /// Reverts a merged change. Every step first looks for what an earlier,
    /// interrupted run already did, so a restart finishes the one revert.
    async fn revert(&self, e: &Experiment, assessment: Option<Assessment>) -> Result<()> {
        let github = &self.services.github;
        let Some(merge_sha) = &e.merge_sha else {
            anyhow::bail!("experiment {} has no merge commit to revert", e.id);
        };
        let branch = format!("{}revert-{}", self.config.github.branch_prefix, e.id);
        let a = match assessment {
            Some(a) => a,
            None => serde_json::from_str(e.assessment.as_deref().unwrap_or("null"))
                .context("the stored assessment is unreadable")?,
        };
        let verdict = e
            .verdict
            .clone()
            .unwrap_or_else(|| text::verdict_reverted(&a, e.p_value.unwrap_or(1.0)));
        let paths: Vec<String> = serde_json::from_str::<Vec<(String, Option<String>)>>(
            e.changed_files.as_deref().unwrap_or("[]"),
        )?
        .into_iter()
        .map(|(p, _)| p)
        .collect();
        let pr = match github.find_pr(&branch).await? {
            Some(pr) => pr,
            None => {
                let head = github.base_head().await?;
                if github.branch_head(&branch).await?.is_none() {
                    let parent = github.commit_parent(merge_sha).await?;
                    let before = github.read_files(&parent, &paths).await?;
                    let changes: Vec<(String, Option<String>)> = before.into_iter().collect();
                    github
                        .commit_files(
                            &head,
                            &branch,
                            &format!(
                                "Revert \"{}\"",
                                e.title.as_deref().unwrap_or("funnelfix change")
                            ),
                            &changes,
                        )
                        .await?;
                }
                let body = text::revert_pr_body(e, &verdict, &a, &self.config.thresholds);
                github
                    .open_pr(
                        &branch,
                        &format!(
                            "Revert \"{}\"",
                            e.title.as_deref().unwrap_or("funnelfix change")
                        ),
                        &body,
                        &self.config.github.labels,
                    )
                    .await?
            }
        };
        self.store.update(
            e.id,
            &[
                ("revert_branch", store::text(&branch)),
                ("revert_pr", store::int(pr.number)),
                ("revert_pr_url", store::text(&pr.url)),
            ],
            self.now(),
        )?;
        // Someone changed these files after the merge: never force; ask for review.
        let head = github.base_head().await?;
        let now_files = github.read_files(&head, &paths).await?;
        let merged_files = github.read_files(merge_sha, &paths).await?;
        let touched_since = now_files != merged_files;
        let merged = match pr.state {
            PrState::Merged => true,
            PrState::Closed => false,
            PrState::Open
                if touched_since || self.config.thresholds.revert == RevertMode::Approve =>
            {
                false
            }
            PrState::Open => match self.merge_revert(e, &pr).await? {
                MergeOutcome::Merged { .. } => true,
                MergeOutcome::HeadMoved | MergeOutcome::NotMergeable(_) => false,
            },
        };
        let now = self.now();
        if merged {
            self.revert_landed(e, &verdict, &pr.url, None, now).await?;
        } else if self
            .store
            .setting(&format!("revert_told_{}", e.id))?
            .is_none()
        {
            self.store
                .set_setting(&format!("revert_told_{}", e.id), "1")?;
            let ask_in_chat = self.config.thresholds.revert == RevertMode::Approve
                && !touched_since
                && pr.state == PrState::Open;
            if !ask_in_chat {
                self.notify(&text::revert_needs_review_note(e, &verdict, &pr.url))
                    .await;
            } else {
                // revert = "approve": an approver merges it from the chat.
                let buttons = vec![("↩️ Merge the revert".to_string(), callback_data('v', e))];
                let html = text::revert_approval_note(e, &verdict, &pr.url);
                let message_id = self.services.telegram.send_html(&html, &buttons).await?;
                self.store
                    .set_setting(&format!("revert_message_{}", e.id), &message_id.to_string())?;
            }
        }
        Ok(())
    }

    /// Merges the revert PR at the head it was opened with.
    async fn merge_revert(&self, e: &Experiment, pr: &PullRequest) -> Result<MergeOutcome> {
        let title = format!("Revert PR #{}", e.pr_number.unwrap_or_default());
        self.services
            .github
            .merge(
                pr.number,
                &pr.head_sha,
                self.config.github.merge_method,
                &title,
            )
            .await
    }

    /// The revert PR is merged: the experiment ends as reverted, and the chat
    /// and PostHog's charts hear of it.
    async fn revert_landed(
        &self,
        e: &Experiment,
        verdict: &str,
        pr_url: &str,
        by: Option<u64>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let transition = Transition::new(State::Reverting, State::Reverted, verdict);
        let transition = match by {
            Some(by) => transition.by(by),
            None => transition,
        };
        self.store
            .transition(e.id, transition, now)?
            .map_err(anyhow::Error::from)?;
        info!(verdict = %verdict, "reverted");
        self.notify(&text::reverted_note(e, verdict, pr_url)).await;
        let pr = e.pr_number.unwrap_or_default();
        self.annotate(&format!("funnelfix: reverted PR #{pr}"), now)
            .await;
        Ok(())
    }

    /// An approver tapped "Merge the revert" (revert = "approve").
    async fn approve_revert(&self, e: &Experiment, by: u64) -> Result<()> {
        let github = &self.services.github;
        let branch = e
            .revert_branch
            .clone()
            .with_context(|| format!("experiment {} has no revert branch", e.id))?;
        let pr = github
            .find_pr(&branch)
            .await?
            .with_context(|| format!("the revert PR of experiment {} is gone", e.id))?;
        let outcome = match pr.state {
            PrState::Merged => MergeOutcome::Merged {
                sha: pr.merge_commit_sha.clone().unwrap_or_default(),
            },
            PrState::Closed => MergeOutcome::NotMergeable("the revert PR was closed".into()),
            PrState::Open => self.merge_revert(e, &pr).await?,
        };
        let now = self.now();
        let verdict = e.verdict.clone().unwrap_or_else(|| "reverted".into());
        match outcome {
            MergeOutcome::Merged { .. } => {
                self.revert_landed(e, &verdict, &pr.url, Some(by), now)
                    .await?;
                if let Some(id) = self.store.setting(&format!("revert_message_{}", e.id))?
                    && let Ok(id) = id.parse::<i32>()
                {
                    let html = text::decided_message(
                        &format!("<b>Revert of experiment #{}</b>", e.id),
                        "Revert merged",
                        &format!("user {by}"),
                        now,
                    );
                    if let Err(err) = self.services.telegram.edit_html(id, &html).await {
                        warn!(error = %format!("{err:#}"), "could not update the revert message");
                    }
                }
            }
            MergeOutcome::HeadMoved | MergeOutcome::NotMergeable(_) => {
                let why = match outcome {
                    MergeOutcome::NotMergeable(why) => why,
                    _ => "its branch moved".into(),
                };
                self.store
                    .audit(Some(e.id), "merge_refused", Some(by), &why, now)?;
                self.notify(&text::merge_refused_note(e, &why)).await;
            }
        }
        Ok(())
    }
}

/// n*: the entrants expected in half the observation window, from the baseline's daily rate.
fn expected_half_window(baseline: &[Counts; 7], t: &crate::config::Thresholds) -> f64 {
    let entrants: u64 = baseline.iter().map(|c| c.entrants).sum();
    let per_second = entrants as f64 / t.baseline.as_secs_f64().max(1.0);
    (per_second * t.observation.as_secs_f64() / 2.0).max(1.0)
}

/// 16 random hex characters.
fn new_nonce() -> String {
    use rand::Rng;
    let n: u64 = rand::rng().random();
    format!("{n:016x}")
}

/// `a:<id>:<nonce>` (approve) or `r:<id>:<nonce>`: at most 1 + 1 + 19 + 1 + 16 bytes.
fn callback_data(action: char, e: &Experiment) -> String {
    format!("{action}:{}:{}", e.id, e.nonce)
}

fn parse_callback(data: &str) -> Option<(char, ExperimentId, String)> {
    let mut parts = data.splitn(3, ':');
    let action = match parts.next()? {
        "a" => 'a',
        "r" => 'r',
        "v" => 'v',
        _ => return None,
    };
    let id = parts.next()?.parse().ok()?;
    let nonce = parts.next()?.to_string();
    Some((action, ExperimentId(id), nonce))
}

fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').chars().take(30).collect()
}

/// "+3 −1 lines in site/pricing.html".
fn summarize_diff(diff: &str) -> String {
    let added = diff
        .lines()
        .filter(|l| l.starts_with('+') && !l.starts_with("+++"))
        .count();
    let removed = diff
        .lines()
        .filter(|l| l.starts_with('-') && !l.starts_with("---"))
        .count();
    let files: Vec<&str> = diff
        .lines()
        .filter_map(|l| l.strip_prefix("+++ "))
        .map(|f| f.trim_start_matches("b/"))
        .collect();
    format!("+{added} −{removed} lines in {}", files.join(", "))
}
