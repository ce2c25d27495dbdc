//! A long-running child process in its own process group, logging to a file, stopped with
//! SIGTERM and then SIGKILL.

use crate::Error;
use rustix::process::{kill_process_group, Pid, Signal};
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A started component (etcd, kube-apiserver, …).
#[derive(Debug)]
pub(crate) struct Daemon {
    pub(crate) name: String,
    child: Child,
    log: PathBuf,
    stopped: bool,
}

impl Daemon {
    /// Starts `program args…` in a new process group, stdout and stderr to `log`.
    pub(crate) fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> Result<Self, Error> {
        let io = |context: String| move |source| Error::Io { context, source };
        let out = File::create(log).map_err(io(format!("creating {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io(format!("opening {}", log.display())))?;
        // With util-linux's `setpriv`, the component gets SIGKILL when the thread that started
        // it dies, so that even a test process killed outright (no Drop) leaves nothing behind.
        // (`PR_SET_PDEATHSIG` itself would need `unsafe` `pre_exec`.)
        let mut command = match find_in_path("setpriv") {
            Some(setpriv) => {
                let mut c = Command::new(setpriv);
                c.args(["--pdeathsig", "KILL", "--"]).arg(program);
                c
            }
            None => Command::new(program),
        };
        let child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Its own group, so that stopping it also stops anything it started.
            .process_group(0)
            .spawn()
            .map_err(|source| Error::Spawn {
                program: program.display().to_string(),
                source,
            })?;
        Ok(Daemon {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            stopped: false,
        })
    }

    /// The process id (also its process group id).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Err(Error::Exited)` when the process has exited.
    pub(crate) fn check_running(&mut self) -> Result<(), Error> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(Error::Exited {
                component: self.name.clone(),
                status,
                log: self.log_tail(40),
            }),
            Ok(None) => Ok(()),
            Err(source) => Err(Error::Io {
                context: format!("checking on {}", self.name),
                source,
            }),
        }
    }

    /// The last `lines` lines of its log.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGTERM to its process group, up to `grace` for it to exit, then SIGKILL; reaps it.
    /// Returns how it ended (None when it could not be reaped).
    pub(crate) fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if self.stopped {
            return None;
        }
        self.stopped = true;
        if let Ok(Some(status)) = self.child.try_wait() {
            self.signal_group(Signal::KILL); // anything it left behind in its group
            return Some(status);
        }
        self.signal_group(Signal::TERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.signal_group(Signal::KILL);
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal_group(Signal::KILL);
        self.child.wait().ok()
    }

    fn signal_group(&self, signal: Signal) {
        let pgid = i32::try_from(self.child.id()).ok().and_then(Pid::from_raw);
        if let Some(pgid) = pgid {
            // ESRCH (the group is already gone) is what we want anyway.
            let _ = kill_process_group(pgid, signal);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
