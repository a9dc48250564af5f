//! The time source the daemon, the demo and the tests share: the system
//! clock, a hand-moved one, or a fast simulated one.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};

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
