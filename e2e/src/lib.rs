//! Runnel's end-to-end test harness: a real Kubernetes control plane (etcd, kube-apiserver and,
//! on request, kube-controller-manager and kube-scheduler) started from the pinned binaries
//! that `e2e/tools/build-tools.sh` caches, on free loopback ports, with generated certificates
//! and a temporary directory; everything is stopped and removed when the [`ControlPlane`] is
//! dropped, also when the test panics.
//!
//! ```no_run
//! let cp = runnel_e2e::ControlPlane::start().expect("control plane");
//! let out = cp.kubectl(&["get", "namespaces"]);
//! assert!(out.success(), "{out}");
//! ```

mod control_plane;
pub mod local_cluster;
mod pki;
mod process;

pub mod operator;
pub mod runnel;

pub use control_plane::{run_command, ControlPlane, Options, Output};

use std::path::PathBuf;

/// The Kubernetes release the harness runs (and k8s-openapi's `v1_37` feature matches).
pub const K8S_VERSION: &str = "v1.37.2";
/// The etcd release the harness runs.
pub const ETCD_VERSION: &str = "v3.6.16";
/// The command that builds and caches the binaries.
pub const INSTALL_COMMAND: &str = "e2e/tools/build-tools.sh k8s etcd";
/// The helm release the chart tests run (`HELM_VERSION` in `e2e/tools/build-tools.sh`).
pub const HELM_VERSION: &str = "v3.22.0";
/// The command that builds and caches helm.
pub const HELM_INSTALL_COMMAND: &str = "e2e/tools/build-tools.sh helm";

/// What can go wrong while starting or driving the control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A binary the harness needs is not where `build-tools.sh` puts it.
    #[error("{path} is missing: run `{INSTALL_COMMAND}`")]
    MissingTool {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// helm is not where `build-tools.sh helm` puts it.
    #[error("{path} is missing: run `{HELM_INSTALL_COMMAND}`")]
    MissingHelm {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A program could not be started at all.
    #[error("could not start `{program}`: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// A helper command (openssl, kubectl) ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A component exited while the harness waited for it.
    #[error("{component} exited during startup ({status}); the end of its log:\n{log}")]
    Exited {
        /// etcd, kube-apiserver, …
        component: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The last lines it logged.
        log: String,
    },
    /// A component did not become ready in time.
    #[error("{component} was not ready after {waited:?}; the end of its log:\n{log}")]
    NotReady {
        /// etcd, kube-apiserver, …
        component: String,
        /// How long the harness waited.
        waited: std::time::Duration,
        /// The last lines it logged.
        log: String,
    },
    /// A file or directory operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the harness was doing.
        context: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// `${RUNNEL_HOME:-$HOME/.cache/runnel}`: where `build-tools.sh` caches the binaries.
pub fn runnel_home() -> PathBuf {
    if let Some(home) = std::env::var_os("RUNNEL_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache/runnel")
}

/// Path of a cached Kubernetes binary (`kube-apiserver`, `kubectl`, …), or
/// [`Error::MissingTool`].
pub fn k8s_binary(name: &str) -> Result<PathBuf, Error> {
    existing(
        runnel_home()
            .join(format!("k8s-{K8S_VERSION}/bin"))
            .join(name),
    )
}

/// Path of the cached `etcd` binary, or [`Error::MissingTool`].
pub fn etcd_binary() -> Result<PathBuf, Error> {
    existing(runnel_home().join(format!("etcd-{ETCD_VERSION}/bin/etcd")))
}

/// Path of the cached `kubectl`.
///
/// # Panics
///
/// When it is missing, with the command that installs it: a test that needs it fails, it does
/// not skip.
pub fn kubectl_binary() -> PathBuf {
    k8s_binary("kubectl").unwrap_or_else(|e| panic!("{e}"))
}

/// Path of the cached `helm` under `home` (a [`runnel_home`]), or [`Error::MissingHelm`],
/// which names the command that installs it.
pub fn helm_binary_in(home: &std::path::Path) -> Result<PathBuf, Error> {
    let path = home.join(format!("helm-{HELM_VERSION}/bin/helm"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingHelm { path })
    }
}

/// Path of the cached `helm`, or [`Error::MissingHelm`].
pub fn helm_binary() -> Result<PathBuf, Error> {
    helm_binary_in(&runnel_home())
}

fn existing(path: PathBuf) -> Result<PathBuf, Error> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingTool { path })
    }
}

/// A free TCP port on 127.0.0.1 (the OS picks it; the listener is closed again, so a rare race
/// with another process is possible, and [`ControlPlane::start`] retries on "address already
/// in use").
pub fn free_port() -> Result<u16, Error> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| Error::Io {
            context: "finding a free loopback port".into(),
            source,
        })
}

/// Stops `child`: SIGTERM, then SIGKILL once `grace` has passed without it exiting. Returns how
/// it exited and whether it had to be killed.
pub fn terminate(
    child: &mut std::process::Child,
    grace: std::time::Duration,
) -> (Option<std::process::ExitStatus>, bool) {
    let pid = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw);
    if let Some(pid) = pid {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let began = std::time::Instant::now();
    while began.elapsed() < grace {
        if let Ok(Some(status)) = child.try_wait() {
            return (Some(status), false);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    (child.wait().ok(), true)
}
