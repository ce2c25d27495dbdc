//! The control socket: a Unix stream socket that takes one command per line and answers each
//! with one line, once the command has taken effect.
//!
//! | command  | answer                                                                      |
//! | -------- | --------------------------------------------------------------------------- |
//! | `cut`    | `ok` once the backing directory holds the durable state and the mount fails every operation with EIO; `error: …` if restoring failed |
//! | `status` | `on` or `off`                                                               |
//! | other    | `error: unknown command …`                                                  |
//!
//! The socket exists only once the filesystem is mounted, so a caller that can connect knows
//! the mount is ready.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::thread;

use tracing::{info, warn};

use crate::error::Error;
use crate::fs::PowerSwitch;

/// Binds the control socket at `path`, replacing a socket left there by an earlier run.
pub fn bind(path: &Path) -> Result<UnixListener, Error> {
    let control = |source| Error::Control {
        path: path.to_owned(),
        source,
    };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => return Err(control(error)),
    }
    UnixListener::bind(path).map_err(control)
}

/// Serves the control protocol on `listener` until it fails, each connection on a thread of
/// its own so that an idle client holds up no other.
pub fn serve(listener: &UnixListener, switch: &PowerSwitch) -> io::Result<()> {
    loop {
        let (stream, _) = listener.accept()?;
        let switch = switch.clone();
        thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                if let Err(error) = session(stream, &switch) {
                    warn!(%error, "control connection failed");
                }
            })?;
    }
}

fn session(stream: UnixStream, switch: &PowerSwitch) -> io::Result<()> {
    let mut writer = stream.try_clone()?;
    for line in BufReader::new(stream).lines() {
        let mut answer = answer(line?.trim(), switch);
        answer.push('\n');
        match writer.write_all(answer.as_bytes()) {
            // A client that hung up after its command no longer needs the answer.
            Err(error) if error.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            result => result?,
        }
    }
    Ok(())
}

/// The answer to one command line (without its newline).
pub fn answer(command: &str, switch: &PowerSwitch) -> String {
    match command {
        "cut" => match switch.cut() {
            Ok(()) => {
                info!("power cut through the control socket");
                "ok".into()
            }
            Err(error) => format!("error: {error}"),
        },
        "status" => if switch.is_on() { "on" } else { "off" }.into(),
        other => format!("error: unknown command `{other}` (expected `cut` or `status`)"),
    }
}

/// Sends `command` to the control socket at `path` and returns the answer line, without its
/// newline: what a test calls to cut the power.
pub fn request(path: &Path, command: &str) -> io::Result<String> {
    let mut stream = UnixStream::connect(path)?;
    stream.write_all(format!("{command}\n").as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    if answer.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the control socket closed without answering",
        ));
    }
    Ok(answer.trim_end().to_owned())
}
