//! The cluster controller's unit tests: its pure decisions on made-up Clusters and brokers.

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
    let cm = config_map(&c, &o);
    assert_owned(&cm.metadata);
    assert_owned(&headless_service(&c, &o).metadata);
    assert_owned(&client_service(&c, &o).metadata);
    assert_owned(&statefulset(&c, &o, 3, "10Gi").metadata);
    assert_owned(&pod_disruption_budget(&c, &o).metadata);
}

#[test]
fn names() {
    let (c, o) = (cluster(3), owner());
    assert_eq!(
        config_map(&c, &o).metadata.name.as_deref(),
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
        statefulset(&c, &o, 3, "10Gi").metadata.name.as_deref(),
        Some("events-broker")
    );
    assert_eq!(
        pod_disruption_budget(&c, &o).metadata.name.as_deref(),
        Some("events-broker")
    );
}

#[test]
fn config_map_carries_the_cluster_config() {
    let cm = config_map(&cluster(3), &owner());
    let toml = cm
        .data
        .unwrap_or_default()
        .remove(CONFIG_KEY)
        .unwrap_or_default();
    assert_eq!(toml, "retention_ms = 1000\n");
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
    let sts = statefulset(&c, &owner(), c.spec.brokers, &c.spec.storage.size).spec;
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
    assert_eq!(DEFAULT_IMAGE, "runnel.dev/runnel-broker:0.1.0");
    assert_eq!(broker.image_pull_policy.as_deref(), Some("IfNotPresent"));
    assert_eq!(
            broker.args.clone().unwrap_or_default().join(" "),
            "--config /etc/runnel/broker.toml --data-dir /var/lib/runnel --listen 0.0.0.0:9092 --metrics-listen 0.0.0.0:9644"
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
    let pod = statefulset(&c, &owner(), c.spec.brokers, &c.spec.storage.size)
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
    let s = status(&cluster(3), None, &[], &Findings::default(), now);
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
    let s = status(
        &c,
        Some(&sts_ready(2)),
        &pods,
        &Findings::default(),
        Timestamp::UNIX_EPOCH,
    );
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
    assert_eq!(
        status(&c, Some(&sts_ready(2)), &pods, &Findings::default(), later),
        s
    );

    let s = status(&c, Some(&sts_ready(3)), &pods, &Findings::default(), later);
    assert_eq!(s.conditions[0].status, "True");
    assert_eq!(s.conditions[0].reason, "BrokersReady");
    assert_eq!(
        s.conditions[0].last_transition_time,
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(later)
    );
}

fn condition_of<'a>(
    s: &'a ClusterStatus,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    s.conditions.iter().find(|c| c.type_ == type_)
}

#[test]
fn unused_config_keys_show_in_a_condition() {
    let s = status(
        &cluster(3),
        None,
        &[],
        &Findings::default(),
        Timestamp::UNIX_EPOCH,
    );
    let accepted = condition_of(&s, "ConfigAccepted").map(|c| c.status.as_str());
    assert_eq!(accepted, Some("True"));
    let findings = Findings {
        config_problems: vec!["num.io.threads: not a setting Runnel brokers use".into()],
        ..Findings::default()
    };
    let s = status(&cluster(3), None, &[], &findings, Timestamp::UNIX_EPOCH);
    let c = condition_of(&s, "ConfigAccepted")
        .cloned()
        .expect("ConfigAccepted");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "ConfigIgnored")
    );
    assert!(c.message.contains("num.io.threads"), "{}", c.message);
    assert!(condition_of(&s, "ScaleDownBlocked").is_none());
}

fn topic_on(name: &str, replicas: &[&[i32]]) -> Topic {
    let mut t = Topic::new(
        name,
        crate::crd::TopicSpec {
            cluster: "events".into(),
            partitions: i32::try_from(replicas.len()).unwrap_or(1),
            replicas: 1,
            topic_name: None,
            config: crate::crd::TopicConfig::default(),
        },
    );
    t.status = Some(crate::crd::TopicStatus {
        partitions: replicas
            .iter()
            .zip(0..)
            .map(|(r, p)| crate::crd::PartitionStatus {
                partition: p,
                replicas: r.to_vec(),
                ..crate::crd::PartitionStatus::default()
            })
            .collect(),
        ..crate::crd::TopicStatus::default()
    });
    t
}

#[test]
fn a_scale_down_waits_for_partitions_on_the_brokers_that_would_go() {
    let topics = [
        topic_on("orders", &[&[0, 1], &[1, 2], &[2, 0]]),
        topic_on("clicks", &[&[0], &[1]]),
    ];
    assert_eq!(
        scale_down_blockers(2, &topics),
        vec!["orders-1".to_string(), "orders-2".to_string()]
    );
    assert!(scale_down_blockers(3, &topics).is_empty());
    assert_eq!(scale_down_blockers(1, &topics).len(), 4);

    let findings = Findings {
        scale_down_blockers: scale_down_blockers(2, &topics),
        held_at: Some(3),
        ..Findings::default()
    };
    let s = status(&cluster(2), None, &[], &findings, Timestamp::UNIX_EPOCH);
    let c = condition_of(&s, "ScaleDownBlocked")
        .cloned()
        .expect("ScaleDownBlocked");
    assert_eq!(c.status, "True");
    assert!(
        c.message
            .starts_with("staying at 3 brokers: partitions orders-1, orders-2"),
        "{}",
        c.message
    );
}

#[test]
fn quantities_compare_in_bytes() {
    assert_eq!(quantity_bytes("1Gi"), Some(1073741824.0));
    assert_eq!(quantity_bytes("1.5Ki"), Some(1536.0));
    assert_eq!(quantity_bytes("500M"), Some(5e8));
    assert_eq!(quantity_bytes("1000"), Some(1000.0));
    assert_eq!(quantity_bytes("10Xi"), None);
    assert!(quantity_bytes("1Gi") > quantity_bytes("1000M"));
}

fn claim(name: &str, size: &str, phase: &str) -> PersistentVolumeClaim {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"resources": {"requests": {"storage": size}}},
        "status": {"phase": phase},
    }))
    .expect("claim")
}

#[test]
fn only_smaller_bound_claims_grow() {
    let claims = [
        claim("data-events-broker-0", "1Gi", "Bound"),
        claim("data-events-broker-1", "2Gi", "Bound"),
        claim("data-events-broker-2", "1Gi", "Pending"),
        claim("data-events-broker-3", "3Gi", "Bound"),
    ];
    assert_eq!(claims_to_grow(&claims, "2Gi"), vec!["data-events-broker-0"]);
    assert!(claims_to_grow(&claims, "1Gi").is_empty());
}

#[test]
fn the_claim_template_keeps_its_size() {
    let mut c = cluster(3);
    c.spec.storage.size = "20Gi".into();
    let sts = statefulset(&c, &owner(), 3, "10Gi").spec;
    let templates = sts.volume_claim_templates.unwrap_or_default();
    let size = templates[0]
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone());
    assert_eq!(size.as_deref(), Some("10Gi"));
}
