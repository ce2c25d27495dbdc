//! The consumer: manual assignment of partitions, `Fetch` long-polls (one fetcher task per
//! partition, so partitions are fetched concurrently and the next fetch overlaps the caller's
//! processing), records decoded with `runnel-codec`, positions tracked per partition.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use runnel_codec::{decode_batch_bytes, split_batches, Header};
use runnel_proto::v1::{FetchRequest, OffsetSpec};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::connection::{broker_client, Cluster, ClusterInfo};
use crate::error::{Error, Result};

/// Where a newly assigned partition starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    /// The log start offset.
    Earliest,
    /// The high watermark: only records produced from now on.
    Latest,
    /// An explicit offset.
    Offset(i64),
    /// The first offset whose timestamp is at or after this many ms since the epoch (the high
    /// watermark when there is none).
    Timestamp(i64),
}

/// An offset lookup (`ListOffsets`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetQuery {
    /// The log start offset.
    Earliest,
    /// The high watermark.
    Latest,
    /// The first offset with a timestamp at or after this (ms since the epoch).
    Timestamp(i64),
}

impl OffsetQuery {
    pub(crate) fn to_wire(self) -> (OffsetSpec, i64) {
        match self {
            OffsetQuery::Earliest => (OffsetSpec::Earliest, 0),
            OffsetQuery::Latest => (OffsetSpec::Latest, 0),
            OffsetQuery::Timestamp(ts) => (OffsetSpec::Timestamp, ts),
        }
    }
}

impl std::str::FromStr for OffsetQuery {
    type Err = Error;
    /// `earliest`, `latest`, or a timestamp in ms since the epoch.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "earliest" | "-2" => Ok(OffsetQuery::Earliest),
            "latest" | "-1" => Ok(OffsetQuery::Latest),
            other => other
                .parse::<i64>()
                .map(OffsetQuery::Timestamp)
                .map_err(|_| {
                    Error::Config(format!(
                        "time `{other}` is not earliest, latest or a timestamp in ms"
                    ))
                }),
        }
    }
}

/// What to do when the position is outside the log (Kafka's `auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutoOffsetReset {
    /// Report [`Error::OffsetOutOfRange`] from `poll`.
    #[default]
    None,
    /// Jump to the log start offset.
    Earliest,
    /// Jump to the high watermark.
    Latest,
}

/// Which partitions of a topic to assign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Partitions {
    /// Every partition the topic has now.
    All,
    /// These partitions.
    List(Vec<i32>),
}

impl From<Vec<i32>> for Partitions {
    fn from(v: Vec<i32>) -> Self {
        Partitions::List(v)
    }
}

impl From<Option<i32>> for Partitions {
    fn from(p: Option<i32>) -> Self {
        match p {
            Some(p) => Partitions::List(vec![p]),
            None => Partitions::All,
        }
    }
}

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// `host:port[,host:port…]` of one or more brokers.
    pub bootstrap: String,
    /// Long-poll wait of one fetch.
    pub max_wait: Duration,
    /// Soft limit of bytes per fetch per partition (at least one batch is returned).
    pub max_bytes: i32,
    /// Bytes a fetch waits for (up to `max_wait`).
    pub min_bytes: i32,
    /// What to do when a position falls outside the log.
    pub auto_offset_reset: AutoOffsetReset,
    /// Fetch responses buffered ahead of `poll`, over all partitions.
    pub prefetch: usize,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            bootstrap: "127.0.0.1:9092".into(),
            max_wait: Duration::from_millis(500),
            max_bytes: 1 << 20,
            min_bytes: 1,
            auto_offset_reset: AutoOffsetReset::None,
            prefetch: 32,
        }
    }
}

/// A record read from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// Create time or log-append time (ms since the epoch).
    pub timestamp: i64,
    /// The key.
    pub key: Option<Bytes>,
    /// The value.
    pub value: Option<Bytes>,
    /// The headers.
    pub headers: Vec<Header>,
}

/// What a fetcher hands to `poll`.
struct Fetched {
    topic: Arc<str>,
    partition: i32,
    generation: u64,
    result: Result<FetchedData>,
}

struct FetchedData {
    records: Vec<ConsumerRecord>,
    /// Where the fetcher continues.
    next_offset: i64,
    /// The fetcher jumped here (auto offset reset).
    reset_to: Option<i64>,
    high_watermark: i64,
}

struct Assigned {
    position: i64,
    high_watermark: i64,
    generation: u64,
    task: JoinHandle<()>,
    paused: bool,
}

/// A consumer of manually assigned partitions.
pub struct Consumer {
    cluster: Cluster,
    config: Arc<ConsumerConfig>,
    assigned: HashMap<(Arc<str>, i32), Assigned>,
    tx: mpsc::Sender<Fetched>,
    rx: mpsc::Receiver<Fetched>,
    next_generation: u64,
    pending_error: Option<Error>,
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("config", &self.config)
            .field("assigned", &self.assigned.len())
            .finish()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        for a in self.assigned.values() {
            a.task.abort();
        }
    }
}

/// Most fetch responses one `poll` takes in.
const MAX_RESPONSES_PER_POLL: usize = 16;

impl Consumer {
    /// A consumer with default settings.
    pub async fn connect(bootstrap: &str) -> Result<Self> {
        Self::with_config(ConsumerConfig {
            bootstrap: bootstrap.to_owned(),
            ..Default::default()
        })
        .await
    }

    /// A consumer with the given settings; checks that a bootstrap broker answers.
    pub async fn with_config(config: ConsumerConfig) -> Result<Self> {
        let cluster = Cluster::new(&config.bootstrap)?;
        cluster.any_channel().await?;
        let (tx, rx) = mpsc::channel(config.prefetch.max(1));
        Ok(Consumer {
            cluster,
            config: Arc::new(config),
            assigned: HashMap::new(),
            tx,
            rx,
            next_generation: 1,
            pending_error: None,
        })
    }

    /// Starts consuming `partitions` of `topic` from `start`. Adds to the current assignment;
    /// a partition assigned again restarts from `start`.
    pub async fn assign(
        &mut self,
        topic: &str,
        partitions: impl Into<Partitions>,
        start: StartOffset,
    ) -> Result<()> {
        let info = self.cluster.cluster_info(&[topic.to_owned()]).await?;
        let Some(t) = info.topics.get(topic) else {
            return Err(Error::UnknownTopic(topic.to_owned()));
        };
        let mut all: Vec<i32> = t.partitions.iter().map(|p| p.partition).collect();
        all.sort_unstable();
        let selected = match partitions.into() {
            Partitions::All => all.clone(),
            Partitions::List(list) => {
                for p in &list {
                    if !all.contains(p) {
                        return Err(Error::UnknownPartition {
                            topic: topic.to_owned(),
                            partition: *p,
                            partitions: all.len(),
                        });
                    }
                }
                list
            }
        };
        let starts = self.start_offsets(&info, topic, &selected, start).await?;
        let topic: Arc<str> = Arc::from(topic);
        for (p, offset) in selected.into_iter().zip(starts) {
            self.start_fetcher(topic.clone(), p, offset);
        }
        Ok(())
    }

    async fn start_offsets(
        &self,
        info: &ClusterInfo,
        topic: &str,
        partitions: &[i32],
        start: StartOffset,
    ) -> Result<Vec<i64>> {
        let query = match start {
            StartOffset::Offset(o) if o < 0 => {
                return Err(Error::Config(format!("offset {o} is negative")))
            }
            StartOffset::Offset(o) => return Ok(vec![o; partitions.len()]),
            StartOffset::Earliest => OffsetQuery::Earliest,
            StartOffset::Latest => OffsetQuery::Latest,
            StartOffset::Timestamp(ts) => OffsetQuery::Timestamp(ts),
        };
        let (spec, ts) = query.to_wire();
        let offsets = self
            .cluster
            .list_offsets(info, topic, partitions, spec, ts)
            .await?;
        partitions
            .iter()
            .map(|p| {
                let o = offsets.iter().find(|o| o.partition == *p).ok_or_else(|| {
                    Error::Protocol(format!(
                        "ListOffsets of `{topic}` did not answer for partition {p}"
                    ))
                })?;
                Ok(if o.offset < 0 {
                    o.high_watermark
                } else {
                    o.offset
                })
            })
            .collect()
    }

    fn start_fetcher(&mut self, topic: Arc<str>, partition: i32, offset: i64) {
        let generation = self.next_generation;
        self.next_generation += 1;
        let task = tokio::spawn(fetch_loop(
            self.cluster.clone(),
            self.config.clone(),
            topic.clone(),
            partition,
            offset,
            generation,
            self.tx.clone(),
        ));
        if let Some(old) = self.assigned.insert(
            (topic, partition),
            Assigned {
                position: offset,
                high_watermark: -1,
                generation,
                task,
                paused: false,
            },
        ) {
            old.task.abort();
        }
    }

    /// Starts consuming one partition at `offset` (adding it to the assignment, or moving it).
    pub(crate) fn assign_at(&mut self, topic: &Arc<str>, partition: i32, offset: i64) {
        self.start_fetcher(topic.clone(), partition, offset);
    }

    /// The offsets where each of `partitions` starts by `start` (one `ListOffsets` per topic).
    pub(crate) async fn resolve_start(
        &self,
        topic: &str,
        partitions: &[i32],
        start: StartOffset,
    ) -> Result<Vec<i64>> {
        let info = self.cluster.cluster_info(&[topic.to_owned()]).await?;
        self.start_offsets(&info, topic, partitions, start).await
    }

    /// Stops consuming some partitions.
    pub fn unassign_partitions(&mut self, partitions: &[(String, i32)]) {
        for (t, p) in partitions {
            if let Some(a) = self.assigned.remove(&(Arc::from(t.as_str()), *p)) {
                a.task.abort();
            }
        }
    }

    /// Stops fetching `partitions` until [`resume`](Self::resume); their positions stay.
    pub fn pause(&mut self, partitions: &[(String, i32)]) {
        for (t, p) in partitions {
            if let Some(a) = self.assigned.get_mut(&(Arc::from(t.as_str()), *p)) {
                a.task.abort();
                a.paused = true;
                // Responses already fetched are from before the pause: dropped.
                a.generation = 0;
            }
        }
    }

    /// Fetches paused partitions again, from their positions.
    pub fn resume(&mut self, partitions: &[(String, i32)]) {
        for (t, p) in partitions {
            let key = (Arc::from(t.as_str()), *p);
            let at = match self.assigned.get(&key) {
                Some(a) if a.paused => a.position,
                _ => continue,
            };
            self.start_fetcher(key.0, *p, at);
        }
    }

    /// The paused partitions, sorted.
    pub fn paused(&self) -> Vec<(String, i32)> {
        let mut v: Vec<(String, i32)> = self
            .assigned
            .iter()
            .filter(|(_, a)| a.paused)
            .map(|((t, p), _)| (t.to_string(), *p))
            .collect();
        v.sort();
        v
    }

    /// Moves the position of an assigned partition.
    pub fn seek(&mut self, topic: &str, partition: i32, offset: i64) -> Result<()> {
        let key = (Arc::from(topic), partition);
        if !self.assigned.contains_key(&key) {
            return Err(Error::Config(format!(
                "partition `{topic}`/{partition} is not assigned"
            )));
        }
        self.start_fetcher(key.0, partition, offset);
        Ok(())
    }

    /// Stops consuming every partition.
    pub fn unassign(&mut self) {
        for (_, a) in self.assigned.drain() {
            a.task.abort();
        }
    }

    /// The assigned partitions, sorted.
    pub fn assignment(&self) -> Vec<(String, i32)> {
        let mut v: Vec<(String, i32)> = self
            .assigned
            .keys()
            .map(|(t, p)| (t.to_string(), *p))
            .collect();
        v.sort();
        v
    }

    /// The offset of the next record `poll` returns for `topic`/`partition`.
    pub fn position(&self, topic: &str, partition: i32) -> Option<i64> {
        self.assigned
            .get(&(Arc::from(topic), partition))
            .map(|a| a.position)
    }

    /// The high watermark seen by the last fetch of `topic`/`partition` (-1 before any).
    pub fn high_watermark(&self, topic: &str, partition: i32) -> Option<i64> {
        self.assigned
            .get(&(Arc::from(topic), partition))
            .map(|a| a.high_watermark)
    }

    /// Waits up to `timeout` for records; returns them in offset order per partition (an
    /// empty vector when none arrived). A fetch error is returned once the records fetched
    /// before it have been handed out.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        if self.assigned.is_empty() {
            return Err(Error::Config(
                "poll called with no partition assigned".into(),
            ));
        }
        self.poll_assigned(timeout).await
    }

    /// As [`poll`](Self::poll), but with nothing assigned it waits out the timeout (a group
    /// member between assignments). Cancel-safe: nothing taken in is lost when the future is
    /// dropped at its wait.
    pub(crate) async fn poll_assigned(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord>> {
        if let Some(e) = self.pending_error.take() {
            return Err(e);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let first = match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(f)) => f,
                Ok(None) | Err(_) => return Ok(out),
            };
            self.absorb(first, &mut out);
            let mut taken = 1;
            while taken < MAX_RESPONSES_PER_POLL && self.pending_error.is_none() {
                match self.rx.try_recv() {
                    Ok(f) => {
                        self.absorb(f, &mut out);
                        taken += 1;
                    }
                    Err(_) => break,
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
            if let Some(e) = self.pending_error.take() {
                return Err(e);
            }
        }
    }

    fn absorb(&mut self, fetched: Fetched, out: &mut Vec<ConsumerRecord>) {
        let key = (fetched.topic, fetched.partition);
        let Some(a) = self.assigned.get_mut(&key) else {
            return;
        };
        if a.generation != fetched.generation {
            return; // from before a seek or re-assignment
        }
        match fetched.result {
            Err(e) => {
                if self.pending_error.is_none() {
                    self.pending_error = Some(e);
                }
            }
            Ok(data) => {
                if let Some(offset) = data.reset_to {
                    tracing::info!(
                        topic = %key.0, partition = key.1, from = a.position, to = offset,
                        "position out of range: reset"
                    );
                    a.position = offset;
                }
                a.high_watermark = data.high_watermark;
                out.reserve(data.records.len());
                for r in data.records {
                    if r.offset >= a.position {
                        a.position = r.offset + 1;
                        out.push(r);
                    }
                }
                if data.next_offset > a.position {
                    a.position = data.next_offset;
                }
            }
        }
    }
}

/// Fetched batches decoded.
#[derive(Debug)]
pub(crate) struct Decoded {
    /// The records at or after the offset asked for, up to the first batch that could not be
    /// decoded.
    pub(crate) records: Vec<ConsumerRecord>,
    /// The offset after the last batch decoded.
    pub(crate) next: Option<i64>,
    /// A batch that could not be decoded, named by its offset: the records before it are in
    /// `records`, and the reader stops there.
    pub(crate) error: Option<(i64, Error)>,
}

/// Decodes fetched batches into records at or after `from`, up to the first batch that cannot
/// be decoded.
pub(crate) fn decode_records(
    topic: &Arc<str>,
    partition: i32,
    batches: &Bytes,
    from: i64,
) -> Decoded {
    let mut out = Decoded {
        records: Vec::new(),
        next: None,
        error: None,
    };
    for batch in split_batches(batches) {
        let at = out.next.unwrap_or(from);
        let fail = |source| Error::Codec {
            context: format!(
                "`{topic}`/{partition}: the stored batch at offset {at} cannot be read"
            ),
            source,
        };
        let batch = match batch {
            Ok(b) => batches.slice_ref(b),
            Err(e) => {
                out.error = Some((at, fail(e)));
                return out;
            }
        };
        let (header, records) = match decode_batch_bytes(&batch) {
            Ok(d) => d,
            Err(e) => {
                let at = runnel_codec::read_header(&batch).map_or(at, |h| h.base_offset.max(at));
                out.error = Some((
                    at,
                    Error::Codec {
                        context: format!(
                            "`{topic}`/{partition}: the stored batch at offset {at} cannot be read"
                        ),
                        source: e,
                    },
                ));
                return out;
            }
        };
        out.next = Some(header.next_offset());
        if header.is_control() {
            continue;
        }
        out.records.reserve(records.len());
        for r in records {
            if r.offset < from {
                continue;
            }
            out.records.push(ConsumerRecord {
                topic: topic.clone(),
                partition,
                offset: r.offset,
                timestamp: r.timestamp,
                key: r.key,
                value: r.value,
                headers: r.headers,
            });
        }
    }
    out
}

fn retriable_fetch_code(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::NotFound
            | tonic::Code::FailedPrecondition
            | tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Cancelled
    )
}

/// Fetches one partition in a loop, handing decoded records to the consumer.
async fn fetch_loop(
    cluster: Cluster,
    config: Arc<ConsumerConfig>,
    topic: Arc<str>,
    partition: i32,
    mut offset: i64,
    generation: u64,
    tx: mpsc::Sender<Fetched>,
) {
    let send = |result: Result<FetchedData>| Fetched {
        topic: topic.clone(),
        partition,
        generation,
        result,
    };
    let mut client = None;
    let mut address = String::new();
    let mut failures: u32 = 0;
    loop {
        let c = match &mut client {
            Some(c) => c,
            None => {
                let leader = match cluster.cluster_info(&[topic.to_string()]).await {
                    Ok(info) => {
                        if failures >= 3 && !info.topics.contains_key(&*topic) {
                            let _ = tx
                                .send(send(Err(Error::UnknownTopic(topic.to_string()))))
                                .await;
                            return;
                        }
                        info.leader_address(&topic, partition, cluster.bootstrap_address())
                    }
                    Err(_) => cluster.bootstrap_address().to_owned(),
                };
                match cluster.pool().get(&leader).await {
                    Ok(ch) => {
                        address = leader;
                        client.insert(broker_client(ch))
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(%topic, partition, error = %e, "fetch: cannot connect");
                        tokio::time::sleep(fetch_backoff(failures)).await;
                        continue;
                    }
                }
            }
        };
        let request = FetchRequest {
            topic: topic.to_string(),
            partition,
            offset,
            max_bytes: config.max_bytes,
            max_wait_ms: config.max_wait.as_millis() as u32,
            min_bytes: config.min_bytes,
            ..Default::default()
        };
        match c.fetch(request).await {
            Ok(resp) => {
                failures = 0;
                let resp = resp.into_inner();
                let decoded = decode_records(&topic, partition, &resp.batches, offset);
                let records = decoded.records;
                if let Some((at, e)) = decoded.error {
                    // What came before the bad batch is delivered, then the reader stops there.
                    if !records.is_empty() {
                        let data = FetchedData {
                            records,
                            next_offset: at,
                            reset_to: None,
                            high_watermark: resp.high_watermark,
                        };
                        if tx.send(send(Ok(data))).await.is_err() {
                            return;
                        }
                    }
                    let _ = tx.send(send(Err(e))).await;
                    return;
                }
                let after = decoded.next;
                let next = if resp.next_offset > offset {
                    resp.next_offset
                } else {
                    after.filter(|a| *a > offset).unwrap_or(offset)
                };
                if records.is_empty() && next == offset {
                    continue;
                }
                let data = FetchedData {
                    records,
                    next_offset: next,
                    reset_to: None,
                    high_watermark: resp.high_watermark,
                };
                if tx.send(send(Ok(data))).await.is_err() {
                    return;
                }
                offset = next;
            }
            Err(status) if status.code() == tonic::Code::OutOfRange => {
                let (start, hw) = log_range(&cluster, &topic, partition)
                    .await
                    .unwrap_or((-1, -1));
                let reset = match config.auto_offset_reset {
                    AutoOffsetReset::Earliest if start >= 0 => Some(start),
                    AutoOffsetReset::Latest if hw >= 0 => Some(hw),
                    _ => None,
                };
                match reset {
                    Some(to) => {
                        offset = to;
                        let data = FetchedData {
                            records: Vec::new(),
                            next_offset: to,
                            reset_to: Some(to),
                            high_watermark: hw,
                        };
                        if tx.send(send(Ok(data))).await.is_err() {
                            return;
                        }
                    }
                    None => {
                        let error = if start >= 0 {
                            Error::OffsetOutOfRange {
                                topic: topic.to_string(),
                                partition,
                                offset,
                                log_start_offset: start,
                                high_watermark: hw,
                            }
                        } else {
                            Error::rpc(
                                format!("fetch from `{topic}`/{partition} at offset {offset}"),
                                status,
                            )
                        };
                        let _ = tx.send(send(Err(error))).await;
                        return;
                    }
                }
            }
            Err(_) if tx.is_closed() => return, // the consumer is gone
            Err(status) if retriable_fetch_code(status.code()) => {
                failures += 1;
                tracing::warn!(%topic, partition, offset, %address, code = ?status.code(),
                    message = status.message(), "fetch failed; retrying");
                if matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::Unknown
                ) {
                    cluster.pool().invalidate(&address).await;
                }
                client = None;
                tokio::time::sleep(fetch_backoff(failures)).await;
            }
            Err(status) => {
                let error = Error::rpc(
                    format!("fetch from `{topic}`/{partition} at offset {offset}"),
                    status,
                );
                let _ = tx.send(send(Err(error))).await;
                return;
            }
        }
    }
}

fn fetch_backoff(failures: u32) -> Duration {
    (Duration::from_millis(100) * (1u32 << failures.min(4))).min(Duration::from_secs(1))
}

/// The log start offset and high watermark of one partition.
async fn log_range(cluster: &Cluster, topic: &str, partition: i32) -> Result<(i64, i64)> {
    let info = cluster.cluster_info(&[topic.to_owned()]).await?;
    let offsets = cluster
        .list_offsets(&info, topic, &[partition], OffsetSpec::Earliest, 0)
        .await?;
    let o = offsets
        .iter()
        .find(|o| o.partition == partition)
        .ok_or_else(|| Error::UnknownTopic(topic.to_owned()))?;
    Ok((o.offset.max(o.log_start_offset), o.high_watermark))
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_codec::{BatchBuilder, Compression};

    fn batch(base_offset: i64, values: &[&str], compression: Compression) -> Vec<u8> {
        let mut b = BatchBuilder::new(compression, 1000);
        for (i, v) in values.iter().enumerate() {
            b.append(1000 + i as i64, Some(b"k"), Some(v.as_bytes()), &[]);
        }
        let mut bytes = b.build().expect("build").to_vec();
        bytes[0..8].copy_from_slice(&base_offset.to_be_bytes());
        // The base offset is outside the CRC, so patching it keeps the batch valid.
        bytes
    }

    #[test]
    fn decode_filters_records_before_the_requested_offset() {
        let mut buf = batch(10, &["a", "b", "c"], Compression::None);
        buf.extend(batch(13, &["d", "e"], Compression::Lz4));
        let buf = Bytes::from(buf);
        let topic: Arc<str> = Arc::from("t");
        let d = decode_records(&topic, 0, &buf, 12);
        assert!(d.error.is_none());
        let (records, next) = (d.records, d.next);
        let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![12, 13, 14]);
        assert_eq!(records[0].value.as_deref(), Some(&b"c"[..]));
        assert_eq!(records[2].value.as_deref(), Some(&b"e"[..]));
        assert_eq!(records[0].timestamp, 1002);
        assert_eq!(next, Some(15));
        let d = decode_records(&topic, 0, &Bytes::new(), 0);
        assert!(d.records.is_empty() && d.error.is_none());
        assert_eq!(d.next, None);
    }

    #[test]
    fn decode_reports_corrupt_data_with_context() {
        // Two good batches, then one whose CRC is wrong: the records before it are delivered,
        // and the error names its offset.
        let mut buf = batch(0, &["a", "b"], Compression::None);
        buf.extend(batch(2, &["c"], Compression::Lz4));
        let mut bad = batch(3, &["d"], Compression::None);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        buf.extend(bad);
        let d = decode_records(&Arc::from("t"), 3, &Bytes::from(buf), 1);
        let offsets: Vec<i64> = d.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![1, 2]);
        let (at, e) = d.error.expect("corrupt");
        assert_eq!(at, 3);
        assert!(e.to_string().contains("`t`/3"), "{e}");
        assert!(e.to_string().contains("offset 3"), "{e}");
    }

    #[test]
    fn offset_query_parses() {
        assert_eq!(
            "earliest".parse::<OffsetQuery>().ok(),
            Some(OffsetQuery::Earliest)
        );
        assert_eq!(
            "latest".parse::<OffsetQuery>().ok(),
            Some(OffsetQuery::Latest)
        );
        assert_eq!(
            "1700000000000".parse::<OffsetQuery>().ok(),
            Some(OffsetQuery::Timestamp(1_700_000_000_000))
        );
        assert!("yesterday".parse::<OffsetQuery>().is_err());
    }
}
