//! Graceful shutdown: SIGTERM or SIGINT flips a watch channel; the worker stops taking
//! messages, finishes and settles the batch in flight, and returns.

use tokio::sync::watch;

/// A channel that turns `true` on the first SIGTERM/SIGINT; the sender lets the host
/// stop itself the same way (a part that failed stops the others).
pub fn on_signal() -> (watch::Sender<bool>, watch::Receiver<bool>) {
    let (tx, rx) = watch::channel(false);
    let signalled = tx.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
        }
        tracing::info!("shutdown requested: finishing the messages in flight");
        let _ = signalled.send(true);
    });
    (tx, rx)
}

/// Sleep for `delay` unless shutdown comes first; false on shutdown. A closed channel
/// (its sender dropped: no shutdown will come) sleeps the whole delay.
pub async fn sleep_or_stop(
    delay: std::time::Duration,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    if *shutdown.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        Ok(()) = shutdown.changed() => !*shutdown.borrow(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[tokio::test]
    async fn a_closed_channel_sleeps_the_whole_delay_and_a_shutdown_ends_it() {
        let (tx, mut rx) = watch::channel(false);
        drop(tx);
        let started = Instant::now();
        assert!(sleep_or_stop(Duration::from_millis(50), &mut rx).await);
        assert!(started.elapsed() >= Duration::from_millis(50));
        let (tx, mut rx) = watch::channel(false);
        let stopping = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            tx.send(true).unwrap();
            tx
        });
        assert!(!sleep_or_stop(Duration::from_secs(60), &mut rx).await);
        stopping.await.unwrap();
    }
}
