//! The hub's background task: catches unsynced watchers up from history,
//! answers deferred progress requests and sends periodic progress
//! notifications. Everything a watcher that fell behind needs runs here,
//! so the task is supervised: a panic is logged and the task restarted
//! instead of leaving every slow watcher stuck for good.

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::error;

use super::{WatchHub, SYNC_INTERVAL};

/// Periodic progress notifications are never sent more often than this
/// (etcd's `minWatchProgressInterval`). The task raises a shorter interval
/// to it; configuration refuses one.
pub const MIN_PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// Pause before restarting a task that panicked, so a panic that repeats
/// costs a log line a second rather than a spinning core.
const RESTART_DELAY: Duration = Duration::from_secs(1);

impl WatchHub {
    /// Spawns the background task with progress notifications every
    /// `progress_interval`. It ends once the hub is dropped everywhere else.
    pub fn spawn_task(self: &Arc<Self>, progress_interval: Duration) -> JoinHandle<()> {
        tokio::spawn(supervise(Arc::downgrade(self), move |hub| {
            run(hub, progress_interval)
        }))
    }
}

/// Runs `start(hub)` until it returns, starting it again after a panic.
/// Holds the hub only weakly in between, so that dropping the hub ends it.
async fn supervise<F, Fut>(hub: Weak<WatchHub>, mut start: F)
where
    F: FnMut(Arc<WatchHub>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let Some(strong) = hub.upgrade() else {
            return;
        };
        match tokio::spawn(start(strong)).await {
            Ok(()) => return,
            Err(e) if e.is_panic() => {
                error!("the watch task panicked; restarting it so that watchers keep catching up");
                tokio::time::sleep(RESTART_DELAY).await;
            }
            // Cancelled: the runtime is shutting down.
            Err(_) => return,
        }
    }
}

/// The catch-up loop and the periodic progress notifications.
async fn run(hub: Arc<WatchHub>, progress_interval: Duration) {
    // tokio's interval panics on a zero period, and a tiny one would spin.
    let mut progress = tokio::time::interval(progress_interval.max(MIN_PROGRESS_INTERVAL));
    progress.tick().await;
    loop {
        tokio::select! {
            _ = hub.wake.notified() => {}
            _ = tokio::time::sleep(SYNC_INTERVAL) => {}
            _ = progress.tick() => hub.send_progress_notifications(),
        }
        if Arc::strong_count(&hub) == 1 {
            return;
        }
        hub.sync_unsynced();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use ferrocd_proto::etcdserverpb::WatchCreateRequest;
    use tokio::sync::mpsc;

    use super::*;
    use crate::mvcc::Mvcc;

    fn hub() -> (sled::Db, Arc<WatchHub>) {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let mvcc = Arc::new(Mvcc::open(db.open_tree("state").unwrap()).unwrap());
        (db, WatchHub::new(mvcc, 1 << 20))
    }

    #[tokio::test]
    async fn a_zero_progress_interval_still_sends_progress_notifications() {
        let (_db, hub) = hub();
        let (tx, mut rx) = mpsc::channel(16);
        let stream = hub.open_stream(tx);
        let req = WatchCreateRequest {
            key: b"k".to_vec(),
            progress_notify: true,
            ..Default::default()
        };
        let (id, _) = stream.create(&req).unwrap();
        stream.activate(id);
        let task = hub.spawn_task(Duration::ZERO);
        let note = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a progress notification within 5 s")
            .expect("stream open");
        assert_eq!(note.resp.watch_id, id);
        assert!(!task.is_finished(), "the watch task ended");
    }

    #[tokio::test]
    async fn a_task_that_panics_is_started_again() {
        let (_db, hub) = hub();
        let starts = Arc::new(AtomicUsize::new(0));
        let counted = starts.clone();
        supervise(Arc::downgrade(&hub), move |_hub| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move {
                assert!(n > 0, "first run fails");
            }
        })
        .await;
        assert_eq!(starts.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn the_task_ends_once_the_hub_is_dropped() {
        let (_db, hub) = hub();
        let task = hub.spawn_task(Duration::from_secs(600));
        drop(hub);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the task ended")
            .unwrap();
    }
}
