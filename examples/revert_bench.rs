//! How often does each revert rule revert a harmless change, and how fast does it
//! catch a real drop? Simulated hourly traffic, looked at every hour as the daemon
//! would, with right-censored counts.
//!
//! Run: `cargo run --release --example revert_bench` (prints a markdown table;
//! `REPS=200` for a quick look). Seeds are fixed: the same command prints the
//! same table.
//!
//! The world: base rate 0.2, a one-day conversion window, 28 days of baseline
//! before the merge. Traffic follows a day curve (busy afternoons, quiet nights)
//! and, in the seasonal scenarios, a weekday curve; the rate follows a weekday
//! curve (a weekend dip). The deploy hour is skipped; at a look at hour τ after
//! the merge only entrants of hours 1..=τ−25 count (their window has ended).
//!
//! The rules, each with the same gates (≥ 30 post-merge conversions, relative
//! change ≤ −10%), α = 0.05:
//! - funnelfix: `stats::assess`, the weekday-standardised mSPRT, every hour;
//! - naive: a one-sided pooled two-proportion z-test, every hour;
//! - fixed: the same z-test, once, at day 14.

mod common;

use std::time::Instant;

use common::{median_days, pct, share};

use funnelfix::stats::{Counts, MIXTURE_MIN_WIDTH, RevertRule, WEEKDAYS, WatchInput, assess};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const HOURS_PER_DAY: usize = 24;
const BASELINE_DAYS: usize = 28;
const BASE_RATE: f64 = 0.2;
/// Hours after an entrant's hour before their outcome is known (1-day window).
const WINDOW_HOURS: usize = 24;
const ALPHA: f64 = 0.05;
const MAX_RELATIVE_DROP: f64 = 0.10;
const MIN_CONVERSIONS: u64 = 30;
/// The one-sided 95% normal quantile, for the z-tests.
const Z_ALPHA: f64 = 1.644_853_626_951_472_2;
/// The fixed-horizon test looks once, at the end of a 14-day observation.
const FIXED_LOOK_DAY: usize = 14;
/// The look at which 14 whole days of post-merge entrants (after the deploy
/// hour) have finished their conversion window.
const MATURED_14_DAYS: usize = 14 * HOURS_PER_DAY + 1 + WINDOW_HOURS;
/// `n*` is the entrants of half of a 14-day observation window.
const HALF_WINDOW_DAYS: f64 = 7.0;

/// Traffic and rate multipliers per weekday (Monday first).
#[derive(Clone, Copy)]
struct WeekProfile {
    traffic: [f64; WEEKDAYS],
    rate: [f64; WEEKDAYS],
}

impl WeekProfile {
    /// The traffic-weighted mean rate multiplier: rates are divided by it, so
    /// that every profile converts `BASE_RATE` of its traffic over a week.
    fn mean_rate(&self) -> f64 {
        let converted: f64 = self.traffic.iter().zip(self.rate).map(|(t, r)| t * r).sum();
        converted / self.traffic.iter().sum::<f64>()
    }
}

const FLAT: WeekProfile = WeekProfile {
    traffic: [1.0; WEEKDAYS],
    rate: [1.0; WEEKDAYS],
};

/// Busy weekdays, quiet weekends, and weekend visitors who convert less
/// (after normalisation: rate 0.223 on Monday, 0.152 on Saturday).
const SEASONAL: WeekProfile = WeekProfile {
    traffic: [1.10, 1.10, 1.05, 1.05, 1.00, 0.80, 0.90],
    rate: [1.10, 1.10, 1.05, 1.05, 0.95, 0.75, 0.80],
};

/// Traffic by hour of day (UTC), mean 1.
fn hour_of_day_traffic(hour: usize) -> f64 {
    let phase = (hour as f64 - 9.0) / HOURS_PER_DAY as f64 * std::f64::consts::TAU;
    1.0 + 0.6 * phase.sin()
}

#[derive(Clone, Copy)]
enum MergeDay {
    /// A weekday and hour drawn per replication.
    Any,
    /// Friday, during working hours (drawn per replication).
    Friday,
}

#[derive(Clone, Copy)]
struct Scenario {
    name: &'static str,
    week: WeekProfile,
    merge: MergeDay,
    /// Relative change of the rate after the merge (−0.15 is a 15% drop).
    effect: f64,
    conversions_per_day: f64,
    /// Looks happen every hour for this many hours after the merge.
    watch_hours: usize,
}

/// What each rule did in one replication: the look (hours after the merge) of
/// its revert, if any.
#[derive(Clone, Copy, Default)]
struct Outcome {
    funnelfix: Option<usize>,
    naive: Option<usize>,
    fixed: Option<usize>,
}

/// Knuth's Poisson sampler: fine for the hourly means here (< 100).
fn poisson(rng: &mut SmallRng, mean: f64) -> u64 {
    let limit = (-mean).exp();
    let mut product: f64 = rng.random();
    let mut k = 0;
    while product > limit {
        k += 1;
        product *= rng.random::<f64>();
    }
    k
}

fn binomial(rng: &mut SmallRng, n: u64, p: f64) -> u64 {
    (0..n).filter(|_| rng.random_bool(p)).count() as u64
}

/// One hour of simulated traffic: its weekday and its counts.
#[derive(Clone, Copy)]
struct Hour {
    weekday: usize,
    counts: Counts,
}

fn simulate_hour(rng: &mut SmallRng, s: &Scenario, absolute_hour: usize, effect: f64) -> Hour {
    let weekday = (absolute_hour / HOURS_PER_DAY) % WEEKDAYS;
    let hour = absolute_hour % HOURS_PER_DAY;
    let entrants_per_hour = s.conversions_per_day / BASE_RATE / HOURS_PER_DAY as f64;
    let mean = entrants_per_hour * s.week.traffic[weekday] * hour_of_day_traffic(hour);
    let rate =
        (BASE_RATE * s.week.rate[weekday] / s.week.mean_rate() * (1.0 + effect)).clamp(0.0, 1.0);
    let entrants = poisson(rng, mean);
    Hour {
        weekday,
        counts: Counts::new(entrants, binomial(rng, entrants, rate)),
    }
}

/// One-sided pooled two-proportion z-test for a drop, with the same gates.
fn z_test_reverts(baseline: Counts, post: Counts) -> bool {
    if post.entrants == 0 || post.conversions < MIN_CONVERSIONS {
        return false;
    }
    let (n_b, x_b) = (baseline.entrants as f64, baseline.conversions as f64);
    let (n_t, x_t) = (post.entrants as f64, post.conversions as f64);
    let (p_b, p_t) = (x_b / n_b, x_t / n_t);
    let p_bar = (x_b + x_t) / (n_b + n_t);
    let se = (p_bar * (1.0 - p_bar) * (1.0 / n_t + 1.0 / n_b)).sqrt();
    se > 0.0 && (p_t - p_b) / se <= -Z_ALPHA && p_t / p_b - 1.0 <= -MAX_RELATIVE_DROP
}

fn total(days: &[Counts; WEEKDAYS]) -> Counts {
    days.iter().fold(Counts::default(), |acc, c| {
        Counts::new(acc.entrants + c.entrants, acc.conversions + c.conversions)
    })
}

fn replicate(s: &Scenario, seed: u64) -> Outcome {
    let mut rng = SmallRng::seed_from_u64(seed);
    // Absolute hour 0 is a Monday 00:00, five weeks before the merge week.
    let merge_weekday = match s.merge {
        MergeDay::Any => rng.random_range(0..WEEKDAYS),
        MergeDay::Friday => 4,
    };
    let merge_hour = match s.merge {
        MergeDay::Any => rng.random_range(0..HOURS_PER_DAY),
        MergeDay::Friday => rng.random_range(9..18),
    };
    let merge = (5 * WEEKDAYS + merge_weekday) * HOURS_PER_DAY + merge_hour;

    let mut baseline = [Counts::default(); WEEKDAYS];
    for h in merge - BASELINE_DAYS * HOURS_PER_DAY..merge {
        let hour = simulate_hour(&mut rng, s, h, 0.0);
        let day = &mut baseline[hour.weekday];
        *day = Counts::new(
            day.entrants + hour.counts.entrants,
            day.conversions + hour.counts.conversions,
        );
    }
    let baseline_total = total(&baseline);
    let rule = RevertRule {
        alpha: ALPHA,
        max_relative_drop: MAX_RELATIVE_DROP,
        min_conversions: MIN_CONVERSIONS,
        min_width: MIXTURE_MIN_WIDTH,
    };
    let mut input = WatchInput {
        baseline,
        post: [Counts::default(); WEEKDAYS],
        single_stratum: false,
        expected_half_window_entrants: baseline_total.entrants as f64 / BASELINE_DAYS as f64
            * HALF_WINDOW_DAYS,
        final_look: false,
        recent: None,
        control: None,
    };

    let mut outcome = Outcome::default();
    for look in 1..=s.watch_hours {
        // The entrants of post-merge hour `look − 25` have just finished their
        // window (hour 0, the deploy hour, is skipped).
        if let Some(j) = look.checked_sub(WINDOW_HOURS + 1).filter(|&j| j >= 1) {
            let hour = simulate_hour(&mut rng, s, merge + j, s.effect);
            let day = &mut input.post[hour.weekday];
            *day = Counts::new(
                day.entrants + hour.counts.entrants,
                day.conversions + hour.counts.conversions,
            );
        } else {
            continue;
        }
        if outcome.funnelfix.is_none() && assess(&input, &rule).revert {
            outcome.funnelfix = Some(look);
        }
        let post_total = total(&input.post);
        if outcome.naive.is_none() && z_test_reverts(baseline_total, post_total) {
            outcome.naive = Some(look);
        }
        if look == FIXED_LOOK_DAY * HOURS_PER_DAY && z_test_reverts(baseline_total, post_total) {
            outcome.fixed = Some(look);
        }
        let fixed_done = look >= FIXED_LOOK_DAY * HOURS_PER_DAY;
        if outcome.funnelfix.is_some() && outcome.naive.is_some() && fixed_done {
            break;
        }
    }
    outcome
}

const VOLUMES: [f64; 3] = [10.0, 40.0, 200.0];

fn main() {
    let started = Instant::now();
    let reps_no_change = common::reps(10_000);
    let reps_drop = reps_no_change;

    let no_change = [
        ("stationary", FLAT, MergeDay::Any),
        ("weekday-seasonal", SEASONAL, MergeDay::Any),
        ("weekday-seasonal, Friday merge", SEASONAL, MergeDay::Friday),
    ];
    println!(
        "### Harmless changes: share falsely reverted within 28 days of hourly looks \
         ({reps_no_change} runs per row)\n"
    );
    println!(
        "| scenario | conversions/day | funnelfix (mSPRT) | naive hourly z-test | fixed z-test at day 14 |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (i, (name, week, merge)) in no_change.into_iter().enumerate() {
        for (j, volume) in VOLUMES.into_iter().enumerate() {
            let s = Scenario {
                name,
                week,
                merge,
                effect: 0.0,
                conversions_per_day: volume,
                watch_hours: 28 * HOURS_PER_DAY,
            };
            let out = common::run(reps_no_change, 1000 + 10 * i as u64 + j as u64, |seed| {
                replicate(&s, seed)
            });
            let all = usize::MAX;
            println!(
                "| {} | {volume} | {} | {} | {} |",
                s.name,
                pct(share(&out, all, |o| o.funnelfix)),
                pct(share(&out, all, |o| o.naive)),
                pct(share(&out, all, |o| o.fixed)),
            );
            eprintln!("done: {name} at {volume}/day ({:.0?})", started.elapsed());
        }
    }

    println!(
        "\n### Real drops (merge on any weekday and hour): share caught by day 7 / day 14, \
         median days to catch among those caught by day 14; funnelfix also by day 15 + 1 h, \
         when 14 whole days of entrants have matured ({reps_drop} runs per row)\n"
    );
    println!(
        "| scenario | drop | conversions/day | funnelfix by 7 d | by 14 d | median d | by 15 d | naive by 7 d | by 14 d | median d | fixed (day 14) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let profiles = [("weekday-seasonal", SEASONAL), ("stationary", FLAT)];
    for (k, (name, week)) in profiles.into_iter().enumerate() {
        for (i, drop) in [0.15, 0.30].into_iter().enumerate() {
            for (j, volume) in VOLUMES.into_iter().enumerate() {
                let s = Scenario {
                    name,
                    week,
                    merge: MergeDay::Any,
                    effect: -drop,
                    conversions_per_day: volume,
                    watch_hours: MATURED_14_DAYS,
                };
                let seed = 2000 + 100 * k as u64 + 10 * i as u64 + j as u64;
                let out = common::run(reps_drop, seed, |seed| replicate(&s, seed));
                let (d7, d14) = (7 * HOURS_PER_DAY, 14 * HOURS_PER_DAY);
                println!(
                    "| {} | {:.0}% | {volume} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    s.name,
                    drop * 100.0,
                    pct(share(&out, d7, |o| o.funnelfix)),
                    pct(share(&out, d14, |o| o.funnelfix)),
                    median_days(&out, d14, |o| o.funnelfix),
                    pct(share(&out, MATURED_14_DAYS, |o| o.funnelfix)),
                    pct(share(&out, d7, |o| o.naive)),
                    pct(share(&out, d14, |o| o.naive)),
                    median_days(&out, d14, |o| o.naive),
                    pct(share(&out, d14, |o| o.fixed)),
                );
                eprintln!(
                    "done: {name}, {}% drop at {volume}/day ({:.0?})",
                    drop * 100.0,
                    started.elapsed()
                );
            }
        }
    }
    println!(
        "\nRun time {:.0?} on {} threads.",
        started.elapsed(),
        common::threads()
    );
}
