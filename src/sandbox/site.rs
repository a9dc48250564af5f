//! A simulated website for the demo, the scenario tests and the benchmarks:
//! visitors walk the funnel and each step converts at a rate that depends on
//! the page that is live, i.e. on the files of the step on the GitHub twin's
//! base branch. A merge (or a revert) therefore changes the data PostHog
//! reports.
//!
//! Visitors behave as on a real site ([`Behaviour`]): a share of the visits
//! are people who came before (some again the same day, most days or weeks
//! later), so one person enters a step several times and may convert on a
//! later visit; the next step follows within minutes in the same session or
//! hours later in another one, some of it after the conversion window;
//! traffic follows the weekday and the hour of the day, and may drift slowly;
//! some visits land on a later step directly; and the funnel's own events are
//! a minority among page views of other pages, autocaptured clicks and page
//! leaves. The rate of a transition (`base_rates`, times the page effects) is
//! the chance that a visit at that step goes on to the next one at all.

use std::collections::{BTreeMap, HashMap, VecDeque};

use chrono::{DateTime, Datelike, Timelike, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::config::FunnelConfig;
#[cfg(test)]
use crate::sandbox::events::DAY_MS;
use crate::sandbox::events::{EventLog, Row};
use crate::sandbox::github::GitHubTwin;
use crate::sandbox::posthog::PostHogTwin;

/// Text that, when present on a step's page, multiplies that step's rate.
#[derive(Debug, Clone)]
pub struct Effect {
    pub marker: String,
    pub multiplier: f64,
}

/// How visitors behave. [`Behaviour::realistic`] is what the sandbox uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Behaviour {
    /// Share of funnel visits made by people who visited before.
    pub returning_share: f64,
    /// Of the returning visits, the share that come back within a few hours
    /// (the rest come back days or weeks later).
    pub same_day_share: f64,
    /// Share of funnel visits that land directly on the second step.
    pub direct_share: f64,
    /// Share of conversions made in a later session rather than the same
    /// one: uniformly up to 1.2 conversion windows later, so about one in six
    /// of them arrives after the window has closed.
    pub later_session_share: f64,
    /// Traffic by UTC weekday (Monday first), mean 1.
    pub weekday: [f64; 7],
    /// Traffic by UTC hour of the day, mean 1.
    pub hourly: [f64; 24],
    /// Relative change of every transition's rate per day since the site
    /// started (0.002 is +0.2% a day); 0 for none.
    pub drift_per_day: f64,
    /// Visits that never touch the funnel (blog, docs), per funnel visit.
    pub browse_only: f64,
    /// Share of funnel visits that read another page first.
    pub other_page_first: f64,
    /// Whether the troubled step's page carries the planted evidence
    /// (segments, a demo video, scrolling, rage clicks, surveys, web vitals).
    pub evidence: bool,
}

/// Traffic by weekday (Monday first): quieter weekends, as most sites have.
pub const WEEKDAY_TRAFFIC: [f64; 7] = [1.1, 1.15, 1.1, 1.05, 0.95, 0.8, 0.85];

/// Traffic by UTC hour: quiet at night, a peak in the afternoon; mean 1.
pub fn hourly_traffic() -> [f64; 24] {
    let raw: [f64; 24] = std::array::from_fn(|h| {
        let x = (h as f64 - 15.0) / 24.0 * std::f64::consts::TAU;
        1.0 + 0.8 * x.cos()
    });
    let mean = raw.iter().sum::<f64>() / 24.0;
    raw.map(|v| v / mean)
}

impl Behaviour {
    /// Half the visits by returning people, a third of conversions in a
    /// later session, weekday and hourly patterns, no drift.
    pub fn realistic() -> Behaviour {
        Behaviour {
            returning_share: 0.5,
            same_day_share: 0.2,
            direct_share: 0.15,
            later_session_share: 0.3,
            weekday: WEEKDAY_TRAFFIC,
            hourly: hourly_traffic(),
            drift_per_day: 0.0,
            browse_only: 0.5,
            other_page_first: 0.4,
            evidence: true,
        }
    }

    /// Every visit a new person, every next step minutes later in the same
    /// session, flat traffic, only the funnel's events.
    pub fn simple() -> Behaviour {
        Behaviour {
            returning_share: 0.0,
            same_day_share: 0.0,
            direct_share: 0.0,
            later_session_share: 0.0,
            weekday: [1.0; 7],
            hourly: [1.0; 24],
            drift_per_day: 0.0,
            browse_only: 0.0,
            other_page_first: 0.0,
            evidence: false,
        }
    }
}

pub struct Site {
    funnel: FunnelConfig,
    branch: String,
    /// Base rate of each transition (step i → i + 1).
    pub base_rates: Vec<f64>,
    pub effects: Vec<Effect>,
    /// Funnel visits per day, before the weekday and hourly profiles.
    pub visitors_per_day: f64,
    pub behaviour: Behaviour,
    /// Rates drift from here (the start of the first simulated range).
    origin: Option<DateTime<Utc>>,
    rng: SmallRng,
    /// Draws for what the funnel's events do not depend on (devices,
    /// referrers, scrolling, clicks, surveys), kept apart so the funnel's
    /// own draws stay as they were.
    evidence_rng: SmallRng,
    /// The step whose page carries the planted evidence ([`Planted`]).
    pub troubled: Option<usize>,
    next_person: u64,
    /// Recent funnel visits (start ms, person), oldest first, for returns.
    recent: VecDeque<(i64, u32)>,
    visits: u64,
    returning_visits: u64,
}

/// Returning visitors come back to a visit of at most this many days ago.
const RETURN_HORIZON_DAYS: i64 = 28;
/// A same-day return comes back to a visit of at most this many hours ago.
const SAME_DAY_HOURS: i64 = 6;

/// Pages outside the funnel.
const OTHER_PAGES: [&str; 5] = [
    "/blog/closing-the-books",
    "/blog/vat",
    "/docs",
    "/about",
    "/changelog",
];

/// What visitors bring on every event (posthog-js sends them all).
const DEVICES: [&str; 2] = ["Desktop", "Mobile"];
const BROWSERS: [&str; 3] = ["Chrome", "Safari", "Firefox"];
const REFERRERS: [&str; 3] = ["google.com", "$direct", "news.ycombinator.com"];

/// The planted truths on the troubled step's page, for the evidence:
/// mobile visitors go on at half the desktop rate; those who play the demo
/// video go on 2.5 times as often as those who do not; most leavers scroll
/// less than a quarter of the page; some rage-click the disabled monthly
/// plan button; a few answer a survey, most of them asking for a monthly
/// plan. The factors keep the step's mean rate at its base rate.
const MOBILE_SHARE: u64 = 40;
const DEMO_SHARE: f64 = 0.2;
const DEMO_LIFT: f64 = 2.5;
pub const DEMO_EVENT: &str = "demo video played";
pub const DISABLED_BUTTON: &str = "Choose monthly";
pub const MONTHLY_ANSWERS: [&str; 2] = [
    "Is there no monthly plan? I can't commit to a whole year.",
    "I'd sign up today if there was a monthly option.",
];
const OTHER_ANSWERS: [&str; 2] = [
    "Too expensive for a small team.",
    "Just comparing tools for now.",
];

/// An autocapture `elements_chain` of a clicked element with `text`.
fn element_chain(tag: &str, text: &str) -> String {
    format!(
        "{tag}:text=\"{text}\"nth-child=\"2\"nth-of-type=\"1\";div.plans:nth-child=\"3\"nth-of-type=\"1\";body:nth-child=\"1\"nth-of-type=\"1\""
    )
}

/// A person's device (index into [`DEVICES`]) and browser, fixed per person.
fn device_of(person: u32) -> (usize, usize) {
    let h = u64::from(person).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    let device = usize::from(h % 100 < MOBILE_SHARE);
    let browser = if device == 1 {
        (h / 100 % 2) as usize
    } else {
        [0, 0, 2][(h / 100 % 3) as usize]
    };
    (device, browser)
}

/// One visit to the troubled page: what the visitor brings and does there.
struct Planted {
    mobile: bool,
    demo: bool,
}

impl Planted {
    /// The visit's rate relative to the step's mean.
    fn factor(&self) -> f64 {
        let device = if self.mobile { 0.5 } else { 1.0 } / (1.0 - MOBILE_SHARE as f64 / 200.0);
        let demo = if self.demo { DEMO_LIFT } else { 1.0 } / (1.0 + (DEMO_LIFT - 1.0) * DEMO_SHARE);
        device * demo
    }
}

/// Ids of the events and property sets a visit writes, interned once per
/// [`Site::record`] call.
struct Vocabulary {
    pageview: u32,
    pageleave: u32,
    autocapture: u32,
    rageclick: u32,
    web_vitals: u32,
    survey: u32,
    demo: u32,
    /// Property sets of step events by (step, device, browser, referrer).
    step_props: HashMap<(usize, usize, usize, usize), u32>,
    /// Per step: its event and property set, and the page it is on (with
    /// the page leave and click property sets of that page).
    steps: Vec<StepIds>,
    /// Per other page: view/leave props, click props.
    others: Vec<(u32, u32)>,
}

struct StepIds {
    event: u32,
    path: String,
    /// The page view to write before the step's own event, when the step
    /// is not a page view itself.
    view: Option<u32>,
    page: u32,
    click: u32,
}

fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Vocabulary {
    fn new(funnel: &FunnelConfig, log: &mut EventLog) -> Vocabulary {
        let pageview = log.event_id("$pageview");
        let steps = funnel
            .steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                let path = step.filters.get("$pathname").cloned().unwrap_or_else(|| {
                    step.files
                        .first()
                        .and_then(|f| f.rsplit('/').next())
                        .map(|f| f.trim_end_matches(".html").replace("index", ""))
                        .map(|f| format!("/{f}"))
                        .unwrap_or_else(|| format!("/step-{i}"))
                });
                let page = log.props_id(&props(&[("$pathname", &path)]));
                let click = log.props_id(&props(&[
                    ("$pathname", &path),
                    ("$event_type", "click"),
                    ("$el_text", "Continue"),
                    ("elements_chain", &element_chain("a.button", "Continue")),
                ]));
                let event = log.event_id(&step.event);
                StepIds {
                    event,
                    path: path.clone(),
                    view: (event != pageview).then_some(page),
                    page,
                    click,
                }
            })
            .collect();
        let others = OTHER_PAGES
            .iter()
            .map(|path| {
                (
                    log.props_id(&props(&[("$pathname", path)])),
                    log.props_id(&props(&[
                        ("$pathname", path),
                        ("$event_type", "click"),
                        ("$el_text", "Read more"),
                    ])),
                )
            })
            .collect();
        Vocabulary {
            pageview,
            pageleave: log.event_id("$pageleave"),
            autocapture: log.event_id("$autocapture"),
            rageclick: log.event_id("$rageclick"),
            web_vitals: log.event_id("$web_vitals"),
            survey: log.event_id("survey sent"),
            demo: log.event_id(DEMO_EVENT),
            step_props: HashMap::new(),
            steps,
            others,
        }
    }
}

impl Site {
    pub fn new(
        funnel: FunnelConfig,
        branch: &str,
        base_rates: Vec<f64>,
        visitors_per_day: f64,
        seed: u64,
    ) -> Site {
        let troubled = base_rates
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i);
        Site {
            funnel,
            branch: branch.to_string(),
            base_rates,
            effects: Vec::new(),
            visitors_per_day,
            behaviour: Behaviour::realistic(),
            origin: None,
            rng: SmallRng::seed_from_u64(seed),
            evidence_rng: SmallRng::seed_from_u64(seed ^ 0x5eed_e71d_e4ce),
            troubled,
            next_person: 0,
            recent: VecDeque::new(),
            visits: 0,
            returning_visits: 0,
        }
    }

    pub fn with_effect(mut self, marker: &str, multiplier: f64) -> Site {
        self.effects.push(Effect {
            marker: marker.to_string(),
            multiplier,
        });
        self
    }

    pub fn with_behaviour(mut self, behaviour: Behaviour) -> Site {
        self.behaviour = behaviour;
        self
    }

    /// Funnel visits so far, and how many of them were by people who had
    /// come before.
    pub fn visits(&self) -> (u64, u64) {
        (self.visits, self.returning_visits)
    }

    /// The funnel the site's visitors walk.
    pub fn funnel(&self) -> &FunnelConfig {
        &self.funnel
    }

    /// The rate of each transition given the pages live now.
    pub fn live_rates(&self, github: &GitHubTwin) -> Vec<f64> {
        let pages: Vec<String> = self
            .funnel
            .steps
            .iter()
            .map(|s| {
                s.files
                    .iter()
                    .filter_map(|f| github.file_on_branch(&self.branch, f))
                    .collect()
            })
            .collect();
        self.rates_for(&pages)
    }

    /// The rate of each transition when step i's pages read `pages[i]`.
    pub fn rates_for(&self, pages: &[String]) -> Vec<f64> {
        self.base_rates
            .iter()
            .enumerate()
            .map(|(i, base)| {
                let page = pages.get(i).map(String::as_str).unwrap_or("");
                let factor: f64 = self
                    .effects
                    .iter()
                    .filter(|e| page.contains(&e.marker))
                    .map(|e| e.multiplier)
                    .product();
                (base * factor).clamp(0.0, 1.0)
            })
            .collect()
    }

    /// Visitors who arrive in `[from, to)`, walking the funnel under the
    /// pages live now; their events go to the PostHog twin. Returns how
    /// many events were written.
    pub fn simulate(
        &mut self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        github: &GitHubTwin,
        posthog: &PostHogTwin,
    ) -> usize {
        let rates = self.live_rates(github);
        posthog.with_log(|log| self.record(from, to, &rates, log))
    }

    /// Visitors who arrive in `[from, to)` with transition rates `rates`,
    /// written to `log`. Returns how many events were written.
    pub fn record(
        &mut self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        rates: &[f64],
        log: &mut EventLog,
    ) -> usize {
        let before = log.len();
        let mut words = Vocabulary::new(&self.funnel, log);
        let origin = *self.origin.get_or_insert(from);
        let window_ms = self.funnel.conversion_window.as_millis().max(1) as f64;
        let b = self.behaviour.clone();
        let mut t = from;
        while t < to {
            // Hour by hour, on the clock's hours.
            let next_hour = (t.timestamp().div_euclid(3600) + 1) * 3600;
            let slice_end = DateTime::from_timestamp(next_hour, 0).unwrap_or(to).min(to);
            let seconds = (slice_end - t).num_milliseconds().max(0) as f64 / 1000.0;
            let per_second = self.visitors_per_day
                * b.weekday[t.weekday().num_days_from_monday() as usize]
                * b.hourly[t.hour() as usize]
                / 86_400.0;
            let days = (t - origin).num_seconds() as f64 / 86_400.0;
            let drift = (1.0 + b.drift_per_day * days).max(0.0);
            let live: Vec<f64> = rates.iter().map(|r| (r * drift).clamp(0.0, 1.0)).collect();
            let funnel_visits = self.whole(per_second * seconds);
            let browsing = self.whole(per_second * seconds * b.browse_only);
            let mut starts: Vec<i64> = (0..funnel_visits)
                .map(|_| {
                    t.timestamp_millis() + (self.rng.random::<f64>() * seconds * 1000.0) as i64
                })
                .collect();
            starts.sort_unstable();
            for start in starts {
                let person = self.visitor(start, log);
                self.walk(start, person, window_ms, &live, &mut words, log);
            }
            for _ in 0..browsing {
                let start =
                    t.timestamp_millis() + (self.rng.random::<f64>() * seconds * 1000.0) as i64;
                let person = self.new_person(log);
                let page = self.rng.random_range(0..words.others.len());
                self.other_page(start, person, page, &words, log);
            }
            t = slice_end;
        }
        log.len() - before
    }

    /// `expected` rounded to a whole number, the fraction carried by chance.
    fn whole(&mut self, expected: f64) -> u64 {
        let mut n = expected.floor() as u64;
        if self.rng.random::<f64>() < expected.fract() {
            n += 1;
        }
        n
    }

    fn new_person(&mut self, log: &mut EventLog) -> u32 {
        self.next_person += 1;
        log.person_id(&format!("visitor-{}", self.next_person))
    }

    /// Who makes a funnel visit starting at `start`: someone who came
    /// before, or a new person.
    fn visitor(&mut self, start: i64, log: &mut EventLog) -> u32 {
        let horizon = start - RETURN_HORIZON_DAYS * 86_400_000;
        while self.recent.front().is_some_and(|(t, _)| *t < horizon) {
            self.recent.pop_front();
        }
        let (returning_share, same_day_share) = (
            self.behaviour.returning_share,
            self.behaviour.same_day_share,
        );
        let returning = !self.recent.is_empty() && self.rng.random::<f64>() < returning_share;
        let person = if returning {
            let first = if self.rng.random::<f64>() < same_day_share {
                let since = start - SAME_DAY_HOURS * 3_600_000;
                self.recent.partition_point(|(t, _)| *t < since)
            } else {
                0
            };
            if first < self.recent.len() {
                let i = self.rng.random_range(first..self.recent.len());
                self.recent[i].1
            } else {
                let i = self.rng.random_range(0..self.recent.len());
                self.recent[i].1
            }
        } else {
            self.new_person(log)
        };
        self.recent.push_back((start, person));
        self.visits += 1;
        self.returning_visits += u64::from(returning);
        person
    }

    /// One funnel visit: the steps it reaches, each followed by the next
    /// with the step's rate, in the same session or a later one.
    fn walk(
        &mut self,
        start: i64,
        person: u32,
        window_ms: f64,
        rates: &[f64],
        words: &mut Vocabulary,
        log: &mut EventLog,
    ) {
        let (direct_share, later_session_share, other_page_first) = (
            self.behaviour.direct_share,
            self.behaviour.later_session_share,
            self.behaviour.other_page_first,
        );
        let mut at = start;
        // Some visits read another page first.
        if self.rng.random::<f64>() < other_page_first {
            let page = self.rng.random_range(0..words.others.len());
            at = self.other_page(at, person, page, words, log);
        }
        let first = if self.funnel.steps.len() > 2 && self.rng.random::<f64>() < direct_share {
            1
        } else {
            0
        };
        let mut step = first;
        let referrer = self.evidence_rng.random_range(0..REFERRERS.len());
        loop {
            let planted =
                (self.behaviour.evidence && Some(step) == self.troubled).then(|| Planted {
                    mobile: device_of(person).0 == 1,
                    demo: self.evidence_rng.random::<f64>() < DEMO_SHARE,
                });
            let started = at;
            let (end, leave) =
                self.step_page(at, person, step, referrer, planted.is_none(), words, log);
            at = end;
            let factor = planted.as_ref().map_or(1.0, Planted::factor);
            let goes_on = step + 1 < self.funnel.steps.len()
                && self.rng.random::<f64>() < (rates[step] * factor).clamp(0.0, 1.0);
            if let Some(p) = &planted {
                self.planted_events(started, leave, person, step, p, goes_on, words, log);
            }
            if !goes_on {
                return;
            }
            let gap = if self.rng.random::<f64>() < later_session_share {
                // Another session: ten minutes to 1.2 windows later.
                600_000.0 + self.rng.random::<f64>() * (1.2 * window_ms - 600_000.0).max(0.0)
            } else {
                // The same session: seconds to a few minutes.
                2_000.0 + self.rng.random::<f64>() * self.rng.random::<f64>() * 300_000.0
            };
            at += gap as i64;
            step += 1;
        }
    }

    /// What a visit to the troubled page leaves besides the funnel's
    /// events, between its start and its page leave at `leave` (written
    /// here, with the scroll depth and time on the page).
    #[allow(clippy::too_many_arguments)]
    fn planted_events(
        &mut self,
        start: i64,
        leave: i64,
        person: u32,
        step: usize,
        p: &Planted,
        went_on: bool,
        words: &mut Vocabulary,
        log: &mut EventLog,
    ) {
        let path = words.steps[step].path.clone();
        let r = &mut self.evidence_rng;
        let at = |r: &mut SmallRng| start + 1 + r.random_range(0..(leave - start).max(1));
        let push = |log: &mut EventLog, event: u32, ms: i64, pairs: &[(&str, &str)]| {
            let mut all = vec![("$pathname", path.as_str())];
            all.extend_from_slice(pairs);
            let props = log.props_id(&props(&all));
            log.push(event, Row { ms, person, props });
        };
        if p.demo {
            let ms = at(r);
            push(
                log,
                words.autocapture,
                ms,
                &[
                    ("$event_type", "click"),
                    (
                        "elements_chain",
                        &element_chain("button.demo", "Watch the demo"),
                    ),
                ],
            );
            push(log, words.demo, ms + 500, &[]);
        }
        if r.random::<f64>() < if went_on { 0.02 } else { 0.1 } {
            let ms = at(r);
            let chain = element_chain("button.plan-monthly.disabled", DISABLED_BUTTON);
            push(log, words.rageclick, ms, &[("elements_chain", &chain)]);
        }
        if r.random::<f64>() < 0.6 {
            let slow = if p.mobile { 1.6 } else { 1.0 };
            let lcp = format!(
                "{:.0}",
                (1200.0 + r.random::<f64>() * 1800.0) * slow / 100.0 * 100.0
            );
            let lcp = format!(
                "{}",
                (lcp.parse::<f64>().unwrap_or(0.0) / 100.0).round() * 100.0
            );
            let inp = format!("{}", (5.0 + r.random::<f64>() * 25.0).round() * 10.0);
            let cls = format!("{:.2}", r.random::<f64>() * 0.15);
            let ms = at(r);
            push(
                log,
                words.web_vitals,
                ms,
                &[
                    ("$web_vitals_LCP_value", &lcp),
                    ("$web_vitals_INP_value", &inp),
                    ("$web_vitals_CLS_value", &cls),
                ],
            );
        }
        if r.random::<f64>() < if went_on { 0.005 } else { 0.03 } {
            let text = if went_on {
                "Looks good, trying it out."
            } else if r.random::<f64>() < 0.6 {
                MONTHLY_ANSWERS[r.random_range(0..MONTHLY_ANSWERS.len())]
            } else {
                OTHER_ANSWERS[r.random_range(0..OTHER_ANSWERS.len())]
            };
            let ms = at(r);
            push(log, words.survey, ms, &[("$survey_response", text)]);
        }
        let shallow = r.random::<f64>() < if went_on { 0.15 } else { 0.75 };
        let scroll = if shallow {
            0.02 + r.random::<f64>() * 0.22
        } else {
            0.3 + r.random::<f64>() * 0.7
        };
        let seconds = if went_on {
            20 + r.random_range(0..100)
        } else {
            3 + r.random_range(0..40)
        };
        push(
            log,
            words.pageleave,
            leave,
            &[
                ("$prev_pageview_pathname", &path),
                (
                    "$prev_pageview_max_scroll_percentage",
                    &format!("{scroll:.2}"),
                ),
                ("$prev_pageview_duration", &seconds.to_string()),
            ],
        );
    }

    /// The events of one step: its page view (and its own event, when it is
    /// not a page view), clicks, and the page leave (written here only when
    /// `leave` is set). Returns when it ended and when it is left.
    #[allow(clippy::too_many_arguments)]
    fn step_page(
        &mut self,
        at: i64,
        person: u32,
        step: usize,
        referrer: usize,
        leave: bool,
        words: &mut Vocabulary,
        log: &mut EventLog,
    ) -> (i64, i64) {
        let mut t = at;
        if let Some(view) = words.steps[step].view {
            log.push(
                words.pageview,
                Row {
                    ms: t,
                    person,
                    props: view,
                },
            );
            t += 1_000 + self.rng.random_range(0..20_000);
        }
        let (device, browser) = device_of(person);
        let ids = &words.steps[step];
        let event = ids.event;
        let props = *words
            .step_props
            .entry((step, device, browser, referrer))
            .or_insert_with(|| {
                let mut p = self.funnel.steps[step].filters.clone();
                p.entry("$pathname".into())
                    .or_insert_with(|| ids.path.clone());
                p.insert("$device_type".into(), DEVICES[device].into());
                p.insert("$browser".into(), BROWSERS[browser].into());
                p.insert("$referring_domain".into(), REFERRERS[referrer].into());
                log.props_id(&p)
            });
        log.push(
            event,
            Row {
                ms: t,
                person,
                props,
            },
        );
        let ids = &words.steps[step];
        for _ in 0..self.rng.random_range(0..3) {
            t += 500 + self.rng.random_range(0..15_000);
            log.push(
                words.autocapture,
                Row {
                    ms: t,
                    person,
                    props: ids.click,
                },
            );
        }
        t += 500 + self.rng.random_range(0..10_000);
        if leave {
            log.push(
                words.pageleave,
                Row {
                    ms: t,
                    person,
                    props: ids.page,
                },
            );
        }
        (t, t)
    }

    /// A page outside the funnel: view, clicks, leave. Returns when it ended.
    fn other_page(
        &mut self,
        at: i64,
        person: u32,
        page: usize,
        words: &Vocabulary,
        log: &mut EventLog,
    ) -> i64 {
        let (props, click) = words.others[page];
        let mut t = at;
        log.push(
            words.pageview,
            Row {
                ms: t,
                person,
                props,
            },
        );
        for _ in 0..self.rng.random_range(0..4) {
            t += 1_000 + self.rng.random_range(0..30_000);
            log.push(
                words.autocapture,
                Row {
                    ms: t,
                    person,
                    props: click,
                },
            );
        }
        t += 1_000 + self.rng.random_range(0..60_000);
        log.push(
            words.pageleave,
            Row {
                ms: t,
                person,
                props,
            },
        );
        t + 1_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Selection, StepConfig};
    use std::collections::{HashMap, HashSet};

    pub(crate) fn signup_funnel() -> FunnelConfig {
        let step = |name: &str, event: &str, path: Option<&str>, files: &[&str]| StepConfig {
            name: name.into(),
            event: event.into(),
            filters: path
                .map(|p| BTreeMap::from([("$pathname".to_string(), p.to_string())]))
                .unwrap_or_default(),
            files: files.iter().map(|f| f.to_string()).collect(),
        };
        FunnelConfig {
            segment_watch: false,
            name: "signup".into(),
            conversion_window: std::time::Duration::from_secs(86_400),
            selection: Selection::LowestRate,
            steps: vec![
                step("Home", "$pageview", Some("/"), &["site/index.html"]),
                step(
                    "Pricing",
                    "$pageview",
                    Some("/pricing"),
                    &["site/pricing.html"],
                ),
                step("Started", "signup_started", None, &["site/signup.html"]),
                step("Done", "signup_completed", None, &[]),
            ],
        }
    }

    #[test]
    fn visitors_behave_as_on_a_real_site() {
        let mut site = Site::new(signup_funnel(), "main", vec![0.45, 0.25, 0.6], 1000.0, 3);
        let mut log = EventLog::default();
        let from: DateTime<Utc> = "2026-03-02T00:00:00Z".parse().expect("time");
        let rates = site.base_rates.clone();
        // Written in uneven pieces, as the world's clock moves.
        let mut t = from;
        for minutes in [7, 90, 600, 1]
            .iter()
            .cycle()
            .take(4 * 28 * 24 * 60 / 698 + 1)
        {
            let next = t + chrono::Duration::minutes(*minutes);
            site.record(t, next, &rates, &mut log);
            t = next;
        }
        let events: Vec<_> = log.all().map(|(e, r)| log.event(e, r)).collect();
        let funnel = site.funnel().clone();
        let step_of = |e: &crate::sandbox::events::Event| {
            funnel.steps.iter().position(|s| {
                s.event == e.event
                    && s.filters
                        .iter()
                        .all(|(k, v)| e.properties.get(k) == Some(v))
            })
        };
        let in_funnel = events.iter().filter(|e| step_of(e).is_some()).count();
        let share = in_funnel as f64 / events.len() as f64;
        assert!(
            (0.1..0.25).contains(&share),
            "funnel events are {share:.3} of all"
        );
        for name in ["$autocapture", "$pageleave"] {
            assert!(events.iter().any(|e| e.event == name), "{name}");
        }

        // Per person, the days they entered the homepage; per person the
        // times of each step.
        let mut times: HashMap<(&str, usize), Vec<i64>> = HashMap::new();
        for e in &events {
            if let Some(s) = step_of(e) {
                times
                    .entry((e.person_id.as_str(), s))
                    .or_default()
                    .push(e.timestamp.timestamp());
            }
        }
        let entrants: Vec<_> = times.iter().filter(|((_, s), _)| *s == 1).collect();
        let several_days = entrants
            .iter()
            .filter(|(_, ts)| ts.iter().map(|t| t / 86_400).collect::<HashSet<_>>().len() > 1)
            .count();
        let returning = several_days as f64 / entrants.len() as f64;
        assert!(
            returning > 0.15,
            "{returning:.3} of pricing visitors came on several days"
        );
        // Half the funnel visits are by people who came before.
        let (visits, returning) = site.visits();
        let share = returning as f64 / visits as f64;
        assert!((0.47..0.53).contains(&share), "{share:.3} returning visits");
        // Delays from a pricing view to the next signup start of the person.
        let mut delays: Vec<i64> = Vec::new();
        for ((person, _), ts) in &entrants {
            let Some(next) = times.get(&(person, 2)) else {
                continue;
            };
            for t in *ts {
                if let Some(d) = next.iter().filter(|n| *n >= t).map(|n| n - t).min() {
                    delays.push(d);
                }
            }
        }
        let late =
            |secs: i64| delays.iter().filter(|d| **d > secs).count() as f64 / delays.len() as f64;
        assert!(
            late(3600) > 0.15,
            "{:.3} of conversions after an hour",
            late(3600)
        );
        assert!(late(86_400) > 0.02, "{:.3} after the window", late(86_400));
        // Weekday and hour of day.
        let count = |f: &dyn Fn(&DateTime<Utc>) -> bool| {
            events
                .iter()
                .filter(|e| e.event == "$pageview" && f(&e.timestamp))
                .count() as f64
        };
        let monday = count(&|t| t.weekday() == chrono::Weekday::Mon);
        let saturday = count(&|t| t.weekday() == chrono::Weekday::Sat);
        assert!(monday > 1.2 * saturday, "{monday} {saturday}");
        let afternoon = count(&|t| t.hour() == 15);
        let night = count(&|t| t.hour() == 3);
        assert!(afternoon > 3.0 * night, "{afternoon} {night}");
    }

    #[test]
    fn a_drift_moves_the_rates_slowly() {
        let behaviour = Behaviour {
            drift_per_day: -0.01,
            ..Behaviour::simple()
        };
        let mut site = Site::new(signup_funnel(), "main", vec![0.5, 0.5, 0.5], 2000.0, 5)
            .with_behaviour(behaviour);
        let mut log = EventLog::default();
        let from: DateTime<Utc> = "2026-03-02T00:00:00Z".parse().expect("time");
        site.record(
            from,
            from + chrono::Duration::days(40),
            &[0.5, 0.5, 0.5],
            &mut log,
        );
        let pageview = log.find_event("$pageview").expect("views");
        let rate = |day: i64| {
            let start = from.timestamp_millis() + day * DAY_MS;
            let rows: Vec<_> = log.scan(&[pageview], start, start + DAY_MS - 1).collect();
            let on = |path: &str| {
                rows.iter()
                    .filter(|(_, r)| log.props(r.props)["$pathname"] == path)
                    .count()
            };
            let (home, pricing) = (on("/"), on("/pricing"));
            pricing as f64 / home as f64
        };
        let (early, late) = (rate(1), rate(38));
        assert!(early > 0.45 && late < 0.36, "{early:.3} → {late:.3}");
    }
}
