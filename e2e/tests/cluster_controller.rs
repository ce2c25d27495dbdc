//! The real `runnel-operator` binary against a real API server: a Cluster becomes a
//! StatefulSet, two Services, a ConfigMap and a PodDisruptionBudget owned by it, its status gets
//! `observedGeneration` and a `Ready` condition, and scaling the Cluster scales the StatefulSet.
//!
//! No controller manager or scheduler runs, so no pod ever exists: the test checks objects, and
//! `Ready` stays `False`.

use anyhow::{bail, ensure, Context};
use runnel_e2e::{ControlPlane, Output};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NAMESPACE: &str = "streams";
/// How long the operator has to bring the objects in line.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The `runnel-operator` binary next to this test executable (`target/<profile>/`).
fn operator_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("test executable path")?;
    // target/<profile>/deps/<test> -> target/<profile>/runnel-operator
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("target directory of the test executable")?;
    let path = dir.join("runnel-operator");
    ensure!(
        path.is_file(),
        "{} is missing: build it with `cargo build --workspace --bins` (`make test` does)",
        path.display()
    );
    Ok(path)
}

/// A running `runnel-operator`, stopped (SIGTERM, then SIGKILL) when dropped, also when the test
/// fails; its log is printed then (the test harness shows it only for a failing test).
struct Operator {
    // A RefCell so that `exited` can poll it through a shared reference.
    child: std::cell::RefCell<Child>,
    log: PathBuf,
    metrics: String,
    _dir: tempfile::TempDir,
}

impl Operator {
    fn start(cp: &ControlPlane) -> anyhow::Result<Self> {
        let binary = operator_binary()?;
        let dir = tempfile::tempdir().context("operator temp dir")?;
        let log = dir.path().join("operator.log");
        let file = std::fs::File::create(&log).context("operator log file")?;
        let metrics = format!("127.0.0.1:{}", runnel_e2e::free_port()?);
        // `setpriv --pdeathsig KILL`, as the harness does: a test process killed outright
        // leaves no operator behind.
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--"])
            .arg(&binary)
            .args(["--metrics-listen", &metrics])
            .env("KUBECONFIG", cp.kubeconfig())
            .env("RUST_LOG", "info,runnel_operator=debug")
            .stdin(Stdio::null())
            .stdout(file.try_clone().context("operator log file")?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Operator {
            child: std::cell::RefCell::new(child),
            log,
            metrics,
            _dir: dir,
        })
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// `GET path` on the operator's HTTP server: (status line, body).
    fn http_get(&self, path: &str) -> anyhow::Result<(String, String)> {
        let mut stream = std::net::TcpStream::connect(&self.metrics)
            .with_context(|| format!("connecting to {}", self.metrics))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.metrics
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        Ok((
            head.lines().next().unwrap_or_default().to_string(),
            body.to_string(),
        ))
    }

    /// Its exit status once it has exited (it should not, while the test runs).
    fn exited(&self) -> Option<std::process::ExitStatus> {
        self.child.borrow_mut().try_wait().ok().flatten()
    }

    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if let Some(status) = self.exited() {
            return Some(status);
        }
        let child = self.child.get_mut();
        let pid = i32::try_from(child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let began = Instant::now();
        while began.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let status = self.stop();
        eprintln!(
            "runnel-operator exited ({status:?}); the end of its log:\n{}",
            self.log_tail()
        );
    }
}

fn ok(out: Output) -> anyhow::Result<String> {
    ensure!(out.success(), "{out}");
    Ok(out.stdout)
}

/// `kubectl get KIND NAME -o json` in the test namespace, or `None` while it does not exist.
fn get(cp: &ControlPlane, kind: &str, name: &str) -> anyhow::Result<Option<Value>> {
    let out = cp.kubectl(&[
        "get",
        kind,
        name,
        "-n",
        NAMESPACE,
        "-o",
        "json",
        "--show-managed-fields",
    ]);
    if !out.success() {
        ensure!(out.stderr.contains("NotFound"), "{out}");
        return Ok(None);
    }
    Ok(Some(
        serde_json::from_str(&out.stdout).context("kubectl's JSON")?,
    ))
}

/// Polls `check` until it returns `Ok(None)` (all good) or [`TIMEOUT`] passes; `check` returns
/// `Ok(Some(why))` while the state is not there yet.
fn eventually(
    what: &str,
    operator: &Operator,
    mut check: impl FnMut() -> anyhow::Result<Option<String>>,
) -> anyhow::Result<Duration> {
    let began = Instant::now();
    loop {
        if let Some(status) = operator.exited() {
            bail!(
                "{what}: runnel-operator exited ({status}); the end of its log:\n{}",
                operator.log_tail()
            );
        }
        let why = check()?;
        match why {
            None => return Ok(began.elapsed()),
            Some(why) if began.elapsed() > TIMEOUT => bail!(
                "{what}: still not after {TIMEOUT:?}: {why}\noperator log:\n{}",
                operator.log_tail()
            ),
            Some(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
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
    let operator = Operator::start(&cp)?;

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
        ensure!(
            toml.contains("\"log.retention.ms\" = \"604800000\""),
            "{config}"
        );

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
    ok(cp.kubectl(&[
        "patch",
        "clusters.runnel.dev",
        "events",
        "-n",
        NAMESPACE,
        "--type",
        "merge",
        "--patch",
        r#"{"spec":{"brokers":4}}"#,
    ]))?;
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
    eprintln!("whole test {:?}", began.elapsed());
    Ok(())
}
