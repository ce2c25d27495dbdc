//! The controllers, in kube-rs `controller-rs` style: one [`Context`] shared by every
//! controller (client, Event recorder, metrics, diagnostics), one [`Error`] enum with a
//! [`Error::metric_label`], and a module per kind with a `reconcile` and an `error_policy`.

pub mod backoff;
pub mod cluster;
pub mod group;
pub mod liveness;
pub mod metadata;
pub mod topic;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use tokio::sync::RwLock;

/// A condition that keeps `lastTransitionTime` from `previous` while its status is unchanged.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or(Time(now), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time,
        observed_generation: generation,
    }
}

/// Server-side applies `status` (any serialisable value) to the status subresource of the
/// `K` named `name`, as field manager `manager`.
pub async fn apply_status<K>(
    api: &kube::Api<K>,
    name: &str,
    status: impl serde::Serialize,
    manager: &str,
) -> Result<(), Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &kube::api::PatchParams::apply(manager).force(),
        &kube::api::Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
    .map_err(|source| Error::Kube {
        action: format!("updating the status of {} `{name}`", K::kind(&())),
        source,
    })
}

/// The field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "runnel-operator";

/// What can go wrong while reconciling.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("{action}: {source}")]
    Kube {
        /// What the operator was doing, with the object's kind and name.
        action: String,
        /// What the API (or the client) said.
        #[source]
        source: kube::Error,
    },
    /// A namespaced resource came without a namespace (the API server always sets one).
    #[error("{kind} `{name}` has no namespace")]
    MissingNamespace {
        /// The resource's kind.
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// A resource came without a UID, so nothing can be owned by it.
    #[error("{kind} `{name}` has no uid: cannot own objects")]
    MissingUid {
        /// The resource's kind.
        kind: &'static str,
        /// Its name.
        name: String,
    },
}

impl Error {
    /// A short, stable label for the `runnel_operator_reconcile_errors_total` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
            Error::MissingNamespace { .. } => "missing_namespace",
            Error::MissingUid { .. } => "missing_uid",
        }
    }
}

/// Labels of the per-controller metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// The kind the controller reconciles, e.g. `Cluster`.
    pub controller: String,
}

/// Labels of the error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The kind the controller reconciles.
    pub controller: String,
    /// [`Error::metric_label`].
    pub error: String,
}

/// Labels of a consumer group's partition, as the Kafka exporters name them.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupPartitionLabels {
    /// The group id.
    pub consumergroup: String,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: String,
}

/// Labels of a topic's partition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicPartitionLabels {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: String,
}

/// The operator's Prometheus metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Reconciliations started, per controller.
    pub reconciliations: Family<ControllerLabels, Counter>,
    /// Reconciliations that failed, per controller and error.
    pub failures: Family<ErrorLabels, Counter>,
    /// How long reconciliations take, in seconds.
    pub duration: Family<ControllerLabels, Histogram>,
    /// `kafka_consumergroup_lag`: per ConsumerGroup and partition.
    pub group_lag: Family<GroupPartitionLabels, Gauge>,
    /// `kafka_consumergroup_current_offset`: the committed offset.
    pub group_offset: Family<GroupPartitionLabels, Gauge>,
    /// `kafka_topic_partition_current_offset`: the log end offset of the partitions that
    /// ConsumerGroups read.
    pub partition_offset: Family<TopicPartitionLabels, Gauge>,
}

impl Metrics {
    /// New metrics, registered in `registry` with the prefix `runnel_operator`.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Metrics {
            reconciliations: Family::default(),
            failures: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 12))
            }),
            group_lag: Family::default(),
            group_offset: Family::default(),
            partition_offset: Family::default(),
        };
        // Named as the Kafka exporters name them, so that dashboards and alerts carry over.
        registry.register(
            "kafka_consumergroup_lag",
            "Records of a partition the consumer group has not committed yet",
            metrics.group_lag.clone(),
        );
        registry.register(
            "kafka_consumergroup_current_offset",
            "The consumer group's committed offset of a partition",
            metrics.group_offset.clone(),
        );
        registry.register(
            "kafka_topic_partition_current_offset",
            "The log end offset (high watermark) of a partition",
            metrics.partition_offset.clone(),
        );
        let registry = registry.sub_registry_with_prefix("runnel_operator");
        registry.register(
            "reconciliations",
            "Reconciliations started",
            metrics.reconciliations.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciliations that failed, by error",
            metrics.failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "How long reconciliations take",
            metrics.duration.clone(),
        );
        metrics
    }

    /// Counts a reconciliation of `controller` and returns a guard that records its duration
    /// when dropped.
    pub fn reconcile(&self, controller: &str) -> ReconcileTimer {
        let labels = ControllerLabels {
            controller: controller.to_string(),
        };
        self.reconciliations.get_or_create(&labels).inc();
        ReconcileTimer {
            histogram: self.duration.get_or_create(&labels).clone(),
            start: std::time::Instant::now(),
        }
    }

    /// Records a ConsumerGroup's lag and offsets.
    pub fn record_group(&self, group: &str, topic: &str, status: &crate::crd::ConsumerGroupStatus) {
        for p in &status.partitions {
            let labels = GroupPartitionLabels {
                consumergroup: group.to_string(),
                topic: topic.to_string(),
                partition: p.partition.to_string(),
            };
            self.group_lag.get_or_create(&labels).set(p.lag);
            if let Some(c) = p.committed_offset {
                self.group_offset.get_or_create(&labels).set(c);
            }
            self.partition_offset
                .get_or_create(&TopicPartitionLabels {
                    topic: topic.to_string(),
                    partition: p.partition.to_string(),
                })
                .set(p.log_end_offset);
        }
    }

    /// Counts a failed reconciliation.
    pub fn failure(&self, controller: &str, error: &Error) {
        self.failures
            .get_or_create(&ErrorLabels {
                controller: controller.to_string(),
                error: error.metric_label().to_string(),
            })
            .inc();
    }
}

/// Records a reconciliation's duration when dropped.
#[derive(Debug)]
pub struct ReconcileTimer {
    histogram: Histogram,
    start: std::time::Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

/// What the operator tells about itself (served for debugging).
#[derive(Clone, Debug)]
pub struct Diagnostics {
    /// When the last reconciliation started.
    pub last_event: Timestamp,
    /// Who the operator's Events come from.
    pub reporter: Reporter,
}

impl Default for Diagnostics {
    fn default() -> Self {
        Diagnostics {
            last_event: Timestamp::now(),
            reporter: Reporter {
                controller: FIELD_MANAGER.to_string(),
                instance: std::env::var("POD_NAME").ok(),
            },
        }
    }
}

/// Everything a controller needs, shared by all of them.
#[derive(Clone)]
pub struct Context {
    /// The Kubernetes client.
    pub client: kube::Client,
    /// Publishes Kubernetes Events as the operator.
    pub recorder: Recorder,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Diagnostics.
    pub diagnostics: Arc<RwLock<Diagnostics>>,
    /// How often Topic status (offsets, sizes, ISR) is refreshed from the brokers.
    pub status_interval: std::time::Duration,
    /// The metadata last decided per Cluster, for the liveness check ([`liveness`]).
    pub decided: liveness::Decided,
    /// Failed reconciles in a row per controller and object: how long `error_policy` waits.
    pub backoff: backoff::Backoff,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("metrics", &self.metrics)
            .field("diagnostics", &self.diagnostics)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context for `client`, with metrics registered in `registry`.
    pub fn new(client: kube::Client, registry: &mut Registry) -> Self {
        let diagnostics = Diagnostics::default();
        Context {
            recorder: Recorder::new(client.clone(), diagnostics.reporter.clone()),
            client,
            metrics: Arc::new(Metrics::new(registry)),
            diagnostics: Arc::new(RwLock::new(diagnostics)),
            status_interval: std::time::Duration::from_secs(10),
            decided: liveness::Decided::default(),
            backoff: backoff::Backoff::default(),
        }
    }

    /// The same context with another Topic status refresh interval.
    pub fn with_status_interval(mut self, interval: std::time::Duration) -> Self {
        self.status_interval = interval;
        self
    }

    /// `error_policy`'s answer for `object` in `controller`: retry after its backoff.
    pub fn retry_after_failure<K: kube::Resource>(
        &self,
        controller: &'static str,
        object: &K,
    ) -> kube::runtime::controller::Action {
        use kube::ResourceExt;
        let delay = self
            .backoff
            .failed(controller, object.namespace(), object.name_any());
        kube::runtime::controller::Action::requeue(delay)
    }

    async fn publish(
        &self,
        object: &ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, object).await {
            tracing::warn!(error = %e, reason, "publishing an Event failed");
        }
    }

    /// Publishes a Normal Event about `object` (failures to publish are logged, not returned).
    pub async fn inform(&self, object: &ObjectReference, reason: &str, note: String) {
        self.publish(object, EventType::Normal, reason, note).await;
    }

    /// Publishes a Warning Event about `object`.
    pub async fn warn(&self, object: &ObjectReference, reason: &str, note: String) {
        self.publish(object, EventType::Warning, reason, note).await;
    }
}
