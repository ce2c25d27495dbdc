//! A machine for tests: a backing directory and a mount point in a temporary directory, with
//! runnel-lazyfs powered on and off over them. Dropping it stops the daemon and removes the
//! mount and the directories, also when a test fails half way.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

/// How long a daemon may take to mount or to stop.
const PATIENCE: Duration = Duration::from_secs(20);

/// A backing directory, a mount point and (while powered on) the daemon serving them.
#[derive(Debug)]
pub struct Machine {
    binary: PathBuf,
    dir: TempDir,
    daemon: Option<Child>,
}

impl Machine {
    /// A machine with an empty backing directory, powered off, whose daemon is the
    /// runnel-lazyfs binary at `binary`.
    pub fn new(binary: impl Into<PathBuf>) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("runnel-lazyfs-")
            .tempdir()?;
        fs::create_dir(dir.path().join("backing"))?;
        fs::create_dir(dir.path().join("mnt"))?;
        Ok(Self {
            binary: binary.into(),
            dir,
            daemon: None,
        })
    }

    /// The backing directory (the "disk").
    pub fn backing(&self) -> PathBuf {
        self.dir.path().join("backing")
    }

    /// The mount point.
    pub fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    fn control(&self) -> PathBuf {
        self.dir.path().join("control.sock")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("lazyfs.log")
    }

    /// What the daemons of this machine logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> Result<Pid> {
        let daemon = self.daemon.as_ref().context("the machine is powered off")?;
        Ok(Pid::from_raw(i32::try_from(daemon.id())?))
    }

    /// Mounts runnel-lazyfs over the backing directory and waits until the control socket
    /// answers, that is, until the mount is ready.
    pub fn power_on(&mut self) -> Result<()> {
        if self.daemon.is_some() {
            bail!("the machine is already powered on");
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(&self.binary)
            .arg("--backing")
            .arg(self.backing())
            .arg("--control")
            .arg(self.control())
            .arg("--exit-with-parent")
            .arg(self.mnt())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting runnel-lazyfs")?;
        self.daemon = Some(child);
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(answer) = crate::control::request(&self.control(), "status") {
                if answer != "on" {
                    bail!("a fresh mount answers status with `{answer}`");
                }
                if is_mounted(&self.mnt())? {
                    return Ok(());
                }
            }
            if let Some(daemon) = self.daemon.as_mut() {
                if let Some(status) = daemon.try_wait()? {
                    self.daemon = None;
                    bail!("runnel-lazyfs exited with {status}:\n{}", self.log());
                }
            }
            if Instant::now() > deadline {
                bail!("runnel-lazyfs did not mount in time:\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends one command to the control socket and returns the answer.
    pub fn request(&self, command: &str) -> Result<String> {
        crate::control::request(&self.control(), command)
            .with_context(|| format!("control command `{command}`"))
    }

    /// Cuts the power through the control socket; returns once it has taken effect.
    pub fn cut(&self) -> Result<()> {
        let answer = self.request("cut")?;
        if answer != "ok" {
            bail!("cut answered `{answer}`:\n{}", self.log());
        }
        Ok(())
    }

    /// Stops the daemon with SIGTERM and checks that it unmounted and exited 0.
    pub fn stop(&mut self) -> Result<()> {
        let status = self.terminate()?;
        if !status.success() {
            bail!("runnel-lazyfs exited with {status}:\n{}", self.log());
        }
        if is_mounted(&self.mnt())? {
            bail!("runnel-lazyfs exited but left its mount behind");
        }
        Ok(())
    }

    /// Sends SIGTERM and waits for the daemon to exit.
    fn terminate(&mut self) -> Result<ExitStatus> {
        let pid = self.pid()?;
        let Some(mut daemon) = self.daemon.take() else {
            bail!("the machine is powered off");
        };
        kill(pid, Signal::SIGTERM)?;
        match wait_for(&mut daemon, PATIENCE)? {
            Some(status) => Ok(status),
            None => {
                let _ = daemon.kill();
                let _ = daemon.wait();
                bail!("runnel-lazyfs did not exit after SIGTERM:\n{}", self.log())
            }
        }
    }

    /// A power cut followed by a power on: the mount shows only what was durable.
    pub fn crash_and_reboot(&mut self) -> Result<()> {
        self.cut()?;
        self.stop()?;
        self.power_on()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            if let Ok(pid) = i32::try_from(daemon.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            if !matches!(wait_for(&mut daemon, PATIENCE), Ok(Some(_))) {
                let _ = daemon.kill();
                let _ = daemon.wait();
            }
        }
        // A daemon that died without unmounting leaves a dead mount: abort and detach it so
        // that the temporary directory can go.
        let mnt = self.mnt();
        if is_mounted(&mnt).unwrap_or(true) {
            let _ = umount2(&mnt, MntFlags::MNT_FORCE);
            let _ = umount2(&mnt, MntFlags::MNT_DETACH);
        }
    }
}

/// Waits up to `patience` for `child` to exit.
pub fn wait_for(child: &mut Child, patience: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Whether something is mounted at `path` (per /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> Result<bool> {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    let path = path.to_string_lossy();
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    Ok(mountinfo
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(path.as_ref())))
}
