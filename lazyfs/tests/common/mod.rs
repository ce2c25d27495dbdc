//! Helpers of the tests: a machine with the daemon built here, and files written and synced.

// Each test crate uses a part of this module.
#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::Child;

use anyhow::{bail, Context, Result};
#[allow(unused_imports)]
pub(crate) use runnel_lazyfs::machine::{is_mounted, wait_for, Machine};

/// A machine whose daemon is the runnel-lazyfs built with these tests.
pub(crate) fn machine() -> Result<Machine> {
    Machine::new(env!("CARGO_BIN_EXE_runnel-lazyfs"))
}

/// Writes `data` to a new file at `path` and fsyncs the file (not its directory).
pub(crate) fn write_synced(path: &Path, data: &[u8]) -> Result<()> {
    let mut file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(data)?;
    file.sync_all()?;
    Ok(())
}

/// fsync of a directory: its entries become durable.
pub(crate) fn fsync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("fsync of directory {}", path.display()))
}

/// `len` bytes that differ from those of any other `seed`.
pub(crate) fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// The raw OS error of `result`, or a description of why there is none.
pub(crate) fn os_error<T: std::fmt::Debug>(result: std::io::Result<T>) -> Result<i32> {
    match result {
        Ok(value) => bail!("expected an error, got {value:?}"),
        Err(error) => error
            .raw_os_error()
            .with_context(|| format!("expected an OS error, got {error}")),
    }
}

/// Kills a helper process with SIGKILL when a test ends, however it ends.
pub(crate) struct KillOnDrop(pub(crate) Child);

impl KillOnDrop {
    /// Kills the process now (as a crash would) and reaps it.
    pub(crate) fn kill(&mut self) -> Result<()> {
        self.0.kill()?;
        self.0.wait()?;
        Ok(())
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
