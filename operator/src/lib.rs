//! Runnel's Kubernetes operator: the custom resource types ([`crd`]) and the pure partition
//! assignment ([`assign`]). The controllers that turn resources into StatefulSets and broker
//! metadata build on these.

pub mod assign;
pub mod crd;
