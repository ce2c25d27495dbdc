//! Benchmarks behind `runnel bench produce|consume|group`: throughput and latency of the real
//! client against a real broker. `bench group` (a consumer group reading a backlog, and the
//! handover of a leaving member's partitions) is in [`group`](mod@group).
//!
//! Latencies are measured as follows, so that figures can be compared with other tools:
//! - *ack latency*: per record, from the moment `send` enqueued it to the moment its batch's
//!   acknowledgement was processed by the producer (includes batching/linger and queueing);
//! - *end-to-end latency* (`--e2e`): per record, from the moment the producer built it (a u64
//!   of nanoseconds since a process-wide base, stored in the value's first 8 bytes) to the
//!   moment an in-process consumer decoded it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::admin::Admin;
use crate::consumer::{Consumer, ConsumerConfig, Partitions, StartOffset};
use crate::error::{Error, Result};
use crate::partitioner::XorShift;
use crate::producer::{Acks, Producer, ProducerConfig, ProducerRecord};
use progress::Progress;
use runnel_codec::Compression;

mod group;
mod progress;

pub use group::{run_group, GroupBench, GroupReport};

/// Settings of `bench produce`.
#[derive(Debug, Clone)]
pub struct ProduceBench {
    /// Brokers.
    pub bootstrap: String,
    /// Topic to write to.
    pub topic: String,
    /// Partitions of the topic when the bench creates it (it is created only if missing).
    pub partitions: i32,
    /// Records in total (over all producers).
    pub records: u64,
    /// Value size in bytes.
    pub record_size: usize,
    /// Concurrent producers, each with its own connection.
    pub producers: usize,
    /// Acknowledgements.
    pub acks: Acks,
    /// Producer batch size.
    pub batch_size: usize,
    /// Producer linger.
    pub linger: Duration,
    /// Compression.
    pub compression: Compression,
    /// Idempotent producers.
    pub idempotent: bool,
    /// Total records/s to pace at; `None`: as fast as possible.
    pub rate: Option<u64>,
    /// Also measure end-to-end latency with an in-process consumer.
    pub e2e: bool,
    /// Keys to cycle through (`key-0` … `key-{keys-1}`), as a compacted topic needs; 0 sends
    /// records without a key.
    pub keys: u64,
    /// Draw a progress line (records acknowledged) on standard error while producing: for a
    /// terminal, as the `runnel` CLI does when standard error is one.
    pub progress: bool,
}

impl Default for ProduceBench {
    fn default() -> Self {
        let p = ProducerConfig::default();
        ProduceBench {
            bootstrap: p.bootstrap,
            topic: "bench".into(),
            partitions: 1,
            records: 1_000_000,
            record_size: 100,
            producers: 1,
            acks: p.acks,
            batch_size: p.batch_size,
            linger: p.linger,
            compression: p.compression,
            idempotent: p.idempotent,
            rate: None,
            e2e: false,
            keys: 0,
            progress: false,
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Samples.
    pub count: u64,
}

impl Percentiles {
    /// From a histogram of microseconds.
    pub fn from_micros(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            p50: ms(h.value_at_quantile(0.50)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            count: h.len(),
        }
    }
}

impl fmt::Display for Percentiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            self.p50, self.p99, self.p999, self.max
        )
    }
}

/// Result of `bench produce`.
#[derive(Debug, Clone, Serialize)]
pub struct ProduceReport {
    /// Always "produce".
    pub bench: &'static str,
    /// Topic.
    pub topic: String,
    /// Records acknowledged.
    pub records: u64,
    /// Records that failed delivery.
    pub failed: u64,
    /// Value size.
    pub record_size: usize,
    /// Producers.
    pub producers: usize,
    /// Acks setting.
    pub acks: String,
    /// Batch size.
    pub batch_size: usize,
    /// Linger in ms.
    pub linger_ms: u64,
    /// Compression.
    pub compression: String,
    /// Pacing asked for (records/s), if any.
    pub rate: Option<u64>,
    /// From the first send to the last acknowledgement.
    pub seconds: f64,
    /// Records per second.
    pub records_per_sec: f64,
    /// 10^6 bytes of values per second.
    pub mb_per_sec: f64,
    /// Enqueue → acknowledgement.
    pub ack_latency_ms: Percentiles,
    /// Produce → consume, with `--e2e`.
    pub e2e_latency_ms: Option<Percentiles>,
    /// Records the e2e consumer saw (with `--e2e`).
    pub e2e_records: Option<u64>,
}

impl fmt::Display for ProduceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "produced {} records of {} B to `{}` in {:.2} s with {} producer(s), acks={}, \
             batch {} B, linger {} ms, compression {}{}",
            self.records,
            self.record_size,
            self.topic,
            self.seconds,
            self.producers,
            self.acks,
            self.batch_size,
            self.linger_ms,
            self.compression,
            self.rate
                .map(|r| format!(", paced at {r} records/s"))
                .unwrap_or_default()
        )?;
        writeln!(
            f,
            "throughput: {:.0} records/s, {:.2} MB/s",
            self.records_per_sec, self.mb_per_sec
        )?;
        write!(f, "ack latency: {}", self.ack_latency_ms)?;
        if let Some(e2e) = &self.e2e_latency_ms {
            write!(
                f,
                "\nend-to-end latency: {e2e} ({} records seen)",
                self.e2e_records.unwrap_or(0)
            )?;
        }
        if self.failed > 0 {
            write!(f, "\nFAILED: {} records", self.failed)?;
        }
        Ok(())
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 1 h, 3 significant digits.
    #[allow(clippy::unwrap_used)] // constant, valid bounds
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap()
}

/// A payload of `size` pseudo-random printable bytes, made once and kept for the life of the
/// process: every record shares it, as a load generator reuses one buffer, and a `'static`
/// `Bytes` is cloned and dropped without touching a reference count.
fn payload(size: usize) -> Bytes {
    let mut rng = XorShift::new(0x5eed_1234_abcd_ef01);
    let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let bytes: Vec<u8> = (0..size)
        .map(|_| alphabet[rng.below(alphabet.len())])
        .collect();
    Bytes::from_static(Box::leak(bytes.into_boxed_slice()))
}

/// Creates `topic` with `partitions` unless it exists.
async fn ensure_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<()> {
    let admin = Admin::connect(bootstrap).await?;
    let exists = admin.list_topics().await?.iter().any(|t| t.name == topic);
    if !exists {
        match admin
            .create_topic(topic, partitions, 1, &BTreeMap::new())
            .await
        {
            Ok(_) => {}
            Err(e) if e.code() == Some(tonic::Code::AlreadyExists) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Runs `bench produce`.
pub async fn run_produce(cfg: &ProduceBench) -> Result<ProduceReport> {
    if cfg.producers == 0 {
        return Err(Error::Config("producers must be at least 1".into()));
    }
    if cfg.e2e && cfg.record_size < 8 {
        return Err(Error::Config(format!(
            "--e2e stores a timestamp in the first 8 bytes of each value: record size must be \
             at least 8, got {}",
            cfg.record_size
        )));
    }
    ensure_topic(&cfg.bootstrap, &cfg.topic, cfg.partitions).await?;

    let base = Instant::now();
    let ack_hist = Arc::new(Mutex::new(new_histogram()));

    // The end-to-end consumer starts at the end of the log before anything is produced.
    let e2e = if cfg.e2e {
        let mut consumer = Consumer::with_config(ConsumerConfig {
            bootstrap: cfg.bootstrap.clone(),
            max_wait: Duration::from_millis(100),
            ..Default::default()
        })
        .await?;
        consumer
            .assign(&cfg.topic, Partitions::All, StartOffset::Latest)
            .await?;
        let seen = Arc::new(AtomicU64::new(0));
        let seen2 = seen.clone();
        let total = cfg.records;
        let task = tokio::spawn(async move {
            let mut hist = new_histogram();
            let mut idle_since: Option<Instant> = None;
            while seen2.load(Ordering::Relaxed) < total {
                let records = consumer.poll(Duration::from_millis(200)).await?;
                let now = base.elapsed().as_nanos() as u64;
                if records.is_empty() {
                    // Give up 10 s after the last record if some never arrive.
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(10)
                        && seen2.load(Ordering::Relaxed) > 0
                    {
                        break;
                    }
                    continue;
                }
                idle_since = None;
                for r in &records {
                    if let Some(v) = r.value.as_deref().filter(|v| v.len() >= 8) {
                        let mut stamp = [0u8; 8];
                        stamp.copy_from_slice(&v[..8]);
                        let sent = u64::from_le_bytes(stamp);
                        hist.saturating_record(now.saturating_sub(sent) / 1000);
                    }
                }
                seen2.fetch_add(records.len() as u64, Ordering::Relaxed);
            }
            Ok::<_, Error>(hist)
        });
        Some((task, seen))
    } else {
        None
    };

    let mut producers = Vec::with_capacity(cfg.producers);
    for _ in 0..cfg.producers {
        let producer = Producer::connect(ProducerConfig {
            bootstrap: cfg.bootstrap.clone(),
            acks: cfg.acks,
            batch_size: cfg.batch_size,
            linger: cfg.linger,
            compression: cfg.compression,
            idempotent: cfg.idempotent,
            latency: Some(ack_hist.clone()),
            ..Default::default()
        })
        .await?;
        producers.push(producer);
    }

    let value = payload(cfg.record_size);
    let topic: Arc<str> = Arc::from(cfg.topic.as_str());
    let start = Instant::now();
    // The histogram holds one value per record acknowledged: its count is the progress, and
    // costs the send path nothing more.
    let progress = {
        let acked = ack_hist.clone();
        let size = cfg.record_size as u64;
        Progress::start(cfg.progress, "acked", cfg.records, move || {
            let n = acked.lock().unwrap_or_else(|e| e.into_inner()).len();
            (n, n.saturating_mul(size))
        })
    };
    let mut tasks = Vec::with_capacity(cfg.producers);
    for (i, producer) in producers.into_iter().enumerate() {
        let n = cfg.records / cfg.producers as u64
            + u64::from((i as u64) < cfg.records % cfg.producers as u64);
        let rate = cfg
            .rate
            .map(|r| (r as f64 / cfg.producers as f64).max(1e-3));
        let value = value.clone();
        let topic = topic.clone();
        let e2e = cfg.e2e;
        let keys: Vec<Bytes> = (0..cfg.keys)
            .map(|k| Bytes::from(format!("key-{k}")))
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut buf = BytesMut::new();
            for sent in 0..n {
                if let Some(rate) = rate {
                    if sent % 16 == 0 {
                        let due = start + Duration::from_secs_f64(sent as f64 / rate);
                        if due > Instant::now() {
                            tokio::time::sleep_until(due.into()).await;
                        }
                    }
                }
                let v = if e2e {
                    if buf.capacity() < value.len() {
                        buf.reserve(value.len() * 1024);
                    }
                    buf.put_u64_le(base.elapsed().as_nanos() as u64);
                    buf.extend_from_slice(&value[8..]);
                    buf.split().freeze()
                } else {
                    value.clone()
                };
                let mut record = ProducerRecord::new(topic.clone(), v);
                if !keys.is_empty() {
                    record = record.key(keys[(sent % keys.len() as u64) as usize].clone());
                }
                producer.send(record).await?;
            }
            producer.flush().await;
            let (failed, error) = producer.delivery_failures();
            producer.close().await;
            Ok::<_, Error>((n - failed, failed, error))
        }));
    }
    let mut acked = 0;
    let mut failed = 0;
    let mut first_error = None;
    for t in tasks {
        let (ok, bad, error) = t
            .await
            .map_err(|e| Error::Protocol(format!("producer task: {e}")))??;
        acked += ok;
        failed += bad;
        if first_error.is_none() {
            first_error = error;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    drop(progress);

    let (e2e_latency_ms, e2e_records) = match e2e {
        Some((task, seen)) => {
            let hist = task
                .await
                .map_err(|e| Error::Protocol(format!("consumer task: {e}")))??;
            (
                Some(Percentiles::from_micros(&hist)),
                Some(seen.load(Ordering::Relaxed)),
            )
        }
        None => (None, None),
    };
    if acked == 0 {
        if let Some(e) = first_error {
            return Err(e);
        }
    }
    let ack_latency_ms =
        Percentiles::from_micros(&ack_hist.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(ProduceReport {
        bench: "produce",
        topic: cfg.topic.clone(),
        records: acked,
        failed,
        record_size: cfg.record_size,
        producers: cfg.producers,
        acks: cfg.acks.to_string(),
        batch_size: cfg.batch_size,
        linger_ms: cfg.linger.as_millis() as u64,
        compression: cfg.compression.to_string(),
        rate: cfg.rate,
        seconds,
        records_per_sec: acked as f64 / seconds,
        mb_per_sec: (acked as f64 * cfg.record_size as f64) / 1e6 / seconds,
        ack_latency_ms,
        e2e_latency_ms,
        e2e_records,
    })
}

/// Settings of `bench consume`.
#[derive(Debug, Clone)]
pub struct ConsumeBench {
    /// Brokers.
    pub bootstrap: String,
    /// Topic to read from its beginning.
    pub topic: String,
    /// Records to read.
    pub records: u64,
    /// Stop when no record arrived for this long.
    pub idle_timeout: Duration,
    /// Draw a progress line (records read) on standard error while reading: for a terminal.
    pub progress: bool,
}

/// Result of `bench consume`.
#[derive(Debug, Clone, Serialize)]
pub struct ConsumeReport {
    /// Always "consume".
    pub bench: &'static str,
    /// Topic.
    pub topic: String,
    /// Records read.
    pub records: u64,
    /// Value bytes read.
    pub bytes: u64,
    /// From assignment to the last record.
    pub seconds: f64,
    /// Records per second.
    pub records_per_sec: f64,
    /// 10^6 bytes of values per second.
    pub mb_per_sec: f64,
    /// False when the topic ran dry before `records` were read.
    pub complete: bool,
}

impl fmt::Display for ConsumeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "consumed {} records ({} bytes of values) from `{}` in {:.2} s{}",
            self.records,
            self.bytes,
            self.topic,
            self.seconds,
            if self.complete {
                ""
            } else {
                " (the topic ran dry before the requested count)"
            }
        )?;
        write!(
            f,
            "throughput: {:.0} records/s, {:.2} MB/s",
            self.records_per_sec, self.mb_per_sec
        )
    }
}

/// Runs `bench consume`.
pub async fn run_consume(cfg: &ConsumeBench) -> Result<ConsumeReport> {
    let mut consumer = Consumer::connect(&cfg.bootstrap).await?;
    let start = Instant::now();
    // Published once per poll, for the progress line.
    let read = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let progress = {
        let read = read.clone();
        Progress::start(cfg.progress, "consume", cfg.records, move || {
            (
                read.0.load(Ordering::Relaxed),
                read.1.load(Ordering::Relaxed),
            )
        })
    };
    consumer
        .assign(&cfg.topic, Partitions::All, StartOffset::Earliest)
        .await?;
    let mut records = 0u64;
    let mut bytes = 0u64;
    let mut last = start;
    while records < cfg.records {
        let batch = consumer.poll(cfg.idle_timeout).await?;
        if batch.is_empty() {
            break;
        }
        last = Instant::now();
        for r in batch.iter().take((cfg.records - records) as usize) {
            bytes += r.value.as_ref().map_or(0, |v| v.len() as u64);
            records += 1;
        }
        read.0.store(records, Ordering::Relaxed);
        read.1.store(bytes, Ordering::Relaxed);
    }
    drop(progress);
    let seconds = last.duration_since(start).as_secs_f64().max(1e-9);
    Ok(ConsumeReport {
        bench: "consume",
        topic: cfg.topic.clone(),
        records,
        bytes,
        seconds,
        records_per_sec: records as f64 / seconds,
        mb_per_sec: bytes as f64 / 1e6 / seconds,
        complete: records >= cfg.records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_deterministic_and_sized() {
        assert_eq!(payload(100).len(), 100);
        assert_eq!(payload(100), payload(100));
        assert!(payload(64).iter().all(u8::is_ascii_alphanumeric));
    }

    #[test]
    fn percentiles_in_ms() {
        let mut h = new_histogram();
        for us in 1..=1000u64 {
            h.record(us * 10).expect("in range");
        }
        let p = Percentiles::from_micros(&h);
        assert!((p.p50 - 5.0).abs() < 0.01, "{p:?}");
        assert!((p.max - 10.0).abs() < 0.01, "{p:?}");
        assert_eq!(p.count, 1000);
        assert!(p.to_string().starts_with("p50 5.00 ms"));
    }

    #[test]
    fn reports_render_for_people_and_scripts() {
        let r = ProduceReport {
            bench: "produce",
            topic: "t".into(),
            records: 10,
            failed: 0,
            record_size: 100,
            producers: 1,
            acks: "all".into(),
            batch_size: 65536,
            linger_ms: 5,
            compression: "none".into(),
            rate: None,
            seconds: 2.0,
            records_per_sec: 5.0,
            mb_per_sec: 0.0005,
            ack_latency_ms: Percentiles {
                p50: 1.0,
                p99: 2.0,
                p999: 3.0,
                max: 4.0,
                count: 10,
            },
            e2e_latency_ms: None,
            e2e_records: None,
        };
        let human = r.to_string();
        assert!(human.contains("throughput: 5 records/s"), "{human}");
        assert!(human.contains("ack latency: p50 1.00 ms"), "{human}");
        let json: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&r).expect("json")).expect("parse");
        assert_eq!(json["records_per_sec"], 5.0);
        assert_eq!(json["ack_latency_ms"]["p99"], 2.0);
        assert!(json["e2e_latency_ms"].is_null());
    }
}
