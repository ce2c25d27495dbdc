//! Calls to a group's coordinator: found with `FindCoordinator`, remembered, and found again
//! when it moves (a broker that is not the coordinator says so with FAILED_PRECONDITION).

use std::future::Future;
use std::time::Duration;

use runnel_proto::v1::groups_client::GroupsClient;
use runnel_proto::v1::FindCoordinatorRequest;
use tokio::sync::Mutex;
use tonic::transport::Channel;

use crate::connection::Cluster;
use crate::error::{Error, Result};

/// How many times a call is tried while the coordinator moves or starts.
const ATTEMPTS: u32 = 8;

/// The coordinator of one group.
#[derive(Debug)]
pub(crate) struct GroupCoordinator {
    cluster: Cluster,
    group: String,
    address: Mutex<Option<String>>,
}

/// Whether a status means "ask another broker / later": not the coordinator, none available,
/// or the connection broke.
fn moved(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::FailedPrecondition => status.message().contains("not the coordinator"),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled => true,
        _ => false,
    }
}

impl GroupCoordinator {
    pub(crate) fn new(cluster: Cluster, group: &str) -> Self {
        GroupCoordinator {
            cluster,
            group: group.to_owned(),
            address: Mutex::new(None),
        }
    }

    pub(crate) fn group(&self) -> &str {
        &self.group
    }

    async fn find(&self) -> Result<String> {
        if let Some(a) = self.address.lock().await.clone() {
            return Ok(a);
        }
        let resp = self
            .cluster
            .broker()
            .await?
            .find_coordinator(FindCoordinatorRequest {
                group_id: self.group.clone(),
            })
            .await
            .map_err(|s| Error::rpc(format!("find the coordinator of group `{}`", self.group), s))?
            .into_inner();
        *self.address.lock().await = Some(resp.address.clone());
        Ok(resp.address)
    }

    /// Calls the coordinator, finding it (again) when needed. `what` names the call in errors.
    pub(crate) async fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T>
    where
        F: Fn(GroupsClient<Channel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(50) * (1 << attempt.min(4))).await;
            }
            let address = match self.find().await {
                Ok(a) => a,
                Err(e) if e.is_retriable() => {
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let channel = match self.cluster.pool().get(&address).await {
                Ok(c) => c,
                Err(e) => {
                    *self.address.lock().await = None;
                    last = Some(e);
                    continue;
                }
            };
            match f(groups_client(channel)).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) if moved(&s) => {
                    *self.address.lock().await = None;
                    if s.code() == tonic::Code::Unavailable {
                        self.cluster.pool().invalidate(&address).await;
                    }
                    last = Some(Error::rpc(format!("{what} of group `{}`", self.group), s));
                }
                Err(s) => {
                    return Err(Error::rpc(format!("{what} of group `{}`", self.group), s));
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Protocol(format!("{what}: no coordinator answered"))))
    }
}

/// A `Groups` client on a channel.
pub(crate) fn groups_client(channel: Channel) -> GroupsClient<Channel> {
    GroupsClient::new(channel)
}

/// Used by the admin calls that must reach every broker.
pub(crate) async fn groups_client_at(
    cluster: &Cluster,
    address: &str,
) -> Result<GroupsClient<Channel>> {
    Ok(groups_client(cluster.pool().get(address).await?))
}
