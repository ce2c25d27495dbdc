//! Step 6: every metric the alerts and the dashboard use exists.

use super::*;

/// `GET path` on `address` (a loopback host:port): the body of a 200 answer.
pub(super) fn http_get(address: &str, path: &str) -> anyhow::Result<String> {
    let mut stream = std::net::TcpStream::connect(address)
        .with_context(|| format!("connecting to {address}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    ensure!(head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
    Ok(body.to_string())
}

/// The metric families a `/metrics` page declares (`# TYPE NAME TYPE`), with the names their
/// samples carry (`_total` for counters, `_bucket`/`_sum`/`_count` for histograms).
pub(super) fn metric_names(page: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in page.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            for s in suffixes {
                names.insert(format!("{name}{s}"));
            }
        }
    }
    names
}

/// The `runnel_…` and `kafka_…` metric names in a PromQL expression.
pub(super) fn used_metrics(expr: &str, into: &mut BTreeSet<String>) {
    let bytes = expr.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        let starts = (i == 0 || !word(bytes[i - 1]))
            && (bytes[i..].starts_with(b"runnel_") || bytes[i..].starts_with(b"kafka_"));
        if starts {
            let end = (i..bytes.len())
                .find(|&j| !word(bytes[j]))
                .unwrap_or(bytes.len());
            // ASCII from `i` to `end`: a valid slice.
            into.insert(String::from_utf8_lossy(&bytes[i..end]).into_owned());
            i = end;
        } else {
            i += 1;
        }
    }
}

/// Every string under a key named `expr`, `query` or `definition` (PromQL in a dashboard).
pub(super) fn dashboard_queries(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "query" | "definition", Value::String(s)) => into.push(s.clone()),
                    _ => dashboard_queries(v, into),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| dashboard_queries(v, into)),
        _ => {}
    }
}

/// A standalone `runnel-broker` on loopback, killed when dropped.
pub(super) struct Broker {
    child: std::process::Child,
    metrics: String,
    dir: tempfile::TempDir,
}

impl Broker {
    fn start() -> anyhow::Result<Self> {
        let binary = binary_next_to_tests("runnel-broker")?;
        let dir = tempfile::tempdir()?;
        let listen = format!("127.0.0.1:{}", runnel_e2e::free_port()?);
        let metrics = format!("127.0.0.1:{}", runnel_e2e::free_port()?);
        let data = dir.path().join("data");
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--"])
            .arg(&binary)
            .arg("--standalone")
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", &listen, "--metrics-listen", &metrics])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("broker.log"))?)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Broker {
            child,
            metrics,
            dir,
        })
    }

    /// Its `/metrics`, once it answers.
    fn metrics(&mut self) -> anyhow::Result<String> {
        let began = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                let log =
                    std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default();
                bail!("runnel-broker exited ({status}):\n{log}");
            }
            match http_get(&self.metrics, "/metrics") {
                Ok(page) => return Ok(page),
                Err(e) if began.elapsed() > TIMEOUT => return Err(e.context("broker /metrics")),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The metric names registered in the operator's and the broker's source (`register("NAME", …)`
/// under the registry's prefix), with the suffixes their samples may carry: a labelled family
/// shows on `/metrics` only once it has a series, which needs traffic, groups and failures.
pub(super) fn registered_metrics() -> anyhow::Result<BTreeSet<String>> {
    let root = repo_root();
    let sources = [
        ("operator/src/main.rs", ""),
        ("operator/src/controller/mod.rs", "runnel_operator_"),
        ("broker/src/metrics.rs", "runnel_broker_"),
    ];
    let mut names = BTreeSet::new();
    for (file, prefix) in sources {
        let text = std::fs::read_to_string(root.join(file)).with_context(|| file.to_string())?;
        for (at, _) in text.match_indices("register(") {
            let rest = &text[at..];
            let Some(name) = rest.split('"').nth(1) else {
                continue;
            };
            let name = if name.starts_with("kafka_") || name.starts_with("runnel_") {
                name.to_string()
            } else {
                format!("{prefix}{name}")
            };
            for suffix in ["", "_total", "_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    ensure!(
        names.contains("runnel_broker_produced_records_total"),
        "no metrics found in the sources: {names:?}"
    );
    Ok(names)
}

/// Step 6: the metrics the alerts and the dashboard query exist: served by the real operator or a
/// real broker, or registered in their source.
pub(super) fn metrics_exist(items: &[Value], operator: &Operator) -> anyhow::Result<()> {
    let (_, operator_page) = operator.http_get("/metrics")?;
    let mut served = metric_names(&operator_page);
    served.extend(metric_names(&Broker::start()?.metrics()?));
    for name in ["runnel_operator_leader", "runnel_broker_offline_partitions"] {
        ensure!(
            served.contains(name),
            "{name} is not on /metrics: {served:?}"
        );
    }
    served.extend(registered_metrics()?);

    let mut used = BTreeSet::new();
    let rule = find(items, "PrometheusRule", FULLNAME)?;
    let mut alerts = 0;
    for group in rule["spec"]["groups"].as_array().context("rule groups")? {
        for r in group["rules"].as_array().context("rules")? {
            used_metrics(r["expr"].as_str().context("a rule's expr")?, &mut used);
            alerts += 1;
        }
    }
    ensure!(alerts >= 2, "too few alerts: {rule}");
    ensure!(
        rule["spec"].to_string().contains("kafka_consumergroup_lag"),
        "a consumer-lag alert: {rule}"
    );
    let dashboard = find(items, "ConfigMap", "runnel-operator-dashboard")?;
    let json = dashboard["data"]["runnel.json"]
        .as_str()
        .context("the dashboard's runnel.json")?;
    let json: Value = serde_json::from_str(json).context("the dashboard is JSON")?;
    let mut queries = Vec::new();
    dashboard_queries(&json, &mut queries);
    ensure!(
        queries.len() >= 8,
        "the dashboard has {} queries",
        queries.len()
    );
    for q in &queries {
        used_metrics(q, &mut used);
    }
    let missing: Vec<&String> = used.difference(&served).collect();
    ensure!(
        missing.is_empty(),
        "the alerts and the dashboard use metrics that neither the operator nor a broker \
         has: {missing:?}\nthey have: {served:?}"
    );
    Ok(())
}
