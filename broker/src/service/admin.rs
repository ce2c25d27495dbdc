//! The `Admin` service: metadata from the controller, partition descriptions, topic calls of a
//! standalone broker.

use super::status;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::storage::Storage;
use runnel_proto::v1::admin_server::Admin as AdminRpc;
use runnel_proto::v1::{
    ApplyMetadataRequest, ApplyMetadataResponse, CreateTopicRequest, CreateTopicResponse,
    DeletePartitionsRequest, DeletePartitionsResponse, DeleteTopicRequest, DeleteTopicResponse,
    DescribePartitionsRequest, DescribePartitionsResponse, ListTopicsRequest, ListTopicsResponse,
    PartitionDescription,
};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The `runnel.v1.Admin` service.
#[derive(Debug)]
pub struct AdminService<S: Storage> {
    broker: Arc<Broker<S>>,
}

impl<S: Storage> AdminService<S> {
    /// Serves `broker`.
    pub fn new(broker: Arc<Broker<S>>) -> Self {
        Self { broker }
    }
}

#[tonic::async_trait]
impl<S: Storage> AdminRpc for AdminService<S> {
    async fn apply_metadata(
        &self,
        request: Request<ApplyMetadataRequest>,
    ) -> Result<Response<ApplyMetadataResponse>, Status> {
        let Some(md) = request.into_inner().metadata else {
            return Err(status(
                &self.broker,
                "ApplyMetadata",
                BrokerError::InvalidRequest("ApplyMetadata needs `metadata`".into()),
            ));
        };
        let (applied, current_epoch) = self
            .broker
            .apply_metadata(md)
            .map_err(|e| status(&self.broker, "ApplyMetadata", e))?;
        Ok(Response::new(ApplyMetadataResponse {
            applied,
            current_epoch,
        }))
    }

    async fn describe_partitions(
        &self,
        request: Request<DescribePartitionsRequest>,
    ) -> Result<Response<DescribePartitionsResponse>, Status> {
        let req = request.into_inner();
        let md = self.broker.cluster_metadata();
        let me = self.broker.settings().broker_id;
        let partitions = self
            .broker
            .held_logs()
            .into_iter()
            .filter(|((t, _), _)| req.topics.is_empty() || req.topics.contains(t))
            .map(|((topic, partition), log)| {
                let s = log.summary();
                let meta = crate::metadata::find_topic(&md, &topic)
                    .and_then(|t| t.partitions.iter().find(|p| p.partition == partition));
                PartitionDescription {
                    log_start_offset: s.log_start_offset,
                    log_end_offset: s.log_end_offset,
                    high_watermark: s.high_watermark,
                    size_bytes: s.size_bytes as i64,
                    leader_epoch: meta.map_or(0, |p| p.leader_epoch),
                    is_leader: meta.is_some_and(|p| p.leader == me)
                        && self.broker.leads(&topic, partition),
                    batch_count: s.batch_count as i64,
                    isr: self.broker.wanted_isr(&topic, partition, &log),
                    durable_end_offset: log.durable_end_offset(),
                    last_batch_epoch: log.last_batch_epoch(),
                    topic,
                    partition,
                }
            })
            .collect();
        let ids = self.broker.producer_id_block();
        Ok(Response::new(DescribePartitionsResponse {
            producer_id_block: ids.map(|(b, _)| b),
            producer_ids_left: ids.map_or(0, |(_, left)| left),
            broker_id: me,
            metadata_epoch: md.epoch,
            partitions,
        }))
    }

    async fn delete_partitions(
        &self,
        request: Request<DeletePartitionsRequest>,
    ) -> Result<Response<DeletePartitionsResponse>, Status> {
        let req = request.into_inner();
        let deleted = self
            .broker
            .delete_partitions(&req.topic, &req.partitions)
            .map_err(|e| status(&self.broker, "DeletePartitions", e))?;
        Ok(Response::new(DeletePartitionsResponse { deleted }))
    }

    async fn create_topic(
        &self,
        request: Request<CreateTopicRequest>,
    ) -> Result<Response<CreateTopicResponse>, Status> {
        let req = request.into_inner();
        let rf = if req.replication_factor == 0 {
            1
        } else {
            req.replication_factor
        };
        let topic = self
            .broker
            .create_topic(
                &req.name,
                req.partitions,
                rf,
                req.config.unwrap_or_default(),
            )
            .map_err(|e| status(&self.broker, "CreateTopic", e))?;
        Ok(Response::new(CreateTopicResponse { topic: Some(topic) }))
    }

    async fn delete_topic(
        &self,
        request: Request<DeleteTopicRequest>,
    ) -> Result<Response<DeleteTopicResponse>, Status> {
        let req = request.into_inner();
        self.broker
            .delete_topic(&req.name)
            .map_err(|e| status(&self.broker, "DeleteTopic", e))?;
        Ok(Response::new(DeleteTopicResponse {}))
    }

    async fn list_topics(
        &self,
        _request: Request<ListTopicsRequest>,
    ) -> Result<Response<ListTopicsResponse>, Status> {
        Ok(Response::new(ListTopicsResponse {
            topics: self.broker.cluster_metadata().topics,
        }))
    }
}
