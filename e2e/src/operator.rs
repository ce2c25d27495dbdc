//! The real `runnel-operator` binary run by a test, and the small helpers the operator tests
//! share: read objects back with `kubectl`, wait for a state while the operator runs.

use crate::{ControlPlane, Output};
use anyhow::{bail, ensure, Context};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A binary of the workspace (`runnel-operator`, `runnel-broker`, `runnel`) next to this test
/// executable (`target/<profile>/`).
pub fn binary_next_to_tests(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("test executable path")?;
    // target/<profile>/deps/<test> -> target/<profile>/runnel-operator
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("target directory of the test executable")?;
    let path = dir.join(name);
    ensure!(
        path.is_file(),
        "{} is missing: build it with `cargo build --workspace --bins` (`make test` does)",
        path.display()
    );
    Ok(path)
}

/// A running `runnel-operator`, stopped (SIGTERM, then SIGKILL) when dropped, also when the test
/// fails; its log is printed then (the test harness shows it only for a failing test).
#[derive(Debug)]
pub struct Operator {
    // A RefCell so that `exited` can poll it through a shared reference.
    child: std::cell::RefCell<Child>,
    log: PathBuf,
    metrics: String,
    _dir: tempfile::TempDir,
}

impl Operator {
    /// Starts `runnel-operator` against `cp` with extra `args`.
    pub fn start(cp: &ControlPlane, args: &[&str]) -> anyhow::Result<Self> {
        Self::start_with_kubeconfig(cp.kubeconfig(), &[], args)
    }

    /// Starts `runnel-operator` with `kubeconfig` (another user than the admin, e.g. a
    /// ServiceAccount's token), extra environment variables `env` and extra `args`.
    pub fn start_with_kubeconfig(
        kubeconfig: &Path,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> anyhow::Result<Self> {
        let binary = binary_next_to_tests("runnel-operator")?;
        let dir = tempfile::tempdir().context("operator temp dir")?;
        let log = dir.path().join("operator.log");
        let file = std::fs::File::create(&log).context("operator log file")?;
        let metrics = format!("127.0.0.1:{}", crate::free_port()?);
        // `setpriv --pdeathsig KILL`, as the harness does: a test process killed outright
        // leaves no operator behind.
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--"])
            .arg(&binary)
            .args(["--metrics-listen", &metrics])
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,runnel_operator=debug")
            .envs(env.iter().copied())
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

    /// Its whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last 40 lines of its log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// `GET path` on the operator's HTTP server: (status line, body).
    pub fn http_get(&self, path: &str) -> anyhow::Result<(String, String)> {
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
    pub fn exited(&self) -> Option<std::process::ExitStatus> {
        self.child.borrow_mut().try_wait().ok().flatten()
    }

    /// Stops it (SIGTERM, then SIGKILL after 10 s) and returns how it exited.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if let Some(status) = self.exited() {
            return Some(status);
        }
        crate::terminate(self.child.get_mut(), Duration::from_secs(10)).0
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

/// The stdout of a successful command, or an error showing all of it.
pub fn ok(out: Output) -> anyhow::Result<String> {
    ensure!(out.success(), "{out}");
    Ok(out.stdout)
}

/// `kubectl get KIND NAME -n NAMESPACE -o json`, or `None` while it does not exist.
pub fn get(
    cp: &ControlPlane,
    namespace: &str,
    kind: &str,
    name: &str,
) -> anyhow::Result<Option<Value>> {
    let out = cp.kubectl(&[
        "get",
        kind,
        name,
        "-n",
        namespace,
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

/// `kubectl patch KIND NAME -n NAMESPACE --type merge --patch PATCH`.
pub fn merge_patch(
    cp: &ControlPlane,
    namespace: &str,
    kind: &str,
    name: &str,
    patch: &str,
) -> anyhow::Result<String> {
    ok(cp.kubectl(&[
        "patch", kind, name, "-n", namespace, "--type", "merge", "--patch", patch,
    ]))
}

/// Polls `check` until it returns `Ok(None)` (all good) or `timeout` passes; `check` returns
/// `Ok(Some(why))` while the state is not there yet.
pub fn eventually(
    what: &str,
    operator: &Operator,
    timeout: Duration,
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
            Some(why) if began.elapsed() > timeout => bail!(
                "{what}: still not after {timeout:?}: {why}\noperator log:\n{}",
                operator.log_tail()
            ),
            Some(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}
