//! A Topic's life against a real API server and real brokers. The control plane runs with its
//! controllers (the StatefulSet controller makes the broker pods, the namespace controller
//! deletes namespaces), but there is no kubelet: the test plays its part. For each pod of the
//! StatefulSet it runs `runnel-broker` as a local process with the environment and the
//! configuration file the pod would have (`POD_NAME`, `POD_IP`, the ConfigMap's `broker.toml`),
//! on a loopback address of its own, and writes that address and `Ready` into the pod's status.
//!
//! What a user would check: the Topic ends `Ready` with a status per partition that matches
//! what the brokers report (`runnel topic describe`), its config reaches the brokers, producing
//! with the CLI moves the end offsets in the status, data deleted behind the operator's back is
//! re-created, a scale-down that would drop data is refused, deleting the Topic deletes its
//! data, and deleting a namespace whose Cluster is gone finishes.

use anyhow::{bail, ensure, Context};
use runnel_e2e::operator::{binary_next_to_tests, eventually, merge_patch, ok, Operator};
use runnel_e2e::{ControlPlane, Options};
use runnel_proto::v1::admin_client::AdminClient;
use runnel_proto::v1::{DeletePartitionsRequest, DescribePartitionsRequest, PartitionDescription};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NAMESPACE: &str = "pipelines";
const TIMEOUT: Duration = Duration::from_secs(60);
const BROKERS: usize = 3;

/// A broker process playing the pod `events-broker-N`.
struct PlayedPod {
    name: String,
    ip: String,
    child: Child,
    log: PathBuf,
}

impl PlayedPod {
    fn address(&self) -> String {
        format!("{}:9092", self.ip)
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for PlayedPod {
    fn drop(&mut self) {
        let pid = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let began = Instant::now();
        while began.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        eprintln!(
            "{} had to be killed; its log:\n{}",
            self.name,
            self.log_tail()
        );
    }
}

/// Starts the broker of pod `name` at `ip`, with the ConfigMap's configuration in `config`.
fn play_pod(name: &str, ip: &str, config: &Path, dir: &Path) -> anyhow::Result<PlayedPod> {
    let binary = binary_next_to_tests("runnel-broker")?;
    let data = dir.join(name);
    let log = dir.join(format!("{name}.log"));
    let file = std::fs::File::create(&log).context("broker log")?;
    let child = Command::new("setpriv")
        .args(["--pdeathsig", "KILL", "--"])
        .arg(&binary)
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", &format!("{ip}:9092")])
        .args(["--metrics-listen", &format!("{ip}:9644")])
        .env("POD_NAME", name)
        .env("POD_IP", ip)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let pod = PlayedPod {
        name: name.to_string(),
        ip: ip.to_string(),
        child,
        log,
    };
    let began = Instant::now();
    while std::net::TcpStream::connect(pod.address()).is_err() {
        ensure!(
            began.elapsed() < Duration::from_secs(20),
            "{name} does not listen on {}; its log:\n{}",
            pod.address(),
            pod.log_tail()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(pod)
}

/// Plays the kubelet's part for pod `name`: Running and Ready at `ip`.
fn report_running(cp: &ControlPlane, name: &str, ip: &str) -> anyhow::Result<()> {
    let status = serde_json::json!({
        "status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "conditions": [{"type": "Ready", "status": "True"}],
        }
    });
    ok(cp.kubectl(&[
        "patch",
        "pod",
        name,
        "-n",
        NAMESPACE,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ]))?;
    Ok(())
}

/// A loopback address of this test run's own for broker `n` (127.77.X.N: the whole of
/// 127.0.0.0/8 is the loopback interface).
fn broker_ip(n: usize) -> String {
    format!("127.77.{}.{}", std::process::id() % 250, n + 2)
}

fn get(cp: &ControlPlane, kind: &str, name: &str) -> anyhow::Result<Option<Value>> {
    runnel_e2e::operator::get(cp, NAMESPACE, kind, name)
}

fn wait_for(
    what: &str,
    operator: &Operator,
    check: impl FnMut() -> anyhow::Result<Option<String>>,
) -> anyhow::Result<Duration> {
    let took = eventually(what, operator, TIMEOUT, check)?;
    eprintln!("{what}: {took:?}");
    Ok(took)
}

/// `runnel --bootstrap ADDRESS ARGS… --output json`, parsed.
fn runnel_json(bootstrap: &str, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Value> {
    let binary = binary_next_to_tests("runnel")?;
    let mut child = Command::new(&binary)
        .args(["--bootstrap", bootstrap])
        .args(args)
        .args(["--output", "json"])
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "runnel {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    // `produce` prints one summary; take the last JSON document printed.
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("null");
    serde_json::from_str(&stdout)
        .or_else(|_| serde_json::from_str(last))
        .with_context(|| format!("runnel {args:?} printed {stdout}"))
}

/// What the broker at `address` holds (`Admin.DescribePartitions`).
fn held(rt: &tokio::runtime::Runtime, address: &str) -> anyhow::Result<Vec<PartitionDescription>> {
    rt.block_on(async {
        let mut admin = AdminClient::connect(format!("http://{address}")).await?;
        Ok(admin
            .describe_partitions(DescribePartitionsRequest::default())
            .await?
            .into_inner()
            .partitions)
    })
}

fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
}

fn topic_ready(cp: &ControlPlane, name: &str) -> anyhow::Result<Option<String>> {
    let Some(topic) = get(cp, "topics.runnel.dev", name)? else {
        bail!("Topic {name} is gone");
    };
    match condition(&topic, "Ready") {
        Some(c) if c["status"] == "True" => Ok(None),
        _ => Ok(Some(format!("status: {}", topic["status"]))),
    }
}

/// Compares a Topic's status with `runnel topic describe` of the same topic.
fn status_matches_brokers(status: &Value, described: &Value) -> Option<String> {
    let (Some(ours), Some(theirs)) = (
        status["partitions"].as_array(),
        described["partitions"].as_array(),
    ) else {
        return Some(format!("no partitions: {status} / {described}"));
    };
    if ours.len() != theirs.len() {
        return Some(format!("{} vs {} partitions", ours.len(), theirs.len()));
    }
    for (s, d) in ours.iter().zip(theirs) {
        let same = s["partition"] == d["partition"]
            && s["leader"] == d["leader"]
            && s["leaderEpoch"] == d["leader_epoch"]
            && s["replicas"] == d["replicas"]
            && s["isr"] == d["isr"]
            && s["logStartOffset"] == d["log_start_offset"]
            && s["highWatermark"] == d["high_watermark"]
            && s["sizeBytes"] == d["size_bytes"];
        if !same {
            return Some(format!("status {s} vs broker {d}"));
        }
    }
    None
}

fn keyed_lines(n: usize, prefix: &str) -> String {
    (0..n)
        .map(|i| format!("{prefix}-{i}:value {i}\n"))
        .collect()
}

/// A `runnel consume --group` process, stopped with SIGTERM (it commits and leaves) on drop.
struct GroupMember(Child);

impl GroupMember {
    fn start(bootstrap: &str, group: &str, client_id: &str) -> anyhow::Result<Self> {
        let binary = binary_next_to_tests("runnel")?;
        let child = Command::new(&binary)
            .args([
                "--bootstrap",
                bootstrap,
                "consume",
                "orders",
                "--group",
                group,
            ])
            .args(["--from-beginning", "--client-id", client_id])
            .args(["--auto-commit-interval-ms", "200"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(GroupMember(child))
    }

    fn stop(&mut self) -> anyhow::Result<()> {
        let pid = i32::try_from(self.0.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .context("pid")?;
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)
            .context("SIGTERM to the group member")?;
        let began = Instant::now();
        while self.0.try_wait()?.is_none() {
            ensure!(
                began.elapsed() < Duration::from_secs(20),
                "the member did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for GroupMember {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn has_event(cp: &ControlPlane, reason: &str) -> anyhow::Result<bool> {
    Ok(!events_of(cp, "ConsumerGroup", reason)?.trim().is_empty())
}

/// The messages of the Events with `reason` about objects of `kind`, one per line.
fn events_of(cp: &ControlPlane, kind: &str, reason: &str) -> anyhow::Result<String> {
    ok(cp.kubectl(&[
        "get",
        "events",
        "-n",
        NAMESPACE,
        "--field-selector",
        &format!("reason={reason},involvedObject.kind={kind}"),
        "-o",
        "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
    ]))
}

/// Partition `p` of Topic `orders` as its status has it: (leader, ISR).
fn orders_partition(cp: &ControlPlane, p: usize) -> anyhow::Result<(i64, Vec<i64>)> {
    let topic = get(cp, "topics.runnel.dev", "orders")?.context("Topic")?;
    let s = &topic["status"]["partitions"][p];
    let isr = s["isr"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    Ok((s["leader"].as_i64().unwrap_or(-1), isr))
}

/// Every broker names the same coordinator of `group`, the leader of its partition of
/// `__consumer_offsets`; the others refuse its calls with FAILED_PRECONDITION naming it.
fn not_the_coordinator(brokers: &[String], group: &str) -> anyhow::Result<()> {
    use runnel_proto::v1::broker_client::BrokerClient;
    use runnel_proto::v1::groups_client::GroupsClient;
    use runnel_proto::v1::{DescribeGroupRequest, FindCoordinatorRequest};
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let mut named = Vec::new();
        for address in brokers {
            let mut b = BrokerClient::connect(format!("http://{address}")).await?;
            let found = b
                .find_coordinator(FindCoordinatorRequest {
                    group_id: group.into(),
                })
                .await?
                .into_inner();
            named.push(found.address);
        }
        named.dedup();
        ensure!(
            named.len() == 1,
            "the brokers name different coordinators: {named:?}"
        );
        let coordinator = &named[0];
        ensure!(
            brokers.contains(coordinator),
            "{coordinator} is none of {brokers:?}"
        );
        for address in brokers {
            let mut g = GroupsClient::connect(format!("http://{address}")).await?;
            let answer = g
                .describe_group(DescribeGroupRequest {
                    group_id: group.into(),
                })
                .await;
            match answer {
                Ok(d) => ensure!(
                    address == coordinator,
                    "{address} answered as coordinator: {d:?}"
                ),
                Err(e) => {
                    ensure!(address != coordinator, "the coordinator refused: {e:?}");
                    ensure!(
                        e.code() == tonic::Code::FailedPrecondition
                            && e.message().contains("not the coordinator")
                            && e.message().contains(coordinator.as_str()),
                        "{address}: {e:?}"
                    );
                }
            }
        }
        anyhow::Ok(())
    })
}

/// A ConsumerGroup on `orders` (which holds 300 records): its lag before anyone consumes, with
/// `LagHigh` and an Event; a member consuming everything (Stable, its partitions, lag 0, the
/// same committed offsets as `runnel group describe`, `LagHigh` cleared); a reset refused
/// while the member runs and performed once it left, after which a new member reads the 300
/// records again; the lag on the operator's `/metrics` under the Kafka exporters' names.
fn consumer_group_status(
    cp: &ControlPlane,
    operator: &Operator,
    brokers: &[String],
) -> anyhow::Result<()> {
    let bootstrap = brokers[0].as_str();
    ok(cp.apply(&format!(
        "apiVersion: runnel.dev/v1alpha1
kind: ConsumerGroup
metadata:
  name: order-processors
  namespace: {NAMESPACE}
spec:
  cluster: events
  topic: orders
  lagThreshold: 100
"
    )))?;
    let group = || -> anyhow::Result<Value> {
        get(cp, "consumergroups.runnel.dev", "order-processors")?.context("ConsumerGroup")
    };
    wait_for("the unread topic as lag, LagHigh", operator, || {
        let g = group()?;
        let s = &g["status"];
        let high = condition(&g, "LagHigh").is_some_and(|c| c["status"] == "True");
        if s["state"] != "Dead" || s["totalLag"] != 300 || !high || !has_event(cp, "LagHigh")? {
            return Ok(Some(format!("status: {s}")));
        }
        Ok(None)
    })?;

    let mut member = GroupMember::start(bootstrap, "order-processors", "e2e-consumer")?;
    wait_for(
        "Stable, one member, lag 0, LagHigh cleared",
        operator,
        || {
            let g = group()?;
            let s = &g["status"];
            let cleared = condition(&g, "LagHigh").is_some_and(|c| c["status"] == "False");
            if s["state"] != "Stable" || s["memberCount"] != 1 || s["totalLag"] != 0 || !cleared {
                return Ok(Some(format!("status: {s}")));
            }
            let m = &s["members"][0];
            ensure!(m["clientId"] == "e2e-consumer", "{m}");
            ensure!(m["partitions"] == serde_json::json!([0, 1, 2]), "{m}");
            // What `runnel group describe` says, partition by partition.
            let described =
                runnel_json(bootstrap, &["group", "describe", "order-processors"], None)?;
            for p in s["partitions"].as_array().context("partitions")? {
                let theirs = described["partitions"]
                    .as_array()
                    .and_then(|all| all.iter().find(|d| d["partition"] == p["partition"]))
                    .with_context(|| format!("partition {} in {described}", p["partition"]))?;
                if p["committedOffset"] != theirs["committed_offset"] || p["lag"] != theirs["lag"] {
                    return Ok(Some(format!("status {p} vs describe {theirs}")));
                }
            }
            Ok((!has_event(cp, "LagRecovered")?).then(|| "no LagRecovered Event".to_string()))
        },
    )?;
    not_the_coordinator(brokers, "order-processors")?;
    let (_, metrics) = operator.http_get("/metrics")?;
    ensure!(
        metrics
            .lines()
            .any(|l| l.starts_with("kafka_consumergroup_lag{")
                && l.contains("consumergroup=\"order-processors\"")
                && l.contains("topic=\"orders\"")),
        "no kafka_consumergroup_lag on /metrics:\n{metrics}"
    );

    // A reset while the member runs waits, saying why; once the member left, it is made.
    merge_patch(
        cp,
        NAMESPACE,
        "consumergroups.runnel.dev",
        "order-processors",
        r#"{"spec":{"resetOffsets":{"to":"earliest"}}}"#,
    )?;
    wait_for("the reset refused while the member runs", operator, || {
        let g = group()?;
        Ok(match condition(&g, "OffsetsReset") {
            Some(c) if c["status"] == "False" && c["reason"] == "MembersActive" => None,
            _ => Some(format!("status: {}", g["status"])),
        })
    })?;
    member.stop()?;
    wait_for("the reset made once the group is empty", operator, || {
        let g = group()?;
        let s = &g["status"];
        let done = condition(&g, "OffsetsReset").is_some_and(|c| c["status"] == "True");
        Ok(
            (!(done && s["totalLag"] == 300 && s["appliedResetOffsets"]["to"] == "earliest"))
                .then(|| format!("status: {s}")),
        )
    })?;
    let again = Command::new(binary_next_to_tests("runnel")?)
        .args([
            "--bootstrap",
            bootstrap,
            "consume",
            "orders",
            "--group",
            "order-processors",
        ])
        .args(["--max-messages", "300", "--timeout-ms", "10000"])
        .output()?;
    let lines = String::from_utf8_lossy(&again.stdout).lines().count();
    ensure!(
        again.status.success() && lines == 300,
        "after the reset the group read {lines} records: {}",
        String::from_utf8_lossy(&again.stderr)
    );
    Ok(())
}

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
    ensure!(
        topic["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.iter().any(|f| f == "runnel.dev/topic-data")),
        "finalizer: {}",
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
    leaders.sort_unstable();
    ensure!(leaders == [0, 1, 2], "one leader per broker: {leaders:?}");
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
    consumer_group_status(&cp, &operator, &addresses)?;

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

    // Failover: kill -9 the leader of partition 0. The operator elects the in-sync follower
    // (its liveness check sees the broker gone), the status shows the ISR shrink, an Event
    // tells of the leader change, and a produce is acknowledged by the new leader; the broker,
    // started again on its volume, catches up and the ISR grows back.
    let (victim, isr) = orders_partition(&cp, 0)?;
    ensure!(isr.len() == 2, "partition 0 is not fully in sync: {isr:?}");
    let victim = usize::try_from(victim)?;
    let name = pods[victim].name.clone();
    let ip = pods[victim].ip.clone();
    let killed = Instant::now();
    pods[victim].child.kill()?;
    pods[victim].child.wait()?;
    wait_for(
        "a new leader of partition 0 from its ISR",
        &operator,
        || {
            let (leader, isr) = orders_partition(&cp, 0)?;
            Ok(
                (leader == victim as i64 || leader < 0 || isr.contains(&(victim as i64)))
                    .then(|| format!("leader {leader}, ISR {isr:?}")),
            )
        },
    )?;
    let elected = killed.elapsed();
    let survivor = pods
        .iter()
        .enumerate()
        .find(|(i, _)| *i != victim)
        .map(|(_, p)| p.address())
        .context("a live broker")?;
    let produced = runnel_json(
        &survivor,
        &["produce", "orders", "--partition", "0", "--acks", "all"],
        Some("after-failover\n"),
    )?;
    eprintln!(
        "failover: kill -9 of broker {victim} to a new leader in the status {elected:?}, to an acknowledged produce {:?}: {produced}",
        killed.elapsed()
    );
    ensure!(
        elected < Duration::from_secs(5),
        "the status showed the new leader after {elected:?}"
    );
    wait_for("a LeaderElected Event on the Topic", &operator, || {
        let events = events_of(&cp, "Topic", "LeaderElected")?;
        Ok((!events.contains("partition 0:")).then(|| format!("events: {events:?}")))
    })?;
    // The old process is reaped already: nothing of it to stop.
    std::mem::forget(std::mem::replace(
        &mut pods[victim],
        play_pod(&name, &ip, &config, dir.path())?,
    ));
    wait_for("broker back in the ISR of partition 0", &operator, || {
        let (leader, isr) = orders_partition(&cp, 0)?;
        Ok((isr.len() != 2).then(|| format!("leader {leader}, ISR {isr:?}")))
    })?;

    // A copy of a replicated partition is not deleted while the metadata places it: its
    // leader or followers would take the empty copy for the partition. The refusal is clear
    // and the records stay.
    let (leader, _) = orders_partition(&cp, 0)?;
    let leader = usize::try_from(leader)?;
    let refused = rt.block_on(async {
        let mut admin = AdminClient::connect(format!("http://{}", pods[leader].address())).await?;
        anyhow::Ok(
            admin
                .delete_partitions(DeletePartitionsRequest {
                    topic: "orders".into(),
                    partitions: vec![0],
                })
                .await,
        )
    })?;
    let status = refused.expect_err("deleting an assigned replicated copy");
    ensure!(
        status.code() == tonic::Code::FailedPrecondition
            && status.message().contains("places a copy here"),
        "{status:?}"
    );
    ensure!(
        held(&rt, &pods[leader].address())?
            .iter()
            .any(|p| p.topic == "orders" && p.partition == 0 && p.log_end_offset > 0),
        "the refused delete took the records"
    );

    // A scale-down moves the partitions off the leaving broker first: the new copies catch up
    // and join the ISR, the old ones go, and the StatefulSet shrinks once nothing is left only
    // there (until then the Cluster says ScaleDownBlocked). The records stay.
    ok(cp.apply(&format!(
        "apiVersion: runnel.dev/v1alpha1
kind: Topic
metadata:
  name: clicks
  namespace: {NAMESPACE}
spec:
  cluster: events
  partitions: 3
  replicas: 1
"
    )))?;
    wait_for("Topic clicks Ready", &operator, || {
        topic_ready(&cp, "clicks")
    })?;
    runnel_json(
        &bootstrap,
        &["produce", "clicks", "--key-separator", ":"],
        Some(&keyed_lines(300, "user")),
    )?;
    let leaving = (BROKERS - 1) as i64;
    let on_leaving = |topic: &str| -> anyhow::Result<Vec<i64>> {
        let t = get(&cp, "topics.runnel.dev", topic)?.context("Topic")?;
        Ok(t["status"]["partitions"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| {
                        p["replicas"]
                            .as_array()
                            .is_some_and(|r| r.iter().any(|b| b.as_i64() == Some(leaving)))
                    })
                    .filter_map(|p| p["partition"].as_i64())
                    .collect()
            })
            .unwrap_or_default())
    };
    ensure!(
        !on_leaving("clicks")?.is_empty(),
        "no clicks partition on broker {leaving}"
    );
    merge_patch(
        &cp,
        NAMESPACE,
        "clusters.runnel.dev",
        "events",
        r#"{"spec":{"brokers":2}}"#,
    )?;
    wait_for(
        "the partitions moved off the leaving broker",
        &operator,
        || {
            for topic in ["clicks", "orders"] {
                let left = on_leaving(topic)?;
                if !left.is_empty() {
                    return Ok(Some(format!(
                        "{topic} partitions {left:?} still on broker {leaving}"
                    )));
                }
            }
            Ok(None)
        },
    )?;
    wait_for("the StatefulSet scaled down", &operator, || {
        let sts = get(&cp, "statefulset", "events-broker")?.context("StatefulSet")?;
        let cluster = get(&cp, "clusters.runnel.dev", "events")?.context("Cluster")?;
        Ok(
            (sts["spec"]["replicas"] != 2 || condition(&cluster, "ScaleDownBlocked").is_some())
                .then(|| {
                    format!(
                        "replicas {}, conditions {}",
                        sts["spec"]["replicas"], cluster["status"]["conditions"]
                    )
                }),
        )
    })?;
    wait_for("clicks still has its 300 records", &operator, || {
        let topic = get(&cp, "topics.runnel.dev", "clicks")?.context("Topic")?;
        Ok((topic["status"]["totals"]["records"] != 300)
            .then(|| topic["status"]["totals"].to_string()))
    })?;
    // Back to three brokers: the pod comes again and its broker (still running here) is Ready.
    merge_patch(
        &cp,
        NAMESPACE,
        "clusters.runnel.dev",
        "events",
        &format!(r#"{{"spec":{{"brokers":{BROKERS}}}}}"#),
    )?;
    let last = &pods[BROKERS - 1];
    wait_for("the pod of the broker back", &operator, || {
        Ok(get(&cp, "pod", &last.name)?
            .is_none()
            .then(|| format!("no pod {}", last.name)))
    })?;
    report_running(&cp, &last.name, &last.ip)?;
    wait_for("three ready brokers", &operator, || {
        let cluster = get(&cp, "clusters.runnel.dev", "events")?.context("Cluster")?;
        Ok((cluster["status"]["readyBrokers"] != BROKERS as i64)
            .then(|| format!("ready: {}", cluster["status"]["readyBrokers"])))
    })?;

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
