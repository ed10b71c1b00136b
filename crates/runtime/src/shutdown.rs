//! Turns SIGINT/SIGTERM into a cancellation token, so servers drain instead
//! of the process exiting mid-write, and bounds how long that may take.
//!
//! The deadline (`--shutdown-deadline`, 20 s by default) counts from the
//! signal to the process's exit, below the 30 s Kubernetes and ECS wait
//! before they SIGKILL. Servers get three quarters of it to drain their
//! connections ([`drain_deadline`]); the rest is for the work after the
//! drain (detect's last checkpoint, notify's deliveries in flight). It is
//! set once per process, so every server of `trailhound up` honours it
//! without each service passing it along.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The default deadline from signal to exit.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(20);

static DEADLINE_MS: AtomicU64 = AtomicU64::new(DEFAULT_DEADLINE.as_millis() as u64);

/// Sets the process's shutdown deadline (the binary does, from its flag).
pub fn set_deadline(deadline: Duration) {
    let ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX);
    DEADLINE_MS.store(ms, Ordering::Relaxed);
}

/// The process's shutdown deadline, from signal to exit.
pub fn deadline() -> Duration {
    Duration::from_millis(DEADLINE_MS.load(Ordering::Relaxed))
}

/// The servers' share of the deadline: three quarters of it.
pub fn drain_deadline() -> Duration {
    deadline().mul_f64(0.75)
}

/// Cancels `token` on the first SIGINT or SIGTERM.
pub fn shutdown_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!(deadline = ?deadline(), "shutdown requested");
        token.cancel();
    });
}

/// Waits for the next tick of `tick`, or for `shutdown`: false once it is
/// time to stop. Every periodic background task loops on it, so none
/// outlives a shutdown by more than the work of one tick.
pub async fn next_tick(tick: &mut tokio::time::Interval, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tick.tick() => true,
    }
}

/// Runs `work` (a service) to its end, but no longer than `limit` after
/// `token` is cancelled: past it, whatever is unfinished is abandoned with
/// a warning and `Ok` is returned, so the process exits on time and
/// cleanly (what was acknowledged is durable before the answer: detect's
/// log, ingest's spool).
pub async fn within_deadline<F>(
    token: CancellationToken,
    limit: Duration,
    work: F,
) -> anyhow::Result<()>
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let late = async {
        token.cancelled().await;
        tokio::time::sleep(limit).await;
    };
    tokio::select! {
        done = work => done,
        _ = late => {
            tracing::warn!(deadline = ?limit, "shutdown deadline passed; exiting with work unfinished");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_that_outlives_the_deadline_is_abandoned_on_time() {
        let token = CancellationToken::new();
        let stuck = async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            anyhow::bail!("should have been abandoned")
        };
        let started = std::time::Instant::now();
        token.cancel();
        let r = within_deadline(token, Duration::from_millis(200), stuck).await;
        assert!(r.is_ok(), "{r:?}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }

    #[tokio::test]
    async fn work_is_not_limited_before_shutdown_and_keeps_its_result() {
        let token = CancellationToken::new();
        let slow = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            anyhow::bail!("failed")
        };
        // Longer than the deadline, but no shutdown was asked for.
        let r = within_deadline(token, Duration::from_millis(50), slow).await;
        assert!(r.is_err());
    }

    #[test]
    fn the_servers_get_three_quarters_of_the_deadline() {
        assert_eq!(deadline(), DEFAULT_DEADLINE);
        assert_eq!(drain_deadline(), Duration::from_secs(15));
    }
}
