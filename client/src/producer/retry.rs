//! Retries and the sequence numbers idempotence needs: a partition's retry round (resend in
//! order once nothing is in flight, after a backoff), the delivery timeout, and the numbering
//! (and re-numbering) of batches by Kafka's wrapping sequence arithmetic.

use std::time::{Duration, Instant};

use bytes::Bytes;
use runnel_codec::{ProducerInfo, NO_SEQUENCE};

use super::accumulator::Batch;
use super::sender::{Bump, Sender};
use crate::error::{Error, Result};

/// Kafka's sequence arithmetic: sequences wrap from `i32::MAX` to 0.
fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

/// A retry round of one partition: the batches that must be resent once every in-flight batch
/// of the partition has been answered.
pub(super) struct Round {
    /// Sequence the first resent batch gets; later ones follow it (re-numbering over batches
    /// that failed for good, which the broker never appended).
    pub(super) start_sequence: i32,
    pub(super) retry: Vec<Batch>,
    pub(super) refresh_metadata: bool,
}

const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

pub(super) fn backoff(attempts: u32) -> Duration {
    let factor = 1u32 << attempts.saturating_sub(1).min(4);
    (BACKOFF_BASE * factor).min(BACKOFF_MAX)
}

impl Sender {
    /// Fails queued batches that outlived the delivery timeout (oldest first, so order holds).
    pub(super) fn expire(&mut self, now: Instant) {
        let timeout = self.shared.config.delivery_timeout;
        for p in &mut self.partitions {
            while p.queue.front().is_some_and(|b| b.created + timeout <= now) {
                let Some(mut batch) = p.queue.pop_front() else {
                    break;
                };
                if batch.data.is_some() && batch.base_sequence != NO_SEQUENCE {
                    if batch.maybe_appended {
                        // It may be stored: its sequence numbers are not given to others (the
                        // broker would take a later batch for it and answer with its offset);
                        // the producer takes its next epoch.
                        if self.bump == Bump::None {
                            self.bump = Bump::Wanted(now);
                        }
                    } else {
                        // Never appended (every attempt was refused): later batches take over
                        // its sequence numbers.
                        p.resequence.get_or_insert(batch.base_sequence);
                    }
                }
                let error = Error::DeliveryTimeout {
                    context: batch.context(),
                    timeout_ms: timeout.as_millis() as u64,
                    last_error: batch
                        .last_error
                        .as_ref()
                        .map_or_else(|| "none (still queued)".to_owned(), ToString::to_string),
                };
                self.shared.complete(&mut batch, Err(error));
            }
        }
    }

    /// Numbers (idempotent producer) and builds the batch on its first shipping; re-numbers a
    /// resent batch when earlier ones were dropped.
    pub(super) fn prepare(&mut self, pi: usize, batch: &mut Batch) -> Result<()> {
        let (producer_id, producer_epoch) = (self.producer_id, self.producer_epoch);
        let idempotent = producer_id >= 0;
        let p = &mut self.partitions[pi];
        if batch.data.is_none() {
            let sequence = if idempotent {
                let s = p.resequence.take().unwrap_or(p.next_sequence);
                p.next_sequence = increment_sequence(s, batch.records);
                s
            } else {
                NO_SEQUENCE
            };
            batch.base_sequence = sequence;
            let Some(builder) = batch.builder.take() else {
                return Err(Error::Protocol("batch without records".into()));
            };
            let data = builder
                .with_producer(ProducerInfo {
                    producer_id,
                    producer_epoch,
                    base_sequence: sequence,
                })
                .build()
                .map_err(|source| Error::Codec {
                    context: batch.context(),
                    source,
                })?;
            batch.data = Some(data);
        } else if idempotent {
            if let Some(cursor) = p.resequence {
                if cursor != batch.base_sequence {
                    if let Some(data) = &batch.data {
                        batch.data =
                            Some(patch_producer(data, producer_id, producer_epoch, cursor));
                    }
                    batch.base_sequence = cursor;
                }
                let next = increment_sequence(cursor, batch.records);
                p.resequence = Some(next);
                p.next_sequence = next;
            }
        }
        Ok(())
    }

    /// A batch failed: keep it for the partition's retry round, or fail it for good.
    pub(super) fn on_batch_error(
        &mut self,
        pi: usize,
        mut batch: Batch,
        error: Error,
        now: Instant,
    ) {
        let config = &self.shared.config;
        if batch.resolved {
            // acks=0: nobody waits for it any more.
            tracing::warn!(error = %error, "acks=0 batch failed");
            return;
        }
        let p = &mut self.partitions[pi];
        let code = error.code();
        batch.maybe_appended |= !refused_unappended(code);
        let retriable =
            error.is_retriable() || (code == Some(tonic::Code::Aborted) && p.round.is_some());
        let round = p.round.get_or_insert_with(|| Round {
            start_sequence: batch.base_sequence,
            retry: Vec::new(),
            refresh_metadata: false,
        });
        if retriable
            && batch.attempts <= config.retries
            && batch.created + config.delivery_timeout > now
        {
            round.refresh_metadata |= matches!(
                code,
                Some(
                    tonic::Code::NotFound
                        | tonic::Code::FailedPrecondition
                        | tonic::Code::Unavailable
                )
            );
            tracing::debug!(error = %error, attempts = batch.attempts, "will retry batch");
            batch.last_error = Some(error);
            round.retry.push(batch);
        } else {
            let error = if retriable {
                Error::DeliveryTimeout {
                    context: batch.context(),
                    timeout_ms: config.delivery_timeout.as_millis() as u64,
                    last_error: error.to_string(),
                }
            } else {
                error
            };
            if batch.maybe_appended && batch.base_sequence != NO_SEQUENCE && self.bump == Bump::None
            {
                // As in `expire`: the batches after it keep their numbers until the next epoch.
                self.bump = Bump::Wanted(now);
            }
            self.shared.complete(&mut batch, Err(error));
        }
    }

    /// Once nothing is in flight: asks a broker for the producer's next epoch.
    pub(super) fn start_bump(&mut self, now: Instant) {
        let Bump::Wanted(at) = self.bump else {
            return;
        };
        if at > now || self.partitions.iter().any(|p| !p.in_flight.is_empty()) {
            return;
        }
        self.bump = Bump::Asked;
        let (cluster, tx) = (self.shared.cluster.clone(), self.events_tx.clone());
        let current = (self.producer_id, self.producer_epoch);
        tokio::spawn(async move {
            let result = async {
                let resp = cluster
                    .broker()
                    .await?
                    .init_producer_id(runnel_proto::v1::InitProducerIdRequest {
                        producer_id: Some(current.0),
                        producer_epoch: Some(i32::from(current.1)),
                    })
                    .await
                    .map_err(|s| Error::rpc("the idempotent producer's next epoch", s))?
                    .into_inner();
                let epoch = i16::try_from(resp.producer_epoch).map_err(|_| {
                    Error::Protocol(format!(
                        "producer epoch {} out of range",
                        resp.producer_epoch
                    ))
                })?;
                Ok((resp.producer_id, epoch))
            }
            .await;
            let _ = tx.send(super::sender::Event::Bumped(result));
        });
    }

    /// The next epoch: every partition's sequences start again at 0, the batches built already
    /// are re-numbered in their order and carry the new id and epoch.
    pub(super) fn on_bumped(&mut self, result: Result<(i64, i16)>, now: Instant) {
        let (id, epoch) = match result {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(error = %e, "the idempotent producer's next epoch: trying again");
                self.bump = Bump::Wanted(now + BACKOFF_MAX);
                return;
            }
        };
        tracing::info!(
            producer_id = id,
            producer_epoch = epoch,
            "idempotent producer: a batch may have been stored without an answer; sequences start again under a new epoch"
        );
        self.producer_id = id;
        self.producer_epoch = epoch;
        for p in &mut self.partitions {
            let mut sequence = 0;
            for b in &mut p.queue {
                if let Some(data) = &b.data {
                    b.data = Some(patch_producer(data, id, epoch, sequence));
                    b.base_sequence = sequence;
                    sequence = increment_sequence(sequence, b.records);
                }
            }
            p.next_sequence = sequence;
            p.resequence = None;
        }
        self.bump = Bump::None;
    }

    /// Once a partition has no batch in flight, its retry round ends: the batches to resend go
    /// back to the front of its queue, in order, after a backoff.
    pub(super) fn finish_round(&mut self, pi: usize, now: Instant) {
        let idempotent = self.shared.producer_id >= 0;
        let p = &mut self.partitions[pi];
        let Some(round) = p.round.take() else {
            return;
        };
        // Re-numbering over batches that failed for good, unless the next epoch renumbers all.
        if idempotent && round.start_sequence != NO_SEQUENCE && self.bump == Bump::None {
            p.resequence = Some(round.start_sequence);
        }
        if !round.retry.is_empty() {
            for b in round.retry.into_iter().rev() {
                p.queue.push_front(b);
            }
            p.attempts += 1;
            p.backoff_until = Some(now + backoff(p.attempts));
        }
        if round.refresh_metadata {
            self.refresh_wanted = true;
        }
    }
}

/// Rewrites the producer id, epoch and base sequence of a built batch (and its CRC): when
/// earlier batches of the partition failed for good and later ones take over their sequence
/// numbers, or under the producer's next epoch.
fn patch_producer(
    data: &Bytes,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Bytes {
    const PRODUCER_ID_AT: usize = 43;
    const PRODUCER_EPOCH_AT: usize = 51;
    const BASE_SEQUENCE_AT: usize = 53;
    const CRC_AT: usize = 17;
    const ATTRIBUTES_AT: usize = 21;
    let mut v = data.to_vec();
    if v.len() < runnel_codec::BATCH_HEADER_LEN {
        return data.clone();
    }
    v[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&producer_id.to_be_bytes());
    v[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2].copy_from_slice(&producer_epoch.to_be_bytes());
    v[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = runnel_codec::crc32c(&v[ATTRIBUTES_AT..]);
    v[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(v)
}

/// Whether an error says the broker refused the batch without appending it (a bad batch, not
/// the leader, a sequence or epoch refusal, too large, a full disk...). Anything else (a
/// broken stream, a timeout, an internal error, UNAVAILABLE) leaves the outcome open.
fn refused_unappended(code: Option<tonic::Code>) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Some(
            InvalidArgument
                | NotFound
                | AlreadyExists
                | PermissionDenied
                | FailedPrecondition
                | Aborted
                | OutOfRange
                | Unimplemented
                | DataLoss
                | Unauthenticated
                | ResourceExhausted
        )
    )
}

#[cfg(test)]
mod tests {
    use runnel_codec::{BatchBuilder, Compression};

    use super::*;

    #[test]
    fn sequences_wrap_like_kafka() {
        assert_eq!(increment_sequence(0, 5), 5);
        assert_eq!(increment_sequence(i32::MAX - 1, 1), i32::MAX);
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 2, 5), 2);
    }

    #[test]
    fn patched_sequence_keeps_the_batch_valid() {
        let mut b = BatchBuilder::new(Compression::None, 1).with_producer(ProducerInfo {
            producer_id: 7,
            producer_epoch: 1,
            base_sequence: 10,
        });
        b.append(1, None, Some(b"a"), &[]);
        b.append(2, None, Some(b"b"), &[]);
        let data = b.build().expect("build");
        let patched = patch_producer(&data, 7, 1, 4);
        let h = runnel_codec::validate_batch(&patched).expect("valid CRC");
        assert_eq!(h.base_sequence, 4);
        assert_eq!(h.producer_id, 7);
        assert_eq!(h.records_count, 2);
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(10), Duration::from_secs(1));
    }
}
