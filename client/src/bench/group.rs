//! `runnel bench group`: a consumer group reading a backlog, and the handover of a member's
//! partitions when it leaves.
//!
//! - *Throughput*: `members` [`GroupConsumer`]s (each with its own connections, as tasks of
//!   this process, committing automatically, `auto_offset_reset` earliest) join a new group
//!   and read the topic from its beginning. The clock starts when the first member subscribes
//!   (their connections are made before) and stops at the poll that handed out the last
//!   record of the backlog not handed out before: every record is counted once, over all
//!   members; one handed out again is a duplicate. The same figure as `bench consume` (one
//!   plain consumer from its assignment to its last record), so the two can be divided.
//! - *Handover* (two members or more): once the backlog is read, a producer writes a steady
//!   stream to every partition in turn; when every partition's new records reach the group
//!   and every member owns partitions, the member owning the most leaves cleanly
//!   ([`GroupConsumer::close`]: it commits, then leaves the group). The handover time runs
//!   from the call of `close` to the poll of another member that hands out a record of the
//!   last of the leaver's partitions: the time during which those partitions are consumed by
//!   no one.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::task::JoinHandle;

use super::payload;
use super::progress::Progress;
use crate::admin::Admin;
use crate::consumer::{AutoOffsetReset, ConsumerConfig, ConsumerRecord, OffsetQuery};
use crate::error::{Error, Result};
use crate::group::{GroupConsumer, GroupConsumerConfig};
use crate::producer::{Producer, ProducerConfig, ProducerRecord};

/// Settings of `bench group`.
#[derive(Debug, Clone)]
pub struct GroupBench {
    /// Brokers.
    pub bootstrap: String,
    /// Topic to read from its beginning.
    pub topic: String,
    /// Group id; `None`: a new one, deleted after the run. A group that already has
    /// committed offsets for the topic is refused: it would not start at the beginning.
    pub group: Option<String>,
    /// Members, each a [`GroupConsumer`] with its own connections.
    pub members: usize,
    /// Distinct records to read; `None`: every record in the topic when the bench starts.
    pub records: Option<u64>,
    /// Give up when no new record arrived for this long.
    pub idle_timeout: Duration,
    /// Automatic commit interval (Kafka's `auto.commit.interval.ms`).
    pub auto_commit_interval: Duration,
    /// Measure the handover of a leaving member's partitions (needs two members or more).
    pub handover: bool,
    /// Records/s of the stream written during the handover, over all partitions.
    pub handover_rate: u64,
    /// Longest wait for the stream to reach every partition, and for the handover.
    pub handover_timeout: Duration,
    /// Draw a progress line (distinct records of the backlog read) on standard error while
    /// the backlog is read: for a terminal.
    pub progress: bool,
}

impl Default for GroupBench {
    fn default() -> Self {
        let g = GroupConsumerConfig::default();
        GroupBench {
            bootstrap: ConsumerConfig::default().bootstrap,
            topic: "runnel-bench".into(),
            group: None,
            members: 3,
            records: None,
            idle_timeout: Duration::from_secs(5),
            auto_commit_interval: g.auto_commit_interval,
            handover: true,
            handover_rate: 1000,
            handover_timeout: Duration::from_secs(30),
            progress: false,
        }
    }
}

/// Result of `bench group`.
#[derive(Debug, Clone, Serialize)]
pub struct GroupReport {
    /// Always "group".
    pub bench: &'static str,
    /// Topic.
    pub topic: String,
    /// Group id.
    pub group: String,
    /// Members.
    pub members: usize,
    /// Partitions of the topic.
    pub partitions: usize,
    /// Automatic commit interval, in ms.
    pub auto_commit_interval_ms: u64,
    /// Distinct records of the backlog read (up to the count asked for).
    pub records: u64,
    /// Value bytes of those records.
    pub bytes: u64,
    /// From the first member's subscription to the poll that completed the backlog.
    pub seconds: f64,
    /// Distinct records per second.
    pub records_per_sec: f64,
    /// 10^6 bytes of values per second.
    pub mb_per_sec: f64,
    /// Records handed out more than once (backlog and handover stream together).
    pub duplicates: u64,
    /// Records of the backlog each member was handed (with any a last poll handed out beyond
    /// the count asked for, and duplicates).
    pub member_records: Vec<u64>,
    /// False when no new record came for the idle timeout before the backlog was read.
    pub complete: bool,
    /// The member that left for the handover measurement.
    pub handover_member: Option<usize>,
    /// The partitions it owned.
    pub handover_partitions: Vec<i32>,
    /// How long its `close` took (commit and leave).
    pub close_ms: Option<f64>,
    /// From the call of `close` until every one of its partitions handed a record to another
    /// member.
    pub handover_ms: Option<f64>,
    /// Records the handover stream wrote.
    pub stream_records: u64,
}

impl fmt::Display for GroupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "group `{}` of {} member(s) read {} records ({} bytes of values) of `{}` \
             ({} partitions) in {:.2} s, committing every {} ms{}",
            self.group,
            self.members,
            self.records,
            self.bytes,
            self.topic,
            self.partitions,
            self.seconds,
            self.auto_commit_interval_ms,
            if self.complete {
                ""
            } else {
                " (no new record came for the idle timeout before the backlog was read)"
            }
        )?;
        write!(
            f,
            "throughput: {:.0} records/s, {:.2} MB/s; records per member: {}; duplicates: {}",
            self.records_per_sec,
            self.mb_per_sec,
            self.member_records
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" / "),
            self.duplicates
        )?;
        if let (Some(m), Some(h)) = (self.handover_member, self.handover_ms) {
            write!(
                f,
                "\nhandover: member {m} left owning partition(s) {:?} (its close took {:.1} ms); \
                 they were consumed again by the others {h:.1} ms after the close began \
                 ({} stream records written)",
                self.handover_partitions,
                self.close_ms.unwrap_or(0.0),
                self.stream_records
            )?;
        }
        Ok(())
    }
}

/// Locks a mutex, also one a panicked member task held (the tallies stay usable).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The offsets of one partition the members were handed, as a bitmap from the log start.
#[derive(Debug)]
struct PartitionTally {
    log_start: i64,
    /// The high watermark when the bench started: offsets below it are the backlog.
    backlog_end: i64,
    seen: Vec<u64>,
}

impl PartitionTally {
    fn new(log_start: i64, backlog_end: i64) -> Self {
        let len = (backlog_end - log_start).max(0) as usize;
        PartitionTally {
            log_start,
            backlog_end,
            seen: vec![0; len.div_ceil(64)],
        }
    }

    /// Marks `offset` handed out: whether it was before (`None` below the log start).
    fn mark(&mut self, offset: i64) -> Option<bool> {
        let i = usize::try_from(offset.checked_sub(self.log_start)?).ok()?;
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        let before = self.seen[word] & bit != 0;
        self.seen[word] |= bit;
        Some(before)
    }
}

/// Partitions waited for: each until a member other than `except` hands out one of its
/// records at or after an offset.
#[derive(Debug)]
struct Watch {
    except: Option<usize>,
    /// Partition → the first offset that counts; removed when seen.
    pending: BTreeMap<i32, i64>,
    /// When the last one was seen.
    done: Option<Instant>,
}

impl Watch {
    fn new(except: Option<usize>, pending: BTreeMap<i32, i64>, now: Instant) -> Self {
        let done = pending.is_empty().then_some(now);
        Watch {
            except,
            pending,
            done,
        }
    }

    fn see(&mut self, member: usize, records: &[ConsumerRecord], now: Instant) {
        if self.done.is_some() || self.except == Some(member) {
            return;
        }
        for r in records {
            if self
                .pending
                .get(&r.partition)
                .is_some_and(|o| r.offset >= *o)
            {
                self.pending.remove(&r.partition);
            }
        }
        if self.pending.is_empty() {
            self.done = Some(now);
        }
    }
}

/// What the members were handed, shared by their tasks: every offset of the topic once,
/// so that progress counts distinct records and a record handed out twice is a duplicate.
#[derive(Debug)]
struct Tally {
    /// By partition number (a topic's partitions are 0..n).
    partitions: Vec<Mutex<PartitionTally>>,
    /// Distinct records of the backlog handed out.
    backlog_records: AtomicU64,
    /// Of those, the first `target` (a poll may hand out more than the target needs), and
    /// their value bytes: what the report counts, as `bench consume` stops at its count.
    counted_records: AtomicU64,
    counted_bytes: AtomicU64,
    duplicates: AtomicU64,
    /// Records of the backlog handed to each member.
    per_member: Vec<AtomicU64>,
    target: u64,
    /// When the target was reached, and when a new record last came.
    done: Mutex<Option<Instant>>,
    last_progress: Mutex<Instant>,
    watch: Mutex<Option<Watch>>,
}

impl Tally {
    /// `ranges`: (log start, high watermark) of partition 0, 1, ….
    fn new(ranges: &[(i64, i64)], target: u64, members: usize, start: Instant) -> Self {
        Tally {
            partitions: ranges
                .iter()
                .map(|&(s, e)| Mutex::new(PartitionTally::new(s, e)))
                .collect(),
            backlog_records: AtomicU64::new(0),
            counted_records: AtomicU64::new(0),
            counted_bytes: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            per_member: (0..members).map(|_| AtomicU64::new(0)).collect(),
            target,
            done: Mutex::new(None),
            last_progress: Mutex::new(start),
            watch: Mutex::new(None),
        }
    }

    /// Counts what one poll of `member` returned at `now`.
    fn record(&self, member: usize, records: &[ConsumerRecord], now: Instant) {
        if records.is_empty() {
            return;
        }
        let (mut fresh, mut bytes, mut dups, mut backlog) = (0u64, 0u64, 0u64, 0u64);
        // A poll returns runs of one partition's records: one lock per run.
        for run in records.chunk_by(|a, b| a.partition == b.partition) {
            let Some(slot) = usize::try_from(run[0].partition)
                .ok()
                .and_then(|p| self.partitions.get(p))
            else {
                continue;
            };
            let mut part = lock(slot);
            for r in run {
                let Some(before) = part.mark(r.offset) else {
                    continue;
                };
                let in_backlog = r.offset < part.backlog_end;
                backlog += u64::from(in_backlog);
                if before {
                    dups += 1;
                } else if in_backlog {
                    fresh += 1;
                    bytes += r.value.as_ref().map_or(0, |v| v.len() as u64);
                }
            }
        }
        if let Some(n) = self.per_member.get(member) {
            n.fetch_add(backlog, Ordering::Relaxed);
        }
        self.duplicates.fetch_add(dups, Ordering::Relaxed);
        if fresh > 0 {
            let before = self.backlog_records.fetch_add(fresh, Ordering::AcqRel);
            let total = before + fresh;
            let counted = fresh.min(self.target.saturating_sub(before));
            self.counted_records.fetch_add(counted, Ordering::Relaxed);
            // Exact for records of one size, as the benches write.
            self.counted_bytes
                .fetch_add(bytes * counted / fresh, Ordering::Relaxed);
            *lock(&self.last_progress) = now;
            if total >= self.target {
                lock(&self.done).get_or_insert(now);
            }
        }
        if let Some(w) = lock(&self.watch).as_mut() {
            w.see(member, records, now);
        }
    }

    /// Starts waiting for partitions (replacing an earlier watch).
    fn arm(&self, watch: Watch) {
        *lock(&self.watch) = Some(watch);
    }

    /// When the armed watch saw its last partition, if it has (and it excepts `except`).
    fn watch_done(&self, except: Option<usize>) -> Option<Instant> {
        lock(&self.watch)
            .as_ref()
            .filter(|w| w.except == except)
            .and_then(|w| w.done)
    }

    fn done(&self) -> Option<Instant> {
        *lock(&self.done)
    }

    fn last_progress(&self) -> Instant {
        *lock(&self.last_progress)
    }
}

const RUN: u8 = 0;
const STOP: u8 = 1;
/// Leave, and arm the handover watch first.
const LEAVE: u8 = 2;

/// A member's clean leave, as its task saw it.
#[derive(Debug, Clone)]
struct Leave {
    member: usize,
    partitions: Vec<i32>,
    started: Instant,
    closed: Option<Instant>,
}

/// What the bench tells the member tasks, and what they publish back.
#[derive(Debug)]
struct Control {
    orders: Vec<AtomicU8>,
    /// The partitions each member owns, as of its last poll.
    assignments: Mutex<Vec<Vec<i32>>>,
    leave: Mutex<Option<Leave>>,
}

impl Control {
    fn new(members: usize) -> Self {
        Control {
            orders: (0..members).map(|_| AtomicU8::new(RUN)).collect(),
            assignments: Mutex::new(vec![Vec::new(); members]),
            leave: Mutex::new(None),
        }
    }

    fn order(&self, member: usize) -> u8 {
        self.orders
            .get(member)
            .map_or(STOP, |o| o.load(Ordering::Acquire))
    }

    fn tell(&self, member: usize, order: u8) {
        if let Some(o) = self.orders.get(member) {
            o.store(order, Ordering::Release);
        }
    }
}

/// Whether every partition has an owner and, when there are enough partitions, every member
/// (of `members`) owns one.
fn balanced(assignments: &[Vec<i32>], members: &[usize], partitions: usize) -> bool {
    let mut owned: Vec<i32> = members
        .iter()
        .filter_map(|m| assignments.get(*m))
        .flatten()
        .copied()
        .collect();
    owned.sort_unstable();
    owned.dedup();
    owned.len() == partitions
        && (members.len() > partitions
            || members
                .iter()
                .all(|m| assignments.get(*m).is_some_and(|a| !a.is_empty())))
}

/// The member owning the most partitions (the first of those on a tie).
fn most_owned(assignments: &[Vec<i32>]) -> usize {
    let mut best = 0;
    for (i, a) in assignments.iter().enumerate() {
        if a.len() > assignments.get(best).map_or(0, Vec::len) {
            best = i;
        }
    }
    best
}

/// How long a member's poll waits at most: it looks at its orders in between.
const POLL: Duration = Duration::from_millis(100);

/// One member: polls and counts until told to stop or to leave, then closes.
async fn member_loop(
    idx: usize,
    mut member: GroupConsumer,
    tally: Arc<Tally>,
    control: Arc<Control>,
) -> Result<()> {
    let mut owned: Vec<i32> = Vec::new();
    let order = loop {
        let order = control.order(idx);
        if order != RUN {
            break order;
        }
        let records = member.poll(POLL).await?;
        tally.record(idx, &records, Instant::now());
        let now_owned: Vec<i32> = member.assignment().into_iter().map(|(_, p)| p).collect();
        if now_owned != owned {
            owned = now_owned;
            if let Some(a) = lock(&control.assignments).get_mut(idx) {
                a.clone_from(&owned);
            }
        }
    };
    if order == LEAVE {
        let partitions: Vec<i32> = member.assignment().into_iter().map(|(_, p)| p).collect();
        let started = Instant::now();
        tally.arm(Watch::new(
            Some(idx),
            partitions.iter().map(|p| (*p, i64::MIN)).collect(),
            started,
        ));
        *lock(&control.leave) = Some(Leave {
            member: idx,
            partitions,
            started,
            closed: None,
        });
        member.close().await?;
        if let Some(l) = lock(&control.leave).as_mut() {
            l.closed = Some(Instant::now());
        }
    } else {
        member.close().await?;
    }
    if let Some(a) = lock(&control.assignments).get_mut(idx) {
        a.clear();
    }
    Ok(())
}

/// The member tasks; dropped early (an error), it aborts those still running.
#[derive(Debug)]
struct Members(Vec<Option<JoinHandle<Result<()>>>>);

impl Members {
    /// The error of a member that ended while it was told to run (those told to stop or to
    /// leave are waited for with [`join`](Self::join)).
    async fn check(&mut self, control: &Control) -> Result<()> {
        for (i, slot) in self.0.iter_mut().enumerate() {
            if control.order(i) == RUN && slot.as_ref().is_some_and(JoinHandle::is_finished) {
                if let Some(h) = slot.take() {
                    h.await
                        .map_err(|e| Error::Protocol(format!("member {i}: {e}")))??;
                    return Err(Error::Protocol(format!(
                        "member {i} stopped before it was told to"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Waits for member `i` to end.
    async fn join(&mut self, i: usize) -> Result<()> {
        match self.0.get_mut(i).and_then(Option::take) {
            Some(h) => h
                .await
                .map_err(|e| Error::Protocol(format!("member {i}: {e}")))?,
            None => Ok(()),
        }
    }
}

impl Drop for Members {
    fn drop(&mut self) {
        for h in self.0.iter().flatten() {
            h.abort();
        }
    }
}

/// Waits until `ready` returns something, checking the members every few milliseconds;
/// `None` after `timeout`.
async fn wait_for<T>(
    members: &mut Members,
    control: &Control,
    timeout: Duration,
    mut ready: impl FnMut() -> Option<T>,
) -> Result<Option<T>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = ready() {
            return Ok(Some(v));
        }
        members.check(control).await?;
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A steady stream of records to every partition in turn (one record to each, `partitions`
/// times per second over `rate`), so that each partition has new records every few
/// milliseconds. Partitions are named explicitly: keys would hash unevenly over a few.
#[derive(Debug)]
struct Stream {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Result<u64>>,
}

impl Stream {
    async fn start(bootstrap: &str, topic: &str, partitions: usize, rate: u64) -> Result<Self> {
        let producer = Producer::connect(ProducerConfig {
            bootstrap: bootstrap.to_owned(),
            linger: Duration::from_millis(1),
            ..Default::default()
        })
        .await?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let topic: Arc<str> = Arc::from(topic);
        let value = payload(100);
        let tick = Duration::from_secs_f64(partitions as f64 / rate.max(1) as f64);
        let task = tokio::spawn(async move {
            let mut next = tokio::time::Instant::now();
            let mut sent = 0u64;
            while !stop2.load(Ordering::Acquire) {
                for p in 0..partitions {
                    let record = ProducerRecord {
                        partition: Some(p as i32),
                        ..ProducerRecord::new(topic.clone(), value.clone())
                    };
                    producer.send(record).await?;
                    sent += 1;
                }
                next += tick;
                tokio::time::sleep_until(next).await;
            }
            producer.flush().await;
            let (failed, error) = producer.delivery_failures();
            producer.close().await;
            match error {
                Some(e) if failed > 0 => Err(e),
                _ => Ok(sent),
            }
        });
        Ok(Stream { stop, task })
    }

    /// Stops it; the records it wrote.
    async fn finish(self) -> Result<u64> {
        self.stop.store(true, Ordering::Release);
        self.task
            .await
            .map_err(|e| Error::Protocol(format!("stream producer: {e}")))?
    }
}

fn new_group_id() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("runnel-bench-{}-{ms}", std::process::id())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs `bench group`: each member is a task of the runtime, with its own fetchers and
/// heartbeat.
pub async fn run_group(cfg: &GroupBench) -> Result<GroupReport> {
    if cfg.members == 0 {
        return Err(Error::Config("members must be at least 1".into()));
    }
    if cfg.handover_rate == 0 {
        return Err(Error::Config("handover rate must be at least 1".into()));
    }
    let admin = Admin::connect(&cfg.bootstrap).await?;
    let earliest = admin
        .list_offsets(&cfg.topic, OffsetQuery::Earliest)
        .await?;
    let latest = admin.list_offsets(&cfg.topic, OffsetQuery::Latest).await?;
    let ranges: Vec<(i64, i64)> = earliest
        .iter()
        .zip(&latest)
        .enumerate()
        .map(|(i, (e, l))| {
            if e.partition != i as i32 || l.partition != i as i32 {
                return Err(Error::Protocol(format!(
                    "offsets of `{}`: expected partition {i}, got {} and {}",
                    cfg.topic, e.partition, l.partition
                )));
            }
            Ok((e.offset, l.offset.max(e.offset)))
        })
        .collect::<Result<_>>()?;
    let backlog: u64 = ranges.iter().map(|(s, e)| (e - s) as u64).sum();
    let target = cfg.records.unwrap_or(backlog);
    if target == 0 || target > backlog {
        return Err(Error::Config(format!(
            "`{}` holds {backlog} records (by offsets), asked to read {target}",
            cfg.topic
        )));
    }
    let (group, made_up) = match &cfg.group {
        Some(g) => {
            // A group with committed offsets starts there, not at the beginning.
            match admin.describe_group(g).await {
                Ok(d) if !d.members.is_empty() => {
                    return Err(Error::Config(format!(
                        "group `{g}` has {} member(s): use a group of its own",
                        d.members.len()
                    )))
                }
                Ok(d)
                    if d.partitions
                        .iter()
                        .any(|p| p.topic == cfg.topic && p.committed_offset.is_some()) =>
                {
                    return Err(Error::Config(format!(
                        "group `{g}` has committed offsets for `{}` and would not read it from \
                         the beginning: use a new group",
                        cfg.topic
                    )))
                }
                Ok(_) => {}
                Err(e) if e.code() == Some(tonic::Code::NotFound) => {}
                Err(e) => return Err(e),
            }
            (g.clone(), false)
        }
        None => (new_group_id(), true),
    };

    // Connections first, outside the clock, as `bench consume` connects before its clock.
    let mut consumers = Vec::with_capacity(cfg.members);
    for i in 0..cfg.members {
        consumers.push(
            GroupConsumer::new(GroupConsumerConfig {
                consumer: ConsumerConfig {
                    bootstrap: cfg.bootstrap.clone(),
                    auto_offset_reset: AutoOffsetReset::Earliest,
                    ..Default::default()
                },
                group_id: group.clone(),
                client_id: format!("runnel-bench-{i}"),
                enable_auto_commit: true,
                auto_commit_interval: cfg.auto_commit_interval,
                ..Default::default()
            })
            .await?,
        );
    }

    let start = Instant::now();
    let tally = Arc::new(Tally::new(&ranges, target, cfg.members, start));
    let control = Arc::new(Control::new(cfg.members));
    let progress = {
        let tally = tally.clone();
        Progress::start(cfg.progress, "group", target, move || {
            (
                tally.counted_records.load(Ordering::Relaxed),
                tally.counted_bytes.load(Ordering::Relaxed),
            )
        })
    };
    let mut members = Members(Vec::with_capacity(cfg.members));
    for (i, mut c) in consumers.into_iter().enumerate() {
        c.subscribe(&[cfg.topic.as_str()])?;
        members.0.push(Some(tokio::spawn(member_loop(
            i,
            c,
            tally.clone(),
            control.clone(),
        ))));
    }

    let complete = loop {
        if tally.done().is_some() {
            break true;
        }
        members.check(&control).await?;
        if tally.last_progress().elapsed() > cfg.idle_timeout {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    // The handover is a measurement of its own, of a few seconds: the line is the backlog's.
    drop(progress);
    let end = tally.done().unwrap_or_else(|| tally.last_progress());
    let seconds = end.duration_since(start).as_secs_f64().max(1e-9);
    let records = tally.counted_records.load(Ordering::Acquire);
    let bytes = tally.counted_bytes.load(Ordering::Acquire);

    let mut leave = None;
    let mut handover_ms = None;
    let mut stream_records = 0;
    if complete && cfg.handover && cfg.members >= 2 {
        let stream =
            Stream::start(&cfg.bootstrap, &cfg.topic, ranges.len(), cfg.handover_rate).await?;
        // Steady first: the stream's records reach the group on every partition, and every
        // member owns partitions.
        let everyone: Vec<usize> = (0..cfg.members).collect();
        tally.arm(Watch::new(
            None,
            ranges
                .iter()
                .enumerate()
                .map(|(p, (_, end))| (p as i32, *end))
                .collect(),
            Instant::now(),
        ));
        let steady = wait_for(&mut members, &control, cfg.handover_timeout, || {
            (tally.watch_done(None).is_some()
                && balanced(&lock(&control.assignments), &everyone, ranges.len()))
            .then_some(())
        })
        .await?;
        if steady.is_none() {
            stream.finish().await?;
            return Err(Error::Protocol(format!(
                "the stream's records did not reach every partition's owner, or the group did \
                 not give every member partitions, within {} s (assignments: {:?})",
                cfg.handover_timeout.as_secs(),
                *lock(&control.assignments)
            )));
        }
        let leaver = most_owned(&lock(&control.assignments));
        control.tell(leaver, LEAVE);
        let done = wait_for(&mut members, &control, cfg.handover_timeout, || {
            tally.watch_done(Some(leaver))
        })
        .await?;
        members.join(leaver).await?;
        stream_records = stream.finish().await?;
        let left = lock(&control.leave).clone();
        match (done, &left) {
            (Some(done), Some(l)) => handover_ms = Some(ms(done.duration_since(l.started))),
            _ => {
                return Err(Error::Protocol(format!(
                    "member {leaver} left, and its partitions {:?} were not consumed again \
                     within {} s",
                    left.map(|l| l.partitions).unwrap_or_default(),
                    cfg.handover_timeout.as_secs()
                )))
            }
        }
        leave = left;
    }

    for i in 0..cfg.members {
        control.tell(i, STOP);
    }
    for i in 0..cfg.members {
        members.join(i).await?;
    }
    if made_up {
        if let Err(e) = admin.delete_group(&group).await {
            tracing::warn!(%group, error = %e, "could not delete the bench's group");
        }
    }

    Ok(GroupReport {
        bench: "group",
        topic: cfg.topic.clone(),
        group,
        members: cfg.members,
        partitions: ranges.len(),
        auto_commit_interval_ms: cfg.auto_commit_interval.as_millis() as u64,
        records,
        bytes,
        seconds,
        records_per_sec: records as f64 / seconds,
        mb_per_sec: bytes as f64 / 1e6 / seconds,
        duplicates: tally.duplicates.load(Ordering::Acquire),
        member_records: tally
            .per_member
            .iter()
            .map(|n| n.load(Ordering::Acquire))
            .collect(),
        complete,
        handover_member: leave.as_ref().map(|l| l.member),
        handover_partitions: leave
            .as_ref()
            .map(|l| l.partitions.clone())
            .unwrap_or_default(),
        close_ms: leave
            .as_ref()
            .and_then(|l| Some(ms(l.closed?.duration_since(l.started)))),
        handover_ms,
        stream_records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn recs(partition: i32, offsets: std::ops::Range<i64>) -> Vec<ConsumerRecord> {
        offsets
            .map(|offset| ConsumerRecord {
                topic: Arc::from("t"),
                partition,
                offset,
                timestamp: 0,
                key: None,
                value: Some(Bytes::from_static(b"0123456789")),
                headers: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn every_record_counts_once_over_members() {
        let start = Instant::now();
        // Partition 0 holds 10..110, partition 1 holds 0..50: 150 records.
        let t = Tally::new(&[(10, 110), (0, 50)], 150, 2, start);
        t.record(0, &recs(0, 10..60), start);
        let mut both = recs(1, 0..50);
        both.extend(recs(0, 60..80));
        t.record(1, &both, start);
        assert_eq!(t.backlog_records.load(Ordering::Relaxed), 120);
        assert!(t.done().is_none());
        // Member 1 is handed 50..80 again (a move without a commit): 20 + 10 duplicates,
        // 10 of them new.
        t.record(1, &recs(0, 50..90), start);
        assert_eq!(t.duplicates.load(Ordering::Relaxed), 30);
        assert_eq!(t.backlog_records.load(Ordering::Relaxed), 130);
        let later = start + Duration::from_millis(7);
        t.record(0, &recs(0, 90..110), later);
        assert_eq!(t.backlog_records.load(Ordering::Relaxed), 150);
        assert_eq!(t.counted_records.load(Ordering::Relaxed), 150);
        assert_eq!(t.counted_bytes.load(Ordering::Relaxed), 1500);
        assert_eq!(t.done(), Some(later));
        assert_eq!(t.last_progress(), later);
        let per: Vec<u64> = t
            .per_member
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect();
        assert_eq!(per, vec![70, 110]);
        // Records past the backlog grow the bitmap; they are not progress, but duplicates
        // of them are counted.
        t.record(0, &recs(1, 50..300), later);
        t.record(1, &recs(1, 299..301), later);
        assert_eq!(t.backlog_records.load(Ordering::Relaxed), 150);
        assert_eq!(t.duplicates.load(Ordering::Relaxed), 31);
        // Unknown partitions and offsets below the log start are ignored.
        t.record(0, &recs(7, 0..3), later);
        t.record(0, &recs(0, 0..3), later);
        assert_eq!(t.duplicates.load(Ordering::Relaxed), 31);
    }

    #[test]
    fn a_poll_past_the_target_counts_up_to_it() {
        let start = Instant::now();
        let t = Tally::new(&[(0, 100)], 30, 1, start);
        t.record(0, &recs(0, 0..20), start);
        t.record(0, &recs(0, 20..50), start);
        assert_eq!(t.backlog_records.load(Ordering::Relaxed), 50);
        assert_eq!(t.counted_records.load(Ordering::Relaxed), 30);
        assert_eq!(t.counted_bytes.load(Ordering::Relaxed), 300);
        assert_eq!(t.done(), Some(start));
    }

    #[test]
    fn watch_ends_when_others_deliver_every_pending_partition() {
        let start = Instant::now();
        let t = Tally::new(&[(0, 10), (0, 10), (0, 10)], 30, 3, start);
        assert!(t.watch_done(None).is_none());
        // The stream: new records (offset 10 on) of every partition, by anyone.
        t.arm(Watch::new(None, [(0, 10), (1, 10), (2, 10)].into(), start));
        t.record(0, &recs(0, 5..11), start);
        t.record(1, &recs(1, 9..10), start);
        t.record(2, &recs(2, 10..11), start);
        assert!(
            t.watch_done(None).is_none(),
            "partition 1 has no new record yet"
        );
        let at = start + Duration::from_millis(3);
        t.record(1, &recs(1, 10..12), at);
        assert_eq!(t.watch_done(None), Some(at));
        assert_eq!(t.watch_done(Some(0)), None, "another watch");
        // The handover: member 0 left partitions 0 and 2; its own last records do not count.
        t.arm(Watch::new(
            Some(0),
            [(0, i64::MIN), (2, i64::MIN)].into(),
            at,
        ));
        t.record(0, &recs(0, 11..12), at);
        t.record(1, &recs(2, 11..12), at);
        assert!(t.watch_done(Some(0)).is_none());
        let later = at + Duration::from_millis(40);
        t.record(2, &recs(0, 12..13), later);
        assert_eq!(t.watch_done(Some(0)), Some(later));
        // Nothing to wait for: done at once.
        assert_eq!(Watch::new(Some(1), BTreeMap::new(), at).done, Some(at));
    }

    #[test]
    fn balance_and_the_member_to_leave() {
        let a = vec![vec![0, 3], vec![1, 4], vec![2, 5]];
        assert!(balanced(&a, &[0, 1, 2], 6));
        assert_eq!(most_owned(&a), 0);
        let a = vec![vec![0, 1, 2, 3], vec![4, 5], vec![]];
        assert!(!balanced(&a, &[0, 1, 2], 6), "member 2 owns nothing");
        assert_eq!(most_owned(&a), 0);
        let a = vec![vec![0], vec![1, 2], vec![3]];
        assert!(
            !balanced(&a, &[0, 1, 2], 6),
            "partitions 4 and 5 have no owner"
        );
        assert_eq!(most_owned(&a), 1);
        // More members than partitions: some own nothing.
        let a = vec![vec![0], vec![], vec![1]];
        assert!(balanced(&a, &[0, 1, 2], 2));
    }

    #[test]
    fn report_renders_for_people_and_scripts() {
        let r = GroupReport {
            bench: "group",
            topic: "t".into(),
            group: "g".into(),
            members: 3,
            partitions: 6,
            auto_commit_interval_ms: 5000,
            records: 300,
            bytes: 30_000,
            seconds: 2.0,
            records_per_sec: 150.0,
            mb_per_sec: 0.015,
            duplicates: 0,
            member_records: vec![100, 100, 100],
            complete: true,
            handover_member: Some(0),
            handover_partitions: vec![0, 3],
            close_ms: Some(2.5),
            handover_ms: Some(512.25),
            stream_records: 1200,
        };
        let human = r.to_string();
        assert!(human.contains("throughput: 150 records/s"), "{human}");
        assert!(human.contains("100 / 100 / 100"), "{human}");
        assert!(human.contains("512.2 ms after the close began"), "{human}");
        let json: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&r).expect("json")).expect("parse");
        assert_eq!(json["records_per_sec"], 150.0);
        assert_eq!(json["members"], 3);
        assert_eq!(json["duplicates"], 0);
        assert_eq!(json["handover_ms"], 512.25);
    }
}
