//! The Cluster controller: a [`Cluster`] becomes a ConfigMap, a headless Service, a client
//! Service, a StatefulSet of brokers (with a volume claim template) and a PodDisruptionBudget,
//! all owned by the Cluster so that deleting it deletes them (no finalizer needed); its status
//! reports the ready brokers, their addresses and a `Ready` condition.
//!
//! The desired objects and the status are built by pure functions ([`config_map`],
//! [`headless_service`], [`client_service`], [`statefulset`], [`pod_disruption_budget`],
//! [`status`]); [`reconcile`] only applies them.
//!
//! Scaling down is refused while a partition still has a replica on a broker that would go:
//! the StatefulSet keeps its size, a `ScaleDownBlocked` condition and a Warning Event say which
//! partitions wait, and the metadata controller moves them (a replica leaves only once a copy
//! on a remaining broker is in sync).

use super::{apply_status, condition, Context, Error, FIELD_MANAGER};
use crate::broker_config;
use crate::crd::{BrokerStatus, Cluster, ClusterStatus, Topic};
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource, GRPCAction,
    Node, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec, Pod,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, Service, ServicePort, ServiceSpec, Volume,
    VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The broker image when `spec.image` is unset: the one matching the operator's version.
pub const DEFAULT_IMAGE: &str = concat!("runnel.dev/runnel-broker:", env!("CARGO_PKG_VERSION"));
/// The non-root user (and group) of Runnel's images.
pub const RUNNEL_UID: i64 = 65532;
/// The brokers' gRPC port (clients and replication).
pub const GRPC_PORT: i32 = 9092;
/// The brokers' metrics port.
pub const METRICS_PORT: i32 = 9644;
/// Where each broker's volume is mounted.
pub const DATA_DIR: &str = "/var/lib/runnel";
/// Where the ConfigMap is mounted.
pub const CONFIG_DIR: &str = "/etc/runnel";
/// The ConfigMap key holding the broker configuration.
pub const CONFIG_KEY: &str = "broker.toml";
/// Where the brokers read it.
pub const CONFIG_PATH: &str = "/etc/runnel/broker.toml";
/// The name of the volume claim template (PVCs are `data-NAME-broker-N`).
pub const DATA_VOLUME: &str = "data";
/// The controller's name in metrics and logs.
const CONTROLLER: &str = "Cluster";
/// How often a Cluster is looked at again without a change.
const RESYNC: Duration = Duration::from_secs(300);

/// `NAME-config`.
pub fn config_map_name(cluster: &str) -> String {
    format!("{cluster}-config")
}
/// `NAME-brokers`, the headless Service that gives each broker a stable DNS name.
pub fn headless_service_name(cluster: &str) -> String {
    format!("{cluster}-brokers")
}
/// `NAME-broker`, the StatefulSet and its PodDisruptionBudget.
pub fn statefulset_name(cluster: &str) -> String {
    format!("{cluster}-broker")
}

/// The labels of every object of a Cluster.
pub fn labels(cluster: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(cluster);
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        FIELD_MANAGER.to_string(),
    );
    labels
}

/// The labels that select a Cluster's broker pods (a StatefulSet's selector is immutable, so
/// it holds only labels that never change).
pub fn selector_labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "runnel".to_string()),
        (
            "app.kubernetes.io/instance".to_string(),
            cluster.to_string(),
        ),
        (
            "app.kubernetes.io/component".to_string(),
            "broker".to_string(),
        ),
    ])
}

/// [`selector_labels`] as a label selector string.
pub fn selector(cluster: &str) -> String {
    selector_labels(cluster)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The owner reference every object of `cluster` carries (`controller: true`), or an error when
/// the Cluster has no uid yet (it always has one once stored).
pub fn owner_reference(cluster: &Cluster) -> Result<OwnerReference, Error> {
    cluster
        .controller_owner_ref(&())
        .ok_or_else(|| Error::MissingUid {
            kind: CONTROLLER,
            name: cluster.name_any(),
        })
}

fn metadata(cluster: &Cluster, name: String, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: cluster.namespace(),
        labels: Some(labels(&cluster.name_any())),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// The ConfigMap `NAME-config`: the Cluster's `spec.config` (Kafka names) rendered as the
/// brokers' `broker.toml` ([`crate::broker_config`]).
pub fn config_map(cluster: &Cluster, owner: &OwnerReference) -> ConfigMap {
    let name = cluster.name_any();
    let toml = broker_config::render(&cluster.spec.config).toml();
    ConfigMap {
        metadata: metadata(cluster, config_map_name(&name), owner),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_string(), toml)])),
        ..ConfigMap::default()
    }
}

/// A storage quantity in bytes (`10Gi`, `500M`, `1.5Ti`, `1000`), for comparing sizes.
pub fn quantity_bytes(quantity: &str) -> Option<f64> {
    let split = quantity
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    Some(number * scale)
}

/// The names of the bound data claims of a Cluster that are smaller than `size`.
pub fn claims_to_grow(claims: &[PersistentVolumeClaim], size: &str) -> Vec<String> {
    let Some(want) = quantity_bytes(size) else {
        return Vec::new();
    };
    claims
        .iter()
        .filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
        .filter(|c| {
            c.spec
                .as_ref()
                .and_then(|s| s.resources.as_ref())
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
                .and_then(|q| quantity_bytes(&q.0))
                .is_some_and(|have| have < want)
        })
        .map(ResourceExt::name_any)
        .collect()
}

/// Partitions that still have a replica on a broker with an id of `brokers` or more, as
/// `topic-partition` names (empty: scaling down to `brokers` drops no replica).
pub fn scale_down_blockers(brokers: i32, topics: &[Topic]) -> Vec<String> {
    let mut out: Vec<String> = topics
        .iter()
        .filter_map(|t| t.status.as_ref().map(|s| (t, s)))
        .flat_map(|(t, s)| {
            let name = s.topic_name.clone().unwrap_or_else(|| t.name_any());
            s.partitions
                .iter()
                .filter(|p| p.replicas.iter().any(|b| *b >= brokers))
                .map(move |p| format!("{name}-{}", p.partition))
        })
        .collect();
    out.sort();
    out
}

/// A probe of the broker's gRPC health service every `period` seconds, failing after
/// `failures` misses in a row.
fn grpc_probe(period: i32, failures: i32) -> Probe {
    Probe {
        grpc: Some(GRPCAction {
            port: GRPC_PORT,
            ..GRPCAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn grpc_port() -> ServicePort {
    ServicePort {
        name: Some("grpc".into()),
        port: GRPC_PORT,
        target_port: Some(IntOrString::String("grpc".into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

/// The headless Service `NAME-brokers`: a stable DNS name per broker, published before the
/// broker is ready so that brokers can find each other while they start.
pub fn headless_service(cluster: &Cluster, owner: &OwnerReference) -> Service {
    let name = cluster.name_any();
    Service {
        metadata: metadata(cluster, headless_service_name(&name), owner),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(&name)),
            ports: Some(vec![grpc_port()]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The client Service `NAME`: any ready broker, as a bootstrap address.
pub fn client_service(cluster: &Cluster, owner: &OwnerReference) -> Service {
    let name = cluster.name_any();
    Service {
        metadata: metadata(cluster, name.clone(), owner),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(&name)),
            ports: Some(vec![grpc_port()]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// The StatefulSet `NAME-broker`: `spec.brokers` replicas started in parallel, each with a
/// volume claim `data` for its log and a gRPC readiness probe.
///
/// `replicas` is `spec.brokers` unless a scale-down is held back; `claim_size` is the volume
/// claim template's size, which the API server does not let change once the StatefulSet exists
/// (a grown `spec.storage.size` reaches the claims through [`claims_to_grow`] instead).
pub fn statefulset(
    cluster: &Cluster,
    owner: &OwnerReference,
    replicas: i32,
    claim_size: &str,
) -> StatefulSet {
    let name = cluster.name_any();
    let spec = &cluster.spec;
    let container = Container {
        name: "broker".into(),
        image: Some(spec.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.into())),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(
            [
                "--config",
                CONFIG_PATH,
                "--data-dir",
                DATA_DIR,
                "--listen",
                "0.0.0.0:9092",
                "--metrics-listen",
                "0.0.0.0:9644",
            ]
            .map(String::from)
            .to_vec(),
        ),
        env: Some(vec![
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_IP", "status.podIP"),
        ]),
        ports: Some(vec![
            ContainerPort {
                name: Some("grpc".into()),
                container_port: GRPC_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: Some("metrics".into()),
                container_port: METRICS_PORT,
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        // The gRPC health service for all three: the broker listens once it has recovered its
        // partitions, which the startup probe waits for (up to 10 minutes); after that a broker
        // that stops answering for 30 s is restarted.
        readiness_probe: Some(grpc_probe(5, 3)),
        startup_probe: Some(grpc_probe(5, 120)),
        liveness_probe: Some(Probe {
            timeout_seconds: Some(5),
            ..grpc_probe(10, 3)
        }),
        resources: spec.resources.clone(),
        volume_mounts: Some(vec![
            VolumeMount {
                name: DATA_VOLUME.into(),
                mount_path: DATA_DIR.into(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "config".into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.into()),
            labels: Some(labels(&name)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(claim_size.to_string()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };
    StatefulSet {
        metadata: metadata(cluster, statefulset_name(&name), owner),
        spec: StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(headless_service_name(&name)),
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&name)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&name)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    // The image's user; the volume is made writable for it on any storage.
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUNNEL_UID),
                        run_as_group: Some(RUNNEL_UID),
                        fs_group: Some(RUNNEL_UID),
                        ..PodSecurityContext::default()
                    }),
                    volumes: Some(vec![Volume {
                        name: "config".into(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: config_map_name(&name),
                            ..ConfigMapVolumeSource::default()
                        }),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    }
}

/// The PodDisruptionBudget `NAME-broker`: at most one broker voluntarily down at a time.
pub fn pod_disruption_budget(cluster: &Cluster, owner: &OwnerReference) -> PodDisruptionBudget {
    let name = cluster.name_any();
    PodDisruptionBudget {
        metadata: metadata(cluster, statefulset_name(&name), owner),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

/// The broker id of a pod of StatefulSet `statefulset`: its ordinal.
pub fn broker_id(statefulset: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(statefulset)?
        .strip_prefix('-')?
        .parse()
        .ok()
}

/// `podIP:9092`, the broker's gRPC address, once the pod has an IP.
pub fn broker_address(pod: &Pod) -> Option<String> {
    let ip = pod.status.as_ref()?.pod_ip.as_ref()?;
    Some(format!("{ip}:{GRPC_PORT}"))
}

/// Whether a pod's `Ready` condition is true.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// What a reconciliation found besides the StatefulSet and its pods.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Findings {
    /// Keys of `spec.config` the brokers do not get ([`broker_config::render`]).
    pub config_problems: Vec<String>,
    /// Partitions that keep a scale-down from happening ([`scale_down_blockers`]).
    pub scale_down_blockers: Vec<String>,
    /// Brokers (StatefulSet replicas) running now, when a scale-down is held back.
    pub held_at: Option<i32>,
    /// Rack of each broker, by id, when rack awareness is on.
    pub racks: BTreeMap<i32, String>,
}

/// The status of `cluster` given its StatefulSet (if it exists), its broker pods and what
/// else the reconciliation found, at `now`. Conditions keep their `lastTransitionTime` while
/// their status does not change, so that writing the same status twice is a no-op (and does
/// not wake the controller again). `metadataEpoch` is the metadata controller's field and is
/// left out.
pub fn status(
    cluster: &Cluster,
    sts: Option<&StatefulSet>,
    pods: &[Pod],
    findings: &Findings,
    now: Timestamp,
) -> ClusterStatus {
    let desired = cluster.spec.brokers;
    let generation = cluster.metadata.generation;
    let previous = cluster.status.as_ref().map_or(&[][..], |s| &s.conditions);
    let ready_brokers = sts
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let sts_name = statefulset_name(&cluster.name_any());
    let mut brokers: Vec<BrokerStatus> = pods
        .iter()
        .filter_map(|pod| {
            let id = broker_id(&sts_name, &pod.name_any())?;
            Some(BrokerStatus {
                id,
                address: broker_address(pod),
                ready: pod_ready(pod),
                rack: findings.racks.get(&id).cloned(),
            })
        })
        .collect();
    brokers.sort_by_key(|b| b.id);
    let message = format!("{ready_brokers} of {desired} brokers are ready");
    let mut conditions = vec![if ready_brokers >= desired {
        condition(
            previous,
            "Ready",
            true,
            "BrokersReady",
            message,
            generation,
            now,
        )
    } else {
        condition(
            previous,
            "Ready",
            false,
            "BrokersNotReady",
            message,
            generation,
            now,
        )
    }];
    conditions.push(if findings.config_problems.is_empty() {
        condition(
            previous,
            "ConfigAccepted",
            true,
            "ConfigAccepted",
            "every key of spec.config reaches the brokers".into(),
            generation,
            now,
        )
    } else {
        condition(
            previous,
            "ConfigAccepted",
            false,
            "ConfigIgnored",
            format!("not used: {}", findings.config_problems.join("; ")),
            generation,
            now,
        )
    });
    if let Some(held_at) = findings.held_at {
        conditions.push(condition(
            previous,
            "ScaleDownBlocked",
            true,
            "PartitionsOnRemovedBrokers",
            format!(
                "staying at {held_at} brokers: partitions {} still have replicas on brokers {desired} and up, \
                 and move off them once a copy on the remaining brokers is in sync",
                findings.scale_down_blockers.join(", ")
            ),
            generation,
            now,
        ));
    }
    ClusterStatus {
        observed_generation: generation,
        conditions,
        ready_brokers,
        brokers,
        metadata_epoch: None,
        producer_id_blocks: Vec::new(),
        producer_id_block_end: None,
        internal_topics: Vec::new(),
    }
}

async fn apply<K>(api: &Api<K>, object: &K, kind: &str, name: &str) -> Result<K, Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .map_err(|source| Error::Kube {
        action: format!("applying {kind} `{name}`"),
        source,
    })
}

/// Brings a Cluster's objects and status in line with its spec.
#[tracing::instrument(skip_all, fields(cluster = %cluster.name_any(), namespace = ?cluster.namespace()))]
pub async fn reconcile(cluster: Arc<Cluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    ctx.diagnostics.write().await.last_event = Timestamp::now();
    let result = apply_cluster(&cluster, &ctx).await;
    if let Err(error) = &result {
        ctx.metrics.failure(CONTROLLER, error);
        // The one place errors become something a person sees on the Cluster.
        ctx.warn(
            &cluster.object_ref(&()),
            "ReconcileFailed",
            error.to_string(),
        )
        .await;
    }
    result
}

async fn apply_cluster(cluster: &Cluster, ctx: &Context) -> Result<Action, Error> {
    let name = cluster.name_any();
    let namespace = cluster.namespace().ok_or_else(|| Error::MissingNamespace {
        kind: CONTROLLER,
        name: name.clone(),
    })?;
    let owner = owner_reference(cluster)?;
    let client = ctx.client.clone();

    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    apply(
        &config_maps,
        &config_map(cluster, &owner),
        "ConfigMap",
        &config_map_name(&name),
    )
    .await?;
    let services: Api<Service> = Api::namespaced(client.clone(), &namespace);
    apply(
        &services,
        &headless_service(cluster, &owner),
        "Service",
        &headless_service_name(&name),
    )
    .await?;
    apply(
        &services,
        &client_service(cluster, &owner),
        "Service",
        &name,
    )
    .await?;
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);
    let sts_name = statefulset_name(&name);
    let mut findings = Findings {
        config_problems: broker_config::render(&cluster.spec.config).problems,
        ..Findings::default()
    };
    // A scale-down waits while partitions still have replicas on the brokers that would go.
    let existing = statefulsets
        .get_opt(&sts_name)
        .await
        .map_err(|source| Error::Kube {
            action: format!("reading StatefulSet `{sts_name}`"),
            source,
        })?;
    let running = existing.as_ref().and_then(|s| s.spec.replicas).unwrap_or(0);
    let claim_size = existing
        .as_ref()
        .and_then(|s| s.spec.volume_claim_templates.as_ref())
        .and_then(|t| t.iter().find(|c| c.name_any() == DATA_VOLUME))
        .and_then(|c| c.spec.as_ref())
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map_or_else(|| cluster.spec.storage.size.clone(), |q| q.0.clone());
    let mut replicas = cluster.spec.brokers;
    if running > replicas {
        let topics: Api<Topic> = Api::namespaced(client.clone(), &namespace);
        let topics: Vec<Topic> = topics
            .list(&ListParams::default())
            .await
            .map_err(|source| Error::Kube {
                action: format!("listing the Topics of namespace `{namespace}`"),
                source,
            })?
            .items
            .into_iter()
            .filter(|t| t.spec.cluster == name && t.metadata.deletion_timestamp.is_none())
            // Runnel's own topics (committed offsets) hold the scale-down as Topics do.
            .chain(super::metadata::internal_topics(cluster))
            .collect();
        findings.scale_down_blockers = scale_down_blockers(replicas, &topics);
        if !findings.scale_down_blockers.is_empty() {
            replicas = running;
            findings.held_at = Some(running);
            let was_blocked = cluster
                .status
                .as_ref()
                .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "ScaleDownBlocked"));
            if !was_blocked {
                ctx.warn(
                    &cluster.object_ref(&()),
                    "ScaleDownBlocked",
                    format!(
                        "not scaling down to {} brokers yet: partitions {} have replicas on the brokers that would go",
                        cluster.spec.brokers,
                        findings.scale_down_blockers.join(", ")
                    ),
                )
                .await;
            }
        }
    }
    let sts = apply(
        &statefulsets,
        &statefulset(cluster, &owner, replicas, &claim_size),
        "StatefulSet",
        &sts_name,
    )
    .await?;
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &namespace);
    apply(
        &pdbs,
        &pod_disruption_budget(cluster, &owner),
        "PodDisruptionBudget",
        &sts_name,
    )
    .await?;

    grow_claims(cluster, ctx, &namespace).await?;

    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let pods = pods
        .list(&ListParams::default().labels(&selector(&name)))
        .await
        .map_err(|source| Error::Kube {
            action: format!("listing the pods of Cluster `{name}`"),
            source,
        })?;

    if let Some(key) = cluster.spec.rack.as_ref().map(|r| r.topology_key.clone()) {
        findings.racks = racks(&client, &sts_name, &pods.items, &key).await?;
    }

    let new_status = status(
        cluster,
        Some(&sts),
        &pods.items,
        &findings,
        Timestamp::now(),
    );
    // The metadata epoch and the producer id blocks are the metadata controller's: compare
    // without them.
    let current = cluster.status.clone().map(|s| ClusterStatus {
        metadata_epoch: None,
        producer_id_blocks: Vec::new(),
        producer_id_block_end: None,
        ..s
    });
    if current.as_ref() != Some(&new_status) {
        let clusters: Api<Cluster> = Api::namespaced(client, &namespace);
        apply_status(&clusters, &name, &new_status, FIELD_MANAGER).await?;
    }
    tracing::debug!(ready = new_status.ready_brokers, "reconciled");
    if findings.held_at.is_some() {
        // Partitions move off the brokers that would go as their copies catch up.
        return Ok(Action::requeue(ctx.status_interval));
    }
    Ok(Action::requeue(RESYNC))
}

/// Asks for the grown `spec.storage.size` on every bound data claim that is smaller (the
/// storage class must allow volume expansion; when it does not, the API server's refusal
/// becomes a Warning Event).
async fn grow_claims(cluster: &Cluster, ctx: &Context, namespace: &str) -> Result<(), Error> {
    let name = cluster.name_any();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), namespace);
    let list = claims
        .list(&ListParams::default().labels(&selector(&name)))
        .await
        .map_err(|source| Error::Kube {
            action: format!("listing the volume claims of Cluster `{name}`"),
            source,
        })?;
    let size = &cluster.spec.storage.size;
    for claim in claims_to_grow(&list.items, size) {
        let patch = serde_json::json!({"spec": {"resources": {"requests": {"storage": size}}}});
        match claims
            .patch(&claim, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                ctx.inform(
                    &cluster.object_ref(&()),
                    "VolumeResized",
                    format!("volume claim {claim} asked to grow to {size}"),
                )
                .await;
            }
            Err(e) => {
                ctx.warn(
                    &cluster.object_ref(&()),
                    "VolumeResizeFailed",
                    format!("volume claim {claim} cannot grow to {size}: {e}"),
                )
                .await;
            }
        }
    }
    Ok(())
}

/// The rack of each broker pod: the `key` label of the node it runs on.
async fn racks(
    client: &kube::Client,
    sts_name: &str,
    pods: &[Pod],
    key: &str,
) -> Result<BTreeMap<i32, String>, Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut out = BTreeMap::new();
    for pod in pods {
        let (Some(id), Some(node)) = (
            broker_id(sts_name, &pod.name_any()),
            pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        ) else {
            continue;
        };
        let node = nodes.get_opt(&node).await.map_err(|source| Error::Kube {
            action: format!("reading Node `{node}`"),
            source,
        })?;
        if let Some(rack) = node.and_then(|n| n.labels().get(key).cloned()) {
            out.insert(id, rack);
        }
    }
    Ok(out)
}

/// What to do after a failed reconciliation: log it and try again soon.
pub fn error_policy(cluster: Arc<Cluster>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(cluster = %cluster.name_any(), %error, "reconcile failed");
    ctx.retry_after_failure("Cluster", &*cluster)
}

#[cfg(test)]
mod tests;
