//! Appenders: the threads that write produced batches into storage.
//!
//! Storing a batch is synchronous work: sled's insert copies it into its log, and now and then
//! splits a leaf and writes its blob files. For a 64 KiB batch that is a few hundred
//! microseconds. Run on an async worker, it holds that worker for as long. The
//! connection task that reads a producer's next requests and writes its answers then waits
//! behind it: a task woken by a busy worker sits in that worker's LIFO slot, which the idle
//! worker cannot steal. The producer's pipeline stalls on its own answers.
//!
//! So stores run on a few dedicated threads instead; the checks and offsets of an append stay on
//! the request's task. Each partition always goes to the same thread, so its stores keep their
//! arrival order and never contend for the same sled leaf.

use std::hash::{Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// The appender threads of one broker.
pub struct Appenders {
    queues: Vec<mpsc::Sender<Job>>,
}

impl std::fmt::Debug for Appenders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Appenders")
            .field("threads", &self.queues.len())
            .finish()
    }
}

impl Appenders {
    /// Starts `threads` appender threads (at least one).
    pub fn start(threads: usize) -> Self {
        let queues = (0..threads.max(1))
            .map(|i| {
                let (tx, rx) = mpsc::channel::<Job>();
                std::thread::Builder::new()
                    .name(format!("runnel-append-{i}"))
                    .spawn(move || {
                        // Ends when the broker, which holds the senders, is gone. A job that
                        // panics fails only its own request: its result sender is dropped.
                        while let Ok(job) = rx.recv() {
                            if let Err(panic) = catch_unwind(AssertUnwindSafe(job)) {
                                let what = panic
                                    .downcast_ref::<&str>()
                                    .map(|s| (*s).to_string())
                                    .or_else(|| panic.downcast_ref::<String>().cloned())
                                    .unwrap_or_default();
                                tracing::error!(panic = %what, "an append panicked");
                            }
                        }
                    })
                    .expect("spawning an appender thread");
                tx
            })
            .collect();
        Self { queues }
    }

    /// Runs `job` on the thread of partition `(topic, partition)`, after the jobs queued there
    /// before it. The result arrives on the returned receiver.
    pub fn run<T: Send + 'static>(
        &self,
        topic: &str,
        partition: i32,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> oneshot::Receiver<T> {
        let (tx, rx) = oneshot::channel();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (topic, partition).hash(&mut h);
        let queue = &self.queues[(h.finish() % self.queues.len() as u64) as usize];
        // A send cannot fail while `self` holds the queues and the threads catch panics; were it
        // to, the dropped job drops its result sender and the receiver reports it closed.
        let _ = queue.send(Box::new(move || {
            let _ = tx.send(job());
        }));
        rx
    }

    /// Number of appender threads.
    pub fn threads(&self) -> usize {
        self.queues.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_partition_runs_in_submission_order() {
        let appenders = Appenders::start(3);
        let seen = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let receivers: Vec<_> = (0..200)
            .map(|i| {
                let seen = seen.clone();
                appenders.run("t", 1, move || {
                    seen.lock().push(i);
                    i * 2
                })
            })
            .collect();
        for (i, r) in receivers.into_iter().enumerate() {
            assert_eq!(r.await.expect("result"), i * 2);
        }
        assert_eq!(*seen.lock(), (0..200).collect::<Vec<_>>());
        assert_eq!(appenders.threads(), 3);
    }

    #[tokio::test]
    async fn a_panicking_job_fails_alone() {
        let appenders = Appenders::start(1);
        let r = appenders.run("t", 0, || -> i32 { panic!("job failed") });
        assert!(r.await.is_err());
        // The thread goes on with the next job.
        assert_eq!(appenders.run("t", 0, || 7).await.expect("result"), 7);
    }
}
