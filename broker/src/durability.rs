//! Group commit: one flusher thread makes appended batches durable for everyone at once.
//!
//! Appends mark their partition dirty. The flusher takes the dirty set, notes each partition's
//! log end offset, calls [`Storage::flush`] once, and then advances each partition's high
//! watermark to the offset it noted. Producers waiting with `acks=all` wait for the high
//! watermark to pass their last offset, so all the produces that arrive during one flush share
//! the next one.
//!
//! A flush that fails (or panics) is not retried: the storage is marked failed
//! ([`StorageHealth`]), the partitions it was making durable go offline at once, waking their
//! waiters, and so does every partition marked dirty until the storage is reopened. Nothing
//! waits on a disk that refuses writes, and stopping never hangs.

use crate::log::{panic_message, PartitionLog};
use crate::metrics::Metrics;
use crate::storage::Storage;
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

type Log<S> = Arc<PartitionLog<<S as Storage>::Log>>;

/// How long stopping waits for a flush under way.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// Whether the broker's storage takes writes: set failed by the first failed store or flush,
/// for the rest of the process (the broker restarts to reopen it). `/readyz` and `/metrics`
/// report it.
#[derive(Debug)]
pub struct StorageHealth {
    failure: Mutex<Option<String>>,
    metrics: Arc<Metrics>,
}

impl StorageHealth {
    /// Healthy storage, reporting to `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            failure: Mutex::new(None),
            metrics,
        }
    }

    /// Marks the storage failed with `why`; the first cause is kept. Returns whether this call
    /// made it fail.
    pub fn fail(&self, why: &str) -> bool {
        let mut failure = self.failure.lock();
        if failure.is_some() {
            return false;
        }
        tracing::error!(
            cause = why,
            "storage failed: its partitions are offline until it is reopened"
        );
        *failure = Some(why.to_string());
        self.metrics.set_storage_failure(Some(why));
        true
    }

    /// Why the storage failed, while it is failed.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().clone()
    }
}

struct Shared<S: Storage> {
    storage: Arc<S>,
    dirty: Mutex<HashMap<(String, i32), Log<S>>>,
    wake: Condvar,
    stopping: AtomicBool,
    metrics: Arc<Metrics>,
    health: Arc<StorageHealth>,
    /// When the flush under way started.
    flushing_since: Mutex<Option<Instant>>,
    /// Counts flushes: followers report their durable ends after each.
    flushed: tokio::sync::watch::Sender<u64>,
}

/// The group-commit flusher of one broker.
pub struct GroupCommit<S: Storage> {
    shared: Arc<Shared<S>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl<S: Storage> std::fmt::Debug for GroupCommit<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl<S: Storage> GroupCommit<S> {
    /// Starts the flusher. `linger` lets a flush wait for more appends to join it (0: flush as
    /// soon as anything is dirty).
    pub fn start(
        storage: Arc<S>,
        linger: Duration,
        metrics: Arc<Metrics>,
        health: Arc<StorageHealth>,
    ) -> Self {
        let shared = Arc::new(Shared {
            storage,
            dirty: Mutex::new(HashMap::new()),
            wake: Condvar::new(),
            stopping: AtomicBool::new(false),
            metrics,
            health,
            flushing_since: Mutex::new(None),
            flushed: tokio::sync::watch::channel(0).0,
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("runnel-flusher".into())
            .spawn(move || flush_loop(&s, linger))
            .expect("spawning the flusher thread");
        Self {
            shared,
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Records that `log` has appended batches that are not durable yet.
    pub fn mark_dirty(&self, topic: &str, partition: i32, log: &Log<S>) {
        let mut dirty = self.shared.dirty.lock();
        dirty
            .entry((topic.to_string(), partition))
            .or_insert_with(|| log.clone());
        drop(dirty);
        self.shared.wake.notify_one();
    }

    /// A receiver that sees every completed flush.
    pub fn watch_flushed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.flushed.subscribe()
    }

    /// How long the flush under way has been running, if one is.
    pub fn flush_running_for(&self) -> Option<Duration> {
        self.shared.flushing_since.lock().map(|t| t.elapsed())
    }

    /// Makes everything durable, stops the flusher and waits for it, at most `STOP_WAIT` for
    /// a flush stuck on a disk that does not answer.
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        let Some(t) = self.thread.lock().take() else {
            return;
        };
        let deadline = Instant::now() + STOP_WAIT;
        while !t.is_finished() {
            if Instant::now() >= deadline {
                tracing::error!(
                    "the flusher did not stop within {} s: a flush is stuck on the disk",
                    STOP_WAIT.as_secs()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = t.join();
    }
}

impl<S: Storage> Drop for GroupCommit<S> {
    fn drop(&mut self) {
        self.stop();
    }
}

fn flush_loop<S: Storage>(shared: &Shared<S>, linger: Duration) {
    loop {
        let batch = {
            let mut dirty = shared.dirty.lock();
            while dirty.is_empty() && !shared.stopping.load(Ordering::SeqCst) {
                shared.wake.wait(&mut dirty);
            }
            if dirty.is_empty() {
                return;
            }
            if !linger.is_zero() {
                shared.wake.wait_for(&mut dirty, linger);
            }
            std::mem::take(&mut *dirty)
        };
        // Note the stored ends before flushing: everything below them is in storage already.
        let ends: Vec<(Log<S>, i64)> = batch
            .into_values()
            .map(|l| {
                let end = l.stored_end_offset();
                (l, end)
            })
            .collect();
        let started = Instant::now();
        *shared.flushing_since.lock() = Some(started);
        let flushed = match shared.health.failure() {
            Some(why) => Err(why),
            None => match catch_unwind(AssertUnwindSafe(|| shared.storage.flush())) {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("flush failed: {e}")),
                Err(panic) => Err(format!("flush panicked: {}", panic_message(&*panic))),
            },
        };
        *shared.flushing_since.lock() = None;
        if let Err(why) = flushed {
            shared.health.fail(&why);
            for (log, _) in ends {
                log.take_offline(&why);
            }
            continue;
        }
        let took = started.elapsed();
        shared.metrics.flushes.inc();
        shared.metrics.flush_seconds.observe(took.as_secs_f64());
        shared.metrics.flush_partitions.observe(ends.len() as f64);
        for (log, end) in ends {
            log.mark_durable(end);
        }
        shared.flushed.send_modify(|n| *n = n.wrapping_add(1));
    }
}
