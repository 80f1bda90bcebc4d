//! `sweep --textfile PATH`: the metrics of one sweep in a file for node_exporter's textfile
//! collector, which reads every `*.prom` file of its directory at each scrape.
//!
//! The file is replaced atomically: the text goes to a temporary file in the same directory
//! (a name not ending in `.prom`, so the collector never reads it half written), is flushed
//! to disk, and is renamed over PATH. A scrape sees the old file or the new one, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Checks, before a sweep starts, that PATH can be a textfile: its directory exists and
/// PATH is not a directory. A user error is exit 2 before any probe is sent.
pub fn check_textfile_path(path: &Path) -> Result<()> {
    if path.as_os_str().is_empty() || path.file_name().is_none() {
        return Err(Error::Usage(format!(
            "--textfile '{}' is not a file name",
            path.display()
        )));
    }
    if path.is_dir() {
        return Err(Error::Usage(format!(
            "--textfile {} is a directory; give a file such as {}/kaprobe.prom",
            path.display(),
            path.display()
        )));
    }
    let dir = parent_dir(path);
    if !dir.is_dir() {
        return Err(Error::Usage(format!(
            "--textfile {}: directory {} does not exist",
            path.display(),
            dir.display()
        )));
    }
    Ok(())
}

/// Checks that PATH's directory takes a new file now: kaprobe creates and removes the
/// temporary file it will write. Call it after dropping capabilities (root without
/// CAP_DAC_OVERRIDE may not write where root could), before probing: a directory kaprobe
/// cannot write in is exit 2 before any probe is sent.
pub fn check_writable(path: &Path) -> Result<()> {
    check_textfile_path(path)?;
    let tmp = temp_path(path);
    let create = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
    };
    let created = create().or_else(|e| match e.kind() {
        // Left by a kaprobe that was killed with our PID: ours to replace.
        io::ErrorKind::AlreadyExists => fs::remove_file(&tmp).and_then(|()| create()),
        _ => Err(e),
    });
    match created {
        Ok(_) => {
            let _ = fs::remove_file(&tmp);
            Ok(())
        }
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EACCES | libc::EPERM | libc::EROFS)
            ) =>
        {
            Err(Error::Usage(format!(
                "--textfile {}: cannot create a file in {} ({e}); kaprobe writes it as \
                 user {} without capabilities: make the directory writable for that user",
                path.display(),
                parent_dir(path).display(),
                // SAFETY: geteuid has no preconditions.
                unsafe { libc::geteuid() }
            )))
        }
        Err(e) => Err(Error::Io {
            context: format!("--textfile {}: creating a file beside it", path.display()),
            source: e,
        }),
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The temporary name beside `path`: hidden, and not ending in `.prom`.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "kaprobe".into());
    parent_dir(path).join(format!(".{name}.{}.tmp", std::process::id()))
}

/// Writes `text` (plus a final newline if it lacks one) to `path` atomically, mode 0644 so
/// a collector running as another user can read it.
pub fn write(path: &Path, text: &str) -> Result<()> {
    check_textfile_path(path)?;
    let tmp = temp_path(path);
    let result = write_then_rename(&tmp, path, text);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| Error::Io {
        context: format!("writing --textfile {}", path.display()),
        source: e,
    })
}

fn write_then_rename(tmp: &Path, path: &Path, text: &str) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(tmp)?;
    file.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        file.write_all(b"\n")?;
    }
    file.sync_all()?;
    drop(file);
    fs::rename(tmp, path)?;
    // The rename itself reaches the disk with the directory (best effort: some file
    // systems refuse fsync on a directory).
    if let Ok(dir) = File::open(parent_dir(path)) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::ExitStatus;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let d = std::env::temp_dir().join(format!(
                "kaprobe-textfile-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = fs::remove_dir_all(&d);
            fs::create_dir_all(&d).unwrap();
            TempDir(d)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn writes_atomically_with_a_final_newline_and_no_leftovers() {
        let d = TempDir::new("write");
        let path = d.0.join("kaprobe.prom");
        write(&path, "a 1").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "a 1\n");
        write(&path, "b 2\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "b 2\n");
        let names: Vec<_> = fs::read_dir(&d.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["kaprobe.prom".to_string()], "temp file left");
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        // 0644 less the umask's bits; others can read at the usual umask 022.
        assert_eq!(mode & 0o600, 0o600, "{mode:o}");
        assert!(!temp_path(&path).to_string_lossy().ends_with(".prom"));
    }

    #[test]
    fn bad_paths_are_usage_errors() {
        let d = TempDir::new("bad");
        for bad in [
            d.0.clone(),
            d.0.join("missing-dir/kaprobe.prom"),
            PathBuf::from(""),
        ] {
            let e = check_textfile_path(&bad).unwrap_err();
            assert_eq!(e.status(), ExitStatus::Usage, "{}: {e}", bad.display());
            let e = write(&bad, "x 1\n").unwrap_err();
            assert_eq!(e.status(), ExitStatus::Usage, "{}: {e}", bad.display());
        }
        check_textfile_path(&d.0.join("ok.prom")).unwrap();
        check_writable(&d.0.join("ok.prom")).unwrap();
        assert_eq!(
            fs::read_dir(&d.0).unwrap().count(),
            0,
            "the check leaves nothing"
        );
        assert_eq!(
            check_writable(&d.0.join("missing-dir/kaprobe.prom"))
                .unwrap_err()
                .status(),
            ExitStatus::Usage
        );
    }
}
