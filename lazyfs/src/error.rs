//! What can go wrong outside a filesystem operation (those answer the kernel with an errno).

use std::io;
use std::path::PathBuf;

/// An error of runnel-lazyfs: setting up the backing directory, cutting the power, or serving
/// the control socket.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backing directory cannot be used.
    #[error("backing directory `{path}`: {source}")]
    Backing {
        /// The path given or derived from it.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The backing directory and the mount point overlap, so serving one would go through the
    /// other.
    #[error(
        "mount point `{mountpoint}` and backing directory `{backing}` must not contain each other"
    )]
    Overlap {
        /// The backing directory.
        backing: PathBuf,
        /// The mount point.
        mountpoint: PathBuf,
    },
    /// Restoring the durable state failed part way: the backing directory is in an unknown
    /// state (the filesystem still refuses every operation).
    #[error("power cut: could not {step} `{path}`: {source}")]
    Cut {
        /// What was being done.
        step: &'static str,
        /// The backing path it was done to.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The control socket failed.
    #[error("control socket `{path}`: {source}")]
    Control {
        /// The socket's path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}
