//! The gRPC API from another language: `tests/python/runnel_client_test.py`, a client written
//! with nothing but stock `grpcio` and stubs it generates from `proto/runnel/v1/*.proto`, run
//! against a real standalone broker. It produces through the broker's partitioner and every
//! codec, fetches and subscribes decoded records, checks the documented error codes, server
//! reflection (v1alpha, what grpcio speaks), the health service, a 3 MiB fetch, and a consumer
//! group (FindCoordinator, a heartbeat to join, commits, a fenced commit, LeaveGroup). The venv it
//! runs in is made by `scripts/python-tools.sh`.

use anyhow::{bail, Context};
use runnel_integration::Broker;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The script's own calls time out after 10 s each; this bounds the whole run.
const SCRIPT_DEADLINE: Duration = Duration::from_secs(45);

/// The workspace root, where `tests/python/` and `proto/` are.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the integration crate lives in the workspace")
        .to_path_buf()
}

/// The venv's interpreter that `scripts/python-tools.sh` installs.
fn venv_python() -> PathBuf {
    let cache = std::env::var_os("RUNNEL_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/runnel")))
        .expect("RUNNEL_HOME or HOME is set");
    cache.join("python/bin/python")
}

/// Reads a child's pipe to the end on its own thread, so that a chatty child never blocks.
fn drain(pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = { pipe }.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

#[test]
fn a_stock_grpcio_client_speaks_the_api() -> anyhow::Result<()> {
    let python = venv_python();
    if !python.exists() {
        bail!(
            "{} is missing: run `scripts/python-tools.sh` (make test does)",
            python.display()
        );
    }
    let root = workspace_root();
    let dir = tempfile::tempdir()?;
    let broker = Broker::start(&dir.path().join("data"), &[])?;

    let mut child = Command::new(&python)
        .arg(root.join("tests/python/runnel_client_test.py"))
        .arg(&broker.address)
        .current_dir(&root)
        // Only the venv's packages and the stubs the script generates.
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", python.display()))?;
    let stdout = drain(child.stdout.take().context("the script's stdout")?);
    let stderr = drain(child.stderr.take().context("the script's stderr")?);

    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() > SCRIPT_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = stdout.join().unwrap_or_default();
    let err = stderr.join().unwrap_or_default();
    match status {
        Some(s) if s.success() => {
            print!("{out}");
            Ok(())
        }
        Some(s) => bail!(
            "runnel_client_test.py exited with {s}:\n{out}{err}\nbroker log:\n{}",
            broker.log()
        ),
        None => bail!(
            "runnel_client_test.py did not finish within {} s (killed):\n{out}{err}\nbroker log:\n{}",
            SCRIPT_DEADLINE.as_secs(),
            broker.log()
        ),
    }
}
