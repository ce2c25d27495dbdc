//! Producer settings: [`ProducerConfig`] with Kafka's defaults and its `validate()`, [`Acks`],
//! and the [`LatencyHistogram`] a benchmark can hand in.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use runnel_codec::Compression;

use crate::error::{Error, Result};

/// How many acknowledgements the producer waits for (Kafka's `acks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// `acks=all`: durable on every in-sync replica.
    #[default]
    All,
    /// `acks=1`: appended by the leader.
    Leader,
    /// `acks=0`: fire and forget; delivery futures resolve with offset -1 once shipped.
    None,
}

impl Acks {
    pub(super) fn wire(self) -> runnel_proto::v1::Acks {
        match self {
            Acks::All => runnel_proto::v1::Acks::All,
            Acks::Leader => runnel_proto::v1::Acks::Leader,
            Acks::None => runnel_proto::v1::Acks::None,
        }
    }
}

impl std::str::FromStr for Acks {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "all" | "-1" => Ok(Acks::All),
            "1" | "leader" => Ok(Acks::Leader),
            "0" | "none" => Ok(Acks::None),
            _ => Err(Error::Config(format!("acks `{s}` is not one of all, 1, 0"))),
        }
    }
}

impl fmt::Display for Acks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Acks::All => "all",
            Acks::Leader => "1",
            Acks::None => "0",
        })
    }
}

/// The most batches an idempotent producer may have in flight per partition: the broker
/// remembers the last 64 batches of each producer to recognise retries.
pub const MAX_IDEMPOTENT_IN_FLIGHT: usize = 64;

/// A shared latency histogram (microseconds) the producer records into.
pub type LatencyHistogram = Arc<Mutex<Histogram<u64>>>;

/// Producer settings, in Kafka's terms.
#[derive(Clone)]
pub struct ProducerConfig {
    /// `host:port[,host:port…]` of one or more brokers.
    pub bootstrap: String,
    /// Acknowledgements to wait for.
    pub acks: Acks,
    /// Target size of a batch in bytes (uncompressed). Keep it below 128 KiB: larger batches
    /// are stored out of line by the broker's storage.
    pub batch_size: usize,
    /// How long a batch may wait for more records before it is shipped.
    pub linger: Duration,
    /// Compression of batches.
    pub compression: Compression,
    /// Idempotent producer (producer id + sequence numbers; the broker drops duplicates).
    pub idempotent: bool,
    /// Most batches outstanding per partition (pipelined on the connection). Default 48, not
    /// Kafka's 5: an `acks=all` answer here waits for the data to be on disk, so the more
    /// batches share one flush, the more a single producer writes (on the benchmark machine,
    /// 1 KiB records went from ~150 MB/s with 16 to ~190 MB/s with 48). At most 64: the broker
    /// remembers 64 batches per producer for deduplication, and 48 leaves a margin.
    pub max_in_flight: usize,
    /// Most resends of a batch; delivery is bounded by `delivery_timeout` as well.
    pub retries: u32,
    /// Time after which an unacknowledged record fails (from `send`).
    pub delivery_timeout: Duration,
    /// Time a request may stay unanswered before the connection is considered broken.
    pub request_timeout: Duration,
    /// Bytes of sealed batches waiting or in flight before `send` waits (back-pressure).
    pub buffer_memory: usize,
    /// When set, every record's enqueue-to-acknowledgement time is recorded (µs).
    pub latency: Option<LatencyHistogram>,
}

impl fmt::Debug for ProducerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProducerConfig")
            .field("bootstrap", &self.bootstrap)
            .field("acks", &self.acks)
            .field("batch_size", &self.batch_size)
            .field("linger", &self.linger)
            .field("compression", &self.compression)
            .field("idempotent", &self.idempotent)
            .field("max_in_flight", &self.max_in_flight)
            .field("retries", &self.retries)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("buffer_memory", &self.buffer_memory)
            .field("latency", &self.latency.is_some())
            .finish()
    }
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            bootstrap: "127.0.0.1:9092".into(),
            acks: Acks::All,
            batch_size: 64 * 1024,
            linger: Duration::from_millis(5),
            compression: Compression::None,
            idempotent: true,
            max_in_flight: 48,
            retries: u32::MAX,
            delivery_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(30),
            buffer_memory: 32 << 20,
            latency: None,
        }
    }
}

impl ProducerConfig {
    /// Defaults with the given bootstrap.
    pub fn new(bootstrap: impl Into<String>) -> Self {
        ProducerConfig {
            bootstrap: bootstrap.into(),
            ..Default::default()
        }
    }

    /// Checks the values, naming the bad field.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.batch_size > (64 << 20) {
            return Err(Error::Config(format!(
                "batch_size must be between 1 and 64 MiB, got {}",
                self.batch_size
            )));
        }
        if self.idempotent && !(1..=MAX_IDEMPOTENT_IN_FLIGHT).contains(&self.max_in_flight) {
            return Err(Error::Config(format!(
                "max_in_flight must be between 1 and {MAX_IDEMPOTENT_IN_FLIGHT} for an idempotent producer (the broker deduplicates that many batches), got {}",
                self.max_in_flight
            )));
        }
        if self.max_in_flight == 0 {
            return Err(Error::Config("max_in_flight must be at least 1".into()));
        }
        if self.buffer_memory < self.batch_size {
            return Err(Error::Config(format!(
                "buffer_memory ({}) must be at least batch_size ({})",
                self.buffer_memory, self.batch_size
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_values_parse_and_validate() {
        assert_eq!("all".parse::<Acks>().ok(), Some(Acks::All));
        assert_eq!("-1".parse::<Acks>().ok(), Some(Acks::All));
        assert_eq!("1".parse::<Acks>().ok(), Some(Acks::Leader));
        assert_eq!("0".parse::<Acks>().ok(), Some(Acks::None));
        assert!("2".parse::<Acks>().is_err());
        let c = ProducerConfig::default();
        assert_eq!(c.batch_size, 64 * 1024);
        assert_eq!(c.linger, Duration::from_millis(5));
        assert!(c.idempotent);
        assert_eq!(c.max_in_flight, 48);
        assert!(c.validate().is_ok());
        for max_in_flight in [0, MAX_IDEMPOTENT_IN_FLIGHT + 1] {
            let bad = ProducerConfig {
                max_in_flight,
                ..Default::default()
            };
            assert!(bad
                .validate()
                .expect_err("invalid")
                .to_string()
                .contains("max_in_flight"));
        }
    }
}
