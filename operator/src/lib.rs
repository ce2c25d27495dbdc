//! Runnel's Kubernetes operator: the custom resource types ([`crd`]), the pure partition
//! assignment ([`assign`]) and the controllers ([`controller`]) that turn resources into
//! StatefulSets, Services and broker metadata.

pub mod assign;
pub mod controller;
pub mod crd;
