//! Helpers for Runnel's integration tests: start the real `runnel-broker` on a free loopback
//! port with a temporary data directory, find the real `runnel` CLI, and clean up on drop (also
//! when a test fails).

pub mod cluster;
pub mod load;

use anyhow::{bail, Context};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Path of a workspace binary built next to the running executable (a test in
/// `target/<profile>/deps/`, or a binary of this crate in `target/<profile>/`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let mut dir = exe.parent().expect("target directory");
    if dir.file_name().is_some_and(|d| d == "deps") {
        dir = dir.parent().expect("target directory");
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --workspace --bins` (`make test` does)",
        path.display()
    );
    path
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A `runnel-broker` process on loopback: `--standalone`, or in operator mode as a pod of a
/// StatefulSet would run it ([`Broker::start_as_pod`]).
#[derive(Debug)]
pub struct Broker {
    child: Option<Child>,
    /// host:port of its gRPC listener.
    pub address: String,
    /// host:port of its HTTP endpoint.
    pub metrics_address: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    log_path: PathBuf,
    extra: Vec<String>,
    port: u16,
    /// `POD_NAME` in operator mode; `None` for a standalone broker.
    pod_name: Option<String>,
}

impl Broker {
    /// Starts a broker on `data_dir` and waits until it serves.
    pub fn start(data_dir: &Path, extra: &[&str]) -> anyhow::Result<Self> {
        Self::launch(data_dir, &data_dir.with_extension("log"), extra, None)
    }

    /// Like [`Broker::start`], with the broker's log at `log_path` (for a data directory on a
    /// disk the test fills up, which must not swallow the log).
    pub fn start_logging_to(
        data_dir: &Path,
        log_path: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::launch(data_dir, log_path, extra, None)
    }

    /// Starts a broker in operator mode with the environment of the pod `pod_name` (its id is
    /// the name's ordinal; `POD_IP` is 127.0.0.1): it serves only the metadata it is sent.
    pub fn start_as_pod(data_dir: &Path, pod_name: &str) -> anyhow::Result<Self> {
        Self::start_as_pod_with(data_dir, pod_name, &[])
    }

    /// Like [`Broker::start_as_pod`], with more flags.
    pub fn start_as_pod_with(
        data_dir: &Path,
        pod_name: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::launch(
            data_dir,
            &data_dir.with_extension("log"),
            extra,
            Some(pod_name.to_string()),
        )
    }

    fn launch(
        data_dir: &Path,
        log_path: &Path,
        extra: &[&str],
        pod_name: Option<String>,
    ) -> anyhow::Result<Self> {
        let port = free_port();
        let mut b = Broker {
            child: None,
            address: format!("127.0.0.1:{port}"),
            metrics_address: String::new(),
            data_dir: data_dir.to_path_buf(),
            log_path: log_path.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            port,
            pod_name,
        };
        b.spawn()?;
        Ok(b)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let mport = free_port();
        self.metrics_address = format!("127.0.0.1:{mport}");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let mut command = Command::new(bin("runnel-broker"));
        match &self.pod_name {
            Some(pod) => command.env("POD_NAME", pod).env("POD_IP", "127.0.0.1"),
            None => command.arg("--standalone"),
        };
        let child = command
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(&self.address)
            .arg("--metrics-listen")
            .arg(&self.metrics_address)
            .args(&self.extra)
            .env("RUNNEL_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting runnel-broker")?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "runnel-broker exited with {status} before serving; log:\n{}",
                        self.log()
                    );
                }
            }
            if std::net::TcpStream::connect(&self.address).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "runnel-broker did not listen on {} within 60 s; log:\n{}",
                    self.address,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The broker's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `http://host:port` of the gRPC listener.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, as a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to the process.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self.pid().context("broker not running")?;
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()?;
        if !status.success() {
            bail!("kill -{signal} {pid} failed");
        }
        Ok(())
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        let mut c = self.child.take().context("broker not running")?;
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status()?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = c.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                bail!(
                    "runnel-broker did not exit within 30 s of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the broker again on the same port and data directory, with `extra` flags from
    /// now on instead of those it was started with.
    pub fn restart_with(&mut self, extra: &[&str]) -> anyhow::Result<()> {
        self.extra = extra.iter().map(|s| s.to_string()).collect();
        self.restart()
    }

    /// Starts the broker again on the same port and data directory.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        self.address = format!("127.0.0.1:{}", self.port);
        self.spawn()
    }

    /// Creates topic `name` with `partitions` partitions (one copy each) and `config`.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        config: Option<runnel_proto::v1::TopicConfig>,
    ) -> anyhow::Result<()> {
        runnel_proto::v1::admin_client::AdminClient::connect(self.endpoint())
            .await?
            .create_topic(runnel_proto::v1::CreateTopicRequest {
                name: name.into(),
                partitions,
                replication_factor: 1,
                config,
            })
            .await?;
        Ok(())
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs the `runnel` CLI against `bootstrap` with `args`, feeding `stdin`; returns (status, stdout, stderr).
pub fn runnel(
    bootstrap: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> anyhow::Result<(ExitStatus, String, String)> {
    use std::io::Write;
    let mut child = Command::new(bin("runnel"))
        .arg("--bootstrap")
        .arg(bootstrap)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting runnel")?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().context("stdin")?;
        let data = input.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let out = child.wait_with_output()?;
    Ok((
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// Produces `records` (key, value) to `topic` with the real producer (acks=all, idempotent),
/// to `partition` or by key; fails unless every record was delivered.
pub async fn produce_records(
    bootstrap: &str,
    topic: &str,
    partition: Option<i32>,
    records: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<()> {
    use runnel_client::{Producer, ProducerConfig, ProducerRecord};
    let producer = Producer::connect(ProducerConfig {
        bootstrap: bootstrap.to_string(),
        ..Default::default()
    })
    .await?;
    for (key, value) in records {
        producer
            .send(ProducerRecord {
                key: Some(key.into()),
                partition,
                ..ProducerRecord::new(topic, value)
            })
            .await?;
    }
    producer.flush().await;
    let (failed, e) = producer.delivery_failures();
    producer.close().await;
    anyhow::ensure!(
        failed == 0,
        "{failed} records not delivered to `{topic}`: {e:?}"
    );
    Ok(())
}

/// Every record of the concatenated batches of a fetch response, in offset order.
pub fn records(batches: &[u8]) -> anyhow::Result<Vec<runnel_codec::Record>> {
    let mut out = Vec::new();
    for b in runnel_codec::split_batches(batches) {
        out.extend(runnel_codec::decode_batch(b?)?.1);
    }
    Ok(out)
}

/// `GET path` over HTTP/1.0 from `addr` (host:port); the whole answer, status line included.
pub async fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

/// A tmpfs of a fixed size mounted on a fresh directory: a small disk a test can fill to the
/// last byte. Unmounted on drop, also when the test fails. Needs root (`make test` runs as
/// root).
#[derive(Debug)]
pub struct Tmpfs {
    /// Where it is mounted.
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size_bytes`.
    pub fn mount(size_bytes: u64) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("disk");
        std::fs::create_dir(&path)?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_bytes}"), "tmpfs"])
            .arg(&path)
            .output()
            .context("running mount")?;
        if !out.status.success() {
            bail!(
                "mount -t tmpfs failed ({}): {}; this test needs root (run `make test` as root)",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(Self { path, _dir: dir })
    }

    /// Writes zeros into `name` until the filesystem refuses (ENOSPC); returns the bytes
    /// written. The disk is then full to its last byte.
    pub fn fill(&self, name: &str) -> anyhow::Result<u64> {
        use std::io::Write;
        let mut f = std::fs::File::create(self.path.join(name))?;
        let chunk = vec![0u8; 64 << 10];
        let mut written = 0u64;
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => return Err(e.into()),
            }
        }
        // The last partial pages too, a byte at a time.
        while let Ok(1) = f.write(&[0]) {
            written += 1;
        }
        Ok(written)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
