//! The generated CRDs (`crds/`) on a real API server, through the real kubectl: they are
//! established, valid resources are accepted and listed with their printer columns, and bad
//! manifests are refused with the schema's or the CEL rule's message.

use anyhow::{ensure, Context};
use runnel_e2e::{ControlPlane, Output};
use std::path::PathBuf;

const CRDS: [&str; 3] = [
    "clusters.runnel.dev",
    "topics.runnel.dev",
    "consumergroups.runnel.dev",
];

fn crds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds")
}

/// A control plane with the CRDs applied and established.
fn control_plane_with_crds() -> anyhow::Result<ControlPlane> {
    let cp = ControlPlane::start()?;
    let dir = crds_dir();
    let apply = cp.kubectl(&["apply", "-f", dir.to_str().context("crds/ path is UTF-8")?]);
    ensure!(apply.success(), "{apply}");
    let names: Vec<String> = CRDS.iter().map(|c| format!("crd/{c}")).collect();
    let mut args = vec!["wait", "--for=condition=Established", "--timeout=60s"];
    args.extend(names.iter().map(String::as_str));
    let wait = cp.kubectl(&args);
    ensure!(wait.success(), "{wait}");
    Ok(cp)
}

fn ok(out: Output) -> anyhow::Result<String> {
    ensure!(out.success(), "{out}");
    Ok(out.stdout)
}

/// `kubectl apply` of `yaml` fails, and stderr carries every one of `expected`.
fn refused(cp: &ControlPlane, yaml: &str, expected: &[&str]) -> anyhow::Result<()> {
    let out = cp.apply(yaml);
    ensure!(
        !out.success(),
        "kubectl apply should have been refused:\n{yaml}\n{out}"
    );
    ensure!(out.status.code() == Some(1), "exit code 1 expected: {out}");
    for text in expected {
        ensure!(out.stderr.contains(text), "stderr lacks {text:?}:\n{out}");
    }
    Ok(())
}

/// The header line of `kubectl get …`, split into column names.
fn header(table: &str) -> Vec<String> {
    table
        .lines()
        .next()
        .unwrap_or_default()
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

fn cluster(name: &str, brokers: i32, size: &str) -> String {
    format!(
        "apiVersion: runnel.dev/v1alpha1
kind: Cluster
metadata:
  name: {name}
spec:
  brokers: {brokers}
  storage:
    size: {size}
  config:
    log.retention.ms: \"604800000\"
  rack:
    topologyKey: topology.kubernetes.io/zone
"
    )
}

fn topic(name: &str, partitions: i64, replicas: i64, extra: &str) -> String {
    format!(
        "apiVersion: runnel.dev/v1alpha1
kind: Topic
metadata:
  name: {name}
spec:
  cluster: demo
  partitions: {partitions}
  replicas: {replicas}
{extra}"
    )
}

const CONSUMER_GROUP: &str = "apiVersion: runnel.dev/v1alpha1
kind: ConsumerGroup
metadata:
  name: billing
spec:
  cluster: demo
  topic: orders
  lagThreshold: 1000
";

#[test]
fn crds_are_established_with_names_and_categories() -> anyhow::Result<()> {
    let cp = control_plane_with_crds()?;
    let resources = ok(cp.kubectl(&["api-resources", "--api-group=runnel.dev", "--output=wide"]))?;
    for (plural, short, kind) in [
        ("clusters", "rc,rcl", "Cluster"),
        ("topics", "rt", "Topic"),
        ("consumergroups", "rcg", "ConsumerGroup"),
    ] {
        let line = resources
            .lines()
            .find(|l| l.starts_with(plural))
            .with_context(|| format!("{plural} in\n{resources}"))?;
        let words: Vec<&str> = line.split_whitespace().collect();
        ensure!(
            words.contains(&short) && words.contains(&kind) && words.contains(&"runnel"),
            "{line}"
        );
        ensure!(
            words.contains(&"runnel.dev/v1alpha1") && words.contains(&"true"),
            "namespaced: {line}"
        );
    }
    // `kubectl explain` shows the doc comments, once the API server has published the CRD's
    // OpenAPI (a few seconds after it is established).
    let began = std::time::Instant::now();
    let explain = loop {
        let out = cp.kubectl(&["explain", "topic.spec.partitions"]);
        if out.success() || began.elapsed() > std::time::Duration::from_secs(60) {
            break ok(out)?;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
    ensure!(explain.contains("May grow, never shrink"), "{explain}");
    Ok(())
}

#[test]
fn valid_resources_are_accepted_and_listed() -> anyhow::Result<()> {
    let cp = control_plane_with_crds()?;
    ok(cp.apply(&cluster("demo", 3, "1Gi")))?;
    ok(cp.apply(&topic(
        "orders",
        6,
        3,
        "  config:\n    retentionMs: 86400000\n    cleanupPolicy: delete\n    minInsyncReplicas: 2\n",
    )))?;
    ok(cp.apply(&topic("audit-log", 1, 1, "  topicName: Audit_Log.v1\n")))?;
    ok(cp.apply(CONSUMER_GROUP))?;

    let topics = ok(cp.kubectl(&["get", "rt"]))?;
    ensure!(
        header(&topics) == ["NAME", "CLUSTER", "PARTITIONS", "REPLICAS", "READY", "AGE"],
        "{topics}"
    );
    let orders: Vec<&str> = topics
        .lines()
        .find(|l| l.starts_with("orders"))
        .context("orders listed")?
        .split_whitespace()
        .collect();
    ensure!(orders[..4] == ["orders", "demo", "6", "3"], "{topics}");

    // (`rc` is shadowed by the core ReplicationController's short name; `rcl` works.)
    let clusters = ok(cp.kubectl(&["get", "rcl"]))?;
    ensure!(
        header(&clusters) == ["NAME", "BROKERS", "READY", "AGE"],
        "{clusters}"
    );
    let wide = ok(cp.kubectl(&["get", "clusters.runnel.dev", "--output=wide"]))?;
    ensure!(
        header(&wide).contains(&"READY BROKERS".to_string()),
        "{wide}"
    );
    let groups = ok(cp.kubectl(&["get", "rcg"]))?;
    ensure!(
        header(&groups) == ["NAME", "TOPIC", "STATE", "MEMBERS", "LAG", "AGE"],
        "{groups}"
    );

    // `kubectl get runnel` lists all three kinds.
    let all = ok(cp.kubectl(&["get", "runnel", "--output=name"]))?;
    let mut names: Vec<&str> = all.lines().collect();
    names.sort_unstable();
    ensure!(
        names
            == [
                "cluster.runnel.dev/demo",
                "consumergroup.runnel.dev/billing",
                "topic.runnel.dev/audit-log",
                "topic.runnel.dev/orders"
            ],
        "{all}"
    );
    let table = ok(cp.kubectl(&["get", "runnel"]))?;
    ensure!(
        table.contains("cluster.runnel.dev/demo") && table.contains("topic.runnel.dev/orders"),
        "{table}"
    );

    // The status subresource exists, and READY follows the Ready condition.
    let status = r#"{"status":{"topicName":"orders","conditions":[{"type":"Ready","status":"True","reason":"Reconciled","message":"set by the test","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}"#;
    ok(cp.kubectl(&[
        "patch",
        "topic",
        "orders",
        "--subresource=status",
        "--type=merge",
        "--patch",
        status,
    ]))?;
    let ready = ok(cp.kubectl(&["get", "rt", "orders", "--no-headers"]))?;
    ensure!(ready.split_whitespace().nth(4) == Some("True"), "{ready}");
    // Defaults the schema fills in.
    let config = ok(cp.kubectl(&[
        "get",
        "topic",
        "audit-log",
        "--output=jsonpath={.spec.config}",
    ]))?;
    ensure!(
        config == "{}",
        "config defaults to an empty object: {config}"
    );
    Ok(())
}

#[test]
fn bad_manifests_are_refused_with_the_rule_message() -> anyhow::Result<()> {
    let cp = control_plane_with_crds()?;
    ok(cp.apply(&cluster("demo", 3, "10Gi")))?;
    ok(cp.apply(&topic("orders", 3, 2, "  topicName: Orders\n")))?;

    // Transition rules (CEL, `oldSelf`).
    refused(
        &cp,
        &topic("orders", 2, 2, "  topicName: Orders\n"),
        &[
            "The Topic \"orders\" is invalid",
            "spec.partitions: Invalid value: 2: partitions may not shrink",
        ],
    )?;
    refused(
        &cp,
        &topic("orders", 3, 3, "  topicName: Orders\n"),
        &["spec.replicas: Invalid value: 3: replicas (replication factor) is immutable"],
    )?;
    refused(
        &cp,
        &topic("orders", 3, 2, "  topicName: Orders2\n"),
        &["topicName is immutable"],
    )?;
    refused(&cp, &topic("orders", 3, 2, ""), &["topicName is immutable"])?;
    refused(
        &cp,
        &cluster("demo", 3, "5Gi"),
        &["storage size may not shrink"],
    )?;
    let unchanged = ok(cp.kubectl(&[
        "get",
        "topic",
        "orders",
        "--output=jsonpath={.spec.partitions}/{.spec.replicas}",
    ]))?;
    ensure!(
        unchanged == "3/2",
        "refused changes left the topic alone: {unchanged}"
    );
    // Growing is fine.
    ok(cp.apply(&topic("orders", 4, 2, "  topicName: Orders\n")))?;

    // Schema bounds and patterns.
    refused(&cp, &topic("negative", -1, 1, ""), &[
        "spec.partitions: Invalid value: -1: spec.partitions in body should be greater than or equal to 1",
    ])?;
    refused(
        &cp,
        &topic("huge", 10001, 1, ""),
        &["should be less than or equal to 10000"],
    )?;
    refused(&cp, &topic("bad-name", 1, 1, "  topicName: \"bad name!\"\n"), &[
        "spec.topicName: Invalid value: \"bad name!\": spec.topicName in body should match '^[a-zA-Z0-9._-]{1,249}$'",
    ])?;
    refused(
        &cp,
        &topic("internal", 1, 1, "  topicName: __consumer_offsets\n"),
        &["topic names starting with '__' are reserved for internal topics"],
    )?;
    refused(
        &cp,
        &topic("isr", 1, 2, "  config:\n    minInsyncReplicas: 3\n"),
        &["config.minInsyncReplicas may not exceed replicas"],
    )?;
    refused(
        &cp,
        &topic("policy", 1, 1, "  config:\n    cleanupPolicy: shred\n"),
        &["spec.config.cleanupPolicy: Unsupported value: \"shred\""],
    )?;
    refused(
        &cp,
        &cluster("none", 0, "1Gi"),
        &["spec.brokers in body should be greater than or equal to 1"],
    )?;
    refused(
        &cp,
        &cluster("sized", 1, "ten gigs"),
        &["spec.storage.size in body should match"],
    )?;
    refused(
        &cp,
        &topic("orphan", 1, 1, "").replace("cluster: demo", "cluster: Demo_1"),
        &["spec.cluster in body should match"],
    )?;

    // Unknown fields are refused (strict field validation), also Kafka's dotted names.
    refused(
        &cp,
        &topic("colour", 1, 1, "  colour: red\n"),
        &["strict decoding error: unknown field \"spec.colour\""],
    )?;
    refused(
        &cp,
        &topic("dotted", 1, 1, "  config:\n    retention.ms: 1000\n"),
        &["strict decoding error: unknown field \"spec.config.retention.ms\""],
    )?;

    // ConsumerGroup rules.
    let reset = |body: &str| format!("{CONSUMER_GROUP}  resetOffsets:\n{body}");
    refused(
        &cp,
        &reset("    to: timestamp\n"),
        &["resetOffsets.timestamp is required when resetOffsets.to is timestamp"],
    )?;
    refused(
        &cp,
        &reset("    to: explicit\n    offsets:\n      zero: 5\n"),
        &["resetOffsets.offsets keys are partition numbers"],
    )?;
    ok(cp.apply(&reset("    to: explicit\n    offsets:\n      \"0\": 5\n")))?;

    // Nothing refused was created.
    let topics = ok(cp.kubectl(&["get", "topics", "--output=name"]))?;
    ensure!(topics.trim() == "topic.runnel.dev/orders", "{topics}");
    Ok(())
}
