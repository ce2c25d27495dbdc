//! A follower's fetcher: one task per leader, for every partition copied from it.

use super::Followed;
use crate::broker::{now_ms, Broker};
use crate::error::BrokerError;
use crate::log::{truncation_point, EpochEnd, PartitionLog};
use crate::service::MAX_MESSAGE_BYTES;
use crate::storage::Storage;
use runnel_proto::v1::replica_client::ReplicaClient;
use runnel_proto::v1::{LeaderEpochEndRequest, PartitionProgress, ReplicaProgress};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

type Log<S> = Arc<PartitionLog<<S as Storage>::Log>>;
/// A copy being followed: what it follows, its log, and the (stored, durable) ends last
/// reported to the leader.
type FollowedCopy<S> = (Followed, Log<S>, (i64, i64));

/// The first wait before connecting again after a failure; doubled up to [`MAX_BACKOFF`].
const BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long a copy that stops leading waits for the appends it took to be stored.
const STORED_WAIT: Duration = Duration::from_secs(30);
/// Truncation rounds at most (KIP-279 needs one per epoch the copies disagree on).
const TRUNCATION_ROUNDS: usize = 32;

/// Why a fetcher starts over.
#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error("connecting to the leader: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("the leader answered: {0}")]
    Rpc(#[from] tonic::Status),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("{0}")]
    Other(String),
}

/// Copies `partitions` from `leader` at `address` until the task is aborted (the metadata
/// changed) or the broker shuts down; starts over, truncating first, after any failure.
pub(super) async fn follow<S: Storage>(
    broker: Arc<Broker<S>>,
    leader: i32,
    address: String,
    partitions: Vec<Followed>,
) {
    let mut backoff = BACKOFF;
    let mut shutdown = broker.shutdown_signal();
    loop {
        if *shutdown.borrow() {
            return;
        }
        let started = tokio::time::Instant::now();
        match follow_once(&broker, leader, &address, &partitions).await {
            Ok(()) => return,
            Err(e) => {
                tracing::info!(leader, %address, error = %e, "replication from the leader stopped; starting over");
            }
        }
        if started.elapsed() > MAX_BACKOFF * 4 {
            backoff = BACKOFF;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn connect(address: &str) -> Result<ReplicaClient<Channel>, FollowError> {
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| FollowError::Other(format!("leader address {address}: {e}")))?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(32 << 20))
        .connect()
        .await?;
    Ok(ReplicaClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// Makes `log` a follower's copy that ends where the leader's epoch does.
async fn truncate<S: Storage>(
    broker: &Broker<S>,
    client: &mut ReplicaClient<Channel>,
    p: &Followed,
    log: &Log<S>,
) -> Result<(), FollowError> {
    // What this copy took as leader is stored first: the appender thread runs jobs in order.
    let l = log.clone();
    let stored = broker
        .on_appender(&p.topic, p.partition, move || l.wait_stored(STORED_WAIT))
        .await?;
    if !stored {
        return Err(FollowError::Other(format!(
            "{}/{}: appends taken as leader are still not stored",
            p.topic, p.partition
        )));
    }
    for _ in 0..TRUNCATION_ROUNDS {
        let asked = log.last_batch_epoch();
        if asked < 0 {
            return Ok(());
        }
        let answer = client
            .leader_epoch_end(LeaderEpochEndRequest {
                topic: p.topic.clone(),
                partition: p.partition,
                current_leader_epoch: p.epoch,
                leader_epoch: asked,
            })
            .await?
            .into_inner();
        let (cut, done) = truncation_point(
            &log.epochs(),
            log.log_end_offset(),
            asked,
            EpochEnd {
                epoch: answer.leader_epoch,
                end_offset: answer.end_offset,
            },
        );
        if cut < log.log_end_offset() {
            let l = log.clone();
            broker
                .on_appender(&p.topic, p.partition, move || l.truncate_to(cut, now_ms()))
                .await?
                .map_err(|e| BrokerError::log(&p.topic, p.partition, e))?;
        }
        if cut < answer.log_start_offset {
            // The leader no longer holds what this copy lacks: start over at its log start.
            let (l, start) = (log.clone(), answer.log_start_offset);
            broker
                .on_appender(&p.topic, p.partition, move || l.reset_to(start))
                .await?
                .map_err(|e| BrokerError::log(&p.topic, p.partition, e))?;
            return Ok(());
        }
        if done {
            return Ok(());
        }
    }
    Err(FollowError::Other(format!(
        "{}/{}: truncation did not settle in {TRUNCATION_ROUNDS} rounds",
        p.topic, p.partition
    )))
}

fn progress<L: crate::storage::BatchLog>(p: &Followed, log: &PartitionLog<L>) -> PartitionProgress {
    PartitionProgress {
        topic: p.topic.clone(),
        partition: p.partition,
        leader_epoch: p.epoch,
        log_end_offset: log.log_end_offset(),
        durable_end_offset: log.durable_end_offset(),
    }
}

async fn follow_once<S: Storage>(
    broker: &Arc<Broker<S>>,
    leader: i32,
    address: &str,
    partitions: &[Followed],
) -> Result<(), FollowError> {
    let mut client = connect(address).await?;
    let mut copies: BTreeMap<(String, i32), FollowedCopy<S>> = BTreeMap::new();
    for p in partitions {
        let log = broker.open_log(&p.topic, p.partition)?;
        truncate(broker, &mut client, p, &log).await?;
        copies.insert((p.topic.clone(), p.partition), (p.clone(), log, (-1, -1)));
    }
    let me = broker.settings().broker_id;
    let (tx, rx) = mpsc::channel(64);
    let first = ReplicaProgress {
        follower_id: me,
        partitions: copies
            .values_mut()
            .map(|(p, log, reported)| {
                let pr = progress(p, log);
                *reported = (pr.log_end_offset, pr.durable_end_offset);
                pr
            })
            .collect(),
    };
    tx.send(first)
        .await
        .map_err(|_| FollowError::Other("the stream closed".into()))?;
    let mut inbound = client
        .replicate(ReceiverStream::new(rx))
        .await?
        .into_inner();
    tracing::info!(leader, %address, partitions = copies.len(), "replicating from the leader");
    let mut flushed = broker.watch_flushed();
    let mut shutdown = broker.shutdown_signal();
    loop {
        let mut touched = Vec::new();
        tokio::select! {
            m = inbound.message() => {
                let Some(data) = m? else {
                    return Err(FollowError::Other("the leader ended the stream".into()));
                };
                for d in data.partitions {
                    let key = (d.topic.clone(), d.partition);
                    let Some((p, log, _)) = copies.get(&key) else { continue };
                    if let Some(e) = d.error {
                        return Err(FollowError::Other(format!(
                            "{}/{}: {}", d.topic, d.partition, e.message
                        )));
                    }
                    if d.leader_epoch != p.epoch {
                        return Err(FollowError::Other(format!(
                            "{}/{}: data for leader epoch {}, following {}",
                            d.topic, d.partition, d.leader_epoch, p.epoch
                        )));
                    }
                    if !d.batches.is_empty() {
                        broker
                            .append_replicated(&p.topic, p.partition, log, d.batches)
                            .await?;
                    }
                    log.set_leader_high_watermark(d.high_watermark);
                    touched.push(key);
                }
            }
            _ = flushed.changed() => {
                for (p, log, _) in copies.values() {
                    broker.checkpoint_gaps(&p.topic, p.partition, log).await?;
                }
                touched.extend(copies.keys().cloned());
            }
            _ = shutdown.changed() => return Ok(()),
        }
        let mut report = Vec::new();
        for key in touched {
            if let Some((p, log, reported)) = copies.get_mut(&key) {
                let pr = progress(p, log);
                let now = (pr.log_end_offset, pr.durable_end_offset);
                if now != *reported {
                    *reported = now;
                    report.push(pr);
                }
            }
        }
        if !report.is_empty()
            && tx
                .send(ReplicaProgress {
                    follower_id: me,
                    partitions: report,
                })
                .await
                .is_err()
        {
            return Err(FollowError::Other("the stream closed".into()));
        }
    }
}
