//! Replication against the real API server: a leader killed and replaced from its ISR, a
//! replicated copy that is not deleted while assigned, and a scale-down that moves partitions.

use crate::support::*;
use anyhow::{ensure, Context};
use runnel_e2e::operator::{merge_patch, ok, Operator};
use runnel_e2e::ControlPlane;
use runnel_proto::v1::admin_client::AdminClient;
use runnel_proto::v1::DeletePartitionsRequest;
use std::path::Path;
use std::time::{Duration, Instant};

/// kill -9 of the leader of `orders/0`: a new leader from the ISR in the status, an Event, an
/// acknowledged produce, and the broker back in the ISR once started again.
pub(crate) fn leader_failover(
    cp: &ControlPlane,
    operator: &Operator,
    pods: &mut [PlayedPod],
    config: &Path,
    dir: &Path,
) -> anyhow::Result<()> {
    // Failover: kill -9 the leader of partition 0. The operator elects the in-sync follower
    // (its liveness check sees the broker gone), the status shows the ISR shrink, an Event
    // tells of the leader change, and a produce is acknowledged by the new leader; the broker,
    // started again on its volume, catches up and the ISR grows back.
    let (victim, isr) = orders_partition(cp, 0)?;
    ensure!(isr.len() == 2, "partition 0 is not fully in sync: {isr:?}");
    let victim = usize::try_from(victim)?;
    let name = pods[victim].name.clone();
    let ip = pods[victim].ip.clone();
    let killed = Instant::now();
    pods[victim].child.kill()?;
    pods[victim].child.wait()?;
    wait_for("a new leader of partition 0 from its ISR", operator, || {
        let (leader, isr) = orders_partition(cp, 0)?;
        Ok(
            (leader == victim as i64 || leader < 0 || isr.contains(&(victim as i64)))
                .then(|| format!("leader {leader}, ISR {isr:?}")),
        )
    })?;
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
    wait_for("a LeaderElected Event on the Topic", operator, || {
        let events = events_of(cp, "Topic", "LeaderElected")?;
        Ok((!events.contains("partition 0:")).then(|| format!("events: {events:?}")))
    })?;
    // The old process is reaped already: nothing of it to stop.
    std::mem::forget(std::mem::replace(
        &mut pods[victim],
        play_pod(&name, &ip, config, dir)?,
    ));
    wait_for("broker back in the ISR of partition 0", operator, || {
        let (leader, isr) = orders_partition(cp, 0)?;
        Ok((isr.len() != 2).then(|| format!("leader {leader}, ISR {isr:?}")))
    })?;
    Ok(())
}

/// DeletePartitions of an assigned replicated copy is refused and loses nothing.
pub(crate) fn assigned_copy_not_deleted(
    cp: &ControlPlane,
    rt: &tokio::runtime::Runtime,
    pods: &[PlayedPod],
) -> anyhow::Result<()> {
    // A copy of a replicated partition is not deleted while the metadata places it: its
    // leader or followers would take the empty copy for the partition. The refusal is clear
    // and the records stay.
    let (leader, _) = orders_partition(cp, 0)?;
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
        held(rt, &pods[leader].address())?
            .iter()
            .any(|p| p.topic == "orders" && p.partition == 0 && p.log_end_offset > 0),
        "the refused delete took the records"
    );
    Ok(())
}

/// A scale-down completes once the partitions have moved off the leaving broker.
pub(crate) fn scale_down_moves_partitions(
    cp: &ControlPlane,
    operator: &Operator,
    pods: &[PlayedPod],
    bootstrap: &str,
) -> anyhow::Result<()> {
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
    wait_for("Topic clicks Ready", operator, || topic_ready(cp, "clicks"))?;
    runnel_json(
        bootstrap,
        &["produce", "clicks", "--key-separator", ":"],
        Some(&keyed_lines(300, "user")),
    )?;
    let leaving = (BROKERS - 1) as i64;
    let on_leaving = |topic: &str| -> anyhow::Result<Vec<i64>> {
        let t = get(cp, "topics.runnel.dev", topic)?.context("Topic")?;
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
        cp,
        NAMESPACE,
        "clusters.runnel.dev",
        "events",
        r#"{"spec":{"brokers":2}}"#,
    )?;
    wait_for(
        "the partitions moved off the leaving broker",
        operator,
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
    wait_for("the StatefulSet scaled down", operator, || {
        let sts = get(cp, "statefulset", "events-broker")?.context("StatefulSet")?;
        let cluster = get(cp, "clusters.runnel.dev", "events")?.context("Cluster")?;
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
    wait_for("clicks still has its 300 records", operator, || {
        let topic = get(cp, "topics.runnel.dev", "clicks")?.context("Topic")?;
        Ok((topic["status"]["totals"]["records"] != 300)
            .then(|| topic["status"]["totals"].to_string()))
    })?;
    // Back to three brokers: the pod comes again and its broker (still running here) is Ready.
    merge_patch(
        cp,
        NAMESPACE,
        "clusters.runnel.dev",
        "events",
        &format!(r#"{{"spec":{{"brokers":{BROKERS}}}}}"#),
    )?;
    let last = &pods[BROKERS - 1];
    wait_for("the pod of the broker back", operator, || {
        Ok(get(cp, "pod", &last.name)?
            .is_none()
            .then(|| format!("no pod {}", last.name)))
    })?;
    report_running(cp, &last.name, &last.ip)?;
    wait_for("three ready brokers", operator, || {
        let cluster = get(cp, "clusters.runnel.dev", "events")?.context("Cluster")?;
        Ok((cluster["status"]["readyBrokers"] != BROKERS as i64)
            .then(|| format!("ready: {}", cluster["status"]["readyBrokers"])))
    })?;
    Ok(())
}
