//! What goes in and what comes out: the [`ProducerRecord`] to send, the [`DeliveryFuture`]
//! `send` hands back (resolved once per batch, through the batch's shared completion state)
//! and the [`RecordMetadata`] it resolves to.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use runnel_codec::Header;

use super::lock;
use crate::error::Result;

/// A record to send.
#[derive(Debug, Clone, Default)]
pub struct ProducerRecord {
    /// The topic (an `Arc<str>` so that sending many records to one topic copies nothing).
    pub topic: Arc<str>,
    /// The partition; `None` lets the partitioner choose (murmur2 of the key, or sticky).
    pub partition: Option<i32>,
    /// The key; `None` is a null key.
    pub key: Option<Bytes>,
    /// The value; `None` is a null value (a tombstone).
    pub value: Option<Bytes>,
    /// Headers.
    pub headers: Vec<Header>,
    /// Create time in ms since the epoch; `None` means now.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    /// A record with a value and nothing else.
    pub fn new(topic: impl Into<Arc<str>>, value: impl Into<Bytes>) -> Self {
        // Every field spelled out: `..Default::default()` would make a default `Arc<str>` (a
        // shared empty one, reference-counted) only to drop it, twice per record on hot paths.
        ProducerRecord {
            topic: topic.into(),
            partition: None,
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
            timestamp: None,
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the partition.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Adds a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header::new(key, value));
        self
    }

    /// Sets the create time (ms since the epoch).
    pub fn timestamp(mut self, timestamp_ms: i64) -> Self {
        self.timestamp = Some(timestamp_ms);
        self
    }
}

/// Where an acknowledged record was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The record's offset; -1 with `acks=0`.
    pub offset: i64,
    /// The record's timestamp: its create time, or the broker's append time for
    /// log-append-time topics.
    pub timestamp: i64,
}

/// What the broker answered for a whole batch.
#[derive(Debug, Clone, Copy)]
pub(super) struct BatchAck {
    pub(super) base_offset: i64,
    pub(super) log_append_time: i64,
}

/// Completion state of one batch, shared by the delivery futures of its records.
pub(super) struct BatchShared {
    topic: Arc<str>,
    partition: i32,
    result: OnceLock<Result<BatchAck>>,
    wakers: Mutex<Vec<Waker>>,
}

impl BatchShared {
    pub(super) fn new(topic: Arc<str>, partition: i32) -> Self {
        BatchShared {
            topic,
            partition,
            result: OnceLock::new(),
            wakers: Mutex::new(Vec::new()),
        }
    }

    pub(super) fn resolve(&self, result: Result<BatchAck>) {
        let _ = self.result.set(result);
        let wakers = std::mem::take(&mut *lock(&self.wakers));
        for w in wakers {
            w.wake();
        }
    }
}

/// Resolves to the record's [`RecordMetadata`] once its batch is acknowledged (or to the error
/// that failed it). Dropping it does not cancel the send.
pub struct DeliveryFuture {
    pub(super) batch: Arc<BatchShared>,
    pub(super) index: u32,
    pub(super) timestamp: i64,
}

impl fmt::Debug for DeliveryFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeliveryFuture")
            .field("topic", &self.batch.topic)
            .field("partition", &self.batch.partition)
            .field("index", &self.index)
            .field("done", &self.batch.result.get().is_some())
            .finish()
    }
}

impl DeliveryFuture {
    /// The partition the record was appended to.
    pub fn partition(&self) -> i32 {
        self.batch.partition
    }

    fn output(&self, r: &Result<BatchAck>) -> Result<RecordMetadata> {
        match r {
            Ok(ack) => Ok(RecordMetadata {
                topic: self.batch.topic.to_string(),
                partition: self.batch.partition,
                offset: if ack.base_offset >= 0 {
                    ack.base_offset + i64::from(self.index)
                } else {
                    -1
                },
                timestamp: if ack.log_append_time >= 0 {
                    ack.log_append_time
                } else {
                    self.timestamp
                },
            }),
            Err(e) => Err(e.clone()),
        }
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(r) = self.batch.result.get() {
            return Poll::Ready(self.output(r));
        }
        {
            let mut wakers = lock(&self.batch.wakers);
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
        }
        // Re-check: `resolve` sets the result before it takes the wakers.
        match self.batch.result.get() {
            Some(r) => Poll::Ready(self.output(r)),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::producer::block_on;

    #[test]
    fn delivery_future_resolves_per_record_offsets() {
        let shared = Arc::new(BatchShared::new(Arc::from("t"), 3));
        let f0 = DeliveryFuture {
            batch: shared.clone(),
            index: 0,
            timestamp: 10,
        };
        let f2 = DeliveryFuture {
            batch: shared.clone(),
            index: 2,
            timestamp: 12,
        };
        let waiter = std::thread::spawn(move || block_on(f2));
        std::thread::sleep(Duration::from_millis(20));
        shared.resolve(Ok(BatchAck {
            base_offset: 100,
            log_append_time: -1,
        }));
        let m2 = waiter.join().expect("thread").expect("delivered");
        assert_eq!((m2.partition, m2.offset, m2.timestamp), (3, 102, 12));
        let m0 = block_on(f0).expect("delivered");
        assert_eq!(m0.offset, 100);
        assert_eq!(m0.topic, "t");
    }
}
