//! The operator's liveness check of the brokers, so that a leader that dies is replaced in
//! seconds rather than at the next status refresh.
//!
//! Every [`INTERVAL`] each Cluster's brokers (as the metadata last decided lists them) are asked
//! for their partitions (`Admin.DescribePartitions`, which a broker that is gone or stopped does
//! not answer in [`PATIENCE`]). When their answers call for other metadata, by the same rules
//! the metadata controller applies ([`runnel_control::next_metadata`]: a leader gone, an ISR a
//! leader wants recorded, a restarted leader waiting for a new epoch), or a broker is short of
//! producer ids, the Cluster's metadata
//! reconcile is triggered at once. The reconcile decides and sends; this only wakes it.

use crate::brokers::BrokerConnection;
use crate::crd::Cluster;
use kube::runtime::reflector::ObjectRef;
use runnel_proto::v1 as pb;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// How often every broker is checked.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// How long a broker has to answer.
pub const PATIENCE: Duration = Duration::from_millis(700);

/// The metadata last decided per Cluster (namespace, name), which the check compares against.
pub type Decided = Arc<Mutex<HashMap<(String, String), pb::ClusterMetadata>>>;

/// Checks every Cluster's brokers each [`INTERVAL`] and sends the Clusters whose metadata must
/// change to `trigger`; returns when `trigger` is closed.
pub async fn run(decided: Decided, trigger: mpsc::Sender<ObjectRef<Cluster>>) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let clusters: Vec<((String, String), pb::ClusterMetadata)> = decided
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for ((namespace, name), metadata) in clusters {
            if needs_reconcile(&metadata).await {
                tracing::info!(cluster = %name, %namespace, "brokers call for new metadata");
                let cluster = ObjectRef::<Cluster>::new(&name).within(&namespace);
                if trigger.send(cluster).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Whether what the brokers of `metadata` answer now calls for other metadata.
async fn needs_reconcile(metadata: &pb::ClusterMetadata) -> bool {
    let calls = metadata.brokers.iter().map(|b| async move {
        let answer = tokio::time::timeout(PATIENCE, async {
            BrokerConnection::connect(&b.address)
                .await?
                .holdings()
                .await
        })
        .await;
        (b.id, answer)
    });
    let mut live = BTreeSet::new();
    let mut reports = BTreeMap::new();
    let mut short_of_ids = false;
    for (id, answer) in futures::future::join_all(calls).await {
        let Ok(Ok(h)) = answer else { continue };
        live.insert(id);
        // Less than half of its producer id block left (a broker without a persisted
        // watermark, new or with a lost disk, reports its first block used up): the metadata
        // controller hands it the next block.
        short_of_ids |= h.partitions.metadata_epoch >= metadata.epoch
            && h.partitions
                .producer_id_block
                .as_ref()
                .is_some_and(|b| h.partitions.producer_ids_left * 2 < b.count);
        reports.insert(
            id,
            h.partitions
                .partitions
                .iter()
                .map(|p| {
                    (
                        (p.topic.clone(), p.partition),
                        runnel_control::report_from(p),
                    )
                })
                .collect::<BTreeMap<_, _>>(),
        );
    }
    short_of_ids || runnel_control::next_metadata(metadata, &reports, &live).is_some()
}
