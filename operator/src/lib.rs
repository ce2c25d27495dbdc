//! Runnel's Kubernetes operator: the custom resource types ([`crd`]), the pure partition
//! assignment ([`assign`]) and the controllers ([`controller`]) that turn resources into
//! StatefulSets, Services and broker metadata.

pub mod assign;
pub mod broker_config;
pub mod brokers;
pub mod controller;
pub mod crd;
pub mod lease;
pub mod producer_ids;
