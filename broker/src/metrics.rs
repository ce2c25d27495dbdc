//! Prometheus metrics and the HTTP endpoint that serves them with `/healthz` and `/readyz`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Labels of per-topic series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabels {
    /// The topic.
    pub topic: String,
}

/// Labels of per-request-kind series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The RPC.
    pub rpc: String,
    /// The error's metric label.
    pub error: String,
}

/// The broker's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    group_lag: Family<GroupPartitionLabels, Gauge>,
    group_offset: Family<GroupPartitionLabels, Gauge>,
    partition_offset: Family<PartitionLabels, Gauge>,
    produced_records: Family<TopicLabels, Counter>,
    produced_bytes: Family<TopicLabels, Counter>,
    fetched_bytes: Family<TopicLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    /// Flushes made by the group commit.
    pub flushes: Counter,
    /// Duration of each group-commit flush, in seconds.
    pub flush_seconds: Histogram,
    /// Partitions made durable per flush.
    pub flush_partitions: Histogram,
    /// Partition logs held.
    pub partitions: Gauge,
    /// 1 while the storage is failed and every partition is offline.
    storage_offline: Gauge,
    /// Times the storage failed.
    storage_failures: Counter,
    /// Times the storage was reopened after a failure.
    pub storage_recoveries: Counter,
    /// Partitions offline (all of them while the storage is failed).
    pub offline_partitions: Gauge,
    /// Partitions this broker leads with fewer in-sync replicas than replicas (Kafka's
    /// `UnderReplicatedPartitions`), as the controller's metadata records them.
    pub under_replicated_partitions: Gauge,
    ready: AtomicBool,
    /// Why the storage is failed, for `/readyz`.
    storage_failure: parking_lot::Mutex<Option<String>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut root = Registry::default();
        // Consumer-group metrics under the names the Kafka exporters use, so that existing
        // dashboards and alerts carry over.
        let group_lag = Family::<GroupPartitionLabels, Gauge>::default();
        let group_offset = Family::<GroupPartitionLabels, Gauge>::default();
        let partition_offset = Family::<PartitionLabels, Gauge>::default();
        root.register(
            "kafka_consumergroup_lag",
            "Records of a partition the consumer group has not committed yet (groups this broker coordinates, partitions it leads)",
            group_lag.clone(),
        );
        root.register(
            "kafka_consumergroup_current_offset",
            "The consumer group's committed offset of a partition (groups this broker coordinates)",
            group_offset.clone(),
        );
        root.register(
            "kafka_topic_partition_current_offset",
            "The high watermark of a partition this broker leads",
            partition_offset.clone(),
        );
        let registry = root.sub_registry_with_prefix("runnel_broker");
        let produced_records = Family::<TopicLabels, Counter>::default();
        let produced_bytes = Family::<TopicLabels, Counter>::default();
        let fetched_bytes = Family::<TopicLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let flushes = Counter::default();
        let flush_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        let flush_partitions = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        let partitions = Gauge::default();
        let storage_offline = Gauge::default();
        let storage_failures = Counter::default();
        let storage_recoveries = Counter::default();
        let offline_partitions = Gauge::default();
        let under_replicated_partitions = Gauge::default();
        registry.register(
            "produced_records",
            "Records appended",
            produced_records.clone(),
        );
        registry.register(
            "produced_bytes",
            "Batch bytes appended",
            produced_bytes.clone(),
        );
        registry.register(
            "fetched_bytes",
            "Batch bytes served to fetches",
            fetched_bytes.clone(),
        );
        registry.register(
            "request_errors",
            "Requests that failed, by RPC and error",
            errors.clone(),
        );
        registry.register("flushes", "Group-commit flushes", flushes.clone());
        registry.register(
            "flush_seconds",
            "Duration of group-commit flushes",
            flush_seconds.clone(),
        );
        registry.register(
            "flush_partitions",
            "Partitions made durable per flush",
            flush_partitions.clone(),
        );
        registry.register("partitions", "Partition logs held", partitions.clone());
        registry.register(
            "storage_offline",
            "1 while the storage is failed and its partitions are offline",
            storage_offline.clone(),
        );
        registry.register(
            "storage_failures",
            "Times the storage failed (a store or flush error)",
            storage_failures.clone(),
        );
        registry.register(
            "storage_recoveries",
            "Times the storage was reopened after a failure",
            storage_recoveries.clone(),
        );
        registry.register(
            "offline_partitions",
            "Partitions offline",
            offline_partitions.clone(),
        );
        registry.register(
            "under_replicated_partitions",
            "Partitions this broker leads with fewer in-sync replicas than replicas",
            under_replicated_partitions.clone(),
        );
        Self {
            registry: root,
            group_lag,
            group_offset,
            partition_offset,
            produced_records,
            produced_bytes,
            fetched_bytes,
            errors,
            flushes,
            flush_seconds,
            flush_partitions,
            partitions,
            storage_offline,
            storage_failures,
            storage_recoveries,
            offline_partitions,
            under_replicated_partitions,
            ready: AtomicBool::new(false),
            storage_failure: parking_lot::Mutex::new(None),
        }
    }
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
pub struct PartitionLabels {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: String,
}

impl Metrics {
    /// Replaces the consumer-group and partition offset gauges: `partitions` are (topic,
    /// partition, high watermark) of the partitions led here, `groups` (group, topic,
    /// partition, committed offset) of the groups coordinated here.
    pub fn set_offsets(
        &self,
        partitions: &[(String, i32, i64)],
        groups: &[(String, String, i32, i64)],
    ) {
        let hw: std::collections::HashMap<(&str, i32), i64> = partitions
            .iter()
            .map(|(t, p, h)| ((t.as_str(), *p), *h))
            .collect();
        self.partition_offset.clear();
        for (topic, p, h) in partitions {
            self.partition_offset
                .get_or_create(&PartitionLabels {
                    topic: topic.clone(),
                    partition: p.to_string(),
                })
                .set(*h);
        }
        self.group_offset.clear();
        self.group_lag.clear();
        for (group, topic, p, committed) in groups {
            let labels = GroupPartitionLabels {
                consumergroup: group.clone(),
                topic: topic.clone(),
                partition: p.to_string(),
            };
            self.group_offset.get_or_create(&labels).set(*committed);
            if let Some(h) = hw.get(&(topic.as_str(), *p)) {
                self.group_lag
                    .get_or_create(&labels)
                    .set((h - committed).max(0));
            }
        }
    }

    /// Counts an append.
    pub fn record_produce(&self, topic: &str, records: u64, bytes: u64) {
        let l = TopicLabels {
            topic: topic.to_string(),
        };
        self.produced_records.get_or_create(&l).inc_by(records);
        self.produced_bytes.get_or_create(&l).inc_by(bytes);
    }

    /// Counts bytes served.
    pub fn record_fetch(&self, topic: &str, bytes: u64) {
        if bytes > 0 {
            self.fetched_bytes
                .get_or_create(&TopicLabels {
                    topic: topic.to_string(),
                })
                .inc_by(bytes);
        }
    }

    /// Counts a failed request.
    pub fn record_error(&self, rpc: &str, error: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                rpc: rpc.into(),
                error: error.into(),
            })
            .inc();
    }

    /// Marks the broker ready (recovered and listening) or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Reports the storage failed (`Some(why)`) or working again.
    pub fn set_storage_failure(&self, why: Option<&str>) {
        let mut failure = self.storage_failure.lock();
        match why {
            Some(_) => {
                self.storage_failures.inc();
                self.storage_offline.set(1);
                self.offline_partitions.set(self.partitions.get());
            }
            None => {
                self.storage_offline.set(0);
                self.offline_partitions.set(0);
            }
        }
        *failure = why.map(str::to_string);
    }

    /// `/readyz`: ready once recovered and listening, and while the storage takes writes.
    fn readiness(&self) -> Result<(), String> {
        if let Some(why) = self.storage_failure.lock().as_ref() {
            return Err(format!("storage offline: {why}\n"));
        }
        if !self.ready.load(Ordering::SeqCst) {
            return Err("starting\n".to_string());
        }
        Ok(())
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The HTTP router: `/metrics`, `/healthz`, `/readyz`.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move { m.render() }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(|State(m): State<Arc<Metrics>>| async move {
                match m.readiness() {
                    Ok(()) => (StatusCode::OK, "ready\n".to_string()).into_response(),
                    Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
                }
            }),
        )
        .with_state(metrics)
}
