//! Waiting at start for a dependency that does not answer yet.
//!
//! A service started beside its database (a container platform starts them
//! together) or during a replica set's election would otherwise exit at
//! once and be restarted in a loop. `serve` tries again, with a growing
//! pause, for `server.dependency_wait_seconds`; what a try says is logged,
//! and a refusal (as opposed to no answer) ends the wait at once. The admin
//! commands do not wait: an operator wants the answer now.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::time::Instant;

/// The first pause between two tries; each next one doubles, up to
/// [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(250);
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// The pauses between tries: `backon`'s exponential schedule (as the
/// channels' retries use), endless, since the deadline ends the wait. No
/// jitter: a recovering dependency gets one ping per instance every
/// [`MAX_PAUSE`] at most, and the tests count the tries a wait makes.
fn pauses() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::new()
        .with_min_delay(FIRST_PAUSE)
        .with_max_delay(MAX_PAUSE)
        .with_factor(2.0)
        .without_max_times()
        .build()
}

/// Runs `attempt` until it succeeds, fails in a way `transient` does not
/// accept, or the next try would start after `deadline` (the last failure
/// is returned then; with no deadline, the first). `what` names the
/// dependency in the log.
pub async fn until_it_answers<T, E, F, Fut>(
    what: &str,
    deadline: Option<Instant>,
    transient: impl Fn(&E) -> bool,
    mut attempt: F,
) -> Result<T, E>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let deadline = deadline.unwrap_or(started);
    let mut pauses = pauses();
    let mut tries = 0u32;
    loop {
        tries += 1;
        match attempt().await {
            Ok(v) => {
                if tries > 1 {
                    tracing::info!(
                        dependency = what,
                        tries,
                        waited_ms = started.elapsed().as_millis() as u64,
                        "{what} answers now"
                    );
                }
                return Ok(v);
            }
            Err(e) => {
                let pause = match pauses.next() {
                    Some(pause) if transient(&e) && Instant::now() + pause < deadline => pause,
                    _ => return Err(e),
                };
                tracing::warn!(
                    dependency = what,
                    error = %e,
                    tries,
                    waited_ms = started.elapsed().as_millis() as u64,
                    left_ms = deadline.saturating_duration_since(Instant::now()).as_millis() as u64,
                    "{what} does not answer yet; trying again (server.dependency_wait_seconds)"
                );
                tokio::time::sleep(pause).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn in_secs(s: u64) -> Option<Instant> {
        Some(Instant::now() + Duration::from_secs(s))
    }

    #[tokio::test(start_paused = true)]
    async fn tries_again_until_it_answers() {
        let calls = AtomicU32::new(0);
        let r: Result<u32, String> = until_it_answers(
            "x",
            in_secs(60),
            |_| true,
            || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    n @ 0..=3 => Err(format!("down {n}")),
                    n => Ok(n),
                }
            },
        )
        .await;
        assert_eq!(r, Ok(4));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_wait_with_the_last_failure() {
        let calls = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let r: Result<(), String> = until_it_answers(
            "x",
            in_secs(10),
            |_| true,
            || async { Err(format!("down {}", calls.fetch_add(1, Ordering::SeqCst))) },
        )
        .await;
        let tries = calls.load(Ordering::SeqCst);
        assert_eq!(r, Err(format!("down {}", tries - 1)));
        // 0.25 + 0.5 + 1 + 2 + 4 s of pauses, then the next would pass 10 s.
        assert_eq!(tries, 6);
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_or_no_wait_ends_it_at_once() {
        let calls = AtomicU32::new(0);
        let r: Result<(), String> = until_it_answers(
            "x",
            in_secs(60),
            |e: &String| e != "refused",
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err("refused".to_owned())
            },
        )
        .await;
        assert_eq!(
            (r, calls.load(Ordering::SeqCst)),
            (Err("refused".into()), 1)
        );
        let r: Result<(), String> = until_it_answers(
            "x",
            None,
            |_| true,
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err("down".to_owned())
            },
        )
        .await;
        assert_eq!((r, calls.load(Ordering::SeqCst)), (Err("down".into()), 2));
    }

    #[tokio::test(start_paused = true)]
    async fn dependencies_share_one_deadline() {
        let deadline = in_secs(10);
        let first: Result<(), String> =
            until_it_answers("a", deadline, |_| true, || async { Err("down".to_owned()) }).await;
        assert!(first.is_err());
        // The first used most of the 10 s: the second gets what is left.
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let second: Result<(), String> = until_it_answers(
            "b",
            deadline,
            |_| true,
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err("down".to_owned())
            },
        )
        .await;
        assert!(second.is_err());
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        // 2.25 s were left: tries after 0, 0.25, 0.75 and 1.75 s (a wait of
        // its own would have made 6 over 7.75 s).
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_double_from_a_quarter_second_and_stay_at_five() {
        let started = Instant::now();
        let at = std::sync::Mutex::new(Vec::new());
        let r: Result<(), String> = until_it_answers(
            "x",
            in_secs(30),
            |_| true,
            || async {
                at.lock().unwrap().push(started.elapsed().as_millis());
                Err("down".to_owned())
            },
        )
        .await;
        assert!(r.is_err());
        // Pauses of 0.25, 0.5, 1, 2, 4, then 5 s each while the deadline
        // leaves room: the schedule does not end before the deadline does.
        assert_eq!(
            *at.lock().unwrap(),
            [0, 250, 750, 1750, 3750, 7750, 12750, 17750, 22750, 27750]
        );
    }
}
