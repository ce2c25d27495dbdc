//! Waiting for an append as `acks` asks: stored, or durable (below the high watermark).

use super::*;

/// An append made, whose store and durability can be awaited.
#[derive(Debug)]
pub struct PendingAppend {
    pub(super) topic: String,
    pub(super) partition: i32,
    /// What the append did.
    pub outcome: AppendOutcome,
    pub(super) high_watermark: watch::Receiver<i64>,
    pub(super) offline: Arc<OnceLock<String>>,
    pub(super) timeout: Duration,
    /// The store's result, from the appender thread (none for a duplicate: nothing to store).
    pub(super) stored: Option<oneshot::Receiver<Result<(), BrokerError>>>,
    /// With `min.insync.replicas` above 1: the check of the ISR once the records committed.
    pub(super) in_sync: Option<InSync>,
}

/// How many copies commit a partition now, against its `min.insync.replicas`.
pub(super) struct InSync {
    pub(super) copies: Box<dyn Fn() -> usize + Send + Sync>,
    pub(super) min: i32,
}

impl std::fmt::Debug for InSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InSync")
            .field("min", &self.min)
            .finish_non_exhaustive()
    }
}

impl PendingAppend {
    /// Waits as `acks` asks: durable for acks=all, stored otherwise (acks=0 too, so that what
    /// a producer has in flight bounds what is queued for the appenders).
    pub async fn acked(self, acks: Acks) -> Result<AppendOutcome, BrokerError> {
        match acks {
            Acks::All => self.durable().await,
            Acks::Leader | Acks::None => self.stored().await,
        }
    }

    /// Waits until the appended records are stored (acks=1).
    pub async fn stored(self) -> Result<AppendOutcome, BrokerError> {
        if let Some(stored) = self.stored {
            stored.await.unwrap_or(Err(BrokerError::AppendAborted {
                topic: self.topic,
                partition: self.partition,
            }))?;
        }
        Ok(self.outcome)
    }

    /// Waits until the appended records are durable (below the high watermark), which implies
    /// stored. It does not wait on the store's own answer: that would wake the waiting task
    /// once more per batch, and a failed store takes the log offline, which wakes it anyway.
    pub async fn durable(mut self) -> Result<AppendOutcome, BrokerError> {
        let last = self.outcome.last_offset;
        let offline = &self.offline;
        let wait = self
            .high_watermark
            .wait_for(|hw| *hw > last || offline.get().is_some());
        match tokio::time::timeout(self.timeout, wait).await {
            Ok(Ok(hw)) if *hw > last => {
                drop(hw);
                // Committed, but by fewer copies than the topic asks: Kafka's
                // NOT_ENOUGH_REPLICAS_AFTER_APPEND (an idempotent producer's retry is deduplicated).
                match &self.in_sync {
                    Some(c) if ((c.copies)() as i32) < c.min => {
                        Err(BrokerError::NotEnoughReplicasAfterAppend {
                            topic: self.topic,
                            partition: self.partition,
                            copies: (c.copies)(),
                            min: c.min,
                        })
                    }
                    _ => Ok(self.outcome),
                }
            }
            Ok(Ok(_)) => Err(BrokerError::log(
                &self.topic,
                self.partition,
                LogError::Offline(self.offline.get().cloned().unwrap_or_default()),
            )),
            Ok(Err(_)) => Err(BrokerError::ShuttingDown),
            Err(_) => Err(BrokerError::DurabilityTimeout {
                topic: self.topic,
                partition: self.partition,
                millis: self.timeout.as_millis() as u64,
            }),
        }
    }
}
