//! What the revert benchmarks share: running seeded replications on every
//! core and summarising when each rule reverted.

/// Runs `reps` replications over all cores; replication `i` gets its own
/// seed from `seed` and `i`, so the result does not depend on the number of
/// threads. `SEEDS=k` in the environment moves every row to its k-th other
/// fixed set of seeds: a replication on runs no choice was tuned on.
pub fn run<O, F>(reps: usize, seed: u64, replicate: F) -> Vec<O>
where
    O: Default + Clone + Send,
    F: Fn(u64) -> O + Sync,
{
    let set: u64 = std::env::var("SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let seed = seed ^ set.wrapping_mul(0xD1B5_4A32_D192_ED03);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut outcomes = vec![O::default(); reps];
    let chunk = reps.div_ceil(threads).max(1);
    let replicate = &replicate;
    std::thread::scope(|scope| {
        for (c, slice) in outcomes.chunks_mut(chunk).enumerate() {
            scope.spawn(move || {
                for (i, out) in slice.iter_mut().enumerate() {
                    let rep = (c * chunk + i) as u64;
                    *out = replicate(seed ^ rep.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                }
            });
        }
    });
    outcomes
}

/// The share of replications in which `pick` reverted by look `by_hour`.
pub fn share<O>(outcomes: &[O], by_hour: usize, pick: fn(&O) -> Option<usize>) -> f64 {
    let caught = outcomes
        .iter()
        .filter(|o| pick(o).is_some_and(|h| h <= by_hour))
        .count();
    caught as f64 / outcomes.len() as f64
}

/// Median of the revert times (days) among the replications that reverted by `by_hour`.
pub fn median_days<O>(outcomes: &[O], by_hour: usize, pick: fn(&O) -> Option<usize>) -> String {
    let mut hours: Vec<usize> = outcomes
        .iter()
        .filter_map(pick)
        .filter(|&h| h <= by_hour)
        .collect();
    if hours.is_empty() {
        return "–".into();
    }
    hours.sort_unstable();
    // Two decimals: looks are hourly, and a tenth of a day is 2.4 of them.
    format!("{:.2}", hours[hours.len() / 2] as f64 / 24.0)
}

pub fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// `REPS` from the environment, or `default`.
pub fn reps(default: usize) -> usize {
    std::env::var("REPS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(default)
}

pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
