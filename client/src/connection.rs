//! Connections to brokers: tonic channels keyed by address, and the cluster metadata that says
//! which broker leads which partition.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use runnel_proto::v1::admin_client::AdminClient;
use runnel_proto::v1::broker_client::BrokerClient;
use runnel_proto::v1::{
    ListOffsetsRequest, MetadataRequest, MetadataResponse, OffsetSpec, PartitionOffset,
    TopicMetadata,
};
use tokio::sync::Mutex;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};

/// The largest gRPC message the clients send or accept (64 MiB): big batches and fetches.
pub const MAX_MESSAGE_SIZE: usize = 64 << 20;

/// Splits a bootstrap string (`host:port[,host:port…]`) into addresses.
pub fn parse_bootstrap(bootstrap: &str) -> Result<Vec<String>> {
    let addrs: Vec<String> = bootstrap
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.strip_prefix("http://")
                .unwrap_or(s)
                .trim_end_matches('/')
                .to_owned()
        })
        .collect();
    if addrs.is_empty() {
        return Err(Error::Config(format!(
            "bootstrap `{bootstrap}` names no broker (expected HOST:PORT[,HOST:PORT…])"
        )));
    }
    for a in &addrs {
        if !a.contains(':') {
            return Err(Error::Config(format!(
                "bootstrap address `{a}` has no port (expected HOST:PORT)"
            )));
        }
    }
    Ok(addrs)
}

/// Largest HTTP/2 frame accepted from the broker (HTTP/2's default is 16 KiB).
const MAX_FRAME_BYTES: u32 = 1 << 20;

fn endpoint(address: &str) -> Result<Endpoint> {
    let e = Endpoint::from_shared(format!("http://{address}")).map_err(|e| Error::Transport {
        address: address.to_owned(),
        message: e.to_string(),
    })?;
    Ok(e.connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(16 << 20))
        // Frames as large as a batch: the broker's answers to fetches arrive in a few frames
        // instead of one per 16 KiB.
        .max_frame_size(Some(MAX_FRAME_BYTES)))
}

/// Opens one HTTP/2 connection to `address`.
pub async fn connect(address: &str) -> Result<Channel> {
    endpoint(address)?
        .connect()
        .await
        .map_err(|e| Error::Transport {
            address: address.to_owned(),
            message: transport_message(&e),
        })
}

/// A channel to `address` that connects on first use (and reconnects after failures), so that
/// opening it never waits.
pub fn connect_lazy(address: &str) -> Result<Channel> {
    Ok(endpoint(address)?.connect_lazy())
}

/// The innermost cause of a transport error ("Connection refused (os error 111)"), which is
/// what a person needs to read.
pub(crate) fn transport_message(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg = s.to_string();
        source = s.source();
    }
    msg
}

/// A `Broker` service client on a channel, with the 64 MiB message limits.
pub fn broker_client(channel: Channel) -> BrokerClient<Channel> {
    BrokerClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}

/// An `Admin` service client on a channel, with the 64 MiB message limits.
pub fn admin_client(channel: Channel) -> AdminClient<Channel> {
    AdminClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}

/// Channels keyed by broker address, opened on first use and shared after that.
#[derive(Debug, Clone)]
pub struct Pool {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Default for Pool {
    fn default() -> Self {
        Self::new()
    }
}

impl Pool {
    /// An empty pool.
    pub fn new() -> Self {
        Pool {
            channels: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The channel to `address`, connecting if there is none yet.
    pub async fn get(&self, address: &str) -> Result<Channel> {
        let mut channels = self.channels.lock().await;
        if let Some(c) = channels.get(address) {
            return Ok(c.clone());
        }
        let c = connect(address).await?;
        channels.insert(address.to_owned(), c.clone());
        Ok(c)
    }

    /// Forgets the channel to `address` (after a transport failure) so that the next `get`
    /// reconnects.
    pub async fn invalidate(&self, address: &str) {
        self.channels.lock().await.remove(address);
    }
}

/// What the client knows about the cluster: broker addresses and topic layouts.
#[derive(Debug, Clone, Default)]
pub struct ClusterInfo {
    /// Broker id → `host:port` (may be empty when a broker does not know its address).
    pub brokers: HashMap<i32, String>,
    /// Topic name → metadata.
    pub topics: HashMap<String, TopicMetadata>,
}

impl ClusterInfo {
    /// Builds the view from a `Metadata` answer.
    pub fn from_response(resp: MetadataResponse) -> Self {
        ClusterInfo {
            brokers: resp
                .brokers
                .into_iter()
                .map(|b| (b.id, b.address))
                .collect(),
            topics: resp
                .topics
                .into_iter()
                .map(|t| (t.name.clone(), t))
                .collect(),
        }
    }

    /// Number of partitions of `topic`, if it is known.
    pub fn partition_count(&self, topic: &str) -> Option<usize> {
        self.topics.get(topic).map(|t| t.partitions.len())
    }

    /// The id of the leader of `topic`/`partition`, when it has one (an election may be under
    /// way: no leader, -1).
    pub fn leader(&self, topic: &str, partition: i32) -> Option<i32> {
        self.topics
            .get(topic)
            .and_then(|t| t.partitions.iter().find(|p| p.partition == partition))
            .map(|p| p.leader)
            .filter(|l| *l >= 0)
    }

    /// Address of the leader of `topic`/`partition`: the metadata's address for the leader's
    /// id, or `fallback` (the bootstrap) when it has none.
    pub fn leader_address(&self, topic: &str, partition: i32, fallback: &str) -> String {
        self.topics
            .get(topic)
            .and_then(|t| t.partitions.iter().find(|p| p.partition == partition))
            .and_then(|p| self.brokers.get(&p.leader))
            .filter(|a| !a.is_empty())
            .cloned()
            .unwrap_or_else(|| fallback.to_owned())
    }
}

/// Bootstrap addresses and a pool: finds a broker that answers and asks it for metadata.
#[derive(Debug, Clone)]
pub struct Cluster {
    bootstrap: Vec<String>,
    pool: Pool,
}

impl Cluster {
    /// Parses the bootstrap list; connects lazily.
    pub fn new(bootstrap: &str) -> Result<Self> {
        Ok(Cluster {
            bootstrap: parse_bootstrap(bootstrap)?,
            pool: Pool::new(),
        })
    }

    /// The first bootstrap address (the fallback for brokers without a known address).
    pub fn bootstrap_address(&self) -> &str {
        &self.bootstrap[0]
    }

    /// Every bootstrap address, in the order given.
    pub fn bootstrap_addresses(&self) -> &[String] {
        &self.bootstrap
    }

    /// The connection pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A channel to the first bootstrap broker that accepts a connection.
    pub async fn any_channel(&self) -> Result<(String, Channel)> {
        let mut last = None;
        for addr in &self.bootstrap {
            match self.pool.get(addr).await {
                Ok(c) => return Ok((addr.clone(), c)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Config("no bootstrap address".into())))
    }

    /// A `Broker` client on some bootstrap broker.
    pub async fn broker(&self) -> Result<BrokerClient<Channel>> {
        Ok(broker_client(self.any_channel().await?.1))
    }

    /// An `Admin` client on some bootstrap broker.
    pub async fn admin(&self) -> Result<AdminClient<Channel>> {
        Ok(admin_client(self.any_channel().await?.1))
    }

    /// A `Broker` client on `address`.
    pub async fn broker_at(&self, address: &str) -> Result<BrokerClient<Channel>> {
        Ok(broker_client(self.pool.get(address).await?))
    }

    /// Asks a bootstrap broker for metadata of `topics` (all when empty).
    pub async fn metadata(&self, topics: &[String]) -> Result<MetadataResponse> {
        let (addr, channel) = self.any_channel().await?;
        let result = broker_client(channel)
            .metadata(MetadataRequest {
                topics: topics.to_vec(),
            })
            .await;
        match result {
            Ok(r) => Ok(r.into_inner()),
            Err(status) => {
                if status.code() == tonic::Code::Unavailable {
                    self.pool.invalidate(&addr).await;
                }
                Err(Error::rpc("", status))
            }
        }
    }

    /// Metadata of the given topics as a [`ClusterInfo`]; topics the broker reports as
    /// unknown (NOT_FOUND) are simply absent.
    pub async fn cluster_info(&self, topics: &[String]) -> Result<ClusterInfo> {
        match self.metadata(topics).await {
            Ok(r) => Ok(ClusterInfo::from_response(r)),
            Err(e) if e.code() == Some(tonic::Code::NotFound) && !topics.is_empty() => {
                // Some brokers answer NOT_FOUND for an unknown topic instead of leaving it out.
                let all = self.metadata(&[]).await?;
                let mut info = ClusterInfo::from_response(all);
                info.topics.retain(|name, _| topics.contains(name));
                Ok(info)
            }
            Err(e) => Err(e),
        }
    }
}

impl Cluster {
    /// `ListOffsets` of `partitions` of `topic` (all when empty), each asked of its leader as
    /// `info` knows it; sorted by partition.
    pub async fn list_offsets(
        &self,
        info: &ClusterInfo,
        topic: &str,
        partitions: &[i32],
        spec: OffsetSpec,
        timestamp_ms: i64,
    ) -> Result<Vec<PartitionOffset>> {
        let wanted: Vec<i32> = if partitions.is_empty() {
            info.topics
                .get(topic)
                .map(|t| t.partitions.iter().map(|p| p.partition).collect())
                .unwrap_or_default()
        } else {
            partitions.to_vec()
        };
        let mut by_leader: HashMap<String, Vec<i32>> = HashMap::new();
        for p in wanted {
            by_leader
                .entry(info.leader_address(topic, p, self.bootstrap_address()))
                .or_default()
                .push(p);
        }
        let mut out = Vec::new();
        for (address, parts) in by_leader {
            let resp = self
                .broker_at(&address)
                .await?
                .list_offsets(ListOffsetsRequest {
                    topic: topic.to_owned(),
                    partitions: parts,
                    spec: spec as i32,
                    timestamp_ms,
                })
                .await
                .map_err(|s| Error::rpc("", s))?
                .into_inner();
            out.extend(resp.partitions);
        }
        out.sort_by_key(|p| p.partition);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_proto::v1::{BrokerInfo, PartitionMetadata};

    #[test]
    fn bootstrap_parsing() {
        assert_eq!(
            parse_bootstrap("127.0.0.1:9092").expect("valid"),
            vec!["127.0.0.1:9092"]
        );
        assert_eq!(
            parse_bootstrap("a:1, b:2,").expect("valid"),
            vec!["a:1", "b:2"]
        );
        assert_eq!(parse_bootstrap("http://a:1/").expect("valid"), vec!["a:1"]);
        assert!(parse_bootstrap("").is_err());
        assert!(parse_bootstrap("localhost")
            .expect_err("no port")
            .to_string()
            .contains("no port"));
    }

    #[test]
    fn leader_address_falls_back_to_bootstrap() {
        let info = ClusterInfo::from_response(MetadataResponse {
            brokers: vec![
                BrokerInfo {
                    id: 1,
                    address: "b1:9092".into(),
                    rack: String::new(),
                },
                BrokerInfo {
                    id: 2,
                    address: String::new(),
                    rack: String::new(),
                },
            ],
            topics: vec![TopicMetadata {
                name: "t".into(),
                partitions: vec![
                    PartitionMetadata {
                        partition: 0,
                        leader: 1,
                        ..Default::default()
                    },
                    PartitionMetadata {
                        partition: 1,
                        leader: 2,
                        ..Default::default()
                    },
                    PartitionMetadata {
                        partition: 2,
                        leader: -1,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        });
        assert_eq!(info.partition_count("t"), Some(3));
        assert_eq!(info.leader_address("t", 0, "boot:1"), "b1:9092");
        assert_eq!(info.leader_address("t", 1, "boot:1"), "boot:1");
        assert_eq!(info.leader_address("t", 2, "boot:1"), "boot:1");
        assert_eq!(info.leader_address("u", 0, "boot:1"), "boot:1");
    }
}
