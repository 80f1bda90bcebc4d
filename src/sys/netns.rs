//! `--netns NAME`: enter /run/netns/NAME, as `ip netns exec` would.

use std::fs::File;
use std::os::fd::AsRawFd;

use crate::error::{Error, Result};

pub fn enter(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(Error::Usage(format!(
            "invalid network namespace name '{name}'"
        )));
    }
    let path = format!("/run/netns/{name}");
    let file = File::open(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::Usage(format!(
            "no network namespace named '{name}' ({path} does not exist)"
        )),
        _ => Error::sys(format!("opening {path}"), "CAP_SYS_ADMIN", e),
    })?;
    // SAFETY: a valid descriptor of a namespace file; setns changes only this thread, and the
    // process is still single-threaded here.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(Error::sys(
            format!("entering network namespace '{name}'"),
            "CAP_SYS_ADMIN",
            e,
        ));
    }
    Ok(())
}
