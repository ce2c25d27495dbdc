//! [`ControlPlane`]: etcd + kube-apiserver (+ kube-controller-manager + kube-scheduler) on
//! loopback.

use crate::pki::{self, KeyPair, Pki};
use crate::process::Daemon;
use crate::{etcd_binary, free_port, k8s_binary, kubectl_binary, Error};
use std::fmt;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a component may take to become ready. Generous: the machines that run the tests
/// are often busy with builds.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a component gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// Attempts at starting when a port picked as free was taken meanwhile.
const START_ATTEMPTS: usize = 3;

/// What to start besides etcd and the API server.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Also start kube-controller-manager and kube-scheduler, and wait until the `default`
    /// namespace has its `default` ServiceAccount (what pods need).
    pub controllers: bool,
}

/// The result of one `kubectl` run.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// How it exited.
    pub status: ExitStatus,
    /// What it printed on stdout.
    pub stdout: String,
    /// What it printed on stderr.
    pub stderr: String,
}

impl Output {
    /// Whether it exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` exited with {}\n--- stdout\n{}\n--- stderr\n{}",
            self.command, self.status, self.stdout, self.stderr
        )
    }
}

/// A running control plane. Dropping it stops the components one at a time, the API server
/// (and the controllers) before etcd, and removes its directory (kept when `RUNNEL_E2E_KEEP`
/// is set, for debugging).
///
/// The components are also tied to the life of the thread that started them (SIGKILL when it
/// dies, through `setpriv --pdeathsig`), so that a test process killed outright leaves nothing
/// running: keep a `ControlPlane` on the thread that started it.
#[derive(Debug)]
pub struct ControlPlane {
    /// Started components, in start order; stopped in reverse.
    daemons: Vec<Daemon>,
    dir: Option<tempfile::TempDir>,
    kubeconfig: PathBuf,
    server: String,
    started_in: Duration,
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver and waits until the API server is ready.
    ///
    /// # Panics
    ///
    /// When a binary is missing, with the command that installs it
    /// (`e2e/tools/build-tools.sh k8s etcd`): tests that need the control plane fail, they do
    /// not skip.
    pub fn start() -> Result<Self, Error> {
        Self::start_with(Options::default())
    }

    /// Starts the control plane described by `options` and waits until it is ready.
    ///
    /// # Panics
    ///
    /// As [`ControlPlane::start`].
    pub fn start_with(options: Options) -> Result<Self, Error> {
        let binaries = Binaries::find().unwrap_or_else(|e| panic!("{e}"));
        let mut attempt = 1;
        loop {
            match Self::try_start(&binaries, &options) {
                Err(Error::Exited { log, .. })
                    if attempt < START_ATTEMPTS && log.contains("address already in use") =>
                {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn try_start(binaries: &Binaries, options: &Options) -> Result<Self, Error> {
        let began = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("runnel-e2e-")
            .tempdir()
            .map_err(|source| Error::Io {
                context: "creating the control plane's directory".into(),
                source,
            })?;
        let root = dir.path().to_path_buf();
        let mut cp = ControlPlane {
            daemons: Vec::new(),
            dir: Some(dir),
            kubeconfig: root.join("admin.kubeconfig"),
            server: String::new(),
            started_in: Duration::ZERO,
        };
        let pki = pki::generate(&root.join("pki"))?;

        // etcd
        let etcd_client = free_port()?;
        let etcd_peer = free_port()?;
        let client_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        cp.spawn(
            "etcd",
            &binaries.etcd,
            &[
                "--name=e2e".into(),
                format!("--data-dir={}", root.join("etcd").display()),
                format!("--listen-client-urls={client_url}"),
                format!("--advertise-client-urls={client_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=e2e={peer_url}"),
                "--initial-cluster-state=new".into(),
                // Test data: no fsync, so that a busy disk does not slow every write.
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
        )?;
        cp.wait("etcd", || {
            Ok(http_get_loopback(etcd_client, "/health")
                .is_some_and(|b| b.contains("\"health\":\"true\"")))
        })?;

        // kube-apiserver
        let port = free_port()?;
        cp.server = format!("https://127.0.0.1:{port}");
        write_kubeconfig(
            &cp.kubeconfig,
            &cp.server,
            Some(&pki.ca.cert),
            &pki.admin,
            "runnel-e2e-admin",
        )?;
        cp.spawn(
            "kube-apiserver",
            &binaries.apiserver,
            &apiserver_args(&root, &pki, &client_url, port),
        )?;
        let kubeconfig = cp.kubeconfig.clone();
        cp.wait("kube-apiserver", || {
            if TcpStream::connect(("127.0.0.1", port)).is_err() {
                return Ok(false);
            }
            let out = run_kubectl(
                &kubeconfig,
                &["get", "--raw=/readyz", "--request-timeout=5s"],
                None,
            )?;
            Ok(out.success() && out.stdout.trim() == "ok")
        })?;

        if options.controllers {
            let kcm_port = free_port()?;
            let kcm_config = root.join("controller-manager.kubeconfig");
            write_kubeconfig(
                &kcm_config,
                &cp.server,
                Some(&pki.ca.cert),
                &pki.controller_manager,
                "system:kube-controller-manager",
            )?;
            cp.spawn(
                "kube-controller-manager",
                &binaries.controller_manager,
                &controller_manager_args(&root, &pki, &kcm_config, kcm_port),
            )?;
            let sched_port = free_port()?;
            let sched_config = root.join("scheduler.kubeconfig");
            write_kubeconfig(
                &sched_config,
                &cp.server,
                Some(&pki.ca.cert),
                &pki.scheduler,
                "system:kube-scheduler",
            )?;
            cp.spawn(
                "kube-scheduler",
                &binaries.scheduler,
                &scheduler_args(&root, &sched_config, sched_port),
            )?;
            // The components serve /healthz over HTTPS with certificates they sign themselves, and
            // take client certificates of the cluster CA.
            let health = root.join("components.kubeconfig");
            write_kubeconfig(&health, &cp.server, None, &pki.admin, "runnel-e2e-admin")?;
            cp.wait("kube-controller-manager", || {
                component_healthy(&health, kcm_port)
            })?;
            cp.wait("kube-scheduler", || component_healthy(&health, sched_port))?;
            cp.wait("kube-controller-manager", || {
                let out = run_kubectl(
                    &kubeconfig,
                    &["get", "serviceaccount", "default", "--namespace=default"],
                    None,
                )?;
                Ok(out.success())
            })?;
        }
        cp.started_in = began.elapsed();
        Ok(cp)
    }

    fn spawn(&mut self, name: &str, program: &Path, args: &[String]) -> Result<(), Error> {
        let log = self.dir().join(format!("{name}.log"));
        self.daemons.push(Daemon::spawn(name, program, args, &log)?);
        Ok(())
    }

    /// Polls `ready` until it says true, failing early when a component exits.
    fn wait(
        &mut self,
        component: &str,
        mut ready: impl FnMut() -> Result<bool, Error>,
    ) -> Result<(), Error> {
        let began = Instant::now();
        loop {
            for daemon in &mut self.daemons {
                daemon.check_running()?;
            }
            if ready()? {
                return Ok(());
            }
            if began.elapsed() > READY_TIMEOUT {
                let log = self
                    .daemons
                    .iter()
                    .find(|d| d.name == component)
                    .map(|d| d.log_tail(40))
                    .unwrap_or_default();
                return Err(Error::NotReady {
                    component: component.into(),
                    waited: READY_TIMEOUT,
                    log,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The admin kubeconfig (`system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The API server's URL, `https://127.0.0.1:PORT`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The control plane's directory (certificates, kubeconfigs, etcd data, logs).
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map_or_else(|| Path::new("/nonexistent"), |d| d.path())
    }

    /// How long [`ControlPlane::start`] took, from nothing to ready.
    pub fn startup_time(&self) -> Duration {
        self.started_in
    }

    /// Process ids of the running components, in start order.
    pub fn pids(&self) -> Vec<u32> {
        self.daemons.iter().map(Daemon::pid).collect()
    }

    /// The last `lines` lines of a component's log (`etcd`, `kube-apiserver`, …).
    pub fn log_tail(&self, component: &str, lines: usize) -> String {
        self.daemons
            .iter()
            .find(|d| d.name == component)
            .map(|d| d.log_tail(lines))
            .unwrap_or_default()
    }

    /// Runs the cached `kubectl` with the admin kubeconfig.
    ///
    /// # Panics
    ///
    /// When kubectl cannot be started at all (it was found when the control plane started).
    pub fn kubectl(&self, args: &[&str]) -> Output {
        run_kubectl(&self.kubeconfig, args, None).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `kubectl` with `stdin` as its standard input (for `apply -f -`).
    ///
    /// # Panics
    ///
    /// As [`ControlPlane::kubectl`].
    pub fn kubectl_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        run_kubectl(&self.kubeconfig, args, Some(stdin)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `kubectl apply -f -` of `yaml`.
    ///
    /// # Panics
    ///
    /// As [`ControlPlane::kubectl`].
    pub fn apply(&self, yaml: &str) -> Output {
        self.kubectl_with_stdin(&["apply", "-f", "-"], yaml)
    }

    /// Stops every component (controllers and API server first, etcd last) and removes the
    /// directory. Dropping does the same.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let panicking = std::thread::panicking();
        if panicking {
            // The test failed: show what the components said, before their logs are removed.
            for daemon in &self.daemons {
                eprintln!(
                    "--- {} (last 30 lines of its log)\n{}",
                    daemon.name,
                    daemon.log_tail(30)
                );
            }
        }
        // One at a time, newest first: the API server must go before etcd (stopping both at once
        // can leave the API server hanging on its storage).
        while let Some(mut daemon) = self.daemons.pop() {
            daemon.stop(STOP_GRACE);
        }
        if let Some(dir) = self.dir.take() {
            if std::env::var_os("RUNNEL_E2E_KEEP").is_some() {
                let kept = dir.keep();
                eprintln!(
                    "RUNNEL_E2E_KEEP: control plane directory kept at {}",
                    kept.display()
                );
            }
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[derive(Debug)]
struct Binaries {
    etcd: PathBuf,
    apiserver: PathBuf,
    controller_manager: PathBuf,
    scheduler: PathBuf,
}

impl Binaries {
    fn find() -> Result<Self, Error> {
        let _ = kubectl_binary();
        Ok(Binaries {
            etcd: etcd_binary()?,
            apiserver: k8s_binary("kube-apiserver")?,
            controller_manager: k8s_binary("kube-controller-manager")?,
            scheduler: k8s_binary("kube-scheduler")?,
        })
    }
}

fn apiserver_args(root: &Path, pki: &Pki, etcd: &str, port: u16) -> Vec<String> {
    vec![
        format!("--etcd-servers={etcd}"),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        // A loopback advertise address is refused unless the API server does not maintain the
        // `kubernetes` Service's endpoints itself.
        "--endpoint-reconciler-type=none".into(),
        format!("--service-cluster-ip-range={}", pki::SERVICE_RANGE),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        format!(
            "--service-account-key-file={}",
            pki.service_account_pub.display()
        ),
        format!(
            "--service-account-signing-key-file={}",
            pki.service_account_key.display()
        ),
        format!("--client-ca-file={}", pki.ca.cert.display()),
        format!("--tls-cert-file={}", pki.apiserver.cert.display()),
        format!("--tls-private-key-file={}", pki.apiserver.key.display()),
        format!("--cert-dir={}", root.join("apiserver-certs").display()),
        "--authorization-mode=Node,RBAC".into(),
        "--allow-privileged=true".into(),
        "--profiling=false".into(),
    ]
}

fn controller_manager_args(root: &Path, pki: &Pki, kubeconfig: &Path, port: u16) -> Vec<String> {
    let kc = kubeconfig.display();
    vec![
        format!("--kubeconfig={kc}"),
        format!("--authentication-kubeconfig={kc}"),
        format!("--authorization-kubeconfig={kc}"),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        format!(
            "--cert-dir={}",
            root.join("controller-manager-certs").display()
        ),
        "--leader-elect=false".into(),
        format!(
            "--service-account-private-key-file={}",
            pki.service_account_key.display()
        ),
        format!("--root-ca-file={}", pki.ca.cert.display()),
        format!("--cluster-signing-cert-file={}", pki.ca.cert.display()),
        format!("--cluster-signing-key-file={}", pki.ca.key.display()),
        "--use-service-account-credentials=true".into(),
        "--allocate-node-cidrs=false".into(),
        format!("--service-cluster-ip-range={}", pki::SERVICE_RANGE),
        "--profiling=false".into(),
    ]
}

fn scheduler_args(root: &Path, kubeconfig: &Path, port: u16) -> Vec<String> {
    let kc = kubeconfig.display();
    vec![
        format!("--kubeconfig={kc}"),
        format!("--authentication-kubeconfig={kc}"),
        format!("--authorization-kubeconfig={kc}"),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        format!("--cert-dir={}", root.join("scheduler-certs").display()),
        "--leader-elect=false".into(),
        "--profiling=false".into(),
    ]
}

/// A kubeconfig for `user` with a client certificate; `ca` verifies the server, or `None` for
/// servers with self-signed certificates.
fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca: Option<&Path>,
    client: &KeyPair,
    user: &str,
) -> Result<(), Error> {
    let trust = ca.map_or_else(
        || "insecure-skip-tls-verify: true".to_string(),
        |ca| format!("certificate-authority: {}", ca.display()),
    );
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: runnel-e2e
  cluster:
    server: {server}
    {trust}
users:
- name: {user}
  user:
    client-certificate: {cert}
    client-key: {key}
contexts:
- name: runnel-e2e
  context:
    cluster: runnel-e2e
    user: {user}
    namespace: default
current-context: runnel-e2e
",
        cert = client.cert.display(),
        key = client.key.display(),
    );
    std::fs::write(path, text).map_err(|source| Error::Io {
        context: format!("writing {}", path.display()),
        source,
    })
}

fn run_kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Result<Output, Error> {
    let mut command = Command::new(kubectl_binary());
    command
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(args)
        // kubectl's discovery cache goes to $HOME/.kube/cache by default; keep it per control plane.
        .env("KUBECACHEDIR", kubeconfig.with_file_name("kube-cache"));
    run_command(command, format!("kubectl {}", args.join(" ")), stdin)
}

/// Runs `command` to its end with `stdin` (or nothing) as its input, capturing what it prints;
/// `description` names it in the [`Output`] and in errors. A failing exit status is not an
/// error here: callers check [`Output::success`].
pub fn run_command(
    mut command: Command,
    description: String,
    stdin: Option<&str>,
) -> Result<Output, Error> {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|source| Error::Spawn {
        program: command.get_program().to_string_lossy().into_owned(),
        source,
    })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A program that exits early closes the pipe; its exit status tells the story.
        let _ = pipe.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(|source| Error::Io {
        context: format!("waiting for {description}"),
        source,
    })?;
    Ok(Output {
        command: description,
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// `/healthz` of a controller manager or scheduler (kubectl can ask any server).
fn component_healthy(kubeconfig: &Path, port: u16) -> Result<bool, Error> {
    if TcpStream::connect(("127.0.0.1", port)).is_err() {
        return Ok(false);
    }
    let server = format!("--server=https://127.0.0.1:{port}");
    let out = run_kubectl(
        kubeconfig,
        &[&server, "get", "--raw=/healthz", "--request-timeout=5s"],
        None,
    )?;
    Ok(out.success() && out.stdout.trim() == "ok")
}

/// The body of `GET http://127.0.0.1:port{path}`, or None when there is no answer yet.
fn http_get_loopback(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
}
