//! Which processes hold a socket: socket inode -> (pid, fd, command), found the way `ss -p`
//! and `lsof` do, by reading the `socket:[INODE]` links under `/proc/*/fd`.
//!
//! One scan of `/proc` answers for every socket of a run: `list` with 10,000 connections
//! reads each descriptor link once, not once per connection. Socket inodes are unique on the
//! whole host, so the scan finds owners in every network namespace; it sees only the
//! processes of kaprobe's own PID namespace (and, without root, only the caller's own).

use std::collections::{HashMap, HashSet};
use std::ffi::{CString, OsStr};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// One descriptor that refers to a socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    pub fd: i32,
    /// The process's `comm` (at most 15 bytes, as the kernel keeps it).
    pub command: String,
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.pid, self.command)
    }
}

/// The owners of a set of sockets, from one scan.
#[derive(Debug, Default)]
pub struct Owners {
    by_inode: HashMap<u32, Vec<Owner>>,
    /// Processes whose descriptors could not be read (another user's, without root).
    pub unreadable: usize,
}

impl Owners {
    /// Scans `/proc` for descriptors of the sockets in `wanted` (inode numbers as sock_diag
    /// reports them). Processes that exit meanwhile are skipped.
    pub fn scan(wanted: &HashSet<u32>) -> Owners {
        Owners::scan_in(Path::new("/proc"), wanted)
    }

    /// As [`Owners::scan`], under another root (tests use a fake `/proc`).
    pub fn scan_in(proc_root: &Path, wanted: &HashSet<u32>) -> Owners {
        let mut owners = Owners::default();
        if wanted.is_empty() {
            return owners;
        }
        let Ok(entries) = std::fs::read_dir(proc_root) else {
            return owners;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            owners.scan_process(proc_root, pid, wanted);
        }
        for list in owners.by_inode.values_mut() {
            list.sort_by_key(|o| (o.pid, o.fd));
        }
        owners
    }

    fn scan_process(&mut self, proc_root: &Path, pid: u32, wanted: &HashSet<u32>) {
        let dir = proc_root.join(pid.to_string());
        let fds = match std::fs::read_dir(dir.join("fd")) {
            Ok(fds) => fds,
            Err(e) => {
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    self.unreadable += 1;
                }
                return;
            }
        };
        // Links are read relative to the open directory: no path walk through /proc per fd.
        let Ok(fd_dir) = std::fs::File::open(dir.join("fd")) else {
            return;
        };
        let mut command: Option<String> = None;
        let mut buf = [0u8; 64];
        for entry in fds.flatten() {
            let name = entry.file_name();
            let Some(fd) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Some(inode) = read_link_at(&fd_dir, &name, &mut buf).and_then(socket_inode) else {
                continue;
            };
            if !wanted.contains(&inode) {
                continue;
            }
            let command = command.get_or_insert_with(|| read_comm(&dir));
            self.by_inode.entry(inode).or_default().push(Owner {
                pid,
                fd,
                command: command.clone(),
            });
        }
    }

    /// The descriptors that refer to socket `inode`, by pid then fd; empty when none.
    pub fn of(&self, inode: u32) -> &[Owner] {
        self.by_inode.get(&inode).map_or(&[], Vec::as_slice)
    }
}

/// `socket:[12345]` -> 12345. Anything else (files, pipes, `anon_inode:`) -> `None`.
pub fn socket_inode(link: &str) -> Option<u32> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// The target of the symlink `name` in the directory `dir`, when it fits `buf` and is UTF-8.
fn read_link_at<'b>(dir: &std::fs::File, name: &OsStr, buf: &'b mut [u8]) -> Option<&'b str> {
    let name = CString::new(name.as_bytes()).ok()?;
    // SAFETY: a valid directory descriptor, a NUL-terminated name, and a buffer of buf.len()
    // bytes the kernel writes at most that many bytes into.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).ok().filter(|&n| n < buf.len())?;
    std::str::from_utf8(&buf[..n]).ok()
}

fn read_comm(proc_dir: &Path) -> String {
    std::fs::read_to_string(proc_dir.join("comm"))
        .map(|s| s.trim_end_matches('\n').to_string())
        .unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn parses_socket_links_only() {
        assert_eq!(socket_inode("socket:[12345]"), Some(12345));
        assert_eq!(socket_inode("socket:[4294967295]"), Some(u32::MAX));
        assert_eq!(socket_inode("socket:[]"), None);
        assert_eq!(socket_inode("socket:[12"), None);
        assert_eq!(socket_inode("pipe:[12345]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
        assert_eq!(socket_inode("anon_inode:[eventpoll]"), None);
    }

    fn fake_proc() -> std::path::PathBuf {
        let root = std::env::temp_dir().join(format!(
            "kaprobe-owner-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&root);
        for (pid, comm, fds) in [
            (
                "100",
                "nginx\n",
                vec![("3", "socket:[7]"), ("4", "socket:[8]")],
            ),
            (
                "200",
                "worker\n",
                vec![("9", "socket:[7]"), ("1", "/dev/null")],
            ),
            ("300", "other\n", vec![("5", "socket:[99]")]),
        ] {
            let dir = root.join(pid);
            std::fs::create_dir_all(dir.join("fd")).unwrap();
            std::fs::write(dir.join("comm"), comm).unwrap();
            for (fd, target) in fds {
                symlink(target, dir.join("fd").join(fd)).unwrap();
            }
        }
        std::fs::create_dir_all(root.join("self")).unwrap();
        std::fs::write(root.join("uptime"), "1 1\n").unwrap();
        root
    }

    #[test]
    fn finds_every_holder_of_the_wanted_sockets() {
        let root = fake_proc();
        let owners = Owners::scan_in(&root, &HashSet::from([7, 8, 55]));
        let o7: Vec<_> = owners.of(7).iter().map(|o| (o.pid, o.fd)).collect();
        assert_eq!(o7, vec![(100, 3), (200, 9)]);
        assert_eq!(owners.of(7)[1].command, "worker");
        assert_eq!(owners.of(8)[0].to_string(), "100/nginx");
        assert!(owners.of(55).is_empty());
        // Not wanted: not collected.
        assert!(owners.of(99).is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn nothing_wanted_reads_nothing() {
        let owners = Owners::scan_in(Path::new("/nonexistent"), &HashSet::from([1]));
        assert!(owners.of(1).is_empty());
        let owners = Owners::scan(&HashSet::new());
        assert!(owners.by_inode.is_empty());
    }

    #[test]
    fn finds_this_process_as_the_owner_of_its_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let link = std::fs::read_link(format!("/proc/self/fd/{}", listener.as_raw_fd())).unwrap();
        let inode = socket_inode(link.to_str().unwrap()).unwrap();
        let owners = Owners::scan(&HashSet::from([inode]));
        let me = owners
            .of(inode)
            .iter()
            .find(|o| o.pid == std::process::id())
            .expect("this process holds its own socket");
        assert_eq!(me.fd, listener.as_raw_fd());
        assert!(!me.command.is_empty());
    }
}
