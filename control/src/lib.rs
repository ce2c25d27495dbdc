//! Runnel's controller decisions, without I/O: what a partition's in-sync replicas, leader and
//! leader epoch become from what the brokers report ([`partition`]), and the whole cluster's
//! next metadata from the current one ([`metadata`]). The operator calls them with what it
//! gathered from Kubernetes and the brokers; tests call them without either.

pub mod metadata;
pub mod partition;

pub use metadata::next_metadata;
pub use partition::{plan, report_from, LeaderReport, PartitionState, Report};
