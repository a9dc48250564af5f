//! One retry loop shared by the four adapters: how often to try again and
//! how long to wait. Each adapter only says what one try came to (done,
//! worth another try, or not); the loop counts, waits and gives up.
//! Production waits what the service asks; tests and the demo use a policy
//! with short caps so faults cost milliseconds.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

/// What one try came to.
#[derive(Debug)]
pub enum Attempt<T, E> {
    Done(T),
    /// Worth another try, after the wait the service asked for, if any.
    Again {
        error: E,
        asked: Option<Duration>,
    },
    /// Not worth another try.
    Fail(E),
}

/// Why the loop stopped without a result.
#[derive(Debug, PartialEq, Eq)]
pub struct GaveUp<E> {
    pub error: E,
    /// Tries made, the last included.
    pub attempts: u32,
    /// Every try was worth another (the service kept failing), as opposed
    /// to a refusal that no retry would change.
    pub exhausted: bool,
}

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

    /// Runs `once(attempt)` (attempt counts from 1) until it is done, fails,
    /// or `max_attempts` tries were worth another.
    pub async fn run<T, E, F, Fut>(&self, service: &str, mut once: F) -> Result<T, GaveUp<E>>
    where
        E: Display,
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Attempt<T, E>>,
    {
        let max = self.max_attempts.max(1);
        let mut attempt = 1;
        loop {
            match once(attempt).await {
                Attempt::Done(value) => return Ok(value),
                Attempt::Fail(error) => {
                    return Err(GaveUp {
                        error,
                        attempts: attempt,
                        exhausted: false,
                    });
                }
                Attempt::Again { error, .. } if attempt >= max => {
                    return Err(GaveUp {
                        error,
                        attempts: attempt,
                        exhausted: true,
                    });
                }
                Attempt::Again { error, asked } => {
                    let wait = self.delay(attempt, asked);
                    tracing::info!(service, attempt, ?wait, reason = %error, "trying again");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
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

    #[tokio::test(start_paused = true)]
    async fn the_loop_tries_until_done_refused_or_exhausted() {
        let p = RetryPolicy::FAST;
        let done = p
            .run("test", |attempt| async move {
                if attempt < 3 {
                    Attempt::Again {
                        error: "busy",
                        asked: None,
                    }
                } else {
                    Attempt::Done(attempt)
                }
            })
            .await;
        assert_eq!(done, Ok(3));
        let refused: Result<(), _> = p.run("test", |_| async { Attempt::Fail("no") }).await;
        assert_eq!(
            refused,
            Err(GaveUp {
                error: "no",
                attempts: 1,
                exhausted: false
            })
        );
        let exhausted: Result<(), _> = p
            .run("test", |_| async {
                Attempt::Again {
                    error: "down",
                    asked: Some(Duration::from_millis(5)),
                }
            })
            .await;
        assert_eq!(
            exhausted,
            Err(GaveUp {
                error: "down",
                attempts: 4,
                exhausted: true
            })
        );
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
