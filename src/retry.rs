//! One retry policy shared by the adapters: how often to try again and how
//! long to wait. Production waits what the service asks; tests and the demo
//! use a policy with short caps so faults cost milliseconds.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total tries, the first included.
    pub max_attempts: u32,
    /// First backoff; doubled after each failure.
    pub base_delay: Duration,
    /// No single wait is longer than this, whatever the service asks.
    pub max_delay: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl RetryPolicy {
    /// For real services: a few tries, waits up to two minutes as asked.
    pub const SERVICES: RetryPolicy = RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_secs(2),
        max_delay: Duration::from_secs(120),
        timeout: Duration::from_secs(60),
    };

    /// For the twins in tests and the demo: same shape, tiny waits.
    pub const FAST: RetryPolicy = RetryPolicy {
        max_attempts: 4,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(200),
        timeout: Duration::from_secs(10),
    };

    /// The wait before try number `attempt + 1` (attempt counts from 1),
    /// honouring the service's own hint when it gave one.
    pub fn delay(&self, attempt: u32, asked: Option<Duration>) -> Duration {
        let backoff = self
            .base_delay
            .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        asked.unwrap_or(backoff).min(self.max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy::SERVICES;
        assert_eq!(p.delay(1, None), Duration::from_secs(2));
        assert_eq!(p.delay(3, None), Duration::from_secs(8));
        assert_eq!(p.delay(30, None), Duration::from_secs(120));
    }

    #[test]
    fn asked_wait_wins_but_is_capped() {
        let p = RetryPolicy::FAST;
        assert_eq!(
            p.delay(1, Some(Duration::from_millis(50))),
            Duration::from_millis(50)
        );
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(30))),
            Duration::from_millis(200)
        );
    }
}
