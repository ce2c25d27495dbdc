//! The `Replica` service: followers' streams and their truncation questions.

use super::status;
use crate::broker::Broker;
use crate::replication;
use crate::storage::Storage;
use runnel_proto::v1::replica_server::Replica;
use runnel_proto::v1::{
    LeaderEpochEndRequest, LeaderEpochEndResponse, ReplicaData, ReplicaProgress,
};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Serves `Replica` over one broker.
#[derive(Debug)]
pub struct ReplicaService<S: Storage> {
    broker: Arc<Broker<S>>,
}

impl<S: Storage> ReplicaService<S> {
    /// The service over `broker`.
    pub fn new(broker: Arc<Broker<S>>) -> Self {
        Self { broker }
    }
}

#[tonic::async_trait]
impl<S: Storage> Replica for ReplicaService<S> {
    type ReplicateStream = ReceiverStream<Result<ReplicaData, Status>>;

    async fn replicate(
        &self,
        request: Request<Streaming<ReplicaProgress>>,
    ) -> Result<Response<Self::ReplicateStream>, Status> {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(replication::serve_follower(
            self.broker.clone(),
            request.into_inner(),
            tx,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn leader_epoch_end(
        &self,
        request: Request<LeaderEpochEndRequest>,
    ) -> Result<Response<LeaderEpochEndResponse>, Status> {
        replication::epoch_end(&self.broker, &request.into_inner())
            .map(Response::new)
            .map_err(|e| status(&self.broker, "LeaderEpochEnd", e))
    }
}
