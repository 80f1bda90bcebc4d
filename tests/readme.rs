//! The README cannot drift from the binary: every ```` ```console runnable ```` block in it
//! is run, command by command, in a lab of its own (as root; skipped with the reason
//! otherwise, a failure under KAPROBE_REQUIRE_NETNS=1), and each command's standard output
//! must have the shape the README shows, and its exit status the one its `# exit N`
//! comment names (0 without one).
//!
//! What "as written" allows: a leading `sudo ` is dropped (the test runs as root), `kaprobe`
//! is the binary under test, and the lab name `lab1` becomes a name unique to the run, so
//! that tests run side by side. Shape: blanks collapse, every number becomes `0`, and every
//! duration (`0.119ms`, `1m12.9s`) becomes `DUR`, so timings and PIDs may differ but not
//! the words, fields and columns.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{describe, require_lab, run_bounded_for};

fn readme() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One runnable block: the README line it starts on, and its commands, each with the
/// output lines that follow it.
struct Block {
    line: usize,
    steps: Vec<(String, Vec<String>)>,
}

fn runnable_blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        match &mut current {
            None if line.trim_end() == "```console runnable" => {
                current = Some(Block {
                    line: i + 1,
                    steps: Vec::new(),
                });
            }
            None => {}
            Some(_) if line.trim_end() == "```" => blocks.push(current.take().unwrap()),
            Some(b) => {
                if let Some(cmd) = line.strip_prefix("$ ") {
                    b.steps.push((cmd.to_string(), Vec::new()));
                } else if let Some((_, out)) = b.steps.last_mut() {
                    out.push(line.to_string());
                } else {
                    panic!("README.md:{}: output before any command", i + 1);
                }
            }
        }
    }
    assert!(
        current.is_none(),
        "README.md: a runnable block is not closed"
    );
    blocks
}

/// The exit status a command's `# exit N` comment names, else 0.
fn expected_exit(cmd: &str) -> i32 {
    cmd.split_once("# exit ")
        .and_then(|(_, n)| n.split_whitespace().next())
        .map(|n| n.parse().expect("# exit N"))
        .unwrap_or(0)
}

/// A line's shape: blanks collapsed, numbers as `0`, durations as `DUR`.
fn shape(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.split_whitespace().collect::<Vec<_>>().join(" ");
    chars.push(' ');
    let mut in_number = false;
    for c in chars.chars() {
        if c.is_ascii_digit() || (in_number && c == '.') {
            if !in_number {
                out.push('0');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    // 0ms, 0s, 0m0s, 0h0m0s, 0d0h: one DUR.
    let mut s = out;
    for unit in ["0ms", "0us", "0µs", "0d", "0h", "0m", "0s"] {
        s = s.replace(unit, "\u{1}");
    }
    while s.contains("\u{1}\u{1}") {
        s = s.replace("\u{1}\u{1}", "\u{1}");
    }
    s.replace('\u{1}', "DUR").trim_end().to_string()
}

/// Deletes the block's lab whatever happens.
struct LabGuard(String);

impl Drop for LabGuard {
    fn drop(&mut self) {
        let _ = Command::new(lab_script()).args(["down", &self.0]).output();
    }
}

fn lab_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lab.sh")
}

fn run_block(block: &Block, index: usize) {
    require_lab();
    let name = format!("kpr{}x{index}", std::process::id());
    let _guard = LabGuard(name.clone());
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_kaprobe"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for (cmd, expected) in &block.steps {
        let run = cmd
            .strip_prefix("sudo ")
            .unwrap_or(cmd)
            .replace("lab1", &name);
        let mut c = Command::new("bash");
        c.args(["-c", &run])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("PATH", &path);
        let what = format!("README.md:{}: {cmd}", block.line);
        let (code, out, err, _) = run_bounded_for(c, &what, Duration::from_secs(60));
        assert_eq!(
            code,
            expected_exit(cmd),
            "{what}: exit status\n{}",
            describe(code, &out, &err)
        );
        let got: Vec<String> = out.lines().map(shape).collect();
        let want: Vec<String> = expected.iter().map(|l| shape(l)).collect();
        assert_eq!(
            got,
            want,
            "{what}: output shape differs from the README\nREADME:\n{}\nactual:\n{out}\nstderr:\n{err}",
            expected.join("\n")
        );
    }
}

/// Without a lab: the first screen holds the quick start, the README stays short, and the
/// shape rules behave.
fn the_readme_is_short_and_starts_with_a_quick_start() {
    let text = readme();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() <= 360, "README.md has {} lines", lines.len());
    let first = lines[..40.min(lines.len())].join("\n");
    for needle in [
        "## Quick start",
        "kaprobe list",
        "kaprobe probe",
        "scripts/demo.sh",
        "cargo test",
        "KAPROBE_REQUIRE_NETNS",
        "cargo install --path .",
    ] {
        assert!(
            first.contains(needle),
            "not in the first 40 lines: {needle}"
        );
    }
    // Prose and tables wrap; only commands and their output may run long.
    let mut in_code = false;
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with("```") {
            in_code = !in_code;
        } else if !in_code {
            assert!(
                l.chars().count() <= 200,
                "README.md:{}: a line of {} characters",
                i + 1,
                l.chars().count()
            );
        }
    }
    assert!(runnable_blocks(&text).len() >= 3, "runnable blocks");
    assert_eq!(
        shape("198.18.0.2:40001-198.51.100.2:9000 alive rtt=0.119ms probes=1"),
        shape("198.18.0.2:40001-198.51.100.2:9000 alive rtt=12.5ms probes=1")
    );
    assert_eq!(shape("next=1m12.9s"), shape("next=59.9s"));
    assert_ne!(shape("alive probes=1"), shape("dead probes=1"));
    assert_eq!(expected_exit("kaprobe probe X   # exit 3"), 3);
}

fn main() {
    let blocks = runnable_blocks(&readme());
    let mut tests = vec![common::Test::new(
        "the_readme_is_short_and_starts_with_a_quick_start",
        the_readme_is_short_and_starts_with_a_quick_start,
    )];
    for (i, block) in blocks.into_iter().enumerate() {
        tests.push(common::Test::new(
            format!("readme_block_at_line_{}", block.line),
            move || run_block(&block, i),
        ));
    }
    common::run_tests(tests)
}
