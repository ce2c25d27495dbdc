//! Several brokers on loopback with a stand-in controller, so that replication and failover
//! are tested fast and deterministically without Kubernetes. The controller is a test harness,
//! not a second control plane: every [`TICK`] it asks each broker for its partitions
//! (`Admin.DescribePartitions`, which is also the liveness check), feeds the answers to the
//! same election code the operator runs ([`runnel_control::next_metadata`]), and sends the
//! metadata that comes out to every broker that answers.

use crate::load::{read_back_from, ReadBack};
use crate::Broker;
use anyhow::{bail, Context};
use bytes::Bytes;
use runnel_client::producer::{Acks, Producer, ProducerConfig, ProducerRecord};
use runnel_proto::v1::admin_client::AdminClient;
use runnel_proto::v1::{
    ApplyMetadataRequest, BrokerInfo, ClusterMetadata, DescribePartitionsRequest,
    PartitionMetadata, ProducerIdBlock, TopicConfig, TopicMetadata,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

/// How often the controller looks at the brokers.
pub const TICK: Duration = Duration::from_millis(200);
/// How long a broker has to answer before it counts as down.
const PATIENCE: Duration = Duration::from_millis(400);
/// Producer ids each broker may hand out.
const ID_BLOCK: i64 = 100_000;

/// A change of leader the controller made.
#[derive(Debug, Clone)]
pub struct LeaderChange {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The leader before (-1: none).
    pub from: i32,
    /// The leader after (-1: none).
    pub to: i32,
    /// The new leader epoch.
    pub epoch: i32,
    /// When the controller decided it.
    pub at: Instant,
}

#[derive(Debug, Default)]
struct State {
    metadata: ClusterMetadata,
    changes: Vec<LeaderChange>,
    /// Partitions whose ISR the controller saw shrink, counted once per shrink.
    isr_shrinks: usize,
}

/// Brokers `0..n` started as pods `runnel-0`…, and the controller over them.
#[derive(Debug)]
pub struct TestCluster {
    /// The brokers, by id.
    pub brokers: Vec<Broker>,
    state: Arc<Mutex<State>>,
    controller: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.controller.abort();
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl TestCluster {
    /// Starts `n` brokers with `extra` flags and the controller, their data in a temporary
    /// directory.
    pub async fn start(n: usize, extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_in(&std::env::temp_dir(), n, extra).await
    }

    /// Like [`TestCluster::start`], with the temporary directory made in `parent`.
    pub async fn start_in(parent: &Path, n: usize, extra: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir_in(parent)?;
        let mut brokers = Vec::with_capacity(n);
        for i in 0..n {
            brokers.push(Broker::start_as_pod_with(
                &dir.path().join(format!("broker-{i}")),
                &format!("runnel-{i}"),
                extra,
            )?);
        }
        let metadata = ClusterMetadata {
            epoch: 1,
            brokers: brokers
                .iter()
                .enumerate()
                .map(|(i, b)| BrokerInfo {
                    id: i as i32,
                    address: b.address.clone(),
                    rack: String::new(),
                })
                .collect(),
            topics: Vec::new(),
            producer_id_blocks: (0..n as i64)
                .map(|i| ProducerIdBlock {
                    broker_id: i as i32,
                    first_id: i * ID_BLOCK,
                    count: ID_BLOCK,
                })
                .collect(),
            producer_id_end: n as i64 * ID_BLOCK,
        };
        let addresses: Vec<String> = brokers.iter().map(|b| b.address.clone()).collect();
        let state = Arc::new(Mutex::new(State {
            metadata,
            changes: Vec::new(),
            isr_shrinks: 0,
        }));
        let controller = tokio::spawn(control(addresses, state.clone()));
        Ok(Self {
            brokers,
            state,
            controller,
            _dir: dir,
        })
    }

    /// Every broker's address, for a client's bootstrap.
    pub fn bootstrap(&self) -> String {
        self.brokers
            .iter()
            .map(|b| b.address.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether every partition has a leader and every broker of the cluster in its ISR.
    pub fn all_in_sync(&self) -> impl Fn(&ClusterMetadata) -> bool {
        let n = self.brokers.len();
        move |md| {
            md.topics.iter().all(|t| {
                t.partitions
                    .iter()
                    .all(|p| p.leader >= 0 && p.isr.len() == n)
            })
        }
    }

    /// A producer (`acks=all`, no linger) with a long delivery timeout, for timing one record
    /// through a failover with [`first_ack`].
    pub async fn probe(&self) -> anyhow::Result<Producer> {
        let mut config = ProducerConfig::new(self.bootstrap());
        config.acks = Acks::All;
        config.linger = Duration::ZERO;
        config.delivery_timeout = Duration::from_secs(20);
        config.request_timeout = Duration::from_secs(1);
        Ok(Producer::connect(config).await?)
    }

    /// How many times the controller saw a partition's ISR shrink.
    pub fn isr_shrinks(&self) -> usize {
        lock(&self.state).isr_shrinks
    }

    /// The metadata the controller holds now.
    pub fn metadata(&self) -> ClusterMetadata {
        lock(&self.state).metadata.clone()
    }

    /// Every leader change so far.
    pub fn leader_changes(&self) -> Vec<LeaderChange> {
        lock(&self.state).changes.clone()
    }

    /// A partition as the controller holds it.
    pub fn partition(&self, topic: &str, partition: i32) -> PartitionMetadata {
        self.metadata()
            .topics
            .iter()
            .find(|t| t.name == topic)
            .and_then(|t| t.partitions.iter().find(|p| p.partition == partition))
            .cloned()
            .unwrap_or_default()
    }

    /// Adds a topic: partition `p` on brokers `p, p+1, …` (mod n), led by the first, every
    /// replica in sync; and waits until every broker holds it.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replicas: i32,
        config: TopicConfig,
    ) -> anyhow::Result<()> {
        let n = self.brokers.len() as i32;
        {
            let mut s = lock(&self.state);
            let t = TopicMetadata {
                name: name.to_string(),
                partitions: (0..partitions)
                    .map(|p| {
                        let r: Vec<i32> = (0..replicas).map(|i| (p + i) % n).collect();
                        PartitionMetadata {
                            partition: p,
                            leader: r[0],
                            leader_epoch: 0,
                            isr: r.clone(),
                            replicas: r,
                        }
                    })
                    .collect(),
                replication_factor: replicas,
                config: Some(config),
            };
            s.metadata.topics.push(t);
            s.metadata.epoch += 1;
        }
        let epoch = self.metadata().epoch;
        for b in &self.brokers {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let held = describe(&endpoint(&b.address))
                    .await
                    .map(|d| d.metadata_epoch);
                if held.as_ref().is_ok_and(|e| *e >= epoch) {
                    break;
                }
                if Instant::now() > deadline {
                    bail!(
                        "broker {} did not take metadata epoch {epoch}: {held:?}",
                        b.address
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    /// Adds `__consumer_offsets` with `partitions` partitions of `min(3, brokers)` copies
    /// each and its config, as the operator places it.
    pub async fn create_offsets_topic(&self, partitions: i32) -> anyhow::Result<()> {
        let replicas = (self.brokers.len() as i32).clamp(1, 3);
        self.create_topic(
            runnel_broker::groups::OFFSETS_TOPIC,
            partitions,
            replicas,
            runnel_broker::groups::offsets_topic_config(),
        )
        .await
    }

    /// Waits until the controller's metadata satisfies `done`, at most `patience`.
    pub async fn wait_for(
        &self,
        what: &str,
        patience: Duration,
        done: impl Fn(&ClusterMetadata) -> bool,
    ) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            if done(&self.metadata()) {
                return Ok(start.elapsed());
            }
            if start.elapsed() > patience {
                bail!(
                    "{what}: not within {patience:?}; metadata: {:?}\n{}",
                    self.metadata().topics,
                    self.log_tails(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last `lines` lines of each broker's log.
    pub fn log_tails(&self, lines: usize) -> String {
        self.brokers
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let log = b.log();
                let tail: Vec<&str> = log.lines().rev().take(lines).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- broker {i}:\n{}\n", tail.join("\n"))
            })
            .collect()
    }

    /// Reads partitions `0..partitions` of `topic` from their leaders and checks them against
    /// what was acknowledged ([`read_back_from`]). Leaders may still be moving (a returning
    /// preferred leader takes over) and a new leader's high watermark rises once its followers
    /// report: the read is tried again for up to 15 s while records are missing.
    pub async fn read_back(
        &self,
        topic: &str,
        partitions: i32,
        acked: &HashMap<String, (i32, i64)>,
    ) -> anyhow::Result<ReadBack> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let endpoints: Vec<String> = (0..partitions)
                .map(|p| {
                    self.leader_address(topic, p)
                        .map(|a| format!("http://{a}"))
                        .unwrap_or_default()
                })
                .collect();
            let last = Instant::now() > deadline;
            match read_back_from(&endpoints, topic, acked).await {
                Ok(back) if back.missing.is_empty() || last => return Ok(back),
                Err(e) if last => return Err(e),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// The address of a partition's leader now.
    pub fn leader_address(&self, topic: &str, partition: i32) -> Option<String> {
        let leader = self.partition(topic, partition).leader;
        usize::try_from(leader)
            .ok()
            .and_then(|i| self.brokers.get(i))
            .map(|b| b.address.clone())
    }
}

/// Sends one record to `partition` of `topic`; how long after `since` it was acknowledged.
pub async fn first_ack(
    producer: &Producer,
    topic: &str,
    partition: i32,
    since: Instant,
) -> anyhow::Result<Duration> {
    producer
        .send(
            ProducerRecord::new(topic, Bytes::from(format!("probe-{partition}")))
                .partition(partition),
        )
        .await?
        .await?;
    Ok(since.elapsed())
}

fn endpoint(address: &str) -> Channel {
    Endpoint::from_shared(format!("http://{address}"))
        .expect("a loopback address")
        .connect_timeout(PATIENCE)
        .timeout(PATIENCE)
        .connect_lazy()
}

async fn describe(
    channel: &Channel,
) -> anyhow::Result<runnel_proto::v1::DescribePartitionsResponse> {
    let r = tokio::time::timeout(
        PATIENCE,
        AdminClient::new(channel.clone()).describe_partitions(DescribePartitionsRequest::default()),
    )
    .await
    .context("no answer")??;
    Ok(r.into_inner())
}

async fn apply(channel: &Channel, md: &ClusterMetadata) -> anyhow::Result<()> {
    tokio::time::timeout(
        PATIENCE,
        AdminClient::new(channel.clone()).apply_metadata(ApplyMetadataRequest {
            metadata: Some(md.clone()),
        }),
    )
    .await
    .context("no answer")??;
    Ok(())
}

/// The controller loop.
async fn control(addresses: Vec<String>, state: Arc<Mutex<State>>) {
    let channels: Vec<Channel> = addresses.iter().map(|a| endpoint(a)).collect();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let current = lock(&state).metadata.clone();
        let answers = futures::future::join_all(channels.iter().map(describe)).await;
        let mut live = BTreeSet::new();
        let mut reports = BTreeMap::new();
        let mut behind = Vec::new();
        let mut short_of_ids = Vec::new();
        for (id, answer) in answers.into_iter().enumerate() {
            let Ok(d) = answer else { continue };
            live.insert(id as i32);
            if d.metadata_epoch < current.epoch {
                behind.push(id);
            }
            // Less than half of its block left (a broker that lost its disk reports its
            // first block used up): the next block, as the operator hands it.
            if d.metadata_epoch >= current.epoch
                && d.producer_id_block
                    .as_ref()
                    .is_some_and(|b| d.producer_ids_left * 2 < b.count)
            {
                short_of_ids.push(id as i32);
            }
            reports.insert(
                id as i32,
                d.partitions
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
        let mut next = runnel_control::next_metadata(&current, &reports, &live);
        if !short_of_ids.is_empty() {
            let mut md = next.take().unwrap_or_else(|| ClusterMetadata {
                epoch: current.epoch + 1,
                ..current.clone()
            });
            for id in short_of_ids {
                md.producer_id_blocks.retain(|b| b.broker_id != id);
                md.producer_id_blocks.push(ProducerIdBlock {
                    broker_id: id,
                    first_id: md.producer_id_end,
                    count: ID_BLOCK,
                });
                md.producer_id_end += ID_BLOCK;
            }
            next = Some(md);
        }
        let send = match next {
            Some(next) => {
                let mut s = lock(&state);
                // Topics added meanwhile keep their place in the next round.
                if s.metadata.epoch == current.epoch {
                    note_changes(&current, &next, &mut s.changes);
                    s.isr_shrinks += isr_shrinks(&current, &next);
                    s.metadata = next.clone();
                    Some(next)
                } else {
                    None
                }
            }
            None if !behind.is_empty() => Some(current),
            None => None,
        };
        if let Some(md) = send {
            let md = &md;
            let sends = channels
                .iter()
                .enumerate()
                .filter(|(id, _)| live.contains(&(*id as i32)))
                .map(|(id, c)| async move { (id, apply(c, md).await) });
            // A broker that missed it is behind at the next tick and gets it again.
            for (id, sent) in futures::future::join_all(sends).await {
                if let Err(e) = sent {
                    eprintln!(
                        "controller: metadata epoch {} not sent to broker {id}: {e}",
                        md.epoch
                    );
                }
            }
        }
    }
}

/// How many partitions have a smaller ISR in `after` than in `before`.
fn isr_shrinks(before: &ClusterMetadata, after: &ClusterMetadata) -> usize {
    let sizes = |md: &ClusterMetadata| -> BTreeMap<(String, i32), usize> {
        md.topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| ((t.name.clone(), p.partition), p.isr.len()))
            })
            .collect()
    };
    let old = sizes(before);
    sizes(after)
        .iter()
        .filter(|(k, n)| old.get(*k).is_some_and(|o| *n < o))
        .count()
}

fn note_changes(before: &ClusterMetadata, after: &ClusterMetadata, out: &mut Vec<LeaderChange>) {
    let now = Instant::now();
    for t in &after.topics {
        let old = before.topics.iter().find(|o| o.name == t.name);
        for p in &t.partitions {
            let from = old
                .and_then(|o| o.partitions.iter().find(|q| q.partition == p.partition))
                .map_or(-1, |q| q.leader);
            if from != p.leader {
                out.push(LeaderChange {
                    topic: t.name.clone(),
                    partition: p.partition,
                    from,
                    to: p.leader,
                    epoch: p.leader_epoch,
                    at: now,
                });
            }
        }
    }
}
