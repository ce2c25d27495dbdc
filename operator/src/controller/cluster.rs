//! The Cluster controller: a [`Cluster`] becomes a ConfigMap, a headless Service, a client
//! Service, a StatefulSet of brokers (with a volume claim template) and a PodDisruptionBudget,
//! all owned by the Cluster so that deleting it deletes them (no finalizer needed); its status
//! reports the ready brokers, their addresses and a `Ready` condition.
//!
//! The desired objects and the status are built by pure functions ([`config_map`],
//! [`headless_service`], [`client_service`], [`statefulset`], [`pod_disruption_budget`],
//! [`status`]); [`reconcile`] only applies them.
//!
//! Not yet: refusing a scale-down that would drop the last replica of a partition (it needs the
//! Topic assignments).

use super::{Context, Error, FIELD_MANAGER};
use crate::crd::{BrokerStatus, Cluster, ClusterStatus};
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource, GRPCAction,
    ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec, Pod, PodSpec,
    PodTemplateSpec, Probe, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    Condition, LabelSelector, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The broker image when `spec.image` is unset: the one matching the operator's version.
pub const DEFAULT_IMAGE: &str = concat!("runnel-broker:", env!("CARGO_PKG_VERSION"));
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

/// The ConfigMap `NAME-config`: `spec.config` as a `broker.toml` with one `[defaults]` table,
/// in Kafka's names.
pub fn config_map(cluster: &Cluster, owner: &OwnerReference) -> Result<ConfigMap, Error> {
    #[derive(Serialize)]
    struct BrokerToml<'a> {
        defaults: &'a BTreeMap<String, String>,
    }
    let name = cluster.name_any();
    let toml = toml::to_string(&BrokerToml {
        defaults: &cluster.spec.config,
    })
    .map_err(|source| Error::Config {
        name: name.clone(),
        source,
    })?;
    Ok(ConfigMap {
        metadata: metadata(cluster, config_map_name(&name), owner),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_string(), toml)])),
        ..ConfigMap::default()
    })
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
pub fn statefulset(cluster: &Cluster, owner: &OwnerReference) -> StatefulSet {
    let name = cluster.name_any();
    let spec = &cluster.spec;
    let container = Container {
        name: "broker".into(),
        image: Some(spec.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.into())),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(
            [
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
        readiness_probe: Some(Probe {
            grpc: Some(GRPCAction {
                port: GRPC_PORT,
                ..GRPCAction::default()
            }),
            period_seconds: Some(5),
            ..Probe::default()
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
                    Quantity(spec.storage.size.clone()),
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
            replicas: Some(spec.brokers),
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

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The status of `cluster` given its StatefulSet (if it exists) and broker pods, at `now`.
/// The `Ready` condition keeps its `lastTransitionTime` while its status does not change, so
/// that writing the same status twice is a no-op (and does not wake the controller again).
pub fn status(
    cluster: &Cluster,
    sts: Option<&StatefulSet>,
    pods: &[Pod],
    now: Timestamp,
) -> ClusterStatus {
    let desired = cluster.spec.brokers;
    let ready_brokers = sts
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let sts_name = statefulset_name(&cluster.name_any());
    let mut brokers: Vec<BrokerStatus> = pods
        .iter()
        .filter_map(|pod| {
            let id = broker_id(&sts_name, &pod.name_any())?;
            let address = pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.as_ref())
                .map(|ip| format!("{ip}:{GRPC_PORT}"));
            Some(BrokerStatus {
                id,
                address,
                ready: pod_ready(pod),
                rack: None,
            })
        })
        .collect();
    brokers.sort_by_key(|b| b.id);
    let (cond_status, reason, message) = if ready_brokers >= desired {
        (
            "True",
            "BrokersReady",
            format!("{ready_brokers} of {desired} brokers are ready"),
        )
    } else {
        (
            "False",
            "BrokersNotReady",
            format!("{ready_brokers} of {desired} brokers are ready"),
        )
    };
    let previous = cluster
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    let last_transition_time = match previous {
        Some(c) if c.status == cond_status => c.last_transition_time.clone(),
        _ => Time(now),
    };
    ClusterStatus {
        observed_generation: cluster.metadata.generation,
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: cond_status.into(),
            reason: reason.into(),
            message,
            last_transition_time,
            observed_generation: cluster.metadata.generation,
        }],
        ready_brokers,
        brokers,
        metadata_epoch: cluster.status.as_ref().and_then(|s| s.metadata_epoch),
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
        let event = Event {
            type_: EventType::Warning,
            reason: "ReconcileFailed".into(),
            note: Some(error.to_string()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &cluster.object_ref(&())).await {
            tracing::warn!(error = %e, "publishing an Event failed");
        }
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
        &config_map(cluster, &owner)?,
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
    let sts = apply(
        &statefulsets,
        &statefulset(cluster, &owner),
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

    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let selector = selector_labels(&name)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::Kube {
            action: format!("listing the pods of Cluster `{name}`"),
            source,
        })?;

    let new_status = status(cluster, Some(&sts), &pods.items, Timestamp::now());
    if cluster.status.as_ref() != Some(&new_status) {
        let clusters: Api<Cluster> = Api::namespaced(client, &namespace);
        let patch = serde_json::json!({
            "apiVersion": Cluster::api_version(&()),
            "kind": Cluster::kind(&()),
            "status": new_status,
        });
        clusters
            .patch_status(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(|source| Error::Kube {
                action: format!("updating the status of Cluster `{name}`"),
                source,
            })?;
    }
    tracing::debug!(ready = new_status.ready_brokers, "reconciled");
    Ok(Action::requeue(RESYNC))
}

/// What to do after a failed reconciliation: log it and try again soon.
pub fn error_policy(cluster: Arc<Cluster>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(cluster = %cluster.name_any(), %error, "reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ClusterSpec, StorageSpec};

    fn cluster(brokers: i32) -> Cluster {
        let mut c = Cluster::new(
            "events",
            ClusterSpec {
                brokers,
                image: None,
                storage: StorageSpec {
                    size: "10Gi".into(),
                    storage_class_name: Some("fast".into()),
                },
                resources: None,
                config: BTreeMap::from([("log.retention.ms".into(), "1000".into())]),
                rack: None,
            },
        );
        c.metadata.namespace = Some("streams".into());
        c.metadata.uid = Some("0b9c-uid".into());
        c.metadata.generation = Some(2);
        c
    }

    fn owner() -> OwnerReference {
        owner_reference(&cluster(3)).unwrap_or_default()
    }

    fn assert_owned(meta: &ObjectMeta) {
        let refs = meta.owner_references.clone().unwrap_or_default();
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].kind, "Cluster");
        assert_eq!(refs[0].name, "events");
        assert_eq!(refs[0].uid, "0b9c-uid");
        assert_eq!(refs[0].api_version, "runnel.dev/v1alpha1");
        assert_eq!(refs[0].controller, Some(true));
        let labels = meta.labels.clone().unwrap_or_default();
        for (k, v) in [
            ("app.kubernetes.io/name", "runnel"),
            ("app.kubernetes.io/instance", "events"),
            ("app.kubernetes.io/component", "broker"),
            ("app.kubernetes.io/managed-by", "runnel-operator"),
        ] {
            assert_eq!(labels.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert_eq!(meta.namespace.as_deref(), Some("streams"));
    }

    #[test]
    fn owner_reference_needs_a_uid() {
        let mut c = cluster(1);
        c.metadata.uid = None;
        assert!(matches!(owner_reference(&c), Err(Error::MissingUid { .. })));
    }

    #[test]
    fn every_object_is_owned_and_labelled() {
        let (c, o) = (cluster(3), owner());
        let cm = config_map(&c, &o).expect("config map");
        assert_owned(&cm.metadata);
        assert_owned(&headless_service(&c, &o).metadata);
        assert_owned(&client_service(&c, &o).metadata);
        assert_owned(&statefulset(&c, &o).metadata);
        assert_owned(&pod_disruption_budget(&c, &o).metadata);
    }

    #[test]
    fn names() {
        let (c, o) = (cluster(3), owner());
        assert_eq!(
            config_map(&c, &o).expect("cm").metadata.name.as_deref(),
            Some("events-config")
        );
        assert_eq!(
            headless_service(&c, &o).metadata.name.as_deref(),
            Some("events-brokers")
        );
        assert_eq!(
            client_service(&c, &o).metadata.name.as_deref(),
            Some("events")
        );
        assert_eq!(
            statefulset(&c, &o).metadata.name.as_deref(),
            Some("events-broker")
        );
        assert_eq!(
            pod_disruption_budget(&c, &o).metadata.name.as_deref(),
            Some("events-broker")
        );
    }

    #[test]
    fn config_map_carries_the_cluster_config() {
        let cm = config_map(&cluster(3), &owner()).expect("cm");
        let toml = cm
            .data
            .unwrap_or_default()
            .remove(CONFIG_KEY)
            .unwrap_or_default();
        assert_eq!(toml, "[defaults]\n\"log.retention.ms\" = \"1000\"\n");
    }

    #[test]
    fn services() {
        let (c, o) = (cluster(3), owner());
        let headless = headless_service(&c, &o).spec.unwrap_or_default();
        assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
        assert_eq!(headless.publish_not_ready_addresses, Some(true));
        let ports = headless.ports.unwrap_or_default();
        assert_eq!(
            (ports[0].port, ports[0].name.as_deref()),
            (9092, Some("grpc"))
        );
        assert_eq!(headless.selector, Some(selector_labels("events")));
        let client = client_service(&c, &o).spec.unwrap_or_default();
        assert_eq!(client.cluster_ip, None);
        assert_eq!(client.ports.unwrap_or_default()[0].port, 9092);
    }

    #[test]
    fn statefulset_follows_the_spec() {
        let mut c = cluster(4);
        let sts = statefulset(&c, &owner()).spec;
        assert_eq!(sts.replicas, Some(4));
        assert_eq!(sts.service_name.as_deref(), Some("events-brokers"));
        assert_eq!(sts.pod_management_policy.as_deref(), Some("Parallel"));
        assert_eq!(sts.selector.match_labels, Some(selector_labels("events")));
        let template_labels = sts
            .template
            .metadata
            .and_then(|m| m.labels)
            .unwrap_or_default();
        for (k, v) in selector_labels("events") {
            assert_eq!(template_labels.get(&k), Some(&v), "selector matches pods");
        }
        let pod = sts.template.spec.unwrap_or_default();
        let broker = &pod.containers[0];
        assert_eq!(broker.name, "broker");
        assert_eq!(broker.image.as_deref(), Some(DEFAULT_IMAGE));
        assert_eq!(DEFAULT_IMAGE, "runnel-broker:0.1.0");
        assert_eq!(broker.image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(
            broker.args.clone().unwrap_or_default().join(" "),
            "--data-dir /var/lib/runnel --listen 0.0.0.0:9092 --metrics-listen 0.0.0.0:9644"
        );
        let env: Vec<(String, Option<String>)> = broker
            .env
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|e| {
                (
                    e.name,
                    e.value_from.and_then(|v| v.field_ref).map(|f| f.field_path),
                )
            })
            .collect();
        assert_eq!(
            env,
            [
                ("POD_NAME".into(), Some("metadata.name".into())),
                ("POD_IP".into(), Some("status.podIP".into()))
            ]
        );
        let probe = broker.readiness_probe.clone().unwrap_or_default();
        assert_eq!(probe.grpc.map(|g| g.port), Some(9092));
        let mounts = broker.volume_mounts.clone().unwrap_or_default();
        assert!(mounts
            .iter()
            .any(|m| m.name == "data" && m.mount_path == "/var/lib/runnel"));

        let claims = sts.volume_claim_templates.unwrap_or_default();
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
        let claim = claims[0].spec.clone().unwrap_or_default();
        assert_eq!(claim.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            claim
                .resources
                .and_then(|r| r.requests)
                .and_then(|r| r.get("storage").cloned()),
            Some(Quantity("10Gi".into()))
        );

        c.spec.image = Some("example.org/runnel:dev".into());
        let pod = statefulset(&c, &owner())
            .spec
            .template
            .spec
            .unwrap_or_default();
        assert_eq!(
            pod.containers[0].image.as_deref(),
            Some("example.org/runnel:dev")
        );
    }

    #[test]
    fn pdb_allows_one_broker_down() {
        let pdb = pod_disruption_budget(&cluster(3), &owner())
            .spec
            .unwrap_or_default();
        assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(
            pdb.selector.and_then(|s| s.match_labels),
            Some(selector_labels("events"))
        );
    }

    #[test]
    fn broker_ids_are_ordinals() {
        assert_eq!(broker_id("events-broker", "events-broker-0"), Some(0));
        assert_eq!(broker_id("events-broker", "events-broker-12"), Some(12));
        assert_eq!(broker_id("events-broker", "events-broker-x"), None);
        assert_eq!(broker_id("events-broker", "other-broker-1"), None);
    }

    fn pod(name: &str, ip: Option<&str>, ready: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "status": {
                "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}],
            }
        }))
        .unwrap_or_default()
    }

    fn sts_ready(ready: i32) -> StatefulSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "events-broker"},
            "status": {"replicas": 3, "readyReplicas": ready},
        }))
        .unwrap_or_default()
    }

    #[test]
    fn status_not_ready_without_pods() {
        let now = Timestamp::UNIX_EPOCH;
        let s = status(&cluster(3), None, &[], now);
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(s.ready_brokers, 0);
        assert!(s.brokers.is_empty());
        let ready = &s.conditions[0];
        assert_eq!(
            (ready.type_.as_str(), ready.status.as_str()),
            ("Ready", "False")
        );
        assert_eq!(ready.reason, "BrokersNotReady");
        assert_eq!(ready.message, "0 of 3 brokers are ready");
    }

    #[test]
    fn status_lists_brokers_and_turns_ready() {
        let mut c = cluster(3);
        let pods = [
            pod("events-broker-2", Some("198.18.0.3"), true),
            pod("events-broker-0", Some("198.18.0.1"), true),
            pod("events-broker-1", None, false),
        ];
        let s = status(&c, Some(&sts_ready(2)), &pods, Timestamp::UNIX_EPOCH);
        assert_eq!(s.ready_brokers, 2);
        assert_eq!(
            s.brokers.iter().map(|b| b.id).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(s.brokers[0].address.as_deref(), Some("198.18.0.1:9092"));
        assert!(s.brokers[0].ready && !s.brokers[1].ready);
        assert_eq!(s.brokers[1].address, None);
        assert_eq!(s.conditions[0].status, "False");

        // Same condition status: the transition time is kept, so the status is unchanged.
        c.status = Some(s.clone());
        let later = Timestamp::UNIX_EPOCH + Duration::from_secs(60);
        assert_eq!(status(&c, Some(&sts_ready(2)), &pods, later), s);

        let s = status(&c, Some(&sts_ready(3)), &pods, later);
        assert_eq!(s.conditions[0].status, "True");
        assert_eq!(s.conditions[0].reason, "BrokersReady");
        assert_eq!(s.conditions[0].last_transition_time, Time(later));
    }
}
