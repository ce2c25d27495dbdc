//! The broker's storage as a whole: a failure takes every partition offline, and the
//! maintenance passes (retention, compaction, checkpoints) run over every partition held.

use super::*;

impl<S: Storage> Broker<S> {
    /// Why the storage is failed, while it is (every partition is offline meanwhile).
    pub fn storage_failure(&self) -> Option<String> {
        self.health.failure()
    }

    /// Takes the storage offline with `why`: every partition refuses appends and reads with the
    /// cause, and every waiter wakes. One database holds every partition, so a store or flush
    /// that fails fails them all; a restart reopens the storage (see [`crate::server`]).
    pub fn fail_storage(&self, why: &str) {
        self.health.fail(why);
        for (_, log) in self.held_logs() {
            log.take_offline(why);
        }
    }

    /// Takes the storage offline when a flush has not finished within `limit` (a disk that
    /// stopped answering): the waiters get their answer instead of a timeout.
    pub fn check_flush_stall(&self, limit: Duration) {
        if let Some(running) = self.group_commit.flush_running_for() {
            if running >= limit && self.health.failure().is_none() {
                self.fail_storage(&format!(
                    "a flush has not completed for {} s: the disk does not answer",
                    running.as_secs()
                ));
            }
        }
    }

    /// Applies retention to every partition held, and forgets idle idempotent producers.
    pub fn apply_retention(&self) -> Result<(), BrokerError> {
        let view = self.metadata.read().clone();
        let now = now_ms();
        for ((topic, partition), log) in self.held_logs() {
            let expired = log.expire_producers(now, self.settings.producer_id_expiration_ms);
            if expired > 0 {
                tracing::info!(topic, partition, expired, "forgot idle producers");
            }
            let config = view
                .log_configs
                .get(&topic)
                .copied()
                .unwrap_or(self.settings.log_defaults);
            let storage = self.storage.clone();
            let retained = log.apply_retention(&config, now, &move || storage.flush());
            if let Err(e) = &retained {
                if matches!(e, LogError::Storage(_)) {
                    self.fail_storage(&format!("retention failed: {e}"));
                }
            }
            if let Some(start) = retained.map_err(|e| BrokerError::log(&topic, partition, e))? {
                tracing::info!(
                    topic,
                    partition,
                    log_start_offset = start,
                    "retention deleted batches"
                );
            }
        }
        // The deletions: a restart must not find them again.
        self.storage.flush()?;
        Ok(())
    }

    /// Runs a compaction pass over every compacted partition that is due (see
    /// [`crate::compaction`]); returns how many were cleaned.
    pub fn compact_logs(&self) -> Result<usize, BrokerError> {
        if self.health.failure().is_some() {
            return Ok(0);
        }
        let view = self.metadata.read().clone();
        let now = now_ms();
        let mut cleaned = 0;
        for ((topic, partition), log) in self.held_logs() {
            let config = view
                .log_configs
                .get(&topic)
                .copied()
                .unwrap_or(self.settings.log_defaults);
            if !config.compact {
                continue;
            }
            // What is durable is cleanable: checkpoint it first (made durable, with the pass, by
            // the next flush).
            let pass = log.checkpoint().and_then(|_| log.compact(&config, now));
            match pass {
                Ok(Some(pass)) => {
                    cleaned += 1;
                    tracing::info!(
                        topic,
                        partition,
                        bytes_before = pass.bytes_before,
                        bytes_after = pass.bytes_after,
                        batches_removed = pass.batches_removed,
                        cleaned_offset = pass.cleaned_offset,
                        "compacted"
                    );
                }
                Ok(None) => {}
                Err(e) => {
                    if matches!(e, LogError::Storage(_)) {
                        self.fail_storage(&format!("compaction failed: {e}"));
                    }
                    return Err(BrokerError::log(&topic, partition, e));
                }
            }
        }
        Ok(cleaned)
    }

    /// Checkpoints every partition with anything appended beyond its checkpoint once the
    /// partitions together hold at least `bytes` beyond theirs, or when `all`; then makes the
    /// checkpoints durable. Returns how many were written. This bounds what a restart reads, for
    /// the broker as a whole (see [`crate::log::index`]).
    pub fn checkpoint_logs(&self, bytes: u64, all: bool) -> Result<usize, BrokerError> {
        if self.health.failure().is_some() {
            return Ok(0);
        }
        let logs = self.held_logs();
        let total: u64 = logs.iter().map(|(_, log)| log.unchecked().0).sum();
        if total == 0 || (total < bytes && !all) {
            return Ok(0);
        }
        let mut written = 0;
        let mut checkpointed = Vec::new();
        for ((topic, partition), log) in logs {
            if log.unchecked().0 == 0 {
                continue;
            }
            match log.checkpoint() {
                Ok(Some(end)) => {
                    written += 1;
                    checkpointed.push((log, end));
                }
                Ok(None) => {}
                Err(e) => {
                    self.fail_storage(&format!("checkpoint failed: {e}"));
                    return Err(BrokerError::log(&topic, partition, e));
                }
            }
        }
        if written > 0 {
            self.storage.flush()?;
            for (log, end) in checkpointed {
                log.gaps_checkpointed(end);
            }
        }
        Ok(written)
    }
}
