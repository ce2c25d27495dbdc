//! The sender task: picks up sealed batches from the accumulator, ships them on the
//! partition leaders' streams (up to `max_in_flight` per partition), matches the answers to
//! the batches in order, and keeps the metadata fresh.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runnel_codec::NO_SEQUENCE;
use runnel_proto::v1::{ProduceRequest, ProduceResponse};
use tokio::sync::mpsc;

use super::accumulator::Batch;
use super::connection::Conn;
use super::record::BatchAck;
use super::retry::Round;
use super::{lock, Acks, Shared};
use crate::connection::ClusterInfo;
use crate::error::{Error, Result};

pub(super) enum Event {
    Response {
        conn: u64,
        response: ProduceResponse,
    },
    ConnFailed {
        conn: u64,
        error: Error,
    },
    Metadata(Result<ClusterInfo>),
    /// The answer to the producer's request for its next epoch: (producer id, epoch).
    Bumped(Result<(i64, i16)>),
}

/// Where the producer is in taking its next epoch (Kafka's KIP-360).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Bump {
    /// Not needed.
    None,
    /// Needed, once nothing is in flight (at or after the instant, after a failed attempt).
    Wanted(Instant),
    /// Asked for.
    Asked,
}

pub(super) struct PartitionState {
    pub(super) topic: Arc<str>,
    pub(super) partition: i32,
    pub(super) queue: VecDeque<Batch>,
    pub(super) in_flight: VecDeque<Batch>,
    pub(super) conn: Option<u64>,
    /// The metadata generation `conn` was chosen under.
    pub(super) address_generation: u64,
    pub(super) next_sequence: i32,
    /// When set, batches with a sequence already are re-numbered from this cursor.
    pub(super) resequence: Option<i32>,
    pub(super) round: Option<Round>,
    pub(super) backoff_until: Option<Instant>,
    pub(super) attempts: u32,
}

pub(super) struct Sender {
    pub(super) shared: Arc<Shared>,
    pub(super) partitions: Vec<PartitionState>,
    index: HashMap<(Arc<str>, i32), usize>,
    pub(super) conns: HashMap<u64, Conn>,
    pub(super) conn_by_address: HashMap<String, u64>,
    pub(super) next_conn: u64,
    next_correlation: u64,
    pub(super) events_tx: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    pub(super) metadata_generation: u64,
    refreshing: bool,
    pub(super) refresh_wanted: bool,
    last_refresh: Instant,
    /// Reused buffer for batches taken from the accumulator.
    scratch: VecDeque<Batch>,
    /// The producer id and epoch batches are built with now.
    pub(super) producer_id: i64,
    pub(super) producer_epoch: i16,
    pub(super) bump: Bump,
}

impl Sender {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        let (events_tx, events) = mpsc::unbounded_channel();
        Sender {
            partitions: Vec::new(),
            index: HashMap::new(),
            conns: HashMap::new(),
            conn_by_address: HashMap::new(),
            next_conn: 1,
            next_correlation: 1,
            events_tx,
            events,
            metadata_generation: 0,
            refreshing: false,
            refresh_wanted: false,
            last_refresh: Instant::now(),
            scratch: VecDeque::new(),
            producer_id: shared.producer_id,
            producer_epoch: shared.producer_epoch,
            bump: Bump::None,
            shared,
        }
    }

    pub(super) async fn run(mut self) {
        let linger = self.shared.config.linger;
        loop {
            let now = Instant::now();
            let closing = self.shared.closing.load(Ordering::Acquire);
            let next_linger = {
                let mut acc = lock(&self.shared.acc);
                let (bytes, next) = acc.seal_due(now, (!closing).then_some(linger));
                if bytes > 0 {
                    self.shared.buffered.fetch_add(bytes, Ordering::AcqRel);
                }
                std::mem::swap(&mut acc.ready, &mut self.scratch);
                next
            };
            while let Some(batch) = self.scratch.pop_front() {
                self.enqueue(batch);
            }
            self.expire(now);
            self.check_request_timeouts(now);
            self.dispatch(now);
            if now.duration_since(self.last_refresh) > METADATA_MAX_AGE {
                self.refresh_wanted = true;
            }
            if self.refresh_wanted && !self.refreshing {
                self.start_refresh();
            }
            if closing && next_linger.is_none() && self.idle() {
                break;
            }
            let mut wake_at = now + Duration::from_secs(1);
            if let Some(t) = next_linger {
                wake_at = wake_at.min(t);
            }
            for p in &self.partitions {
                if let (Some(t), false) = (p.backoff_until, p.queue.is_empty()) {
                    wake_at = wake_at.min(t);
                }
            }
            tokio::select! {
                _ = self.shared.wake_sender.notified() => {}
                ev = self.events.recv() => {
                    if let Some(ev) = ev {
                        self.handle(ev);
                        while let Ok(ev) = self.events.try_recv() {
                            self.handle(ev);
                        }
                    }
                }
                _ = tokio::time::sleep_until(wake_at.into()) => {}
            }
        }
        // A send that raced with close: nothing will ship it any more.
        let mut acc = lock(&self.shared.acc);
        // Counted in `buffered` as every sealed batch is, since completing one takes it off.
        let (sealed, _) = acc.seal_due(Instant::now(), None);
        self.shared.buffered.fetch_add(sealed, Ordering::AcqRel);
        let left: Vec<Batch> = acc.ready.drain(..).collect();
        drop(acc);
        for mut b in left {
            self.shared.complete(&mut b, Err(Error::Closed));
        }
    }

    fn idle(&self) -> bool {
        self.partitions
            .iter()
            .all(|p| p.queue.is_empty() && p.in_flight.is_empty() && p.round.is_none())
    }

    fn enqueue(&mut self, batch: Batch) {
        let key = (batch.topic.clone(), batch.partition);
        let pi = match self.index.get(&key) {
            Some(&i) => i,
            None => {
                let i = self.partitions.len();
                self.partitions.push(PartitionState {
                    topic: batch.topic.clone(),
                    partition: batch.partition,
                    queue: VecDeque::new(),
                    in_flight: VecDeque::new(),
                    conn: None,
                    address_generation: u64::MAX,
                    next_sequence: 0,
                    resequence: None,
                    round: None,
                    backoff_until: None,
                    attempts: 0,
                });
                self.index.insert(key, i);
                i
            }
        };
        self.partitions[pi].queue.push_back(batch);
    }

    fn dispatch(&mut self, now: Instant) {
        if self.bump != Bump::None {
            self.start_bump(now);
            return;
        }
        let max_in_flight = self.shared.config.max_in_flight;
        for pi in 0..self.partitions.len() {
            loop {
                let p = &self.partitions[pi];
                if p.queue.is_empty() || p.round.is_some() || p.in_flight.len() >= max_in_flight {
                    break;
                }
                if p.backoff_until.is_some_and(|t| t > now) {
                    break;
                }
                let Some(conn) = self.conn_for(pi) else {
                    break;
                };
                let Some(mut batch) = self.partitions[pi].queue.pop_front() else {
                    break;
                };
                if let Err(e) = self.prepare(pi, &mut batch) {
                    self.shared.complete(&mut batch, Err(e));
                    continue;
                }
                self.ship(pi, conn, batch, now);
            }
        }
    }

    fn ship(&mut self, pi: usize, conn_id: u64, mut batch: Batch, now: Instant) {
        let correlation_id = self.next_correlation;
        self.next_correlation += 1;
        let request = ProduceRequest {
            topic: batch.topic.to_string(),
            partition: Some(batch.partition),
            acks: self.shared.config.acks.wire() as i32,
            batches: batch.data.clone().unwrap_or_default(),
            correlation_id,
            ..Default::default()
        };
        let sent = match self.conns.get_mut(&conn_id) {
            Some(conn) if conn.requests.send(request).is_ok() => {
                conn.in_flight.push_back((correlation_id, pi, now));
                true
            }
            _ => false,
        };
        batch.attempts += 1;
        if self.shared.config.acks == Acks::None && sent {
            self.shared.complete(
                &mut batch,
                Ok(BatchAck {
                    base_offset: -1,
                    log_append_time: -1,
                }),
            );
        }
        let p = &mut self.partitions[pi];
        p.in_flight.push_back(batch);
        p.conn = Some(conn_id);
        if !sent {
            let error = Error::Transport {
                address: self
                    .conns
                    .get(&conn_id)
                    .map(|c| c.address.clone())
                    .unwrap_or_default(),
                message: "the produce stream is closed".into(),
            };
            self.fail_conn(conn_id, error, now);
        }
    }

    fn handle(&mut self, ev: Event) {
        let now = Instant::now();
        match ev {
            Event::Response { conn, response } => self.on_response(conn, response, now),
            Event::ConnFailed { conn, error } => {
                if self.conns.contains_key(&conn) {
                    tracing::warn!(conn, error = %error, "produce stream failed");
                    self.fail_conn(conn, error, now);
                }
            }
            Event::Bumped(result) => self.on_bumped(result, now),
            Event::Metadata(result) => {
                self.refreshing = false;
                self.last_refresh = now;
                match result {
                    Ok(info) => self.apply_metadata(info),
                    Err(e) => tracing::warn!(error = %e, "metadata refresh failed"),
                }
            }
        }
    }

    fn on_response(&mut self, conn_id: u64, response: ProduceResponse, now: Instant) {
        let Some(conn) = self.conns.get_mut(&conn_id) else {
            return; // a connection given up on already
        };
        let Some(&(correlation_id, pi, _)) = conn.in_flight.front() else {
            let e = Error::Protocol(format!(
                "answer with correlation id {} but no request is outstanding",
                response.correlation_id
            ));
            self.fail_conn(conn_id, e, now);
            return;
        };
        if correlation_id != response.correlation_id {
            let e = Error::Protocol(format!(
                "answer with correlation id {} while {} was expected next",
                response.correlation_id, correlation_id
            ));
            self.fail_conn(conn_id, e, now);
            return;
        }
        conn.in_flight.pop_front();
        let Some(mut batch) = self.partitions[pi].in_flight.pop_front() else {
            return;
        };
        match response.error {
            None => {
                self.partitions[pi].attempts = 0;
                self.partitions[pi].backoff_until = None;
                let ack = BatchAck {
                    base_offset: response.base_offset,
                    log_append_time: response.log_append_time_ms,
                };
                self.shared.complete(&mut batch, Ok(ack));
            }
            Some(err) => {
                // The broker's message usually names the topic and partition already.
                let context = if err.message.contains(&format!("`{}`", batch.topic)) {
                    String::new()
                } else {
                    batch.context()
                };
                let status = tonic::Status::new(tonic::Code::from_i32(err.code), err.message);
                let error = Error::rpc(context, status);
                self.on_batch_error(pi, batch, error, now);
            }
        }
        if self.partitions[pi].in_flight.is_empty() {
            self.finish_round(pi, now);
        }
    }

    fn start_refresh(&mut self) {
        self.refresh_wanted = false;
        self.refreshing = true;
        let cluster = self.shared.cluster.clone();
        let tx = self.events_tx.clone();
        tokio::spawn(async move {
            let result = cluster.cluster_info(&[]).await;
            let _ = tx.send(Event::Metadata(result));
        });
    }

    fn apply_metadata(&mut self, info: ClusterInfo) {
        {
            let mut acc = lock(&self.shared.acc);
            for (name, t) in &info.topics {
                acc.add_topic(name, t.partitions.len());
            }
        }
        for p in &mut self.partitions {
            let error = match info.topics.get(&*p.topic) {
                None => Some(Error::UnknownTopic(p.topic.to_string())),
                Some(t) if !t.partitions.iter().any(|m| m.partition == p.partition) => {
                    Some(Error::UnknownPartition {
                        topic: p.topic.to_string(),
                        partition: p.partition,
                        partitions: t.partitions.len(),
                    })
                }
                Some(_) => None,
            };
            if let Some(error) = error {
                while let Some(mut b) = p.queue.pop_front() {
                    if b.data.is_some() && b.base_sequence != NO_SEQUENCE {
                        p.resequence.get_or_insert(b.base_sequence);
                    }
                    self.shared.complete(&mut b, Err(error.clone()));
                }
            }
        }
        {
            // A partition waiting out a backoff whose leader has changed resends at once: the
            // new leader is known (as Kafka's clients do since KIP-951); were it to fail too,
            // the backoff goes on growing.
            let before = self
                .shared
                .metadata
                .read()
                .unwrap_or_else(|e| e.into_inner());
            for p in &mut self.partitions {
                let now = info.leader(&p.topic, p.partition);
                if p.backoff_until.is_some()
                    && now.is_some()
                    && now != before.leader(&p.topic, p.partition)
                {
                    p.backoff_until = None;
                }
            }
        }
        *self
            .shared
            .metadata
            .write()
            .unwrap_or_else(|e| e.into_inner()) = info;
        self.metadata_generation += 1;
    }
}

/// How often the sender refreshes metadata without being asked (Kafka's `metadata.max.age.ms`).
const METADATA_MAX_AGE: Duration = Duration::from_secs(300);
