//! Runnel's own binaries in a test: the `runnel` CLI against a bootstrap address, and a
//! standalone `runnel-broker` on a free loopback port (both from the workspace's target
//! directory, next to the test executable).
//!
//! ```no_run
//! let broker = runnel_e2e::runnel::StandaloneBroker::start().expect("broker");
//! let cli = broker.cli().expect("cli");
//! cli.run(&["topic", "create", "t", "-p", "1"], None).expect("create");
//! ```

use crate::operator::binary_next_to_tests;
use crate::run_command;
use anyhow::{bail, ensure, Context};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long one CLI call may take before `timeout` stops it.
const CLI_TIMEOUT: &str = "120";

/// The `runnel` CLI pointed at one bootstrap address.
#[derive(Debug, Clone)]
pub struct Cli {
    binary: PathBuf,
    bootstrap: String,
}

impl Cli {
    /// The workspace's `runnel` (`cargo build -p runnel-client --bins`) against `bootstrap`.
    pub fn new(bootstrap: impl Into<String>) -> anyhow::Result<Self> {
        let binary = binary_next_to_tests("runnel")
            .context("the runnel CLI: run `cargo build -p runnel-client --bins`")?;
        Ok(Cli {
            binary,
            bootstrap: bootstrap.into(),
        })
    }

    /// The same CLI against another bootstrap address.
    pub fn with_bootstrap(&self, bootstrap: impl Into<String>) -> Self {
        Cli {
            binary: self.binary.clone(),
            bootstrap: bootstrap.into(),
        }
    }

    /// Path of the binary.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The bootstrap address (`HOST:PORT`).
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// `runnel --bootstrap B ARGS` (under coreutils' `timeout`), with `stdin`; its stdout, or an
    /// error with everything it printed.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        let mut command = Command::new("timeout");
        command
            .arg(CLI_TIMEOUT)
            .arg(&self.binary)
            .args(["--bootstrap", &self.bootstrap])
            .args(args);
        let out = run_command(command, format!("runnel {}", args.join(" ")), stdin)
            .with_context(|| format!("running {} under timeout", self.binary.display()))?;
        ensure!(
            out.success(),
            "{} (bootstrap {}) exited with {}:\n{}{}",
            out.command,
            self.bootstrap,
            out.status,
            out.stdout,
            out.stderr
        );
        Ok(out.stdout)
    }

    /// `count` records of `topic` from the beginning, one line each (`--format FORMAT`).
    pub fn consume(&self, topic: &str, count: usize, format: &str) -> anyhow::Result<Vec<String>> {
        let max = count.to_string();
        let out = self.run(
            &[
                "consume",
                topic,
                "--from-beginning",
                "--max-messages",
                &max,
                "--timeout-ms",
                "10000",
                "--format",
                format,
            ],
            None,
        )?;
        Ok(out.lines().map(str::to_owned).collect())
    }
}

/// Calls `f` every second until it succeeds or `timeout` passes (then its last error): for the
/// moments after a start or a change of endpoints, when a server does not answer yet.
pub fn retry<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context(format!("{what}, retried for {timeout:?}")))
            }
            Err(_) => std::thread::sleep(Duration::from_secs(1)),
        }
    }
}

/// `runnel-broker --standalone` on a free loopback port with a temporary data directory, as
/// `make run` starts it; stopped with SIGTERM (then SIGKILL) when dropped, its log printed then.
#[derive(Debug)]
pub struct StandaloneBroker {
    child: Child,
    address: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl StandaloneBroker {
    /// Starts the workspace's `runnel-broker` and waits until `runnel topic list` answers.
    pub fn start() -> anyhow::Result<Self> {
        let binary = binary_next_to_tests("runnel-broker")
            .context("the broker: run `cargo build -p runnel-broker --bins`")?;
        let dir = tempfile::tempdir().context("broker temp dir")?;
        let log = dir.path().join("broker.log");
        let file = std::fs::File::create(&log).context("broker log file")?;
        let address = format!("127.0.0.1:{}", crate::free_port()?);
        let metrics = format!("127.0.0.1:{}", crate::free_port()?);
        // `setpriv --pdeathsig KILL`: a test process killed outright leaves no broker behind.
        let child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--"])
            .arg(&binary)
            .arg("--standalone")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", &address, "--metrics-listen", &metrics])
            .stdin(Stdio::null())
            .stdout(file.try_clone().context("broker log file")?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {} (setpriv from util-linux)", binary.display()))?;
        let mut broker = StandaloneBroker {
            child,
            address,
            log,
            _dir: dir,
        };
        let cli = broker.cli()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(e) = cli.run(&["topic", "list"], None) {
            if let Ok(Some(status)) = broker.child.try_wait() {
                bail!("runnel-broker exited ({status}):\n{}", broker.log());
            }
            if Instant::now() > deadline {
                return Err(e.context(format!("runnel-broker did not answer:\n{}", broker.log())));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(broker)
    }

    /// Its gRPC address, `127.0.0.1:PORT`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The CLI against it.
    pub fn cli(&self) -> anyhow::Result<Cli> {
        Cli::new(self.address.clone())
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for StandaloneBroker {
    fn drop(&mut self) {
        crate::terminate(&mut self.child, Duration::from_secs(10));
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "runnel-broker's log (last 40 lines):\n{}",
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }
}
