//! Load under which a broker is cut (`kill -9`, a power cut), and the check afterwards: several
//! producers send with `acks=all` through the real client and remember where each acknowledged
//! record went; after the restart every acknowledged record must be there exactly once, at the
//! offset it was acknowledged with, in each producer's order, with no gaps in any partition.

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use runnel_client::producer::{Acks, Producer, ProducerConfig, ProducerRecord, RecordMetadata};
use runnel_proto::v1::broker_client::BrokerClient;
use runnel_proto::v1::FetchRequest;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// (partition, offset) of each acknowledged value.
pub type Acked = Arc<Mutex<HashMap<String, (i32, i64)>>>;

/// Producers writing `topic` until told to stop.
#[derive(Debug)]
pub struct Load {
    acked: Acked,
    stop: Arc<tokio::sync::Notify>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts `producers` producers on `bootstrap`, each spreading small records over
    /// `partitions` partitions of `topic` in small batches.
    pub fn start(bootstrap: &str, topic: &str, producers: usize, partitions: i32) -> Self {
        Self::start_sized(bootstrap, topic, producers, partitions, 0, 8 << 10)
    }

    /// Like [`Load::start`], with values padded by `padding` bytes and batches of up to
    /// `batch_bytes`.
    pub fn start_sized(
        bootstrap: &str,
        topic: &str,
        producers: usize,
        partitions: i32,
        padding: usize,
        batch_bytes: usize,
    ) -> Self {
        let acked: Acked = Arc::default();
        let stop = Arc::new(tokio::sync::Notify::new());
        let tasks = (0..producers)
            .map(|w| {
                tokio::spawn(produce_until_stopped(
                    Shape {
                        bootstrap: bootstrap.to_string(),
                        topic: topic.to_string(),
                        partitions,
                        padding: "p".repeat(padding),
                        batch_bytes,
                    },
                    w,
                    acked.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        Self { acked, stop, tasks }
    }

    /// How many records are acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.acked.lock().expect("lock").len()
    }

    /// Waits until at least `n` records are acknowledged (at most `patience`).
    pub async fn wait_for(&self, n: usize, patience: Duration) {
        let deadline = tokio::time::Instant::now() + patience;
        while self.acknowledged() < n && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the producers; returns what was acknowledged.
    pub async fn stop(self) -> HashMap<String, (i32, i64)> {
        self.stop.notify_waiters();
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
        self.acked.lock().expect("lock").clone()
    }
}

/// What one producer of a [`Load`] sends.
struct Shape {
    bootstrap: String,
    topic: String,
    partitions: i32,
    padding: String,
    batch_bytes: usize,
}

async fn produce_until_stopped(
    shape: Shape,
    w: usize,
    acked: Acked,
    stop: Arc<tokio::sync::Notify>,
) {
    let Shape {
        bootstrap,
        topic,
        partitions,
        padding,
        batch_bytes,
    } = shape;
    let mut config = ProducerConfig::new(bootstrap);
    config.acks = Acks::All;
    config.linger = Duration::from_millis(2);
    config.batch_size = batch_bytes;
    config.delivery_timeout = Duration::from_secs(5);
    config.request_timeout = Duration::from_secs(2);
    let Ok(producer) = Producer::connect(config).await else {
        return;
    };
    let mut pending = FuturesUnordered::new();
    let stopped = stop.notified();
    tokio::pin!(stopped);
    let mut seq = 0u64;
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            Some((value, r)) = pending.next(), if !pending.is_empty() => {
                if let Ok(md) = r {
                    let md: RecordMetadata = md;
                    acked.lock().expect("lock").insert(value, (md.partition, md.offset));
                }
            }
            sent = async {
                let value = format!("w{w}-{seq:08}{padding}");
                let record = ProducerRecord::new(topic.clone(), Bytes::from(value.clone()))
                    .key(Bytes::from(format!("w{w}")))
                    .partition((seq % partitions as u64) as i32);
                producer.send(record).await.map(|f| (value, f))
            }, if pending.len() < 2000 => {
                match sent {
                    Ok((value, f)) => {
                        pending.push(async move { (value, f.await) });
                        seq += 1;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        }
    }
}

/// What a read-back found.
#[derive(Debug)]
pub struct ReadBack {
    /// Records stored.
    pub total: usize,
    /// Acknowledged records that are not there.
    pub missing: Vec<String>,
}

/// Reads every partition of `topic` from the start and checks it against `acked`: offsets
/// without gaps or repeats, each producer's records in order, every acknowledged record once at
/// its offset (panics otherwise). Returns what was read and which acknowledged records are
/// missing.
pub async fn read_back(
    endpoint: &str,
    topic: &str,
    partitions: i32,
    acked: &HashMap<String, (i32, i64)>,
) -> anyhow::Result<ReadBack> {
    let endpoints = vec![endpoint.to_string(); partitions.max(0) as usize];
    read_back_from(&endpoints, topic, acked).await
}

/// Like [`read_back`], reading partition `p` from `endpoints[p]` (its leader).
pub async fn read_back_from(
    endpoints: &[String],
    topic: &str,
    acked: &HashMap<String, (i32, i64)>,
) -> anyhow::Result<ReadBack> {
    let mut read_back: HashMap<String, Vec<(i32, i64)>> = HashMap::new();
    let mut total = 0usize;
    for (p, endpoint) in endpoints.iter().enumerate() {
        let p = p as i32;
        let mut data = BrokerClient::connect(endpoint.to_string())
            .await?
            .max_decoding_message_size(64 << 20);
        let mut offset = 0;
        let mut expected_offset = 0;
        let mut last_seq_of: BTreeMap<String, String> = BTreeMap::new();
        loop {
            let f = data
                .fetch(FetchRequest {
                    topic: topic.into(),
                    partition: p,
                    offset,
                    max_bytes: 4 << 20,
                    ..Default::default()
                })
                .await?
                .into_inner();
            if f.batches.is_empty() {
                break;
            }
            for r in crate::records(&f.batches)? {
                if r.offset < offset {
                    continue;
                }
                assert_eq!(
                    r.offset, expected_offset,
                    "partition {p}: gap or repeat in offsets"
                );
                expected_offset += 1;
                let value = String::from_utf8(r.value.expect("value").to_vec())?;
                let (writer, _) = value.split_once('-').expect("value format");
                if let Some(prev) = last_seq_of.insert(writer.to_string(), value.clone()) {
                    assert!(
                        prev < value,
                        "partition {p}: {value} after {prev}: out of producer order"
                    );
                }
                read_back.entry(value).or_default().push((p, r.offset));
                total += 1;
            }
            offset = f.next_offset;
        }
    }
    let mut missing = Vec::new();
    for (value, at) in acked {
        match read_back.get(value).map(Vec::as_slice) {
            Some([only]) => assert_eq!(only, at, "{value} moved from its acknowledged offset"),
            Some(many) if many.len() > 1 => panic!("{value} stored {} times: {many:?}", many.len()),
            _ => missing.push(value.clone()),
        }
    }
    assert!(
        read_back.values().all(|v| v.len() == 1),
        "a record is stored twice"
    );
    Ok(ReadBack { total, missing })
}
