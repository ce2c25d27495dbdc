//! The real `runnel-operator` binary against a real API server: a Cluster becomes a
//! StatefulSet, two Services, a ConfigMap and a PodDisruptionBudget owned by it, its status gets
//! `observedGeneration` and a `Ready` condition, and scaling the Cluster scales the StatefulSet.
//!
//! No controller manager or scheduler runs, so no pod ever exists: the test checks objects, and
//! `Ready` stays `False`.

use anyhow::{ensure, Context};
use runnel_e2e::operator::{merge_patch, ok, Operator};
use runnel_e2e::ControlPlane;
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const NAMESPACE: &str = "streams";
/// How long the operator has to bring the objects in line.
const TIMEOUT: Duration = Duration::from_secs(30);

/// `kubectl get KIND NAME -o json` in the test namespace, or `None` while it does not exist.
fn get(cp: &ControlPlane, kind: &str, name: &str) -> anyhow::Result<Option<Value>> {
    runnel_e2e::operator::get(cp, NAMESPACE, kind, name)
}

/// Polls `check` until it is happy or [`TIMEOUT`] passes.
fn eventually(
    what: &str,
    operator: &Operator,
    check: impl FnMut() -> anyhow::Result<Option<String>>,
) -> anyhow::Result<Duration> {
    runnel_e2e::operator::eventually(what, operator, TIMEOUT, check)
}

/// `None` when `object` is owned by the Cluster with `uid` (as its controller).
fn owned_by_cluster(object: &Value, uid: &str) -> Option<String> {
    let owner = &object["metadata"]["ownerReferences"][0];
    let fine = owner["kind"] == "Cluster"
        && owner["name"] == "events"
        && owner["apiVersion"] == "runnel.dev/v1alpha1"
        && owner["uid"] == uid
        && owner["controller"] == true;
    let labels = &object["metadata"]["labels"];
    let labelled = labels["app.kubernetes.io/name"] == "runnel"
        && labels["app.kubernetes.io/instance"] == "events"
        && labels["app.kubernetes.io/component"] == "broker"
        && labels["app.kubernetes.io/managed-by"] == "runnel-operator";
    (!(fine && labelled)).then(|| format!("owner/labels: {}", object["metadata"]))
}

/// `None` when the Cluster's status describes its generation, with `Ready` `False` and
/// "0 of `brokers` brokers are ready" (no pods run in this control plane).
fn status_is(cp: &ControlPlane, brokers: i64) -> anyhow::Result<Option<String>> {
    let cluster = get(cp, "clusters.runnel.dev", "events")?.context("the Cluster")?;
    let status = &cluster["status"];
    if status["observedGeneration"] != cluster["metadata"]["generation"] {
        return Ok(Some(format!("status not observed yet: {status}")));
    }
    let Some(ready) = status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
    else {
        return Ok(Some(format!("no Ready condition: {status}")));
    };
    ensure!(ready["status"] == "False", "no pods run here: {status}");
    ensure!(ready["reason"] == "BrokersNotReady", "{status}");
    let message = format!("0 of {brokers} brokers are ready");
    if ready["message"] != message.as_str() {
        return Ok(Some(format!("message: {status}")));
    }
    ensure!(status["readyBrokers"] == 0, "{status}");
    Ok(None)
}

const CLUSTER: &str = "apiVersion: runnel.dev/v1alpha1
kind: Cluster
metadata:
  name: events
  namespace: streams
spec:
  brokers: 3
  storage:
    size: 1Gi
  config:
    log.retention.ms: \"604800000\"
";

#[test]
fn cluster_becomes_owned_objects_and_status() -> anyhow::Result<()> {
    let began = Instant::now();
    let cp = ControlPlane::start()?;
    let crds = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds");
    ok(cp.kubectl(&["apply", "-f", crds.to_str().context("crds/ path is UTF-8")?]))?;
    ok(cp.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/clusters.runnel.dev",
        "crd/topics.runnel.dev",
        "crd/consumergroups.runnel.dev",
    ]))?;
    ok(cp.kubectl(&["create", "namespace", NAMESPACE]))?;
    // Declared after `cp`, so dropped (stopped) before the API server goes.
    let operator = Operator::start(&cp, &[])?;

    ok(cp.apply(CLUSTER))?;
    let cluster = get(&cp, "clusters.runnel.dev", "events")?.context("the Cluster exists")?;
    let uid = cluster["metadata"]["uid"]
        .as_str()
        .context("Cluster uid")?
        .to_string();

    let took = eventually("the Cluster's objects", &operator, || {
        let Some(sts) = get(&cp, "statefulset", "events-broker")? else {
            return Ok(Some("no StatefulSet events-broker".into()));
        };
        if let Some(why) = owned_by_cluster(&sts, &uid) {
            return Ok(Some(why));
        }
        let spec = &sts["spec"];
        ensure!(spec["replicas"] == 3, "replicas: {spec}");
        ensure!(spec["serviceName"] == "events-brokers", "{spec}");
        ensure!(spec["podManagementPolicy"] == "Parallel", "{spec}");
        let claim = &spec["volumeClaimTemplates"][0];
        ensure!(claim["metadata"]["name"] == "data", "{claim}");
        ensure!(
            claim["spec"]["resources"]["requests"]["storage"] == "1Gi",
            "{claim}"
        );
        // Server-side applied, with the operator's field manager.
        let managers: Vec<&str> = sts["metadata"]["managedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| f["operation"] == "Apply")
            .filter_map(|f| f["manager"].as_str())
            .collect();
        ensure!(
            managers == ["runnel-operator"],
            "managedFields: {managers:?}"
        );
        let broker = &spec["template"]["spec"]["containers"][0];
        ensure!(broker["name"] == "broker", "{broker}");
        ensure!(broker["readinessProbe"]["grpc"]["port"] == 9092, "{broker}");

        let Some(headless) = get(&cp, "service", "events-brokers")? else {
            return Ok(Some("no Service events-brokers".into()));
        };
        if let Some(why) = owned_by_cluster(&headless, &uid) {
            return Ok(Some(why));
        }
        ensure!(headless["spec"]["clusterIP"] == "None", "{headless}");
        ensure!(
            headless["spec"]["publishNotReadyAddresses"] == true,
            "{headless}"
        );
        ensure!(headless["spec"]["ports"][0]["name"] == "grpc", "{headless}");

        let Some(client) = get(&cp, "service", "events")? else {
            return Ok(Some("no Service events".into()));
        };
        if let Some(why) = owned_by_cluster(&client, &uid) {
            return Ok(Some(why));
        }
        ensure!(client["spec"]["clusterIP"] != "None", "{client}");
        ensure!(client["spec"]["ports"][0]["port"] == 9092, "{client}");

        let Some(config) = get(&cp, "configmap", "events-config")? else {
            return Ok(Some("no ConfigMap events-config".into()));
        };
        if let Some(why) = owned_by_cluster(&config, &uid) {
            return Ok(Some(why));
        }
        let toml = config["data"]["broker.toml"].as_str().unwrap_or_default();
        ensure!(toml == "retention_ms = 604800000\n", "{config}");

        let Some(pdb) = get(&cp, "poddisruptionbudget", "events-broker")? else {
            return Ok(Some("no PodDisruptionBudget events-broker".into()));
        };
        if let Some(why) = owned_by_cluster(&pdb, &uid) {
            return Ok(Some(why));
        }
        ensure!(pdb["spec"]["maxUnavailable"] == 1, "{pdb}");
        Ok(None)
    })?;
    eprintln!("objects in place after {took:?}");

    let took = eventually("the Cluster's status", &operator, || status_is(&cp, 3))?;
    eprintln!("status after {took:?}");
    let ready_column = ok(cp.kubectl(&["get", "rcl", "events", "-n", NAMESPACE, "--no-headers"]))?;
    ensure!(
        ready_column.split_whitespace().nth(2) == Some("False"),
        "{ready_column}"
    );

    // Scale to 4 brokers: the StatefulSet follows.
    merge_patch(
        &cp,
        NAMESPACE,
        "clusters.runnel.dev",
        "events",
        r#"{"spec":{"brokers":4}}"#,
    )?;
    let took = eventually("the StatefulSet scaled to 4", &operator, || {
        let sts = get(&cp, "statefulset", "events-broker")?.context("StatefulSet")?;
        Ok((sts["spec"]["replicas"] != 4).then(|| format!("replicas {}", sts["spec"]["replicas"])))
    })?;
    eprintln!("scaled after {took:?}");
    eventually("the Cluster's status after scaling", &operator, || {
        status_is(&cp, 4)
    })?;

    // The operator serves its health and metrics.
    let (status, _) = operator.http_get("/healthz")?;
    ensure!(status.contains("200"), "/healthz: {status}");
    let (status, _) = operator.http_get("/readyz")?;
    ensure!(status.contains("200"), "/readyz: {status}");
    let (status, metrics) = operator.http_get("/metrics")?;
    ensure!(status.contains("200"), "/metrics: {status}");
    ensure!(
        metrics.contains("runnel_operator_reconciliations_total{controller=\"Cluster\"}"),
        "{metrics}"
    );
    ensure!(metrics.contains("runnel_operator_leader 1"), "{metrics}");

    // Two replicas are safe: the second waits for the Lease, and takes over when the first
    // stops (which releases it).
    let mut first = operator;
    let second = Operator::start(&cp, &[])?;
    std::thread::sleep(Duration::from_secs(2));
    let (_, metrics) = second.http_get("/metrics")?;
    ensure!(
        metrics.contains("runnel_operator_leader 0"),
        "second replica leads too:\n{metrics}"
    );
    let lease = ok(cp.kubectl(&[
        "get",
        "lease",
        "runnel-operator",
        "-n",
        "default",
        "-o",
        "json",
    ]))?;
    let lease: Value = serde_json::from_str(&lease)?;
    let holder = lease["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    ensure!(!holder.is_empty(), "{lease}");
    let status = first.stop();
    ensure!(
        status.is_some_and(|s| s.success()),
        "first replica exited {status:?}"
    );
    let took = eventually("the second replica leads", &second, || {
        let (_, metrics) = second.http_get("/metrics")?;
        Ok((!metrics.contains("runnel_operator_leader 1")).then(|| "not leading yet".to_string()))
    })?;
    eprintln!("second replica took over after {took:?}");
    let lease = ok(cp.kubectl(&[
        "get",
        "lease",
        "runnel-operator",
        "-n",
        "default",
        "-o",
        "json",
    ]))?;
    let lease: Value = serde_json::from_str(&lease)?;
    ensure!(
        lease["spec"]["holderIdentity"] != holder.as_str(),
        "{lease}"
    );
    merge_patch(
        &cp,
        NAMESPACE,
        "clusters.runnel.dev",
        "events",
        r#"{"spec":{"brokers":5}}"#,
    )?;
    eventually(
        "the new leader scales the StatefulSet to 5",
        &second,
        || {
            let sts = get(&cp, "statefulset", "events-broker")?.context("StatefulSet")?;
            Ok((sts["spec"]["replicas"] != 5)
                .then(|| format!("replicas {}", sts["spec"]["replicas"])))
        },
    )?;
    eprintln!("whole test {:?}", began.elapsed());
    Ok(())
}
