//! A Topic's life against a real API server and real brokers. The control plane runs with its
//! controllers (the StatefulSet controller makes the broker pods, the namespace controller
//! deletes namespaces), but there is no kubelet: the test plays its part. For each pod of the
//! StatefulSet it runs `runnel-broker` as a local process with the environment and the
//! configuration file the pod would have (`POD_NAME`, `POD_IP`, the ConfigMap's `broker.toml`),
//! on a loopback address of its own, and writes that address and `Ready` into the pod's status.
//!
//! What a user would check: the Topic ends `Ready` with a status per partition that matches
//! what the brokers report (`runnel topic describe`), its config reaches the brokers, producing
//! with the CLI moves the end offsets in the status, consumer groups show their lag
//! ([`groups`]), a killed leader is replaced from its ISR and a scale-down moves the partitions
//! before it shrinks ([`replication`]), deleting the Topic deletes its data, and deleting a
//! namespace whose Cluster is gone finishes.

mod groups;
mod replication;
mod support;

use anyhow::{ensure, Context};
use runnel_e2e::operator::{merge_patch, ok, Operator};
use runnel_e2e::{ControlPlane, Options};
use std::path::PathBuf;
use std::time::Instant;
use support::*;

#[test]
fn topic_lifecycle_against_real_brokers() -> anyhow::Result<()> {
    let began = Instant::now();
    let cp = ControlPlane::start_with(Options { controllers: true })?;
    let crds = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds");
    ok(cp.kubectl(&["apply", "-f", crds.to_str().context("crds/ path")?]))?;
    ok(cp.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/clusters.runnel.dev",
        "crd/topics.runnel.dev",
        "crd/consumergroups.runnel.dev",
    ]))?;
    ok(cp.kubectl(&["create", "namespace", NAMESPACE]))?;
    let operator = Operator::start(&cp, &["--status-interval", "1s"])?;
    let rt = tokio::runtime::Runtime::new()?;
    let dir = tempfile::tempdir()?;

    ok(cp.apply(&format!(
        "apiVersion: runnel.dev/v1alpha1
kind: Cluster
metadata:
  name: events
  namespace: {NAMESPACE}
spec:
  brokers: {BROKERS}
  storage:
    size: 1Gi
  config:
    log.retention.hours: \"168\"
    num.io.threads: \"8\"
"
    )))?;

    // The StatefulSet controller makes the pods; the ConfigMap holds the brokers' file.
    wait_for("the broker pods and the ConfigMap", &operator, || {
        for n in 0..BROKERS {
            if get(&cp, "pod", &format!("events-broker-{n}"))?.is_none() {
                return Ok(Some(format!("no pod events-broker-{n}")));
            }
        }
        Ok(get(&cp, "configmap", "events-config")?
            .is_none()
            .then(|| "no ConfigMap".to_string()))
    })?;
    let cm = get(&cp, "configmap", "events-config")?.context("ConfigMap")?;
    let toml = cm["data"]["broker.toml"].as_str().context("broker.toml")?;
    ensure!(
        toml == "retention_ms = 604800000\n",
        "broker.toml: {toml:?}"
    );
    let config = dir.path().join("broker.toml");
    std::fs::write(&config, toml)?;
    let cluster = get(&cp, "clusters.runnel.dev", "events")?.context("Cluster")?;
    let accepted = condition(&cluster, "ConfigAccepted").cloned();
    wait_for(
        "ConfigAccepted=False naming the unused key",
        &operator,
        || {
            let cluster = get(&cp, "clusters.runnel.dev", "events")?.context("Cluster")?;
            Ok(match condition(&cluster, "ConfigAccepted") {
                Some(c)
                    if c["status"] == "False"
                        && c["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("num.io.threads")) =>
                {
                    None
                }
                _ => Some(format!("{accepted:?}")),
            })
        },
    )?;

    // Play the kubelet: run each pod's broker and report it ready with its address.
    let mut pods = Vec::new();
    for n in 0..BROKERS {
        let name = format!("events-broker-{n}");
        let ip = broker_ip(n);
        pods.push(play_pod(&name, &ip, &config, dir.path())?);
        report_running(&cp, &name, &ip)?;
    }
    let bootstrap = pods[0].address();

    // A Topic with its config.
    ok(cp.apply(&format!(
        "apiVersion: runnel.dev/v1alpha1
kind: Topic
metadata:
  name: orders
  namespace: {NAMESPACE}
spec:
  cluster: events
  partitions: 3
  replicas: 2
  config:
    retentionMs: 3600000
    maxMessageBytes: 1048576
    cleanupPolicy: delete
"
    )))?;
    wait_for("Topic orders Ready", &operator, || {
        topic_ready(&cp, "orders")
    })?;
    let topic = get(&cp, "topics.runnel.dev", "orders")?.context("Topic")?;
    // No finalizer: deleting the Topic (or its namespace) never waits for the operator.
    ensure!(
        topic["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty()),
        "finalizers: {}",
        topic["metadata"]
    );
    let described = runnel_json(&bootstrap, &["topic", "describe", "orders"], None)?;
    ensure!(described["replication_factor"] == 2, "{described}");
    ensure!(
        described["configs"]["retention.ms"] == "3600000",
        "{described}"
    );
    ensure!(
        described["configs"]["max.message.bytes"] == "1048576",
        "{described}"
    );
    let mut leaders = Vec::new();
    for p in described["partitions"].as_array().context("partitions")? {
        let replicas = p["replicas"].as_array().context("replicas")?;
        ensure!(replicas.len() == 2 && replicas[0] != replicas[1], "{p}");
        ensure!(
            p["isr"] == p["replicas"] && p["leader"] == replicas[0],
            "{p}"
        );
        leaders.push(p["leader"].as_i64().context("leader")?);
    }
    // Preferred leaders are balanced over every topic together, `__consumer_offsets` (three
    // copies of each of its 50 partitions) included: no broker leads more than one partition
    // more than another.
    let internal = runnel_json(
        &bootstrap,
        &["topic", "describe", "__consumer_offsets"],
        None,
    )?;
    let internal = internal["partitions"].as_array().context("partitions")?;
    ensure!(
        internal
            .iter()
            .all(|p| p["replicas"].as_array().is_some_and(|r| r.len() == 3)),
        "__consumer_offsets with three copies: {internal:?}"
    );
    for p in internal {
        leaders.push(p["leader"].as_i64().context("leader")?);
    }
    let mut per_broker = std::collections::BTreeMap::new();
    for l in &leaders {
        *per_broker.entry(*l).or_insert(0) += 1;
    }
    let (most, least) = (
        per_broker.values().max().copied().unwrap_or(0),
        per_broker.values().min().copied().unwrap_or(0),
    );
    ensure!(
        per_broker.len() == 3 && most - least <= 1,
        "leaders per broker over every topic: {per_broker:?}"
    );
    wait_for("the status matches the brokers", &operator, || {
        let topic = get(&cp, "topics.runnel.dev", "orders")?.context("Topic")?;
        let described = runnel_json(&bootstrap, &["topic", "describe", "orders"], None)?;
        Ok(status_matches_brokers(&topic["status"], &described))
    })?;
    let columns = ok(cp.kubectl(&["get", "rt", "orders", "-n", NAMESPACE]))?;
    let header: Vec<&str> = columns
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    ensure!(
        header == ["NAME", "CLUSTER", "PARTITIONS", "REPLICAS", "READY", "AGE"],
        "{columns}"
    );
    ensure!(
        columns
            .lines()
            .nth(1)
            .is_some_and(|l| l.contains("events") && l.contains("True")),
        "{columns}"
    );

    // Producing through the CLI moves the end offsets in the status.
    let produced = runnel_json(
        &bootstrap,
        &["produce", "orders", "--key-separator", ":"],
        Some(&keyed_lines(300, "order")),
    )?;
    eprintln!("produced: {produced}");
    wait_for("300 records in the status", &operator, || {
        let topic = get(&cp, "topics.runnel.dev", "orders")?.context("Topic")?;
        let status = &topic["status"];
        if status["totals"]["records"] != 300 {
            return Ok(Some(format!("totals: {}", status["totals"])));
        }
        let described = runnel_json(&bootstrap, &["topic", "describe", "orders"], None)?;
        Ok(status_matches_brokers(status, &described))
    })?;

    let addresses: Vec<String> = pods.iter().map(PlayedPod::address).collect();
    groups::consumer_group_status(&cp, &operator, &addresses)?;

    // Producer ids: the operator hands every broker a block of its own (recorded in the
    // Cluster's status first), and each broker's InitProducerId answers from its block.
    let cluster = get(&cp, "clusters.runnel.dev", "events")?.context("Cluster")?;
    let blocks = cluster["status"]["producerIdBlocks"]
        .as_array()
        .context("status.producerIdBlocks")?
        .clone();
    ensure!(blocks.len() == BROKERS, "one block per broker: {blocks:?}");
    let end = cluster["status"]["producerIdBlockEnd"]
        .as_i64()
        .context("status.producerIdBlockEnd")?;
    let mut ranges = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let block = blocks
            .iter()
            .find(|b| b["brokerId"] == i as i64)
            .with_context(|| format!("a block for broker {i}: {blocks:?}"))?;
        let (first, count) = (
            block["firstId"].as_i64().context("firstId")?,
            block["count"].as_i64().context("count")?,
        );
        ensure!(first + count <= end, "block {block} beyond the end {end}");
        let id = rt.block_on(async {
            let mut client = runnel_proto::v1::broker_client::BrokerClient::connect(format!(
                "http://{}",
                pod.address()
            ))
            .await?;
            let r = client
                .init_producer_id(runnel_proto::v1::InitProducerIdRequest::default())
                .await?;
            anyhow::Ok(r.into_inner().producer_id)
        })?;
        ensure!(
            (first..first + count).contains(&id),
            "broker {i} handed out producer id {id}, outside its block {first}+{count}"
        );
        ranges.push((first, first + count));
    }
    ranges.sort_unstable();
    ensure!(
        ranges.windows(2).all(|w| w[0].1 <= w[1].0),
        "the blocks overlap: {ranges:?}"
    );

    replication::leader_failover(&cp, &operator, &mut pods, &config, dir.path())?;
    replication::assigned_copy_not_deleted(&cp, &rt, &pods)?;
    replication::scale_down_moves_partitions(&cp, &operator, &pods, &bootstrap)?;

    // Growing the storage: the StatefulSet's claim template cannot change (the API server
    // forbids it), so the Cluster keeps reconciling and the bound claims are asked to grow.
    merge_patch(
        &cp,
        NAMESPACE,
        "clusters.runnel.dev",
        "events",
        r#"{"spec":{"storage":{"size":"2Gi"}}}"#,
    )?;
    wait_for("the grown Cluster observed", &operator, || {
        let cluster = get(&cp, "clusters.runnel.dev", "events")?.context("Cluster")?;
        if cluster["status"]["observedGeneration"] != cluster["metadata"]["generation"] {
            return Ok(Some(format!(
                "observed {}",
                cluster["status"]["observedGeneration"]
            )));
        }
        let sts = get(&cp, "statefulset", "events-broker")?.context("StatefulSet")?;
        let size =
            &sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"];
        ensure!(size == "1Gi", "claim template changed: {size}");
        Ok(None)
    })?;
    let failures = ok(cp.kubectl(&[
        "get",
        "events",
        "-n",
        NAMESPACE,
        "--field-selector",
        "reason=ReconcileFailed",
        "-o",
        "name",
    ]))?;
    ensure!(failures.trim().is_empty(), "reconcile failures: {failures}");

    // Deleting the Topic deletes its data on every broker.
    ok(cp.kubectl(&[
        "delete",
        "topics.runnel.dev",
        "orders",
        "-n",
        NAMESPACE,
        "--wait=false",
    ]))?;
    wait_for("Topic orders and its data gone", &operator, || {
        if get(&cp, "topics.runnel.dev", "orders")?.is_some() {
            return Ok(Some("the Topic still exists".into()));
        }
        for pod in &pods {
            let left: Vec<i32> = held(&rt, &pod.address())?
                .iter()
                .filter(|p| p.topic == "orders")
                .map(|p| p.partition)
                .collect();
            if !left.is_empty() {
                return Ok(Some(format!("{} still holds orders {left:?}", pod.name)));
            }
        }
        Ok(None)
    })?;
    let all = ok(cp.kubectl(&["get", "runnel", "-n", NAMESPACE, "-o", "name"]))?;
    ensure!(
        all.contains("cluster.runnel.dev/events") && all.contains("topic.runnel.dev/clicks"),
        "{all}"
    );

    // The Cluster goes first; the namespace with its remaining Topic is then deleted.
    ok(cp.kubectl(&[
        "delete",
        "clusters.runnel.dev",
        "events",
        "-n",
        NAMESPACE,
        "--timeout=60s",
    ]))?;
    ok(cp.kubectl(&["delete", "namespace", NAMESPACE, "--timeout=90s"]))?;
    let left = cp.kubectl(&["get", "namespace", NAMESPACE]);
    ensure!(
        !left.success() && left.stderr.contains("NotFound"),
        "{left}"
    );
    drop(pods);
    eprintln!("whole test {:?}", began.elapsed());
    Ok(())
}
