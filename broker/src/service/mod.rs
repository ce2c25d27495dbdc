//! The gRPC edge: request messages in, [`Broker`] calls, response messages or statuses out.

mod admin;
mod data;
mod groups;
mod replica;

pub use admin::AdminService;
pub use data::BrokerService;
pub use groups::GroupsService;
pub use replica::ReplicaService;

use crate::broker::Broker;
use crate::error::BrokerError;
use crate::storage::Storage;
use std::sync::Arc;
use tonic::Status;

/// The largest gRPC message the transport decodes or sends. Larger ones are refused by the
/// transport itself (gRPC's OUT_OF_RANGE).
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;
/// The largest produce request the broker takes; larger ones get RESOURCE_EXHAUSTED.
pub const MAX_PRODUCE_BYTES: usize = 64 << 20;

/// Turns a broker error into a status, counting it.
fn status<S: Storage>(broker: &Arc<Broker<S>>, rpc: &str, e: BrokerError) -> Status {
    broker.metrics().record_error(rpc, e.metric_label());
    e.into()
}
