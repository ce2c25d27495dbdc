//! The operator's calls to the brokers, over gRPC by pod IP: what a broker holds
//! (`Admin.DescribePartitions` and `Broker.Metadata`), new metadata (`Admin.ApplyMetadata`) and
//! deleting partition data (`Admin.DeletePartitions`). Every call has a deadline, so a broker
//! that hangs delays a reconciliation by seconds, not forever.

use runnel_proto::v1::admin_client::AdminClient;
use runnel_proto::v1::broker_client::BrokerClient;
use runnel_proto::v1::{
    ApplyMetadataRequest, ClusterMetadata, DeletePartitionsRequest, DescribePartitionsRequest,
    DescribePartitionsResponse, MetadataRequest, MetadataResponse,
};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// How long connecting to a broker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A failed call to a broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerCallError {
    /// The address is not a valid URI.
    #[error("broker address `{address}` is invalid: {source}")]
    Address {
        /// host:port.
        address: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// No connection.
    #[error("cannot connect to broker at {address}: {source}")]
    Connect {
        /// host:port.
        address: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The broker answered with an error.
    #[error("{call} on broker at {address}: {status}", status = .status.message())]
    Call {
        /// The RPC.
        call: &'static str,
        /// host:port.
        address: String,
        /// What it said.
        status: tonic::Status,
    },
}

/// A connection to one broker.
#[derive(Debug, Clone)]
pub struct BrokerConnection {
    address: String,
    channel: Channel,
}

/// What a broker holds: its partitions and the metadata it runs with.
#[derive(Debug, Clone)]
pub struct Holdings {
    /// Its partitions, with offsets and sizes.
    pub partitions: DescribePartitionsResponse,
    /// The metadata it holds (with its epoch).
    pub metadata: MetadataResponse,
}

impl BrokerConnection {
    /// Connects to the broker at `address` (`host:port`).
    pub async fn connect(address: &str) -> Result<Self, BrokerCallError> {
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|source| BrokerCallError::Address {
                address: address.to_string(),
                source,
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT);
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| BrokerCallError::Connect {
                address: address.to_string(),
                source,
            })?;
        Ok(BrokerConnection {
            address: address.to_string(),
            channel,
        })
    }

    /// The broker's `host:port`.
    pub fn address(&self) -> &str {
        &self.address
    }

    fn failed(&self, call: &'static str) -> impl FnOnce(tonic::Status) -> BrokerCallError + '_ {
        move |status| BrokerCallError::Call {
            call,
            address: self.address.clone(),
            status,
        }
    }

    /// Its partitions and metadata.
    pub async fn holdings(&self) -> Result<Holdings, BrokerCallError> {
        let partitions = AdminClient::new(self.channel.clone())
            .describe_partitions(DescribePartitionsRequest::default())
            .await
            .map_err(self.failed("DescribePartitions"))?
            .into_inner();
        let metadata = BrokerClient::new(self.channel.clone())
            .metadata(MetadataRequest::default())
            .await
            .map_err(self.failed("Metadata"))?
            .into_inner();
        Ok(Holdings {
            partitions,
            metadata,
        })
    }

    /// Sends `metadata`; returns whether the broker took it (false: it holds a newer epoch) and
    /// the epoch it holds.
    pub async fn apply(&self, metadata: ClusterMetadata) -> Result<(bool, i64), BrokerCallError> {
        let response = AdminClient::new(self.channel.clone())
            .apply_metadata(ApplyMetadataRequest {
                metadata: Some(metadata),
            })
            .await
            .map_err(self.failed("ApplyMetadata"))?
            .into_inner();
        Ok((response.applied, response.current_epoch))
    }

    /// Deletes the data of `partitions` of `topic` (all held when empty); returns those deleted.
    pub async fn delete_partitions(
        &self,
        topic: &str,
        partitions: Vec<i32>,
    ) -> Result<Vec<i32>, BrokerCallError> {
        Ok(AdminClient::new(self.channel.clone())
            .delete_partitions(DeletePartitionsRequest {
                topic: topic.to_string(),
                partitions,
            })
            .await
            .map_err(self.failed("DeletePartitions"))?
            .into_inner()
            .deleted)
    }
}
