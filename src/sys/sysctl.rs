//! Reading sysctls from `/proc/sys`. The `net.*` tree shows the network namespace of the
//! reading thread, so after `--netns NAME` these are NAME's values.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const PROC_SYS: &str = "/proc/sys";

/// The file behind a dotted sysctl name: `net.ipv4.tcp_retries2` ->
/// `/proc/sys/net/ipv4/tcp_retries2`.
pub fn path_of(root: &Path, name: &str) -> PathBuf {
    root.join(name.replace('.', "/"))
}

/// One sysctl holding a single non-negative integer.
pub fn read_u64(name: &str) -> Result<u64> {
    read_u64_in(Path::new(PROC_SYS), name)
}

/// As [`read_u64`], under another root (tests use a directory of plain files).
pub fn read_u64_in(root: &Path, name: &str) -> Result<u64> {
    let path = path_of(root, name);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::Io {
        context: format!("reading {name} ({})", path.display()),
        source: e,
    })?;
    parse_u64(&text).ok_or_else(|| {
        Error::Runtime(format!(
            "{name} ({}) holds '{}', not a non-negative integer",
            path.display(),
            text.trim()
        ))
    })
}

/// As [`read_u64`], but `None` when the sysctl does not exist on this kernel.
pub fn read_u64_opt(name: &str) -> Result<Option<u64>> {
    read_u64_opt_in(Path::new(PROC_SYS), name)
}

pub fn read_u64_opt_in(root: &Path, name: &str) -> Result<Option<u64>> {
    if !path_of(root, name).exists() {
        return Ok(None);
    }
    read_u64_in(root, name).map(Some)
}

fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_names_map_to_proc_paths() {
        assert_eq!(
            path_of(Path::new("/proc/sys"), "net.ipv4.tcp_keepalive_time"),
            PathBuf::from("/proc/sys/net/ipv4/tcp_keepalive_time")
        );
    }

    #[test]
    fn parses_values_with_a_newline_and_rejects_others() {
        assert_eq!(parse_u64("7200\n"), Some(7200));
        assert_eq!(parse_u64(" 9 "), Some(9));
        assert_eq!(parse_u64("-1\n"), None);
        assert_eq!(parse_u64("4096 131072 6291456\n"), None);
        assert_eq!(parse_u64(""), None);
    }

    #[test]
    fn reads_from_a_root_and_reports_missing_ones() {
        let dir = std::env::temp_dir().join(format!("kaprobe-sysctl-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("net/ipv4")).unwrap();
        std::fs::write(dir.join("net/ipv4/tcp_retries2"), "15\n").unwrap();
        std::fs::write(dir.join("net/ipv4/bad"), "x\n").unwrap();
        assert_eq!(read_u64_in(&dir, "net.ipv4.tcp_retries2").unwrap(), 15);
        assert_eq!(read_u64_opt_in(&dir, "net.ipv4.nope").unwrap(), None);
        let e = read_u64_in(&dir, "net.ipv4.nope").unwrap_err();
        assert!(e.to_string().contains("net.ipv4.nope"), "{e}");
        let e = read_u64_in(&dir, "net.ipv4.bad").unwrap_err();
        assert!(e.to_string().contains("not a non-negative integer"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reads_the_real_keepalive_time() {
        // Present on every Linux with TCP.
        assert!(read_u64("net.ipv4.tcp_keepalive_time").unwrap() >= 1);
    }
}
