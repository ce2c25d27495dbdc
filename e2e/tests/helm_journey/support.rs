//! The journey's tools: the clock of its step log, the cluster and its kubectl and helm, the
//! retry loop, the cleanup that runs also on failure, and the scripts `make up`/`make down` run.

use super::*;

pub(super) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// Elapsed time for the step log.
pub(super) struct Clock(pub(super) Instant);

impl Clock {
    pub(super) fn step(&self, what: &str) {
        eprintln!("[{:>6.1?}] {what}", self.0.elapsed());
    }
}

/// The cluster the journey runs on: the local one, or the one `RUNNEL_E2E_KUBECONFIG` names.
pub(super) struct Kube {
    pub(super) kubeconfig: PathBuf,
    pub(super) kubectl: PathBuf,
    /// Directories with kubectl and helm, for the scripts.
    pub(super) path: String,
    /// Held for the whole journey: the lock, and the cluster stopped again if started here.
    pub(super) local: Option<LocalCluster>,
}

impl Kube {
    pub(super) fn kubectl(&self, args: &[&str]) -> Output {
        let mut command = Command::new(&self.kubectl);
        command.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        run_command(command, format!("kubectl {}", args.join(" ")), None)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    pub(super) fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }
}

/// `tool` on PATH, or an error with how to install it.
pub(super) fn on_path(tool: &str, install: &str) -> anyhow::Result<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .with_context(|| {
            format!("RUNNEL_E2E_KUBECONFIG is set but {tool} is not on PATH: {install}")
        })
}

/// kubectl and helm against the journey's cluster.
pub(super) struct Tools<'a> {
    pub(super) cluster: &'a Kube,
    pub(super) helm: PathBuf,
    pub(super) helm_home: tempfile::TempDir,
}

impl Tools<'_> {
    /// `kubectl ARGS`, which must succeed; its stdout.
    pub(super) fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.cluster.kubectl(args);
        ensure!(out.success(), "{out}");
        Ok(out.stdout)
    }

    /// `kubectl -n NS ARGS`, which must succeed.
    pub(super) fn k(&self, ns: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["-n", ns];
        all.extend_from_slice(args);
        self.kubectl(&all)
    }

    /// `kubectl -n NS get KIND NAME -o json`, or None when it does not exist.
    pub(super) fn get(&self, ns: &str, kind: &str, name: &str) -> anyhow::Result<Option<Value>> {
        let out = self
            .cluster
            .kubectl(&["-n", ns, "get", kind, name, "-o", "json"]);
        if !out.success() {
            ensure!(out.stderr.contains("NotFound"), "{out}");
            return Ok(None);
        }
        Ok(Some(
            serde_json::from_str(&out.stdout).context("kubectl's JSON")?,
        ))
    }

    pub(super) fn helm_output(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut command = Command::new(&self.helm);
        let home = self.helm_home.path();
        command
            .args(args)
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_DATA_HOME", home.join("data"))
            .env("KUBECONFIG", self.cluster.kubeconfig());
        Ok(run_command(
            command,
            format!("helm {}", args.join(" ")),
            None,
        )?)
    }

    /// `helm ARGS`, which must succeed; its stdout.
    pub(super) fn helm(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.helm_output(args)?;
        ensure!(out.success(), "{out}");
        Ok(out.stdout)
    }
}

/// Polls `check` every 500 ms until it returns `Ok(None)`, or fails after `timeout` with the
/// last reason it gave.
pub(super) fn eventually(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> anyhow::Result<Option<String>>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match check()? {
            None => return Ok(()),
            Some(why) if Instant::now() > deadline => {
                bail!("{what}: not after {timeout:?}: {why}")
            }
            Some(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// Takes everything down whatever happened: the release, the namespaces (stripping the Topic
/// finalizer when no operator is left to release it, so that a failed run leaves nothing).
pub(super) struct Cleanup<'a> {
    pub(super) tools: &'a Tools<'a>,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let t = self.tools;
        let _ = t.helm_output(&["uninstall", RELEASE, "-n", OPERATOR_NS, "--wait"]);
        for ns in [NS, OPERATOR_NS] {
            let _ = t.cluster.kubectl(&[
                "delete",
                "namespace",
                ns,
                "--ignore-not-found",
                "--wait=false",
            ]);
        }
        let topics = t
            .cluster
            .kubectl(&["-n", NS, "get", "topics.runnel.dev", "-o", "name"]);
        for topic in topics.stdout.lines() {
            let _ = t.cluster.kubectl(&[
                "-n",
                NS,
                "patch",
                topic,
                "--type",
                "merge",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ]);
        }
        for ns in [NS, OPERATOR_NS] {
            let out = t.cluster.kubectl(&[
                "wait",
                "--for=delete",
                &format!("namespace/{ns}"),
                "--timeout=120s",
            ]);
            if !out.success() && !out.stderr.contains("NotFound") {
                eprintln!("cleanup: namespace {ns} still there: {out}");
            }
        }
    }
}

/// What the broker at `address` holds (`Admin.DescribePartitions`).
pub(super) fn held(
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

/// Text without ANSI colour sequences (the binaries colour their logs).
pub(super) fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub(super) fn parent(binary: &Path) -> String {
    binary
        .parent()
        .map_or_else(String::new, |p| p.display().to_string())
}

/// Runs `scripts/NAME ARGS` on the journey's cluster and namespaces, images preloaded.
pub(super) fn script(cluster: &Kube, name: &str, args: &[&str]) -> anyhow::Result<Output> {
    let mut command = Command::new(repo_root().join(name));
    let path = format!(
        "{}:{}",
        cluster.path,
        std::env::var("PATH").unwrap_or_default()
    );
    command
        .args(args)
        .env("PATH", path)
        .env("RUNNEL_KUBECONFIG", cluster.kubeconfig())
        .env("RUNNEL_OPERATOR_NAMESPACE", OPERATOR_NS)
        .env("RUNNEL_NAMESPACE", NS)
        .env("RUNNEL_IMAGES", "preloaded");
    Ok(run_command(
        command,
        format!("{name} {}", args.join(" ")),
        None,
    )?)
}
