//! Consumer groups in the journey: the coordinator every broker names, and a ConsumerGroup's
//! status, lag, Events and offset resets.

use crate::support::*;
use anyhow::{ensure, Context};
use runnel_e2e::operator::{binary_next_to_tests, merge_patch, ok, Operator};
use runnel_e2e::ControlPlane;
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `runnel consume --group` process, stopped with SIGTERM (it commits and leaves) on drop.
pub(crate) struct GroupMember(Child);

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

/// Every broker names the same coordinator of `group`, the leader of its partition of
/// `__consumer_offsets`; the others refuse its calls with FAILED_PRECONDITION naming it.
pub(crate) fn not_the_coordinator(brokers: &[String], group: &str) -> anyhow::Result<()> {
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
pub(crate) fn consumer_group_status(
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
