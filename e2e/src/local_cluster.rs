//! The local single-node Kubernetes cluster that `e2e/cluster/runnel-cluster` runs on this host
//! (a real kubelet, containerd, kube-proxy, CoreDNS and a default StorageClass; see
//! `e2e/README.md`, "The local cluster").
//!
//! A host has room for one kubelet, so every test that needs the cluster shares it: a test
//! takes the host-wide lock `$RUNNEL_HOME/cluster.lock` (an exclusive `flock`, which also
//! serialises the tests of one binary and those of other test binaries), then starts the cluster
//! or reuses the one that runs. A cluster the test started is stopped again (`down`) when the
//! [`LocalCluster`] is dropped, also when the test panics; one it found running is left running.
//!
//! ```no_run
//! let cluster = runnel_e2e::local_cluster::LocalCluster::up().expect("local cluster");
//! let nodes = cluster.kubectl(&["get", "nodes"]);
//! assert!(nodes.success(), "{nodes}");
//! ```

use crate::{kubectl_binary, run_command, runnel_home, Error, Output};
use rustix::fs::{flock, FlockOperation};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The node's name.
pub const NODE: &str = "runnel-node";
/// The node's `topology.kubernetes.io/zone` label.
pub const ZONE: &str = "zone-a";
/// The API server's address (the bridge `rn0`), port 6443.
pub const API_SERVER: &str = "https://198.18.0.1:6443";
/// The cluster DNS Service's address (CoreDNS, port 53).
pub const DNS_SERVICE_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(198, 19, 0, 10);
/// The bridge address the host uses to reach pods and Services.
pub const HOST_ADDRESS: std::net::Ipv4Addr = std::net::Ipv4Addr::new(198, 18, 0, 1);
/// The default StorageClass (a local volume per claim, made when its pod is scheduled).
pub const STORAGE_CLASS: &str = "runnel-local";
/// A local image whose container only stays up (the node's sandbox image); pods must use
/// `imagePullPolicy: Never` or `IfNotPresent`.
pub const PAUSE_IMAGE: &str = "runnel.local/pause:3.10";

/// The cluster tool, `e2e/cluster/runnel-cluster`.
pub fn cluster_tool() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster/runnel-cluster")
}

/// `$RUNNEL_HOME/cluster`: the cluster's state, logs (`logs/`) and volumes (`volumes/`).
pub fn cluster_dir() -> PathBuf {
    runnel_home().join("cluster")
}

/// Builds the pinned binaries and installs the Debian packages the cluster needs (runc, CNI
/// plugins, iptables, nftables, openssl, umoci) when they are missing; starts nothing.
pub fn prepare() -> Result<(), Error> {
    run_tool("prepare").map(|_| ())
}

/// The host-wide lock: while one is held, no other test (in this process or another) starts,
/// stops or uses the local cluster.
#[derive(Debug)]
pub struct ClusterLock {
    file: File,
}

impl ClusterLock {
    /// Waits for the lock `$RUNNEL_HOME/cluster.lock` and takes it.
    pub fn acquire() -> Result<Self, Error> {
        let home = runnel_home();
        std::fs::create_dir_all(&home).map_err(|source| Error::Io {
            context: format!("creating {}", home.display()),
            source,
        })?;
        let path = home.join("cluster.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| Error::Io {
                context: format!("opening {}", path.display()),
                source,
            })?;
        flock(&file, FlockOperation::LockExclusive).map_err(|e| Error::Io {
            context: format!("locking {}", path.display()),
            source: e.into(),
        })?;
        let mut lock = ClusterLock { file };
        // Who holds it, for a person wondering why a test waits.
        let _ = lock.file.set_len(0);
        let _ = writeln!(lock.file, "{}", std::process::id());
        Ok(lock)
    }

    /// Whether the cluster is up (`runnel-cluster status` succeeds).
    pub fn is_up(&self) -> bool {
        Command::new(cluster_tool())
            .arg("status")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts the cluster (`runnel-cluster up`), or reuses it when it is up. A cold first run
    /// builds the pinned binaries first (~20 minutes); warm, it takes ~15 s.
    pub fn up(self) -> Result<LocalCluster, Error> {
        let already_up = self.is_up();
        let output = run_tool("up")?;
        let kubeconfig = cluster_dir().join("kubeconfig");
        if !kubeconfig.is_file() {
            return Err(Error::Io {
                context: format!(
                    "`runnel-cluster up` succeeded but left no {}:\n{}",
                    kubeconfig.display(),
                    output.stderr
                ),
                source: std::io::ErrorKind::NotFound.into(),
            });
        }
        Ok(LocalCluster {
            lock: Some(self),
            kubeconfig,
            started_here: !already_up,
            log: output.stderr,
            stopped: false,
        })
    }
}

/// The running local cluster, held under the [`ClusterLock`]. Dropping it stops the cluster if
/// this value started it.
#[derive(Debug)]
pub struct LocalCluster {
    lock: Option<ClusterLock>,
    kubeconfig: PathBuf,
    started_here: bool,
    log: String,
    stopped: bool,
}

impl LocalCluster {
    /// Takes the lock, then starts the cluster or reuses the running one.
    pub fn up() -> Result<Self, Error> {
        ClusterLock::acquire()?.up()
    }

    /// The admin kubeconfig (`$RUNNEL_HOME/cluster/kubeconfig`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Whether this value started the cluster (false: it was up already, and stays up).
    pub fn started_here(&self) -> bool {
        self.started_here
    }

    /// What `runnel-cluster up` reported (its steps and their times).
    pub fn up_log(&self) -> &str {
        &self.log
    }

    /// Runs the cached kubectl with the admin kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with_stdin(args, None)
    }

    /// `kubectl apply -f -` of `yaml`.
    pub fn apply(&self, yaml: &str) -> Output {
        self.kubectl_with_stdin(&["apply", "-f", "-"], Some(yaml))
    }

    /// Runs kubectl with `stdin` as its standard input.
    pub fn kubectl_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let kubectl = kubectl_binary();
        let mut command = Command::new(&kubectl);
        command.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        let description = format!("kubectl {}", args.join(" "));
        run_command(command, description, stdin).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Stops the cluster (`runnel-cluster down`), whoever started it, and releases the lock.
    pub fn down(mut self) -> Result<Output, Error> {
        self.stopped = true;
        let result = run_tool("down");
        self.lock.take();
        result
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if self.started_here && !self.stopped {
            self.stopped = true;
            match run_tool("down") {
                Ok(out) => eprintln!("local cluster stopped:\n{}", out.stderr),
                Err(e) => eprintln!("stopping the local cluster failed: {e}"),
            }
        }
    }
}

/// Runs `runnel-cluster SUBCOMMAND`, failing with everything it printed.
fn run_tool(subcommand: &str) -> Result<Output, Error> {
    let mut command = Command::new(cluster_tool());
    command.arg(subcommand);
    let output = run_command(command, format!("runnel-cluster {subcommand}"), None)?;
    if output.success() {
        Ok(output)
    } else {
        Err(Error::Command {
            command: output.command,
            status: output.status,
            stderr: format!("{}{}", output.stdout, output.stderr),
        })
    }
}
