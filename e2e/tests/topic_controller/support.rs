//! What the journey's parts share: brokers playing pods, reading resources, the CLI.

use anyhow::{bail, ensure, Context};
use runnel_e2e::operator::{binary_next_to_tests, eventually, ok, Operator};
use runnel_e2e::ControlPlane;
use runnel_proto::v1::admin_client::AdminClient;
use runnel_proto::v1::{DescribePartitionsRequest, PartitionDescription};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const NAMESPACE: &str = "pipelines";
pub(crate) const TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const BROKERS: usize = 3;

/// A broker process playing the pod `events-broker-N`.
pub(crate) struct PlayedPod {
    pub(crate) name: String,
    pub(crate) ip: String,
    pub(crate) child: Child,
    pub(crate) log: PathBuf,
}

impl PlayedPod {
    pub(crate) fn address(&self) -> String {
        format!("{}:9092", self.ip)
    }

    pub(crate) fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for PlayedPod {
    fn drop(&mut self) {
        let (_, killed) = runnel_e2e::terminate(&mut self.child, Duration::from_secs(10));
        if !killed {
            return;
        }
        eprintln!(
            "{} had to be killed; its log:\n{}",
            self.name,
            self.log_tail()
        );
    }
}

/// Starts the broker of pod `name` at `ip`, with the ConfigMap's configuration in `config`.
pub(crate) fn play_pod(
    name: &str,
    ip: &str,
    config: &Path,
    dir: &Path,
) -> anyhow::Result<PlayedPod> {
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
pub(crate) fn report_running(cp: &ControlPlane, name: &str, ip: &str) -> anyhow::Result<()> {
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
pub(crate) fn broker_ip(n: usize) -> String {
    format!("127.77.{}.{}", std::process::id() % 250, n + 2)
}

pub(crate) fn get(cp: &ControlPlane, kind: &str, name: &str) -> anyhow::Result<Option<Value>> {
    runnel_e2e::operator::get(cp, NAMESPACE, kind, name)
}

pub(crate) fn wait_for(
    what: &str,
    operator: &Operator,
    check: impl FnMut() -> anyhow::Result<Option<String>>,
) -> anyhow::Result<Duration> {
    let took = eventually(what, operator, TIMEOUT, check)?;
    eprintln!("{what}: {took:?}");
    Ok(took)
}

/// `runnel --bootstrap ADDRESS ARGS… --output json`, parsed.
pub(crate) fn runnel_json(
    bootstrap: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> anyhow::Result<Value> {
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
pub(crate) fn held(
    rt: &tokio::runtime::Runtime,
    address: &str,
) -> anyhow::Result<Vec<PartitionDescription>> {
    rt.block_on(async {
        let mut admin = AdminClient::connect(format!("http://{address}")).await?;
        Ok(admin
            .describe_partitions(DescribePartitionsRequest::default())
            .await?
            .into_inner()
            .partitions)
    })
}

pub(crate) fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
}

pub(crate) fn topic_ready(cp: &ControlPlane, name: &str) -> anyhow::Result<Option<String>> {
    let Some(topic) = get(cp, "topics.runnel.dev", name)? else {
        bail!("Topic {name} is gone");
    };
    match condition(&topic, "Ready") {
        Some(c) if c["status"] == "True" => Ok(None),
        _ => Ok(Some(format!("status: {}", topic["status"]))),
    }
}

/// Compares a Topic's status with `runnel topic describe` of the same topic.
pub(crate) fn status_matches_brokers(status: &Value, described: &Value) -> Option<String> {
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

pub(crate) fn keyed_lines(n: usize, prefix: &str) -> String {
    (0..n)
        .map(|i| format!("{prefix}-{i}:value {i}\n"))
        .collect()
}

pub(crate) fn has_event(cp: &ControlPlane, reason: &str) -> anyhow::Result<bool> {
    Ok(!events_of(cp, "ConsumerGroup", reason)?.trim().is_empty())
}

/// The messages of the Events with `reason` about objects of `kind`, one per line.
pub(crate) fn events_of(cp: &ControlPlane, kind: &str, reason: &str) -> anyhow::Result<String> {
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
pub(crate) fn orders_partition(cp: &ControlPlane, p: usize) -> anyhow::Result<(i64, Vec<i64>)> {
    let topic = get(cp, "topics.runnel.dev", "orders")?.context("Topic")?;
    let s = &topic["status"]["partitions"][p];
    let isr = s["isr"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    Ok((s["leader"].as_i64().unwrap_or(-1), isr))
}
