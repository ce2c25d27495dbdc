//! Replication between brokers, over the `Replica` gRPC service.
//!
//! * [`follower`]: for every leader this broker copies partitions from, one task that
//!   truncates each copy to the leader's epoch ([`crate::log::truncation_point`]), then holds
//!   a stream to the leader: batches come in and are appended byte for byte; the copy's stored
//!   and durable ends go back after each append and each group commit.
//! * [`leader`]: the other end: for each follower's stream, batches are sent from where the
//!   follower stands as they are stored (past the high watermark: committing needs them), at
//!   most [`WINDOW_BYTES`] ahead of what it has stored; its progress moves the ISR
//!   ([`IsrTracker`]) and the high watermark.
//!
//! The roles come from the metadata ([`crate::broker`]'s `roles`); the [`run`] task restarts a
//! follower's fetcher whenever what it should copy changes.

mod follower;
mod isr;
mod leader;

pub use isr::IsrTracker;
pub use leader::{epoch_end, serve_follower};

use crate::broker::Broker;
use crate::storage::Storage;
use runnel_proto::v1::ClusterMetadata;
use std::collections::BTreeMap;
use std::sync::Arc;

/// How far a leader sends ahead of what a follower has stored, per partition.
pub const WINDOW_BYTES: usize = 16 << 20;
/// The most bytes of one partition in one message to a follower.
pub const CHUNK_BYTES: usize = 1 << 20;

/// One partition a follower copies: its leader epoch.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Followed {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The leader epoch it follows.
    pub epoch: i32,
}

/// What this broker should copy, by leader: (leader id, its address) → partitions.
pub fn fetch_plan(cluster: &ClusterMetadata, me: i32) -> BTreeMap<(i32, String), Vec<Followed>> {
    let mut plan: BTreeMap<(i32, String), Vec<Followed>> = BTreeMap::new();
    for t in &cluster.topics {
        for p in &t.partitions {
            if p.leader < 0 || p.leader == me || !p.replicas.contains(&me) {
                continue;
            }
            let Some(b) = cluster.brokers.iter().find(|b| b.id == p.leader) else {
                continue;
            };
            plan.entry((p.leader, b.address.clone()))
                .or_default()
                .push(Followed {
                    topic: t.name.clone(),
                    partition: p.partition,
                    epoch: p.leader_epoch,
                });
        }
    }
    plan
}

/// Keeps one fetcher per leader running, each for exactly what the metadata says to copy from
/// it; returns when the broker shuts down.
pub async fn run<S: Storage>(broker: Arc<Broker<S>>) {
    let mut changed = broker.watch_metadata();
    let mut shutdown = broker.shutdown_signal();
    let mut running: BTreeMap<(i32, String), (Vec<Followed>, tokio::task::JoinHandle<()>)> =
        BTreeMap::new();
    loop {
        changed.borrow_and_update();
        let plan = fetch_plan(&broker.cluster_metadata_view(), broker.settings().broker_id);
        running.retain(|leader, (partitions, task)| {
            let keep = plan.get(leader) == Some(partitions) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for (leader, partitions) in plan {
            if running.contains_key(&leader) {
                continue;
            }
            let task = tokio::spawn(follower::follow(
                broker.clone(),
                leader.0,
                leader.1.clone(),
                partitions.clone(),
            ));
            running.insert(leader, (partitions, task));
        }
        tokio::select! {
            r = changed.changed() => if r.is_err() { break },
            _ = shutdown.changed() => break,
        }
    }
    for (_, (_, task)) in running {
        task.abort();
    }
}
