//! The harness itself: the control plane starts from the cached binaries, answers kubectl, and
//! leaves no process or directory behind, whether the test passes or panics.

use anyhow::{ensure, Context};
use runnel_e2e::{ControlPlane, Options, K8S_VERSION};
use rustix::process::{test_kill_process, Pid};
use std::path::PathBuf;
use std::sync::Mutex;

fn is_running(pid: u32) -> bool {
    i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .is_some_and(|pid| test_kill_process(pid).is_ok())
}

#[test]
fn full_control_plane_starts_answers_and_cleans_up() -> anyhow::Result<()> {
    let cp = ControlPlane::start_with(Options { controllers: true })?;
    eprintln!(
        "control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) ready in {:?}",
        cp.startup_time()
    );

    let version = cp.kubectl(&["version", "--output=json"]);
    ensure!(version.success(), "{version}");
    let json: serde_json::Value =
        serde_json::from_str(&version.stdout).context("kubectl version output")?;
    ensure!(
        json["serverVersion"]["gitVersion"] == K8S_VERSION,
        "server version: {}",
        json["serverVersion"]
    );

    // The controller manager's service-account controller made this (start waits for it).
    let sa = cp.kubectl(&[
        "get",
        "serviceaccount",
        "default",
        "--namespace=default",
        "--output=name",
    ]);
    ensure!(
        sa.success() && sa.stdout.trim() == "serviceaccount/default",
        "{sa}"
    );

    // RBAC is on: an unknown user may not list pods.
    let denied = cp.kubectl(&["auth", "can-i", "list", "pods", "--as=someone"]);
    ensure!(denied.stdout.trim() == "no", "{denied}");

    let pids = cp.pids();
    ensure!(pids.len() == 4, "four components: {pids:?}");
    ensure!(pids.iter().all(|&p| is_running(p)), "all running: {pids:?}");
    let dir = cp.dir().to_path_buf();
    cp.stop();
    for pid in &pids {
        ensure!(!is_running(*pid), "process {pid} still running after stop");
    }
    ensure!(!dir.exists(), "{} still exists after stop", dir.display());
    Ok(())
}

#[test]
fn a_panicking_test_leaves_nothing_running() -> anyhow::Result<()> {
    let seen: Mutex<Option<(Vec<u32>, PathBuf)>> = Mutex::new(None);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let cp = match ControlPlane::start() {
            Ok(cp) => cp,
            Err(e) => panic!("start: {e}"),
        };
        eprintln!(
            "control plane (etcd, kube-apiserver) ready in {:?}",
            cp.startup_time()
        );
        if let Ok(mut slot) = seen.lock() {
            *slot = Some((cp.pids(), cp.dir().to_path_buf()));
        }
        panic!("a deliberate failure, while the control plane runs");
    }));
    ensure!(outcome.is_err(), "the closure panics");
    let (pids, dir) = seen
        .into_inner()
        .ok()
        .flatten()
        .context("the control plane started")?;
    ensure!(pids.len() == 2, "etcd and kube-apiserver: {pids:?}");
    for pid in &pids {
        ensure!(!is_running(*pid), "process {pid} survived the panic");
    }
    ensure!(!dir.exists(), "{} survived the panic", dir.display());
    Ok(())
}
