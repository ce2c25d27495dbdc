//! The leader's end of a follower's stream, and its answer to where an epoch ends.

use super::{CHUNK_BYTES, WINDOW_BYTES};
use crate::broker::{now_ms, Broker};
use crate::error::BrokerError;
use crate::log::{LogError, PartitionLog, Role};
use crate::replication::IsrTracker;
use crate::storage::Storage;
use parking_lot::Mutex;
use runnel_proto::v1::{
    ErrorStatus, LeaderEpochEndRequest, LeaderEpochEndResponse, PartitionData, PartitionProgress,
    ReplicaData, ReplicaProgress,
};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify};
use tonic::Status;

type Log<S> = Arc<PartitionLog<<S as Storage>::Log>>;

/// How often a stream looks again without being woken (to pass on a new high watermark).
const TICK: Duration = Duration::from_millis(100);

/// The log and leader state of a partition this broker leads at `epoch`, or why not.
fn led<S: Storage>(
    broker: &Broker<S>,
    topic: &str,
    partition: i32,
    epoch: i32,
) -> Result<(Log<S>, Arc<Mutex<IsrTracker>>), BrokerError> {
    let (log, _) = broker.leader_log(topic, partition)?;
    let tracker = broker.leader_state(topic, partition);
    let current = tracker.as_ref().map_or(-1, |t| t.lock().epoch());
    match tracker {
        Some(t) if current == epoch && log.role() == (Role::Leader, epoch) => Ok((log, t)),
        _ => Err(BrokerError::LeaderEpoch {
            code: if epoch < current {
                "FENCED_LEADER_EPOCH"
            } else {
                "UNKNOWN_LEADER_EPOCH"
            },
            topic: topic.to_string(),
            partition,
            asked: epoch,
            current,
            broker: broker.settings().broker_id,
        }),
    }
}

/// Where epoch `leader_epoch` ends in this leader's copy (Kafka's OffsetsForLeaderEpoch).
pub fn epoch_end<S: Storage>(
    broker: &Broker<S>,
    req: &LeaderEpochEndRequest,
) -> Result<LeaderEpochEndResponse, BrokerError> {
    let (log, _) = led(broker, &req.topic, req.partition, req.current_leader_epoch)?;
    let end = log.epoch_end(req.leader_epoch);
    Ok(LeaderEpochEndResponse {
        leader_epoch: end.epoch,
        end_offset: end.end_offset,
        log_start_offset: log.summary().log_start_offset,
    })
}

/// One partition sent on a follower's stream.
struct Served<S: Storage> {
    topic: String,
    partition: i32,
    epoch: i32,
    log: Log<S>,
    tracker: Arc<Mutex<IsrTracker>>,
    /// Where the next send starts.
    next: i64,
    /// Sends the follower has not stored yet: (offset after it, bytes).
    in_flight: std::collections::VecDeque<(i64, usize)>,
    in_flight_bytes: usize,
    /// The high watermark last passed on.
    sent_hw: i64,
    /// Refused: the follower is told once, then nothing more is sent.
    error: Option<ErrorStatus>,
}

fn error_status(e: &BrokerError) -> ErrorStatus {
    ErrorStatus {
        code: e.code() as i32,
        message: e.to_string(),
    }
}

/// Takes one partition's first progress on a stream.
fn admit<S: Storage>(
    broker: &Broker<S>,
    follower: i32,
    p: &PartitionProgress,
) -> Result<Served<S>, (String, i32, i32, ErrorStatus)> {
    let refuse = |e: BrokerError| {
        (
            p.topic.clone(),
            p.partition,
            p.leader_epoch,
            error_status(&e),
        )
    };
    let (log, tracker) = led(broker, &p.topic, p.partition, p.leader_epoch).map_err(refuse)?;
    if !tracker.lock().is_follower(follower) {
        return Err(refuse(BrokerError::InvalidRequest(format!(
            "broker {follower} holds no copy of {}/{}",
            p.topic, p.partition
        ))));
    }
    tracker.lock().new_session(follower);
    let s = log.summary();
    if p.log_end_offset < s.log_start_offset || p.log_end_offset > s.log_end_offset {
        return Err(refuse(BrokerError::log(
            &p.topic,
            p.partition,
            LogError::OffsetOutOfRange {
                offset: p.log_end_offset,
                log_start_offset: s.log_start_offset,
                log_end_offset: s.log_end_offset,
            },
        )));
    }
    broker.follower_progress(
        &tracker,
        &log,
        follower,
        p.log_end_offset,
        p.durable_end_offset,
    );
    Ok(Served {
        topic: p.topic.clone(),
        partition: p.partition,
        epoch: p.leader_epoch,
        log,
        tracker,
        next: p.log_end_offset,
        in_flight: Default::default(),
        in_flight_bytes: 0,
        sent_hw: -1,
        error: None,
    })
}

/// Serves a follower's stream: its first message names the partitions and where each stands;
/// the answer sends their batches as they are stored; later messages report progress.
pub async fn serve_follower<S: Storage>(
    broker: Arc<Broker<S>>,
    mut inbound: tonic::Streaming<ReplicaProgress>,
    out: mpsc::Sender<Result<ReplicaData, Status>>,
) {
    let first = match inbound.message().await {
        Ok(Some(m)) => m,
        _ => return,
    };
    let follower = first.follower_id;
    let mut refused = Vec::new();
    let mut served: BTreeMap<(String, i32), Served<S>> = BTreeMap::new();
    for p in &first.partitions {
        match admit(&broker, follower, p) {
            Ok(s) => {
                served.insert((p.topic.clone(), p.partition), s);
            }
            Err((topic, partition, leader_epoch, error)) => refused.push(PartitionData {
                topic,
                partition,
                leader_epoch,
                error: Some(error),
                ..Default::default()
            }),
        }
    }
    if !refused.is_empty()
        && out
            .send(Ok(ReplicaData {
                partitions: refused,
            }))
            .await
            .is_err()
    {
        return;
    }
    let served = Arc::new(Mutex::new(served));
    let woken = Arc::new(Notify::new());
    // Progress from the follower, applied as it comes.
    let reader = {
        let (broker, served, woken) = (broker.clone(), served.clone(), woken.clone());
        tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                let mut served = served.lock();
                for p in m.partitions {
                    let Some(s) = served.get_mut(&(p.topic, p.partition)) else {
                        continue;
                    };
                    if s.error.is_some() || p.leader_epoch != s.epoch {
                        continue;
                    }
                    while let Some((end, bytes)) = s.in_flight.front().copied() {
                        if end > p.log_end_offset {
                            break;
                        }
                        s.in_flight.pop_front();
                        s.in_flight_bytes -= bytes;
                    }
                    broker.follower_progress(
                        &s.tracker,
                        &s.log,
                        follower,
                        p.log_end_offset,
                        p.durable_end_offset,
                    );
                }
                drop(served);
                woken.notify_one();
            }
            woken.notify_one();
        })
    };
    let mut appended = broker.watch_appended();
    let mut flushed = broker.watch_flushed();
    let mut shutdown = broker.shutdown_signal();
    loop {
        appended.borrow_and_update();
        flushed.borrow_and_update();
        if reader.is_finished() || *shutdown.borrow() {
            break;
        }
        let message = match next_message(&broker, follower, &served) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, follower, "reading for a follower failed");
                break;
            }
        };
        if let Some(m) = message {
            if out.send(Ok(m)).await.is_err() {
                break;
            }
            continue;
        }
        tokio::select! {
            _ = appended.changed() => {}
            _ = flushed.changed() => {}
            _ = woken.notified() => {}
            _ = shutdown.changed() => {}
            _ = out.closed() => break,
            _ = tokio::time::sleep(TICK) => {}
        }
    }
    reader.abort();
}

/// What to send next: each partition's batches from where it stands, within the window, and
/// its high watermark when it moved; `None` when there is nothing.
fn next_message<S: Storage>(
    broker: &Broker<S>,
    follower: i32,
    served: &Mutex<BTreeMap<(String, i32), Served<S>>>,
) -> Result<Option<ReplicaData>, BrokerError> {
    let mut served = served.lock();
    let now = now_ms();
    let mut partitions = Vec::new();
    for s in served.values_mut() {
        if s.error.is_some() {
            continue;
        }
        // Still the leader at this epoch? If not, the follower hears it and starts again.
        if let Err(e) = led(broker, &s.topic, s.partition, s.epoch) {
            let error = error_status(&e);
            s.error = Some(error.clone());
            partitions.push(PartitionData {
                topic: s.topic.clone(),
                partition: s.partition,
                leader_epoch: s.epoch,
                error: Some(error),
                ..Default::default()
            });
            continue;
        }
        let summary = s.log.summary();
        let mut batches = Vec::new();
        if s.next < s.log.stored_end_offset() && s.in_flight_bytes < WINDOW_BYTES {
            batches = s
                .log
                .read_replica(s.next, CHUNK_BYTES)
                .map_err(|e| BrokerError::log(&s.topic, s.partition, e))?;
            if let Some(last) = batches.last() {
                let h = runnel_codec::read_header(last).map_err(|e| {
                    BrokerError::log(&s.topic, s.partition, LogError::InvalidBatch(e))
                })?;
                s.next = h.next_offset();
                let bytes: usize = batches.iter().map(|b| b.len()).sum();
                s.in_flight.push_back((s.next, bytes));
                s.in_flight_bytes += bytes;
                s.tracker.lock().sent(follower, s.next, now);
            }
        }
        if batches.is_empty() && summary.high_watermark <= s.sent_hw {
            continue;
        }
        s.sent_hw = summary.high_watermark;
        partitions.push(PartitionData {
            topic: s.topic.clone(),
            partition: s.partition,
            leader_epoch: s.epoch,
            batches,
            high_watermark: summary.high_watermark,
            log_start_offset: summary.log_start_offset,
            error: None,
        });
    }
    Ok((!partitions.is_empty()).then_some(ReplicaData { partitions }))
}
