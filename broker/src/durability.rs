//! Group commit: one flusher thread makes appended batches durable for everyone at once.
//!
//! Appends mark their partition dirty. The flusher takes the dirty set, notes each partition's
//! log end offset, calls [`Storage::flush`] once, and then advances each partition's high
//! watermark to the offset it noted. Producers waiting with `acks=all` wait for the high
//! watermark to pass their last offset, so all the produces that arrive during one flush share
//! the next one.

use crate::log::PartitionLog;
use crate::metrics::Metrics;
use crate::storage::Storage;
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

type Log<S> = Arc<PartitionLog<<S as Storage>::Log>>;

struct Shared<S: Storage> {
    storage: Arc<S>,
    dirty: Mutex<HashMap<(String, i32), Log<S>>>,
    wake: Condvar,
    stopping: AtomicBool,
    metrics: Arc<Metrics>,
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
    pub fn start(storage: Arc<S>, linger: Duration, metrics: Arc<Metrics>) -> Self {
        let shared = Arc::new(Shared {
            storage,
            dirty: Mutex::new(HashMap::new()),
            wake: Condvar::new(),
            stopping: AtomicBool::new(false),
            metrics,
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

    /// Makes everything durable, stops the flusher and waits for it.
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
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
        loop {
            match shared.storage.flush() {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(error = %e, "flush failed; retrying");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        let took = started.elapsed();
        shared.metrics.flushes.inc();
        shared.metrics.flush_seconds.observe(took.as_secs_f64());
        shared.metrics.flush_partitions.observe(ends.len() as f64);
        for (log, end) in ends {
            log.advance_high_watermark(end);
        }
    }
}
