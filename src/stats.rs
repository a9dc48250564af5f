//! Pure statistics for the revert decision: no IO, no clock.
//!
//! After a merge the monitor looks at the watched step every tick. A z-test
//! repeated at every look would falsely revert about a third of harmless
//! changes, so [`assess`] runs a one-sided normal-mixture sequential
//! probability ratio test (mSPRT, Johari et al., "Always Valid Inference") on
//! a weekday-standardised before/after difference, exactly as the
//! "Statistics" section of DESIGN.md specifies:
//!
//! - per weekday d: baseline `n_bd`, `x_bd`; after the merge `n_td` (and in
//!   total `n_t`, `x_t`), all counted only once their conversion window ended;
//! - `w_d = n_td/n_t`, `p_exp = Σ w_d·p_bd`, `p_t = x_t/n_t`, `θ = p_t − p_exp`;
//! - `p̄ = (x_t + x_b)/(n_t + n_b)`, `V = p̄(1−p̄)·(D_t/n_t + D_b·Σ w_d²/n_bd)`,
//!   with `D_t`, `D_b` the design effects of one person's correlated entries
//!   after and before the merge ([`Counts::design_effect`]; 1 without
//!   per-person sums, which gives DESIGN.md's `V`);
//! - `τ² = (2 ln(1/α) + ln(1 + 2 ln(1/α)))·V*`, `V* = D_b·p_b(1−p_b)(1/n* + 1/n_b)`,
//!   and at least `(1.25·max_relative_drop·p_b)²` ([`MIXTURE_MIN_WIDTH`]);
//! - `Λ = 2·√(V/(V+τ²))·exp(τ²θ²/(2V(V+τ²)))·Φ(−τθ/√(V(V+τ²)))`;
//! - revert iff (`Λ ≥ 1/α`, or at the final look `θ/√V ≤ FINAL_LOOK_Z`) and
//!   `x_t ≥ min_conversions` and `p_t/p_exp − 1 ≤ −max_relative_drop`.
//!
//! Edge cases never produce NaN or infinity (every reported number is finite):
//! - A weekday with post-merge entrants but no baseline entrants is compared
//!   with the pooled baseline rate `p_b`. Since `p_b` is itself a mix of the
//!   other weekdays' rates (weighted by their baseline entrants), that weekday's
//!   weight is handed to the weekdays that have a baseline, in proportion to
//!   their baseline entrants, and the *effective* weights are used in both
//!   `p_exp` and `V`: the variance stays exact for the estimator used.
//! - No baseline, or no post-merge entrants yet: there is nothing to compare,
//!   `Λ = 1`, `θ = 0`, and the interval is the whole possible range.
//! - `p̄` of 0 or 1 (so `V = 0`) or a baseline rate of 0 or 1 (so `τ² = 0`):
//!   the mixture carries no evidence and `Λ = 1`, its limit in both cases.
//! - `Λ` too large for an `f64` is reported as `f64::MAX`.

use std::f64::consts::{LN_2, SQRT_2};

use serde::{Deserialize, Serialize};

/// Days in a week: baseline and post-merge counts come per weekday, 0 = Monday.
pub const WEEKDAYS: usize = 7;

/// The smallest number of post-merge conversions before a revert, by default:
/// below it the normal approximation behind `V` is not to be trusted.
pub const DEFAULT_MIN_CONVERSIONS: u64 = 30;

/// Entries at a step and how many of them reached the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counts {
    pub entrants: u64,
    pub conversions: u64,
    /// Per-person sums behind these entries, when the query returned them.
    /// Baselines stored before they existed have none: their entries are
    /// taken as independent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub people: Option<PersonSums>,
}

/// Per-person sums of one stratum's entries, for the variance of a rate whose
/// entries are not independent: one person's entries (a returning visitor's
/// days) tend to convert together. For person `i` with `n_i`, `x_i` entries
/// and conversions in this stratum and `N_i`, `X_i` over the whole range:
/// `entries_sq = Σ n_i·N_i`, `conversions_entries = Σ x_i·N_i`,
/// `conversions_sq = Σ x_i·X_i`. Added over the strata they are the whole
/// range's `Σ N_i²`, `Σ X_i·N_i`, `Σ X_i²`, so a person who enters on
/// several weekdays still counts as one cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PersonSums {
    pub entries_sq: u64,
    pub conversions_entries: u64,
    pub conversions_sq: u64,
}

impl PersonSums {
    fn add(self, other: PersonSums) -> Self {
        PersonSums {
            entries_sq: self.entries_sq.saturating_add(other.entries_sq),
            conversions_entries: self
                .conversions_entries
                .saturating_add(other.conversions_entries),
            conversions_sq: self.conversions_sq.saturating_add(other.conversions_sq),
        }
    }
}

impl Counts {
    pub fn new(entrants: u64, conversions: u64) -> Self {
        Counts {
            entrants,
            conversions,
            people: None,
        }
    }

    pub fn with_people(self, people: PersonSums) -> Self {
        Counts {
            people: Some(people),
            ..self
        }
    }

    /// Counts with conversions clipped to entrants (a query never produces
    /// more, but a rate above 1 would make `p̄(1−p̄)` negative).
    fn sane(self) -> Self {
        Counts {
            conversions: self.conversions.min(self.entrants),
            ..self
        }
    }

    /// The sum; it has per-person sums only if every part with entries has.
    pub(crate) fn add(self, other: Counts) -> Self {
        let people = match (self.people, other.people) {
            (Some(a), Some(b)) => Some(a.add(b)),
            (a, None) if other.entrants == 0 => a,
            (None, b) if self.entrants == 0 => b,
            _ => None,
        };
        Counts {
            entrants: self.entrants.saturating_add(other.entrants),
            conversions: self.conversions.saturating_add(other.conversions),
            people,
        }
    }

    /// How much larger the variance of the rate is than if every entry were
    /// independent, at a rate of `p`: `Σ(X_i − p·N_i)² / (p(1−p)·Σ N_i)`,
    /// the cluster-robust (ratio estimator) variance over the binomial one.
    /// At least 1 (fewer people than entries can only add variance; below
    /// 1 is noise), and 1 without per-person sums.
    pub fn design_effect(&self, p: f64) -> f64 {
        let Some(s) = self.people else { return 1.0 };
        let binomial = p * (1.0 - p) * self.entrants as f64;
        if binomial.is_nan() || binomial <= 0.0 {
            return 1.0;
        }
        let clustered = s.conversions_sq as f64 - 2.0 * p * s.conversions_entries as f64
            + p * p * s.entries_sq as f64;
        let d = clustered / binomial;
        if d.is_finite() { d.max(1.0) } else { 1.0 }
    }
}

/// When a merged change is reverted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RevertRule {
    /// `false_revert_rate`: the chance of ever reverting a harmless change.
    /// Must lie in (0, 1); values outside are clamped just inside.
    pub alpha: f64,
    /// Revert only when the estimated relative change is at or below `−max_relative_drop`.
    pub max_relative_drop: f64,
    /// Revert only after this many post-merge conversions.
    pub min_conversions: u64,
    /// The mixture's least width in multiples of `max_relative_drop`
    /// ([`MIXTURE_MIN_WIDTH`]; 0 leaves the width tuned to `n*` alone).
    #[serde(default = "mixture_min_width")]
    pub min_width: f64,
}

fn mixture_min_width() -> f64 {
    MIXTURE_MIN_WIDTH
}

impl RevertRule {
    pub fn new(alpha: f64, max_relative_drop: f64) -> Self {
        RevertRule {
            alpha,
            max_relative_drop,
            min_conversions: DEFAULT_MIN_CONVERSIONS,
            min_width: MIXTURE_MIN_WIDTH,
        }
    }

    /// α kept strictly inside (0, 1) so that `1/α` and `ln(1/α)` stay finite and positive.
    fn alpha(&self) -> f64 {
        if self.alpha.is_nan() {
            return 0.05;
        }
        self.alpha.clamp(1e-12, 1.0 - 1e-12)
    }
}

/// What the monitor knows at one tick, counted with right-censoring.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WatchInput {
    /// The baseline window before the merge, per weekday (0 = Monday).
    pub baseline: [Counts; WEEKDAYS],
    /// Since the merge (the deploy hour skipped), per weekday.
    pub post: [Counts; WEEKDAYS],
    /// The baseline is shorter than a week: compare totals, not weekdays.
    pub single_stratum: bool,
    /// `n*`: the entrants expected in half the observation window; sets the
    /// mixture's width. Values below 1 (or NaN) are taken as 1.
    pub expected_half_window_entrants: f64,
    /// The observation's last look: a fixed-horizon z-test
    /// (`θ/√V ≤ FINAL_LOOK_Z`) may also revert, with the same gates.
    #[serde(default)]
    pub final_look: bool,
    /// The early look: the entries made since the conversion window last
    /// ended, counted on a shorter window, with the baseline counted on the
    /// same shorter window. `None` when early looks are off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent: Option<RecentEntries>,
    /// The drift control: the upstream step's counts over the same ranges.
    /// `None` when the watch has no control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<ControlEntries>,
}

/// The upstream step's entries (step `i − 1` to step `i`, untouched by a
/// change to the page behind step `i`), counted like the watched step's:
/// what the site's drift did to a step the change cannot have moved.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ControlEntries {
    pub baseline: [Counts; WEEKDAYS],
    pub post: [Counts; WEEKDAYS],
    /// Its recent entries on the early window, when early looks are on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recent: Option<RecentEntries>,
}

/// Entries too recent for the conversion window, each counted as converted
/// if the next step came within the early window, and the baseline's entries
/// counted the same way (per weekday, like [`WatchInput`]'s).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RecentEntries {
    pub baseline: [Counts; WEEKDAYS],
    pub post: [Counts; WEEKDAYS],
}

/// What the early look added to a tick's assessment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EarlyLook {
    /// Recent entries and how many went on within the early window.
    pub entrants: u64,
    pub conversions: u64,
    /// Their relative change against the baseline on the early window.
    pub relative_change: f64,
    /// The share of the combined estimate's information they carry.
    pub weight: f64,
}

/// What the drift control did to a tick's assessment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ControlLook {
    /// The watched step's own relative change, before the control.
    pub watched_change: f64,
    /// The upstream step's relative change over the same ranges.
    pub upstream_change: f64,
    /// The upstream step's post-merge entries.
    pub upstream_entrants: u64,
}

/// The verdict of one tick, with every number behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    /// Pooled baseline rate `x_b/n_b`.
    pub p_baseline: f64,
    /// The baseline rate re-weighted to the post-merge weekday mix.
    pub p_expected: f64,
    /// `x_t/n_t` (0 without post-merge entrants).
    pub p_post: f64,
    /// `p_post − p_expected`.
    pub theta: f64,
    /// `V`, the variance of `theta` under no change.
    pub variance: f64,
    /// The mixture variance `τ²`.
    pub tau2: f64,
    /// The mixture likelihood ratio `Λ` for a drop.
    pub lambda: f64,
    /// `p_post/p_expected − 1`.
    pub relative_change: f64,
    /// Always-valid (1−α) interval of the relative change: the two-sided
    /// normal-mixture confidence sequence on `theta`, divided by `p_expected`.
    pub relative_interval: (f64, f64),
    pub post_conversions: u64,
    /// The design effects of the post-merge and baseline entries (1 when
    /// entries are independent or the query gave no per-person sums); `V`
    /// and `τ²` include them.
    #[serde(default = "independent")]
    pub design_effect: (f64, f64),
    pub revert: bool,
    /// Which gates held or failed, in words with numbers.
    pub why: String,
    /// The early look's part, when recent entries were combined in:
    /// `lambda`, `relative_change`, `relative_interval` and `revert` are
    /// then those of the combined estimate (the other figures stay the
    /// matured entries').
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early: Option<EarlyLook>,
    /// The drift control's part, when the watch has one: `lambda`,
    /// `relative_change`, `relative_interval` and `revert` are then those of
    /// the step's change relative to the upstream step's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<ControlLook>,
}

fn independent() -> (f64, f64) {
    (1.0, 1.0)
}

impl WatchInput {
    /// The watch's input as the monitor builds it from the config: the
    /// baseline compared weekday by weekday unless it is shorter than a week.
    pub fn configured(
        baseline: [Counts; WEEKDAYS],
        post: [Counts; WEEKDAYS],
        t: &crate::config::Thresholds,
    ) -> WatchInput {
        WatchInput {
            baseline,
            post,
            single_stratum: t.baseline < std::time::Duration::from_secs(7 * 86_400),
            expected_half_window_entrants: expected_half_window(&baseline, t),
            final_look: false,
            recent: None,
            control: None,
        }
    }
}

impl RevertRule {
    /// The rule the config sets.
    pub fn configured(t: &crate::config::Thresholds) -> RevertRule {
        RevertRule::new(t.false_revert_rate, t.max_relative_drop)
    }
}

/// The assessment after each day of post-merge entrants in turn, `days` in
/// date order as `(weekday, counts)`: how the estimate and its always-valid
/// interval moved as the days came in. `input.post` is not used.
pub fn assess_each_day(
    input: &WatchInput,
    days: &[(usize, Counts)],
    rule: &RevertRule,
) -> Vec<Assessment> {
    let mut post = [Counts::default(); WEEKDAYS];
    days.iter()
        .map(|&(weekday, counts)| {
            let d = weekday % WEEKDAYS;
            post[d] = post[d].add(counts);
            assess(&WatchInput { post, ..*input }, rule)
        })
        .collect()
}

/// `n*`: the entrants expected in half the observation window, at the
/// baseline's daily pace.
pub fn expected_half_window(baseline: &[Counts; WEEKDAYS], t: &crate::config::Thresholds) -> f64 {
    let entrants: u64 = baseline.iter().map(|c| c.entrants).sum();
    let per_second = entrants as f64 / t.baseline.as_secs_f64().max(1.0);
    (per_second * t.observation.as_secs_f64() / 2.0).max(1.0)
}

/// The running always-valid p-value: `min(previous, 1/Λ, 1)`. Start with
/// `previous_min = 1.0`.
pub fn p_value(previous_min: f64, lambda: f64) -> f64 {
    let this_tick = if lambda > 0.0 { 1.0 / lambda } else { 1.0 };
    previous_min.min(this_tick).min(1.0)
}

/// The standard normal CDF.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / SQRT_2)
}

/// The fixed-horizon test of the last look reverts when `θ/√V` is at or
/// below this (with the same gates as the always-valid test).
pub const FINAL_LOOK_Z: f64 = -2.5;

/// With early looks on, the always-valid test runs at this share of
/// `false_revert_rate` (the rest pays for the early looks' extra chances;
/// the share is the one the event-level benchmark measured within budget).
pub const EARLY_LOOK_ALPHA_SHARE: f64 = 0.7;

/// The mixture is at least this many times `max_relative_drop` wide,
/// relative to the baseline rate. The test is quickest on drops near its
/// width, and the gate reverts nothing smaller than `max_relative_drop`;
/// where traffic is high, `n*` alone would centre it on drops too small to
/// revert (at 200 conversions a day, about 8%).
pub const MIXTURE_MIN_WIDTH: f64 = 1.25;

/// The mixture's variance `τ² = max((τ²/V*)·V*, (k·max_drop·p_b)²)`, `V* =
/// D_b·p_b(1−p_b)(1/n* + 1/n_b)`, `k` the rule's `min_width`.
fn mixture_width(rule: &RevertRule, p_b: f64, design_effect_b: f64, n_star: f64, n_b: f64) -> f64 {
    let tuned = mixture_scale(rule.alpha())
        * (p_b * (1.0 - p_b)).max(0.0)
        * design_effect_b
        * (1.0 / n_star + 1.0 / n_b);
    let least = rule.min_width.max(0.0) * rule.max_relative_drop.max(0.0) * p_b.clamp(0.0, 1.0);
    // No width (a baseline rate of 0 or 1) stays none: the mixture then
    // carries no evidence.
    if tuned > 0.0 {
        tuned.max(least * least)
    } else {
        tuned
    }
}

/// `τ²/V*` for a given α: `2 ln(1/α) + ln(1 + 2 ln(1/α))`.
pub fn mixture_scale(alpha: f64) -> f64 {
    let l = (1.0 / alpha).ln();
    2.0 * l + (2.0 * l).ln_1p()
}

/// The one-sided (drop) mixture likelihood ratio
/// `Λ = 2·√(V/(V+τ²))·exp(τ²θ²/(2V(V+τ²)))·Φ(−τθ/√(V(V+τ²)))`,
/// computed in logs so that neither factor overflows. Without variance or
/// mixture width there is no evidence: 1.
pub fn mixture_lambda(theta: f64, variance: f64, tau2: f64) -> f64 {
    if !(variance > 0.0 && tau2 > 0.0 && theta.is_finite()) {
        return 1.0;
    }
    // b is the argument of Φ with its sign flipped; note τ²θ²/(2V(V+τ²)) = b²/2.
    let b = tau2.sqrt() * theta / (variance * (variance + tau2)).sqrt();
    let ln_lambda = LN_2 - 0.5 * (tau2 / variance).ln_1p() + ln_scaled_upper_tail(b);
    ln_lambda.exp().min(f64::MAX)
}

/// `ln(exp(b²/2)·Φ(−b))` without overflow or underflow.
fn ln_scaled_upper_tail(b: f64) -> f64 {
    // Up to 30, Φ(−b) ≈ 5e−198 is still a normal f64 and erfc is accurate.
    if b <= 30.0 {
        0.5 * b * b + normal_cdf(-b).ln()
    } else {
        // Mills ratio: exp(b²/2)Φ(−b) = (1 − 1/b² + 3/b⁴ − 15/b⁶ + …)/(b√(2π));
        // the next term is below 2e−10 here.
        let r = 1.0 / (b * b);
        let series = 1.0 - r + 3.0 * r * r - 15.0 * r * r * r;
        -(b * (2.0 * std::f64::consts::PI).sqrt()).ln() + series.ln()
    }
}

/// Radius of the two-sided normal-mixture confidence sequence on `θ`:
/// the θ₀ with `√(V/(V+τ²))·exp(τ²(θ−θ₀)²/(2V(V+τ²))) < 1/α`.
/// `None` when the mixture has no width (no information at all).
fn confidence_radius(variance: f64, tau2: f64, alpha: f64) -> Option<f64> {
    if tau2.is_nan() || tau2 <= 0.0 {
        return None;
    }
    if variance.is_nan() || variance <= 0.0 {
        // Its limit as V → 0: the data pin θ down.
        return Some(0.0);
    }
    let r2 = 2.0 * variance * (variance + tau2) / tau2
        * ((1.0 / alpha).ln() + 0.5 * (tau2 / variance).ln_1p());
    Some(r2.sqrt())
}

/// The weekday strata compared: seven, or one when the baseline is shorter
/// than a week.
fn strata(input: &WatchInput) -> Vec<(Counts, Counts)> {
    let pairs = input
        .baseline
        .iter()
        .zip(input.post.iter())
        .map(|(b, t)| (b.sane(), t.sane()));
    if input.single_stratum {
        let total = pairs.fold((Counts::default(), Counts::default()), |acc, (b, t)| {
            (acc.0.add(b), acc.1.add(t))
        });
        vec![total]
    } else {
        pairs.collect()
    }
}

const WEEKDAY_NAMES: [&str; WEEKDAYS] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// Runs the revert test on one tick's counts: the matured entries, and with
/// an early look the recent entries combined in (see [`combine_early`]).
pub fn assess(input: &WatchInput, rule: &RevertRule) -> Assessment {
    // Early looks are more chances to cross the threshold: they spend part
    // of the false-revert budget, at every look of the watch alike.
    let rule = &match input.recent {
        Some(_) => RevertRule {
            alpha: rule.alpha() * EARLY_LOOK_ALPHA_SHARE,
            ..*rule
        },
        None => *rule,
    };
    let (watched, estimate) = assess_step(
        &WatchInput {
            control: None,
            ..*input
        },
        rule,
    );
    let Some(control) = input.control else {
        return watched;
    };
    let (_, upstream) = assess_step(
        &WatchInput {
            baseline: control.baseline,
            post: control.post,
            recent: control.recent,
            control: None,
            ..*input
        },
        rule,
    );
    let entrants = |counts: &[Counts; WEEKDAYS]| counts.iter().map(|c| c.entrants).sum::<u64>();
    let upstream_entrants =
        entrants(&control.post) + control.recent.map_or(0, |r| entrants(&r.post));
    against_control(
        watched,
        estimate,
        upstream,
        upstream_entrants,
        input.final_look,
        rule,
    )
}

/// A step's relative change as the test judges it: its variance under no
/// change and the mixture's width on the same scale, and the post-merge
/// conversions behind it.
#[derive(Debug, Clone, Copy)]
struct Estimate {
    change: f64,
    variance: f64,
    tau2: f64,
    conversions: u64,
}

impl Estimate {
    /// The matured entries' estimate, `θ/p_exp` with `V/p_exp²`, `τ²/p_b²`.
    fn of(a: &Assessment) -> Estimate {
        let scaled = |x: f64, p: f64| if p > 0.0 { x / (p * p) } else { 0.0 };
        Estimate {
            change: a.relative_change,
            variance: scaled(a.variance, a.p_expected),
            tau2: scaled(a.tau2, a.p_baseline),
            conversions: a.post_conversions,
        }
    }

    /// The gates of the always-valid test on this estimate; `otherwise` is
    /// the interval when the mixture has no width.
    fn gates(&self, rule: &RevertRule, otherwise: (f64, f64)) -> Gates {
        let alpha = rule.alpha();
        Gates {
            lambda: mixture_lambda(self.change, self.variance, self.tau2),
            threshold: 1.0 / alpha,
            conversions: self.conversions,
            min_conversions: rule.min_conversions,
            change: self.change,
            interval: confidence_radius(self.variance, self.tau2, alpha)
                .map_or(otherwise, |radius| {
                    (self.change - radius, self.change + radius)
                }),
            max_drop: rule.max_relative_drop,
        }
    }
}

/// One step's test: the matured entries, and with an early look the recent
/// entries combined in (see [`combine_early`]).
fn assess_step(input: &WatchInput, rule: &RevertRule) -> (Assessment, Estimate) {
    let matured = assess_matured(input, rule);
    let estimate = Estimate::of(&matured);
    let Some(recent) = input.recent else {
        return (matured, estimate);
    };
    if input.final_look {
        return (matured, estimate);
    }
    let part = assess_matured(
        &WatchInput {
            baseline: recent.baseline,
            post: recent.post,
            final_look: false,
            recent: None,
            ..*input
        },
        rule,
    );
    let entrants = recent.post.iter().map(|c| c.entrants).sum();
    // The mixture's width comes from the baseline: with no matured entry
    // yet, the matured assessment has none.
    let baseline = strata(input)
        .iter()
        .fold(Counts::default(), |acc, (b, _)| acc.add(*b));
    let p_b = matured.p_baseline;
    let n_star = input.expected_half_window_entrants.max(1.0);
    let tau2 = match matured.tau2 {
        t if t > 0.0 => t,
        _ if baseline.entrants > 0 => mixture_width(
            rule,
            p_b,
            baseline.design_effect(p_b),
            n_star,
            baseline.entrants as f64,
        ),
        _ => 0.0,
    };
    combine_early(matured, &part, entrants, tau2, rule)
}

/// The early look. An entry whose conversion window has not ended yet says
/// something already: whether its person went on within the first hour
/// (most conversions come within minutes). Such recent entries are compared
/// with the baseline counted on the same early window, and the two relative
/// changes (matured entries on the conversion window, recent ones on the
/// early window) are combined with inverse-variance weights, `r̂ = Σ(r_k/v_k)
/// / Σ(1/v_k)`, `v̂ = 1/Σ(1/v_k)`, `v_k = V_k/p_exp,k²`. A change scales a
/// step's conversions at every delay alike, so both estimate the same
/// relative change; as entries mature they move from the early part to the
/// matured one, and at the final look only matured entries remain. The
/// mixture keeps its width on the relative scale (`τ²/p_b²`) and the
/// same gates apply to the combined estimate. `rule` is already the one
/// with the early looks' share of α.
fn combine_early(
    matured: Assessment,
    part: &Assessment,
    entrants: u64,
    tau2: f64,
    rule: &RevertRule,
) -> (Assessment, Estimate) {
    let alone = Estimate::of(&matured);
    let informative = |a: &Assessment| a.variance > 0.0 && a.p_expected > 0.0;
    if !informative(part) {
        return (matured, alone);
    }
    let recent = Estimate::of(part);
    let (r, v, weight) = if informative(&matured) {
        let information = 1.0 / alone.variance + 1.0 / recent.variance;
        (
            (alone.change / alone.variance + recent.change / recent.variance) / information,
            1.0 / information,
            (1.0 / recent.variance) / information,
        )
    } else {
        (recent.change, recent.variance, 1.0)
    };
    let early = EarlyLook {
        entrants,
        conversions: part.post_conversions,
        relative_change: recent.change,
        weight,
    };
    if matured.p_baseline <= 0.0 || tau2.is_nan() || tau2 <= 0.0 {
        let assessment = Assessment {
            early: Some(early),
            ..matured
        };
        return (assessment, alone);
    }
    let estimate = Estimate {
        change: r,
        variance: v,
        tau2: tau2 / (matured.p_baseline * matured.p_baseline),
        conversions: matured.post_conversions + part.post_conversions,
    };
    let gates = estimate.gates(rule, matured.relative_interval);
    let combined = gates.always_valid() && gates.enough() && gates.dropped();
    let revert = matured.revert || combined;
    let matured_why = match revert && !matured.revert {
        true => format!(
            "revert (early look): {}",
            matured.why.trim_start_matches("no revert: ")
        ),
        false => matured.why.clone(),
    };
    let why = format!(
        "{matured_why}; with the early look ({} recent entries, {} went on within the \
         early window, {} against the baseline on that window, {:.0}% of the information): {}",
        early.entrants,
        early.conversions,
        percent(recent.change),
        100.0 * weight,
        gates.text("conversions", "interval"),
    );
    let assessment = Assessment {
        lambda: if matured.revert {
            matured.lambda
        } else {
            gates.lambda
        },
        relative_change: r,
        relative_interval: gates.interval,
        revert,
        why,
        early: Some(early),
        ..matured
    };
    (assessment, estimate)
}

/// The drift control. A change to the page behind step `i` cannot move the
/// upstream step (`i − 1` to `i`), but whatever moves the whole site (the
/// season, a campaign's visitors, a tracking change) moves both. The test
/// then judges the step's change relative to the upstream step's, `(1 +
/// r_step)/(1 + r_upstream) − 1` (a difference in differences on the
/// relative scale), whose variance under no change is the sum of the two
/// (different entries' outcomes; each already clustered by person). The
/// mixture keeps the step's width; the same gates, and at the final look the
/// same fixed-horizon z-test, apply to the controlled change. The step's own
/// test does not revert by itself: that is what a shared drift would trip.
fn against_control(
    watched: Assessment,
    step: Estimate,
    control: Estimate,
    upstream_entrants: u64,
    final_look: bool,
    rule: &RevertRule,
) -> Assessment {
    let look = ControlLook {
        watched_change: step.change,
        upstream_change: control.change,
        upstream_entrants,
    };
    let watched_why = watched.why.clone();
    let unjudged = |why: &str| Assessment {
        revert: false,
        lambda: 1.0,
        why: format!("no revert: {why}; without the control: {watched_why}"),
        control: Some(look),
        ..watched.clone()
    };
    if !(step.variance > 0.0 && control.variance > 0.0) {
        return unjudged("the step and its upstream step need post-merge entries on both sides");
    }
    if control.change <= -1.0 {
        return unjudged("the upstream step had no conversions after the merge");
    }
    let estimate = Estimate {
        change: (1.0 + step.change) / (1.0 + control.change) - 1.0,
        variance: step.variance + control.variance,
        ..step
    };
    let gates = estimate.gates(rule, watched.relative_interval);
    let z = estimate.change / estimate.variance.sqrt();
    let fixed = final_look && z <= FINAL_LOOK_Z;
    let revert = (gates.always_valid() || fixed) && gates.enough() && gates.dropped();
    let mut why = format!(
        "{} (against the upstream step: the step {}, the upstream step {}, so {} once the \
         upstream's change is taken out): {}",
        if revert { "revert" } else { "no revert" },
        percent(step.change),
        percent(control.change),
        percent(estimate.change),
        gates.text("post-merge conversions", "always-valid interval"),
    );
    if final_look {
        why.push_str(&format!(
            "; last look: z = {} {} {} ({})",
            number(z),
            if fixed { "≤" } else { ">" },
            number(FINAL_LOOK_Z),
            held(fixed)
        ));
    }
    why.push_str(&format!("; without the control: {watched_why}"));
    Assessment {
        lambda: gates.lambda,
        relative_change: estimate.change,
        relative_interval: gates.interval,
        revert,
        why,
        control: Some(look),
        ..watched
    }
}

/// The revert test on the matured entries alone.
fn assess_matured(input: &WatchInput, rule: &RevertRule) -> Assessment {
    let alpha = rule.alpha();
    let strata = strata(input);
    let baseline = strata
        .iter()
        .fold(Counts::default(), |acc, (b, _)| acc.add(*b));
    let post = strata
        .iter()
        .fold(Counts::default(), |acc, (_, t)| acc.add(*t));
    let (n_b, x_b) = (baseline.entrants as f64, baseline.conversions as f64);
    let (n_t, x_t) = (post.entrants as f64, post.conversions as f64);

    if baseline.entrants == 0 || post.entrants == 0 {
        let p_baseline = if n_b > 0.0 { x_b / n_b } else { 0.0 };
        let why = if baseline.entrants == 0 {
            "no revert: the baseline has no entrants, so there is nothing to compare with"
        } else {
            "no revert: no post-merge entrant has finished their conversion window yet"
        };
        return Assessment {
            p_baseline,
            p_expected: p_baseline,
            p_post: 0.0,
            theta: 0.0,
            variance: 0.0,
            tau2: 0.0,
            lambda: 1.0,
            relative_change: 0.0,
            relative_interval: whole_range(p_baseline),
            post_conversions: post.conversions,
            design_effect: independent(),
            revert: false,
            why: why.to_string(),
            early: None,
            control: None,
        };
    }

    // Weights of the post-merge weekday mix; weekdays without a baseline hand
    // their weight to the others in proportion to baseline entrants, which is
    // the same as comparing them with the pooled baseline rate.
    let mut weights: Vec<f64> = strata
        .iter()
        .map(|(b, t)| {
            if b.entrants > 0 {
                t.entrants as f64 / n_t
            } else {
                0.0
            }
        })
        .collect();
    let orphaned: Vec<usize> = (0..strata.len())
        .filter(|&d| strata[d].0.entrants == 0 && strata[d].1.entrants > 0)
        .collect();
    let orphaned_weight: f64 = orphaned
        .iter()
        .map(|&d| strata[d].1.entrants as f64 / n_t)
        .sum();
    for (w, (b, _)) in weights.iter_mut().zip(&strata) {
        *w += orphaned_weight * b.entrants as f64 / n_b;
    }

    let mut p_expected = 0.0;
    let mut baseline_variance_factor = 0.0; // Σ w_d²/n_bd
    for (w, (b, _)) in weights.iter().zip(&strata) {
        if b.entrants > 0 {
            let n_bd = b.entrants as f64;
            p_expected += w * (b.conversions as f64 / n_bd);
            baseline_variance_factor += w * w / n_bd;
        }
    }
    let p_expected = p_expected.clamp(0.0, 1.0);
    let p_baseline = x_b / n_b;
    let p_post = x_t / n_t;
    let theta = p_post - p_expected;

    let p_bar = (x_t + x_b) / (n_t + n_b);
    // One person's entries convert together: each side's variance grows by
    // its design effect, and the mixture's width with the baseline's.
    let design_effect = (post.design_effect(p_bar), baseline.design_effect(p_bar));
    let variance = (p_bar * (1.0 - p_bar)).max(0.0)
        * (design_effect.0 / n_t + design_effect.1 * baseline_variance_factor);
    let n_star = input.expected_half_window_entrants.max(1.0);
    let tau2 = mixture_width(rule, p_baseline, design_effect.1, n_star, n_b);
    let lambda = mixture_lambda(theta, variance, tau2);

    let relative_change = if p_expected > 0.0 {
        theta / p_expected
    } else if theta > 0.0 {
        // Up from a rate of zero: unbounded, kept finite.
        f64::MAX
    } else {
        0.0
    };
    let relative_interval = match confidence_radius(variance, tau2, alpha) {
        Some(r) if p_expected > 0.0 => ((theta - r) / p_expected, (theta + r) / p_expected),
        _ => whole_range(p_expected),
    };

    let threshold = 1.0 / alpha;
    // At the observation's last look one fixed-horizon test is added: it
    // spends little of the error budget (P(Z ≤ −2.5) = 0.6%) and catches
    // drops the always-valid test is still too wide for.
    let z = if variance > 0.0 {
        theta / variance.sqrt()
    } else {
        0.0
    };
    let gates = Gates {
        lambda,
        threshold,
        conversions: post.conversions,
        min_conversions: rule.min_conversions,
        change: relative_change,
        interval: relative_interval,
        max_drop: rule.max_relative_drop,
    };
    let fixed = input.final_look && z <= FINAL_LOOK_Z;
    let evidence = gates.always_valid() || fixed;
    let revert = evidence && gates.enough() && gates.dropped();

    let mut why = format!(
        "{}: {}",
        if revert { "revert" } else { "no revert" },
        gates.text("post-merge conversions", "always-valid interval"),
    );
    if input.final_look {
        why.push_str(&format!(
            "; last look: z = {} {} {} ({})",
            number(z),
            if fixed { "≤" } else { ">" },
            number(FINAL_LOOK_Z),
            held(fixed)
        ));
    }
    if !orphaned.is_empty() && !input.single_stratum {
        let days: Vec<&str> = orphaned.iter().map(|&d| WEEKDAY_NAMES[d]).collect();
        why.push_str(&format!(
            "; {} had no baseline entrants and were compared with the pooled baseline rate",
            days.join(", ")
        ));
    }
    if design_effect.0 > 1.0 || design_effect.1 > 1.0 {
        why.push_str(&format!(
            "; one person's entries counted as correlated (variance ×{} after the merge, ×{} before)",
            number(design_effect.0),
            number(design_effect.1)
        ));
    }
    if tau2 <= 0.0 {
        why.push_str("; the baseline rate is 0 or 1, so the test cannot detect a drop");
    }

    Assessment {
        p_baseline,
        p_expected,
        p_post,
        theta,
        variance,
        tau2,
        lambda,
        relative_change,
        relative_interval,
        post_conversions: post.conversions,
        design_effect,
        revert,
        why,
        early: None,
        control: None,
    }
}

/// The revert test's three gates, for the words of an assessment.
struct Gates {
    lambda: f64,
    threshold: f64,
    conversions: u64,
    min_conversions: u64,
    change: f64,
    interval: (f64, f64),
    max_drop: f64,
}

impl Gates {
    /// "evidence Λ = … ≥ 1/α = … (held); … conversions ≥ 30 (held); change …"
    fn always_valid(&self) -> bool {
        self.lambda >= self.threshold
    }

    fn enough(&self) -> bool {
        self.conversions >= self.min_conversions
    }

    fn dropped(&self) -> bool {
        self.change <= -self.max_drop
    }

    fn text(&self, conversions: &str, interval: &str) -> String {
        let (always_valid, enough, dropped) = (self.always_valid(), self.enough(), self.dropped());
        format!(
            "evidence Λ = {} {} 1/α = {} ({}); {} {conversions} {} {} ({}); \
             change {} ({interval} {} to {}) {} −{} ({})",
            number(self.lambda),
            if always_valid { "≥" } else { "<" },
            number(self.threshold),
            held(always_valid),
            self.conversions,
            if enough { "≥" } else { "<" },
            self.min_conversions,
            held(enough),
            percent(self.change),
            percent(self.interval.0),
            percent(self.interval.1),
            if dropped { "≤" } else { ">" },
            percent(self.max_drop).trim_start_matches('+'),
            held(dropped),
        )
    }
}

/// Every relative change a rate in [0, 1] can show against `p_expected`.
fn whole_range(p_expected: f64) -> (f64, f64) {
    if p_expected > 0.0 {
        (-1.0, 1.0 / p_expected - 1.0)
    } else {
        (-1.0, f64::MAX)
    }
}

fn held(ok: bool) -> &'static str {
    if ok { "held" } else { "failed" }
}

/// A number for people: three significant digits, no exponent below 10⁶.
fn number(x: f64) -> String {
    if x >= 1e6 {
        format!("{x:.2e}")
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn percent(x: f64) -> String {
    if x.abs() >= 1e4 {
        return if x > 0.0 {
            "above +10000%".into()
        } else {
            "below −10000%".into()
        };
    }
    let s = format!("{:+.1}%", x * 100.0);
    s.replacen('-', "−", 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALPHA: f64 = 0.05;

    fn rule() -> RevertRule {
        RevertRule::new(ALPHA, 0.10)
    }

    /// Everything on Monday: with `single_stratum` the weekday is irrelevant.
    fn one_stratum(baseline: Counts, post: Counts, n_star: f64) -> WatchInput {
        let mut input = WatchInput {
            baseline: [Counts::default(); WEEKDAYS],
            post: [Counts::default(); WEEKDAYS],
            single_stratum: true,
            expected_half_window_entrants: n_star,
            final_look: false,
            recent: None,
            control: None,
        };
        input.baseline[0] = baseline;
        input.post[0] = post;
        input
    }

    impl WatchInput {
        fn without_control(self) -> WatchInput {
            WatchInput {
                control: None,
                ..self
            }
        }
    }

    fn close(actual: f64, expected: f64, tolerance: f64) {
        assert!(
            (actual - expected).abs() <= tolerance * expected.abs().max(1e-300),
            "{actual} is not within {tolerance} (relative) of {expected}"
        );
    }

    #[test]
    fn hand_checked_single_stratum() {
        // Baseline 200/1000 (p_b = 0.2), after the merge 75/500 (p_t = 0.15), n* = 250.
        // θ  = 0.15 − 0.2 = −0.05; relative change = −0.05/0.2 = −25%
        // p̄  = 275/1500 = 0.183333
        // V  = 0.183333·0.816667·(1/500 + 1/1000) = 0.149722·0.003 = 4.491667e−4
        // V* = 0.2·0.8·(1/250 + 1/1000) = 0.16·0.005 = 8e−4
        // τ²/V* = 2·ln 20 + ln(1 + 2·ln 20) = 5.991465 + ln 6.991465 = 5.991465 + 1.944690 = 7.936155
        // τ² = 7.936155·8e−4 = 6.348924e−3;  V + τ² = 6.798091e−3
        // 2·√(V/(V+τ²)) = 2·√0.066072 = 0.514091
        // b = τθ/√(V(V+τ²)) = 0.079680·(−0.05)/√(3.053479e−6) = −0.0039840/0.0017474 = −2.279937
        // exp(b²/2) = exp(2.599056) = 13.451037;  Φ(2.279937) = 0.988694
        // Λ = 0.514091·13.451037·0.988694 = 6.83688  (< 1/α = 20: no revert yet)
        // CS radius r = √(2V(V+τ²)/τ²·(ln 20 + ½·ln(1 + τ²/V))) = 0.0647169
        // interval = (θ ∓ r)/p_exp = (−0.114717/0.2, 0.014717/0.2) = (−57.36%, +7.36%)
        let input = one_stratum(Counts::new(1000, 200), Counts::new(500, 75), 250.0);
        let a = assess(&input, &rule());
        close(a.p_baseline, 0.2, 1e-12);
        close(a.p_expected, 0.2, 1e-12);
        close(a.p_post, 0.15, 1e-12);
        close(a.theta, -0.05, 1e-9);
        close(a.variance, 4.491_666_666_666_666e-4, 1e-9);
        close(mixture_scale(ALPHA), 7.936_154_601_737_565, 1e-12);
        close(a.tau2, 6.348_923_681_390_053e-3, 1e-9);
        close(a.lambda, 6.836_881_824_700_96, 1e-7);
        close(a.relative_change, -0.25, 1e-9);
        close(a.relative_interval.0, -0.573_584_749_898_650_9, 1e-7);
        close(a.relative_interval.1, 0.073_584_749_898_650_83, 1e-7);
        assert_eq!(a.post_conversions, 75);
        assert!(!a.revert);
        assert_eq!(
            a.why,
            "no revert: evidence Λ = 6.84 < 1/α = 20.0 (failed); 75 post-merge conversions ≥ 30 \
             (held); change −25.0% (always-valid interval −57.4% to +7.4%) ≤ −10.0% (held)"
        );
    }

    #[test]
    fn at_high_traffic_the_mixture_is_as_wide_as_the_drops_worth_reverting() {
        // p_b = 0.2, n* = 7,000, n_b = 28,000 (200 conversions a day):
        // tuned τ² = 7.936155·0.16·(1/7000 + 1/28000) = 2.267473e−4 (7.5% of p_b),
        // under (1.25·0.10·0.2)² = 6.25e−4 (12.5% of p_b): the floor holds.
        let busy = one_stratum(Counts::new(28_000, 5_600), Counts::new(1_500, 255), 7_000.0);
        close(assess(&busy, &rule()).tau2, 6.25e-4, 1e-12);
        // At n* = 250 (the hand-checked case) the tuned width is already wider.
        let quiet = one_stratum(Counts::new(1000, 200), Counts::new(500, 75), 250.0);
        close(assess(&quiet, &rule()).tau2, 6.348_923_681_390_053e-3, 1e-9);
        // A wider mixture decides sooner on a drop that size: −15% over a
        // day and a half's entries gives Λ = 23.6 ≥ 1/α with the floor, 16.9
        // without it.
        let wide = assess(&busy, &rule());
        let narrow_tau2 = 2.267_473e-4;
        assert!(wide.lambda >= 20.0, "{}", wide.lambda);
        assert!(mixture_lambda(wide.theta, wide.variance, narrow_tau2) < 20.0);
    }

    #[test]
    fn the_final_look_adds_a_fixed_horizon_test() {
        // p̄ = 272/1500; V = p̄(1 − p̄)(1/500 + 1/1000) = 4.4535e−4;
        // θ = 0.144 − 0.2 = −0.056; z = −0.056/0.021103 = −2.65 ≤ −2.5,
        // while Λ = 13.7 < 1/α = 20.
        let mut input = one_stratum(Counts::new(1000, 200), Counts::new(500, 72), 250.0);
        let a = assess(&input, &rule());
        assert!(
            a.lambda < 1.0 / ALPHA,
            "the always-valid test alone holds back"
        );
        assert!(!a.revert);
        assert!(!a.why.contains("last look"), "{}", a.why);
        input.final_look = true;
        let a = assess(&input, &rule());
        assert!(a.revert, "{}", a.why);
        assert!(
            a.why.contains("; last look: z = -2.65 ≤ -2.50 (held)"),
            "{}",
            a.why
        );
        // The same gates hold: under 30 conversions nothing is reverted.
        let few = one_stratum(Counts::new(1000, 200), Counts::new(100, 5), 250.0);
        let a = assess(
            &WatchInput {
                final_look: true,
                recent: None,
                ..few
            },
            &rule(),
        );
        assert!(!a.revert, "{}", a.why);
    }

    #[test]
    fn hand_checked_weekday_without_baseline() {
        // Baseline: Mon 20/100, Tue 30/100. After the merge: Mon 10/50, Wed 5/50.
        // Wednesday has no baseline, so it is compared with the pooled rate 50/200: its
        // weight 0.5 goes to Mon and Tue by baseline entrants (0.25 each):
        // w' = (Mon 0.75, Tue 0.25); p_exp = 0.75·0.2 + 0.25·0.3 = 0.225
        // p_t = 15/100 = 0.15; θ = −0.075; relative change = −1/3
        // p̄ = 65/300 = 0.216667; V = 0.216667·0.783333·(1/100 + 0.75²/100 + 0.25²/100)
        //   = 0.169722·0.01625 = 2.757986e−3
        // τ² = 7.936155·0.25·0.75·(1/50 + 1/200) = 7.936155·0.0046875 = 3.720072e−2
        // b = −1.377955; Λ = 2·√(V/(V+τ²))·exp(b²/2)·Φ(−b) = 1.243584
        let mut input = WatchInput {
            baseline: [Counts::default(); WEEKDAYS],
            post: [Counts::default(); WEEKDAYS],
            single_stratum: false,
            expected_half_window_entrants: 50.0,
            final_look: false,
            recent: None,
            control: None,
        };
        input.baseline[0] = Counts::new(100, 20);
        input.baseline[1] = Counts::new(100, 30);
        input.post[0] = Counts::new(50, 10);
        input.post[2] = Counts::new(50, 5);
        let a = assess(&input, &rule());
        close(a.p_expected, 0.225, 1e-12);
        close(a.theta, -0.075, 1e-9);
        close(a.variance, 2.757_986_111_111_111e-3, 1e-9);
        close(a.tau2, 3.720_072_469_564_484e-2, 1e-9);
        close(a.lambda, 1.243_583_956_271_801_4, 1e-7);
        close(a.relative_change, -1.0 / 3.0, 1e-9);
        assert!(!a.revert);
        assert!(
            a.why.ends_with(
                "Wed had no baseline entrants and were compared with the pooled baseline rate"
            ),
            "{}",
            a.why
        );
    }

    /// Four people with two entries each: two converted both times, two never.
    fn paired(entrants: u64) -> Counts {
        let people = entrants / 2;
        Counts::new(entrants, entrants / 2).with_people(PersonSums {
            entries_sq: 4 * people,
            conversions_entries: 2 * people,
            conversions_sq: 2 * people,
        })
    }

    #[test]
    fn hand_checked_design_effect() {
        // N_i = 2 for all four, X_i = 2, 2, 0, 0; p = 0.5:
        // Σ(X_i − p·N_i)² = 4·1 = 4; p(1−p)·ΣN_i = 0.25·8 = 2; D = 2.
        let c = Counts::new(8, 4).with_people(PersonSums {
            entries_sq: 16,
            conversions_entries: 8,
            conversions_sq: 8,
        });
        close(c.design_effect(0.5), 2.0, 1e-12);
        assert_eq!(paired(8), c);
        // One entry a person: the sums are the counts themselves, D = 1.
        let single = Counts::new(100, 20).with_people(PersonSums {
            entries_sq: 100,
            conversions_entries: 20,
            conversions_sq: 20,
        });
        close(single.design_effect(0.2), 1.0, 1e-12);
        // Without sums, or without variance, entries are taken as independent.
        assert_eq!(Counts::new(8, 4).design_effect(0.5), 1.0);
        assert_eq!(c.design_effect(0.0), 1.0);
    }

    #[test]
    fn sums_add_up_over_strata_only_when_every_stratum_has_them() {
        let with = paired(8);
        assert_eq!(with.add(Counts::default()), with);
        assert_eq!(Counts::default().add(with), with);
        assert_eq!(with.add(with).people.map(|p| p.entries_sq), Some(32));
        assert_eq!(with.add(Counts::new(10, 2)).people, None);
    }

    #[test]
    fn stored_counts_without_sums_still_read_and_write_the_same() {
        let old: Counts = serde_json::from_str(r#"{"entrants":10,"conversions":2}"#).unwrap();
        assert_eq!(old, Counts::new(10, 2));
        assert_eq!(
            serde_json::to_string(&old).unwrap(),
            r#"{"entrants":10,"conversions":2}"#
        );
        let new = paired(8);
        let back: Counts = serde_json::from_str(&serde_json::to_string(&new).unwrap()).unwrap();
        assert_eq!(back, new);
    }

    #[test]
    fn correlated_entries_widen_the_variance_and_weaken_the_evidence() {
        let independent = one_stratum(Counts::new(10_000, 2000), Counts::new(3000, 450), 2500.0);
        let a = assess(&independent, &rule());
        assert_eq!(a.design_effect, (1.0, 1.0));
        // The same counts made by people who enter twice and convert both
        // times or never: each side's variance nearly doubles.
        let clustered = one_stratum(
            Counts::new(10_000, 2000).with_people(PersonSums {
                entries_sq: 20_000,
                conversions_entries: 4000,
                conversions_sq: 4000,
            }),
            Counts::new(3000, 450).with_people(PersonSums {
                entries_sq: 6000,
                conversions_entries: 900,
                conversions_sq: 900,
            }),
            2500.0,
        );
        let c = assess(&clustered, &rule());
        let p_bar = 2450.0 / 13_000.0;
        let deff = |n: f64, x: f64| {
            (2.0 * x - 2.0 * p_bar * 2.0 * x + p_bar * p_bar * 2.0 * n)
                / (p_bar * (1.0 - p_bar) * n)
        };
        close(c.design_effect.0, deff(3000.0, 450.0), 1e-9);
        close(c.design_effect.1, deff(10_000.0, 2000.0), 1e-9);
        assert!(c.design_effect.0 > 1.5 && c.design_effect.1 > 1.5);
        assert!(c.variance > 1.5 * a.variance);
        assert!(c.lambda < a.lambda, "{} vs {}", c.lambda, a.lambda);
        assert_eq!(c.theta, a.theta);
        assert!(
            c.why.contains("one person's entries counted as correlated"),
            "{}",
            c.why
        );
        assert!(!a.why.contains("correlated"), "{}", a.why);
    }

    #[test]
    fn each_day_adds_its_entrants_to_its_weekday() {
        // Two weeks at a steady 20% from Monday on: the last look is the
        // whole watch, and the interval narrows as the days come in.
        let mut input = WatchInput {
            baseline: [Counts::new(1000, 200); WEEKDAYS],
            post: [Counts::default(); WEEKDAYS],
            single_stratum: false,
            expected_half_window_entrants: 7000.0,
            final_look: false,
            recent: None,
            control: None,
        };
        let days: Vec<(usize, Counts)> = (0..14).map(|d| (d % 7, Counts::new(500, 100))).collect();
        let looks = assess_each_day(&input, &days, &rule());
        assert_eq!(looks.len(), 14);
        input.post = [Counts::new(1000, 200); WEEKDAYS];
        assert_eq!(looks[13], assess(&input, &rule()));
        let widths: Vec<f64> = looks
            .iter()
            .map(|a| a.relative_interval.1 - a.relative_interval.0)
            .collect();
        assert!(widths.windows(2).all(|w| w[1] < w[0]), "{widths:?}");
        assert!(assess_each_day(&input, &[], &rule()).is_empty());
    }

    /// Weekday rates (Mon..Sun) with a weekend dip.
    const SEASONAL: [f64; WEEKDAYS] = [0.22, 0.22, 0.21, 0.21, 0.19, 0.15, 0.16];

    #[test]
    fn a_weekend_after_a_friday_merge_is_not_a_drop() {
        // Four weeks of baseline at the seasonal rates; after the merge only Fri–Sun, at
        // exactly the same weekday rates. The pooled comparison sees a drop; the
        // standardised one sees none.
        let mut input = WatchInput {
            baseline: [Counts::default(); WEEKDAYS],
            post: [Counts::default(); WEEKDAYS],
            single_stratum: false,
            expected_half_window_entrants: 7.0 * 1000.0,
            final_look: false,
            recent: None,
            control: None,
        };
        for (day, rate) in input.baseline.iter_mut().zip(SEASONAL) {
            *day = Counts::new(4000, (4000.0 * rate) as u64);
        }
        for (day, rate) in input.post.iter_mut().zip(SEASONAL).skip(4) {
            *day = Counts::new(3000, (3000.0 * rate) as u64);
        }
        let a = assess(&input, &rule());
        close(a.p_expected, (0.19 + 0.15 + 0.16) / 3.0, 1e-12);
        assert!(a.theta.abs() < 1e-12, "θ = {}", a.theta);
        assert!(a.lambda < 1.0);
        assert!(!a.revert);
        let pooled_change = a.p_post / a.p_baseline - 1.0;
        assert!(pooled_change < -0.10, "pooled change {pooled_change}");

        // Unstandardised (one stratum), the same counts do look like a confident drop.
        let pooled = assess(
            &WatchInput {
                single_stratum: true,
                ..input
            },
            &rule(),
        );
        assert!(pooled.revert, "{}", pooled.why);
    }

    #[test]
    fn reverts_when_every_gate_holds() {
        let input = one_stratum(Counts::new(10_000, 2000), Counts::new(3000, 450), 2500.0);
        let a = assess(&input, &rule());
        assert!(a.revert);
        assert!(a.lambda >= 20.0);
        assert!(a.relative_interval.1 < 0.0);
        assert!(a.why.starts_with("revert: evidence Λ = "), "{}", a.why);
        assert!(!a.why.contains("failed"), "{}", a.why);
    }

    #[test]
    fn too_few_conversions_keep_the_change() {
        // Overwhelming evidence from 20 conversions: the count gate alone holds it back.
        let input = one_stratum(Counts::new(100_000, 50_000), Counts::new(100, 20), 200.0);
        let a = assess(&input, &rule());
        assert!(a.lambda >= 20.0);
        assert!(a.relative_change <= -0.10);
        assert!(!a.revert);
        assert!(
            a.why.contains("20 post-merge conversions < 30 (failed)"),
            "{}",
            a.why
        );
    }

    #[test]
    fn a_confident_small_drop_is_kept() {
        // −5% with millions of entrants: certain, but below max_relative_drop.
        let input = one_stratum(
            Counts::new(10_000_000, 2_000_000),
            Counts::new(10_000_000, 1_900_000),
            2_500_000.0,
        );
        let a = assess(&input, &rule());
        assert!(a.lambda >= 1e6);
        assert!(!a.revert);
        assert!(a.why.contains("change −5.0%"), "{}", a.why);
        assert!(a.why.contains("> −10.0% (failed)"), "{}", a.why);
    }

    #[test]
    fn no_data_means_no_evidence() {
        let nothing = one_stratum(Counts::new(1000, 200), Counts::default(), 250.0);
        let a = assess(&nothing, &rule());
        assert_eq!((a.lambda, a.theta, a.revert), (1.0, 0.0, false));
        assert_eq!(a.relative_interval, (-1.0, 4.0));
        assert!(a.why.contains("no post-merge entrant"), "{}", a.why);

        let no_baseline = one_stratum(Counts::default(), Counts::new(500, 10), 250.0);
        let a = assess(&no_baseline, &rule());
        assert_eq!((a.lambda, a.revert), (1.0, false));
        assert!(a.why.contains("baseline has no entrants"), "{}", a.why);
    }

    #[test]
    fn rates_of_zero_or_one_carry_no_evidence() {
        for (baseline, post) in [
            (Counts::new(1000, 0), Counts::new(500, 0)),
            (Counts::new(1000, 1000), Counts::new(500, 500)),
            // Baseline always converted, now half do: τ² = 0, the test has no power.
            (Counts::new(1000, 1000), Counts::new(500, 250)),
            // Up from nothing.
            (Counts::new(1000, 0), Counts::new(500, 50)),
        ] {
            let a = assess(&one_stratum(baseline, post, 250.0), &rule());
            assert_eq!(a.lambda, 1.0, "{baseline:?} {post:?}");
            assert!(!a.revert);
            assert!(all_finite(&a), "{a:?}");
        }
        let up_from_zero = assess(
            &one_stratum(Counts::new(1000, 0), Counts::new(500, 50), 250.0),
            &rule(),
        );
        assert!(up_from_zero.relative_change > 0.0);
    }

    #[test]
    fn running_p_value_only_falls() {
        let mut p = 1.0;
        for (lambda, expected) in [
            (0.5, 1.0),
            (4.0, 0.25),
            (2.0, 0.25),
            (40.0, 0.025),
            (0.0, 0.025),
        ] {
            p = p_value(p, lambda);
            assert_eq!(p, expected);
        }
        assert_eq!(p_value(1.0, f64::NAN), 1.0);
    }

    #[test]
    fn normal_cdf_known_values() {
        close(normal_cdf(0.0), 0.5, 1e-15);
        close(normal_cdf(1.959_963_984_540_054), 0.975, 1e-12);
        close(normal_cdf(-1.0), 0.158_655_253_931_457_05, 1e-12);
    }

    #[test]
    fn both_tail_formulas_agree_where_they_meet() {
        let below = ln_scaled_upper_tail(30.0);
        let above = ln_scaled_upper_tail(30.0 + 1e-9);
        close(above, below, 1e-9);
        // A huge drop: Λ saturates instead of overflowing; a huge rise: Λ → 0.
        assert_eq!(mixture_lambda(-1.0, 1e-300, 1e-3), f64::MAX);
        assert!(mixture_lambda(1.0, 1e-300, 1e-3) < 1e-290);
    }

    fn all_finite(a: &Assessment) -> bool {
        [
            a.p_baseline,
            a.p_expected,
            a.p_post,
            a.theta,
            a.variance,
            a.tau2,
            a.lambda,
            a.relative_change,
            a.relative_interval.0,
            a.relative_interval.1,
        ]
        .iter()
        .all(|x| x.is_finite())
    }

    fn counts(max_entrants: u64) -> impl Strategy<Value = Counts> {
        (0..=max_entrants, 0.0..=1.0f64)
            .prop_map(|(n, share)| Counts::new(n, (n as f64 * share).round() as u64))
    }

    /// A tick's input, with early looks on or off.
    fn watch_input() -> impl Strategy<Value = WatchInput> {
        let max = prop_oneof![Just(3u64), Just(300), Just(1_000_000_000)];
        (max, any::<bool>(), 0.0..1e7f64, any::<bool>()).prop_flat_map(
            |(max, single, n_star, early)| {
                (
                    proptest::array::uniform7(counts(max)),
                    proptest::array::uniform7(counts(max)),
                    proptest::array::uniform7(counts(max)),
                    proptest::array::uniform7(counts(max)),
                )
                    .prop_map(move |(baseline, post, early_baseline, recent)| {
                        WatchInput {
                            baseline,
                            post,
                            single_stratum: single,
                            expected_half_window_entrants: n_star,
                            final_look: false,
                            control: None,
                            recent: early.then_some(RecentEntries {
                                baseline: early_baseline,
                                post: recent,
                            }),
                        }
                    })
            },
        )
    }

    fn revert_rule() -> impl Strategy<Value = RevertRule> {
        (0.001..0.5f64, 0.0..0.5f64, 0..100u64).prop_map(|(alpha, drop, min)| RevertRule {
            alpha,
            max_relative_drop: drop,
            min_conversions: min,
            min_width: MIXTURE_MIN_WIDTH,
        })
    }

    /// Baseline and post-merge weekdays where every weekday's rate fell by the same share.
    fn dropped_weekdays() -> impl Strategy<Value = ([Counts; WEEKDAYS], [Counts; WEEKDAYS])> {
        let weekday = (50..5000u64, 0.01..0.45f64, 0..2000u64);
        (proptest::array::uniform7(weekday), 0.05..0.9f64).prop_map(|(days, drop)| {
            let baseline = days.map(|(n, p, _)| Counts::new(n, (n as f64 * p).round() as u64));
            let post =
                days.map(|(_, p, n)| Counts::new(n, (n as f64 * p * (1.0 - drop)).round() as u64));
            (baseline, post)
        })
    }

    /// An experiment watched with early looks: baseline 20% on the
    /// conversion window and 14% within the early hour.
    fn with_early(post: Counts, recent: Counts) -> WatchInput {
        let mut input = one_stratum(Counts::new(28_000, 5600), post, 7000.0);
        let mut r = RecentEntries {
            baseline: [Counts::default(); WEEKDAYS],
            post: [Counts::default(); WEEKDAYS],
        };
        r.baseline[0] = Counts::new(28_000, 3920);
        r.post[0] = recent;
        input.recent = Some(r);
        input
    }

    #[test]
    fn recent_entries_catch_a_drop_before_any_entry_matured() {
        // A day of entries, none past its day-long window yet; within the
        // first hour 7% went on against the baseline's 14%: −50%.
        let a = assess(
            &with_early(Counts::default(), Counts::new(1000, 70)),
            &rule(),
        );
        assert!(a.revert, "{}", a.why);
        assert!(a.why.starts_with("revert (early look)"), "{}", a.why);
        let early = a.early.expect("the early part");
        assert_eq!((early.entrants, early.conversions), (1000, 70));
        close(early.relative_change, -0.5, 1e-9);
        close(early.weight, 1.0, 1e-12);
        close(a.relative_change, -0.5, 1e-9);
        // The same recent entries without early looks: nothing to judge yet.
        let off = WatchInput {
            recent: None,
            ..with_early(Counts::default(), Counts::new(1000, 70))
        };
        assert!(!assess(&off, &rule()).revert);
    }

    #[test]
    fn matured_and_recent_entries_are_weighted_by_their_information() {
        // Matured: 2000 entries at 20% (no change); recent: 1000 at 14%.
        let a = assess(
            &with_early(Counts::new(2000, 400), Counts::new(1000, 140)),
            &rule(),
        );
        let early = a.early.expect("the early part");
        assert!(early.weight > 0.2 && early.weight < 0.5, "{early:?}");
        assert!(a.relative_change.abs() < 1e-9 && !a.revert, "{}", a.why);
        assert!(a.relative_interval.0 < 0.0 && a.relative_interval.1 > 0.0);
    }

    #[test]
    fn early_looks_spend_part_of_the_false_revert_budget() {
        // Matured entries alone, Λ between 1/α and 1/(0.7α): a revert
        // without early looks, not with them.
        let matured = one_stratum(Counts::new(1000, 200), Counts::new(800, 118), 250.0);
        let alone = assess(&matured, &rule());
        let threshold = 1.0 / ALPHA;
        assert!(
            alone.lambda >= threshold && alone.lambda < threshold / EARLY_LOOK_ALPHA_SHARE,
            "Λ = {}",
            alone.lambda
        );
        assert!(alone.revert);
        let early_on = WatchInput {
            recent: Some(RecentEntries {
                baseline: matured.baseline,
                post: [Counts::default(); WEEKDAYS],
            }),
            ..matured
        };
        let a = assess(&early_on, &rule());
        assert!(!a.revert, "{}", a.why);
        assert!(a.early.is_none(), "no recent entries, nothing combined");
    }

    #[test]
    fn the_final_look_judges_matured_entries_only() {
        let input = WatchInput {
            final_look: true,
            ..with_early(Counts::new(4000, 800), Counts::new(1000, 10))
        };
        let a = assess(&input, &rule());
        assert!(a.early.is_none() && !a.revert, "{}", a.why);
        close(a.relative_change, 0.0, 1e-9);
    }

    /// An experiment watched with the drift control: the step's baseline at
    /// 20% and the upstream step's at 40%, 28,000 entries each.
    fn with_control(post: Counts, upstream: Counts) -> WatchInput {
        let mut input = one_stratum(Counts::new(28_000, 5600), post, 7000.0);
        let mut control = ControlEntries {
            baseline: [Counts::default(); WEEKDAYS],
            post: [Counts::default(); WEEKDAYS],
            recent: None,
        };
        control.baseline[0] = Counts::new(28_000, 11_200);
        control.post[0] = upstream;
        input.control = Some(control);
        input
    }

    #[test]
    fn a_drift_the_whole_site_shares_is_not_a_drop() {
        // Both steps 15% lower than before the merge: the step alone would
        // be reverted, against the upstream step it is not.
        let (step, upstream) = (Counts::new(7000, 1190), Counts::new(14_000, 4760));
        let alone = assess(&with_control(step, upstream).without_control(), &rule());
        assert!(alone.revert, "{}", alone.why);
        let a = assess(&with_control(step, upstream), &rule());
        assert!(!a.revert, "{}", a.why);
        assert!(a.relative_change.abs() < 1e-9, "{}", a.relative_change);
        let c = a.control.expect("the control's part");
        close(c.watched_change, -0.15, 1e-9);
        close(c.upstream_change, -0.15, 1e-9);
        assert_eq!(c.upstream_entrants, 14_000);
        assert!(
            a.why.starts_with("no revert (against the upstream step: the step −15.0%, the upstream step −15.0%, so +0.0%"),
            "{}",
            a.why
        );
        assert!(
            a.why.contains("; without the control: revert: "),
            "{}",
            a.why
        );
    }

    #[test]
    fn a_drop_of_the_step_alone_is_still_caught_with_less_evidence() {
        let (step, upstream) = (Counts::new(7000, 1050), Counts::new(14_000, 5600));
        let a = assess(&with_control(step, upstream), &rule());
        assert!(a.revert, "{}", a.why);
        close(a.relative_change, -0.25, 1e-9);
        // The upstream step's variance is added to the step's.
        let alone = assess(&with_control(step, upstream).without_control(), &rule());
        close(alone.relative_change, -0.25, 1e-9);
        assert!(a.lambda < alone.lambda, "{} ≥ {}", a.lambda, alone.lambda);
        let width = |a: &Assessment| a.relative_interval.1 - a.relative_interval.0;
        assert!(width(&a) > width(&alone));
        // The figures of the step itself stay the step's.
        assert_eq!(
            (a.p_post, a.post_conversions),
            (alone.p_post, alone.post_conversions)
        );
    }

    #[test]
    fn the_control_judges_nothing_without_upstream_entries() {
        let a = assess(
            &with_control(Counts::new(7000, 700), Counts::default()),
            &rule(),
        );
        assert!(!a.revert, "{}", a.why);
        assert!(
            a.why.contains("need post-merge entries on both sides"),
            "{}",
            a.why
        );
        let a = assess(
            &with_control(Counts::new(7000, 700), Counts::new(1000, 0)),
            &rule(),
        );
        assert!(
            !a.revert && a.why.contains("upstream step had no conversions"),
            "{}",
            a.why
        );
    }

    #[test]
    fn the_final_look_tests_the_controlled_change() {
        // −13% against the upstream step: z ≈ −2.6 but Λ < 1/α.
        let input = with_control(Counts::new(2000, 348), Counts::new(4000, 1600));
        let a = assess(&input, &rule());
        assert!(!a.revert && a.lambda < 1.0 / ALPHA, "{}", a.why);
        let last = assess(
            &WatchInput {
                final_look: true,
                ..input
            },
            &rule(),
        );
        assert!(last.revert, "{}", last.why);
        assert!(
            last.why
                .contains("so −13.0% once the upstream's change is taken out")
                && last
                    .why
                    .contains("last look: z = -2.57 ≤ -2.50 (held); without the control"),
            "{}",
            last.why
        );
    }

    #[test]
    fn the_controls_recent_entries_are_combined_like_the_steps() {
        // Early looks on both: the step's recent entries at half the rate
        // within the hour, the upstream step's unchanged.
        let mut input = with_early(Counts::default(), Counts::new(1000, 70));
        let mut control = with_control(Counts::default(), Counts::default())
            .control
            .expect("control");
        let mut recent = RecentEntries {
            baseline: [Counts::default(); WEEKDAYS],
            post: [Counts::default(); WEEKDAYS],
        };
        recent.baseline[0] = Counts::new(28_000, 8400);
        recent.post[0] = Counts::new(2000, 600);
        control.recent = Some(recent);
        input.control = Some(control);
        let a = assess(&input, &rule());
        assert!(a.revert, "{}", a.why);
        let c = a.control.expect("the control's part");
        close(c.watched_change, -0.5, 1e-9);
        close(c.upstream_change, 0.0, 1e-9);
        assert_eq!(c.upstream_entrants, 2000);
        // The same, with the upstream step's recent entries at half its rate too.
        recent.post[0] = Counts::new(2000, 300);
        control.recent = Some(recent);
        input.control = Some(control);
        assert!(!assess(&input, &rule()).revert);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn never_nan_nor_infinite(input in watch_input(), rule in revert_rule()) {
            let a = assess(&input, &rule);
            prop_assert!(all_finite(&a), "{:?}", a);
            prop_assert!(a.lambda >= 0.0);
        }

        #[test]
        fn never_nan_nor_infinite_against_a_control(
            input in watch_input(), upstream in watch_input(), rule in revert_rule()
        ) {
            let control = ControlEntries {
                baseline: upstream.baseline,
                post: upstream.post,
                recent: input.recent.and(upstream.recent),
            };
            let a = assess(&WatchInput { control: Some(control), ..input }, &rule);
            prop_assert!(all_finite(&a), "{:?}", a);
            prop_assert!(a.lambda >= 0.0);
            let c = a.control.expect("the control's part");
            prop_assert!(c.watched_change.is_finite() && c.upstream_change.is_finite());
        }

        #[test]
        fn no_evidence_of_a_drop_when_the_rate_did_not_fall(
            input in watch_input(), rule in revert_rule()
        ) {
            let a = assess(&input, &rule);
            let recent_fell = a.early.is_some_and(|e| e.relative_change < 0.0);
            if a.theta >= 0.0 && !recent_fell {
                prop_assert!(a.lambda <= 1.0, "{:?}", a);
                prop_assert!(!a.revert);
            }
        }

        #[test]
        fn no_revert_when_neither_matured_nor_recent_entries_fell(
            input in watch_input(), rule in revert_rule()
        ) {
            let a = assess(&input, &rule);
            if a.theta >= 0.0 && a.early.is_none_or(|e| e.relative_change >= 0.0) {
                prop_assert!(!a.revert, "{:?}", a);
            }
        }

        #[test]
        fn relative_change_has_the_sign_of_theta(input in watch_input(), rule in revert_rule()) {
            let a = assess(&WatchInput { recent: None, ..input }, &rule);
            prop_assert_eq!(a.relative_change > 0.0, a.theta > 0.0, "{:?}", a);
            prop_assert_eq!(a.relative_change < 0.0, a.theta < 0.0, "{:?}", a);
            prop_assert!(a.relative_interval.0 <= a.relative_change);
            prop_assert!(a.relative_change <= a.relative_interval.1);
        }

        #[test]
        fn a_lower_rate_is_never_less_evidence(
            theta in -0.5..0.5f64, lower_by in 0.0..0.5f64,
            variance in 1e-8..1e-1f64, tau2 in 1e-8..1e-1f64,
        ) {
            prop_assert!(
                mixture_lambda(theta - lower_by, variance, tau2)
                    >= mixture_lambda(theta, variance, tau2) * (1.0 - 1e-12)
            );
        }

        /// More post-merge data at the same rates never lowers Λ once the drop is
        /// visible (|b| ≥ 1, see `more_data_can_lower_a_faint_signal`) and the
        /// pooled rate is at most ½ and above the post-merge rate (so that `V`
        /// falls as data comes in).
        #[test]
        fn more_data_at_the_same_rates_strengthens_a_visible_drop(
            (baseline, post) in dropped_weekdays(),
            n_star in 100.0..1e5f64,
            factor in 2u64..20,
        ) {
            let input = WatchInput { baseline, post, single_stratum: false, expected_half_window_entrants: n_star, final_look: false, recent: None, control: None };
            let a = assess(&input, &rule());
            let b = a.tau2.sqrt() * a.theta / (a.variance * (a.variance + a.tau2)).sqrt();
            let p_bar = |a: &Assessment, n_t: f64, n_b: f64| {
                (a.p_post * n_t + a.p_baseline * n_b) / (n_t + n_b)
            };
            let n_t: f64 = post.iter().map(|c| c.entrants as f64).sum();
            let n_b: f64 = baseline.iter().map(|c| c.entrants as f64).sum();
            prop_assume!(a.theta < 0.0 && b <= -1.0);
            prop_assume!(a.p_post < a.p_baseline && p_bar(&a, n_t, n_b) <= 0.5);
            let more = WatchInput {
                post: post.map(|c| Counts::new(c.entrants * factor, c.conversions * factor)),
                ..input
            };
            let m = assess(&more, &rule());
            prop_assert!((m.theta - a.theta).abs() < 1e-12);
            prop_assert!(m.lambda >= a.lambda * (1.0 - 1e-12), "{} < {}", m.lambda, a.lambda);
        }
    }

    /// Why the property above needs |b| ≥ 1: with a faint drop, more data first
    /// makes "no change" more plausible, and Λ falls before it rises.
    #[test]
    fn more_data_can_lower_a_faint_signal() {
        let small = one_stratum(Counts::new(10_000, 2000), Counts::new(1000, 198), 2500.0);
        let large = one_stratum(Counts::new(10_000, 2000), Counts::new(2000, 396), 2500.0);
        let (a, b) = (assess(&small, &rule()), assess(&large, &rule()));
        assert!(a.theta < 0.0 && (a.theta - b.theta).abs() < 1e-12);
        assert!(b.lambda < a.lambda, "{} vs {}", b.lambda, a.lambda);
    }
}
