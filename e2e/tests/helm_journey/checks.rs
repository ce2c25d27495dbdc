//! What the journey does to and reads from the cluster: the install, the examples, the brokers'
//! and Topics' readiness, tables, lag, the brokers' addresses, and the teardown's checks.

use super::*;

/// The operator pods of the release, by name.
pub(super) fn operator_pods(t: &Tools<'_>) -> anyhow::Result<Vec<String>> {
    let out = t.k(
        OPERATOR_NS,
        &[
            "get",
            "pods",
            "-l",
            &format!("app.kubernetes.io/name=runnel,app.kubernetes.io/instance={RELEASE}"),
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ],
    )?;
    Ok(out.split_whitespace().map(str::to_owned).collect())
}

/// Fails when an operator pod logged an ERROR line, printing the logs.
pub(super) fn no_operator_errors(t: &Tools<'_>) -> anyhow::Result<()> {
    for pod in operator_pods(t)? {
        let log = plain(&t.k(OPERATOR_NS, &["logs", &pod])?);
        let errors: Vec<&str> = log.lines().filter(|l| l.contains(" ERROR ")).collect();
        ensure!(
            errors.is_empty(),
            "operator pod {pod} logged ERROR lines:\n{}\n--- its whole log:\n{log}",
            errors.join("\n")
        );
    }
    Ok(())
}

/// Installs the chart and waits for two operator pods, exactly one holding the Lease.
pub(super) fn install(t: &Tools<'_>, clock: &Clock) -> anyhow::Result<()> {
    let chart = repo_root().join("charts/runnel");
    t.helm(&[
        "install",
        RELEASE,
        chart.to_str().context("UTF-8 path")?,
        "--namespace",
        OPERATOR_NS,
        "--create-namespace",
        "--set",
        &format!("image.tag={VERSION}"),
        // The images exist only in the node's containerd.
        "--set",
        "image.pullPolicy=Never",
        "--wait",
        "--timeout=180s",
    ])?;
    clock.step("helm install: operator Deployment available");
    let deployment = format!("deployment/{RELEASE}-operator");
    t.k(
        OPERATOR_NS,
        &["rollout", "status", &deployment, "--timeout=120s"],
    )?;
    let pods = operator_pods(t)?;
    ensure!(pods.len() == 2, "two operator replicas, found {pods:?}");
    eventually("one operator leads", Duration::from_secs(60), || {
        let holder = t
            .get(OPERATOR_NS, "lease", "runnel-operator")?
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned));
        Ok(match holder {
            Some(h) if pods.contains(&h) => None,
            other => Some(format!("Lease holder {other:?}, pods {pods:?}")),
        })
    })?;
    for pod in &pods {
        let ready = t.k(
            OPERATOR_NS,
            &[
                "get",
                "pod",
                pod,
                "-o",
                r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#,
            ],
        )?;
        ensure!(ready == "True", "operator pod {pod} is not Ready");
    }
    clock.step("operator: 2 pods Ready, one holds the Lease runnel-operator");
    Ok(())
}

/// `kubectl apply -n NS -f` of the example files.
pub(super) fn apply_examples(t: &Tools<'_>, files: &[&str]) -> anyhow::Result<()> {
    let root = repo_root();
    let mut args = vec!["-n".to_string(), NS.to_string(), "apply".to_string()];
    for f in files {
        args.push("-f".into());
        args.push(root.join("examples").join(f).display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    t.kubectl(&args).map(|_| ())
}

pub(super) fn condition_status(object: &Value, type_: &str) -> Option<String> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .and_then(|c| c["status"].as_str().map(str::to_owned))
}

/// Waits for the Cluster's three brokers: Ready through the StatefulSet's gRPC probe, a bound
/// claim each on its own volume, addresses in the pod range; returns the brokers' addresses.
pub(super) fn brokers_ready(t: &Tools<'_>) -> anyhow::Result<BTreeMap<i64, String>> {
    eventually("the StatefulSet exists", Duration::from_secs(60), || {
        Ok(t.get(NS, "statefulset", STATEFULSET)?
            .is_none()
            .then(|| "not yet".to_string()))
    })?;
    t.k(
        NS,
        &[
            "rollout",
            "status",
            &format!("statefulset/{STATEFULSET}"),
            "--timeout=240s",
        ],
    )?;
    let sts = t
        .get(NS, "statefulset", STATEFULSET)?
        .context("StatefulSet")?;
    let container = &sts["spec"]["template"]["spec"]["containers"][0];
    ensure!(
        container["readinessProbe"]["grpc"]["port"] == 9092,
        "the brokers' readiness probe is not gRPC on 9092: {}",
        container["readinessProbe"]
    );
    let mut volumes = BTreeSet::new();
    for i in 0..3 {
        let claim = t
            .get(NS, "pvc", &format!("data-{STATEFULSET}-{i}"))?
            .context("a claim per broker")?;
        ensure!(claim["status"]["phase"] == "Bound", "{claim}");
        volumes.insert(
            claim["spec"]["volumeName"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
    }
    ensure!(volumes.len() == 3, "three distinct volumes: {volumes:?}");
    let mut addresses = BTreeMap::new();
    eventually(
        "Cluster Ready with 3 brokers",
        Duration::from_secs(90),
        || {
            let c = t
                .get(NS, "clusters.runnel.dev", CLUSTER)?
                .context("Cluster")?;
            let brokers = c["status"]["brokers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if condition_status(&c, "Ready").as_deref() != Some("True")
                || c["status"]["readyBrokers"] != 3
                || brokers.len() != 3
            {
                return Ok(Some(format!("{}", c["status"])));
            }
            addresses.clear();
            for b in brokers {
                let address = b["address"].as_str().unwrap_or("").to_string();
                ensure!(
                    address.starts_with("198.18."),
                    "broker outside 198.18/16: {b}"
                );
                // One zone on this node: every broker's rack is that zone.
                ensure!(
                    b["rack"] == runnel_e2e::local_cluster::ZONE,
                    "rack of broker {b}"
                );
                addresses.insert(b["id"].as_i64().unwrap_or(-1), address);
            }
            Ok(None)
        },
    )?;
    Ok(addresses)
}

/// Every Topic of the examples Ready, with one status entry per partition (leader, replicas
/// as many as the replication factor, a non-empty ISR).
pub(super) fn topics_ready(t: &Tools<'_>, names: &[&str]) -> anyhow::Result<()> {
    for name in names {
        eventually(
            &format!("Topic {name} Ready"),
            Duration::from_secs(90),
            || {
                let topic = t.get(NS, "topics.runnel.dev", name)?.context("Topic")?;
                if condition_status(&topic, "Ready").as_deref() != Some("True") {
                    return Ok(Some(format!("{}", topic["status"])));
                }
                let partitions = topic["status"]["partitions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                let want = topic["spec"]["partitions"].as_u64().unwrap_or(0) as usize;
                let replicas = topic["spec"]["replicas"].as_u64().unwrap_or(0) as usize;
                if partitions.len() != want {
                    return Ok(Some(format!("{} of {want} partitions", partitions.len())));
                }
                for p in &partitions {
                    let isr = p["isr"].as_array().map_or(0, Vec::len);
                    let reps = p["replicas"].as_array().map_or(0, Vec::len);
                    if p["leader"].as_i64().is_none() || reps != replicas || isr != replicas {
                        return Ok(Some(format!("partition {p}")));
                    }
                }
                Ok(None)
            },
        )?;
    }
    Ok(())
}

/// `kubectl get -n NS ARGS` as a table: every row has a value in every column.
pub(super) fn table_filled(t: &Tools<'_>, args: &[&str]) -> anyhow::Result<String> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    let out = t.k(NS, &all)?;
    let mut header = 0;
    for line in out.lines() {
        let fields = line.split_whitespace().count();
        if line.starts_with("NAME ") {
            header = fields;
        } else if !line.trim().is_empty() {
            ensure!(
                fields == header && !line.contains("<none>"),
                "a column is empty in `kubectl get {}`:\n{out}",
                args.join(" ")
            );
        }
    }
    ensure!(header > 0, "no table:\n{out}");
    Ok(out)
}

/// The group's (state, total lag) from its status.
pub(super) fn group_lag(t: &Tools<'_>) -> anyhow::Result<(String, Option<i64>)> {
    let g = t
        .get(NS, "consumergroups.runnel.dev", "payments-processor")?
        .context("ConsumerGroup")?;
    Ok((
        g["status"]["state"].as_str().unwrap_or("").to_string(),
        g["status"]["totalLag"].as_i64(),
    ))
}

/// The broker pods' gRPC addresses now, with their restart counts checked: a broker that
/// restarted on its own is a failure of the journey.
pub(super) fn broker_addresses(t: &Tools<'_>) -> anyhow::Result<Vec<String>> {
    let out = t.k(
        NS,
        &[
            "get",
            "pods",
            "-l",
            &format!("app.kubernetes.io/instance={CLUSTER},app.kubernetes.io/component=broker"),
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.status.containerStatuses[0].restartCount}{\"\\n\"}{end}",
        ],
    )?;
    let mut addresses = Vec::new();
    for line in out.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        ensure!(
            f.len() == 3 && f[2] == "0",
            "broker pod restarted or without address: {out}"
        );
        addresses.push(format!("{}:9092", f[1]));
    }
    ensure!(addresses.len() == 3, "three broker pods: {out}");
    Ok(addresses)
}

/// Deletes the namespace and waits until it is gone (not left Terminating).
pub(super) fn delete_namespace(t: &Tools<'_>, ns: &str) -> anyhow::Result<()> {
    t.kubectl(&["delete", "namespace", ns, "--wait=false"])?;
    let out = t.cluster.kubectl(&[
        "wait",
        "--for=delete",
        &format!("namespace/{ns}"),
        "--timeout=120s",
    ]);
    if !out.success() && !out.stderr.contains("NotFound") {
        let status = t
            .cluster
            .kubectl(&["get", "namespace", ns, "-o", "jsonpath={.status}"]);
        let left = t.cluster.kubectl(&[
            "-n",
            ns,
            "get",
            "runnel",
            "-o",
            "jsonpath={range .items[*]}{.kind}/{.metadata.name} finalizers {.metadata.finalizers}{\"\\n\"}{end}",
        ]);
        bail!(
            "namespace {ns} is stuck Terminating: {}\nleft in it:\n{}",
            status.stdout,
            left.stdout
        );
    }
    Ok(())
}

/// After everything is down: no namespace, release or cluster-scoped object of the chart is
/// left, no volume of the brokers; the CRDs stay (helm keeps what it installed from crds/).
pub(super) fn nothing_left_but_crds(t: &Tools<'_>) -> anyhow::Result<()> {
    let namespaces = t.kubectl(&["get", "namespaces", "-o", "name"])?;
    for ns in [NS, OPERATOR_NS] {
        ensure!(
            !namespaces.lines().any(|l| l == format!("namespace/{ns}")),
            "namespace {ns} is left"
        );
    }
    let cluster_scoped = t.kubectl(&[
        "get",
        "clusterroles,clusterrolebindings",
        "-l",
        &format!("app.kubernetes.io/instance={RELEASE}"),
        "-o",
        "name",
    ])?;
    ensure!(cluster_scoped.trim().is_empty(), "left: {cluster_scoped}");
    let everywhere = t.kubectl(&["get", "runnel", "--all-namespaces", "-o", "name"])?;
    ensure!(
        everywhere.trim().is_empty(),
        "Runnel objects left: {everywhere}"
    );
    eventually(
        "the brokers' volumes are gone",
        Duration::from_secs(60),
        || {
            let pvs = t.kubectl(&[
                "get",
                "pv",
                "-o",
                "jsonpath={.items[*].spec.claimRef.namespace}",
            ])?;
            Ok(pvs
                .split_whitespace()
                .any(|n| n == NS)
                .then(|| format!("PVs of {NS} left")))
        },
    )?;
    let crds = t.kubectl(&["get", "crd", "-o", "name"])?;
    for crd in ["clusters", "topics", "consumergroups"] {
        ensure!(
            crds.contains(&format!("{crd}.runnel.dev")),
            "CRD {crd} is gone: {crds}"
        );
    }
    Ok(())
}
