//! The layers point one way (wire -> engine -> sys -> fleet -> cmd -> cli, with the shared
//! modules ranked between them, README "Code layout"): runs
//! `scripts/check-layers.sh` on this crate, and on a small tree with upward imports to show
//! that it notices them. Needs no root.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn check_layers(root: &Path) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check-layers.sh");
    Command::new("bash")
        .arg(&script)
        .arg(root)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()))
}

/// A scratch folder, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("kaprobe-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        Scratch(dir)
    }

    fn write(&self, path: &str, text: &str) {
        let path = self.0.join(path);
        std::fs::create_dir_all(path.parent().expect("a file in a folder")).unwrap();
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What the check says about a scratch tree it must refuse, one line per upward use, sorted.
fn complaints(tree: &Scratch) -> Vec<String> {
    let out = check_layers(&tree.0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let mut lines: Vec<String> = stdout.lines().map(str::to_owned).collect();
    lines.sort_unstable();
    lines
}

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let out = check_layers(Path::new(env!("CARGO_MANIFEST_DIR")));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("every layer imports only from below"),
        "{stdout}"
    );
}

#[test]
fn upward_imports_are_named_one_per_line() {
    let tree = Scratch::new("layers");
    // Upward, in each form: a path, a use group over several lines, a nested group.
    tree.write(
        "src/wire/a.rs",
        "use crate::seq::SeqNumber;\nfn f() { crate::engine::g(); }\n",
    );
    tree.write(
        "src/engine.rs",
        "use crate::{\n    flow::Flow,\n    sys::diag,\n};\n",
    );
    tree.write(
        "src/sys/b.rs",
        "use crate::{engine::{Origin, ConnView}, fleet::Fleet};\n",
    );
    tree.write("src/fleet.rs", "use crate::cmd::args::X;\n");
    tree.write("src/cmd/c.rs", "use crate::cli::Cli;\n");
    // Downward, or only in comments: fine.
    tree.write(
        "src/cmd/d.rs",
        "use crate::fleet::Fleet; // crate::cli\n/* crate::cli */\n",
    );
    tree.write(
        "src/sys/e.rs",
        "use crate::{flow::Cause, wire::{self, Origin}};\n",
    );

    assert_eq!(
        complaints(&tree),
        [
            "src/cmd/c.rs: cmd imports crate::cli, a layer above it",
            "src/engine.rs: engine imports crate::sys, a layer above it",
            "src/fleet.rs: fleet imports crate::cmd, a layer above it",
            "src/sys/b.rs: sys imports crate::engine, which it must not know",
            "src/sys/b.rs: sys imports crate::fleet, a layer above it",
            "src/wire/a.rs: wire imports crate::engine, a layer above it",
        ]
    );
}

#[test]
fn shared_modules_have_ranks_too() {
    let tree = Scratch::new("layers-shared");
    // Upward from the modules beside the layers: the fleet printing, the error type
    // reaching the I/O loop, a test file beside its module, a module without a rank.
    tree.write("src/fleet.rs", "use crate::output::Reporter;\n");
    tree.write(
        "src/error.rs",
        "use crate::{exit::ExitStatus, fleet::Fleet};\n",
    );
    tree.write("src/engine/tests.rs", "use crate::exit::ExitStatus;\n");
    tree.write(
        "src/seq.rs",
        "fn f() { crate::flow::g(); crate::wire::h(); }\n",
    );
    tree.write("src/gadget.rs", "use crate::seq::SeqNumber;\n");
    // Allowed by rank, but the edges must not know the engine's types.
    tree.write(
        "src/sys/cap.rs",
        "use crate::{engine::Origin, wire::Packet};\n",
    );
    // Downward or sideways: fine.
    tree.write(
        "src/output.rs",
        "use crate::{engine::Verdict, metrics, sys::diag};\n",
    );
    tree.write(
        "src/exit.rs",
        "use crate::{engine::VerdictKind, error::Error};\n",
    );
    tree.write(
        "src/cmd/p.rs",
        "use crate::{cmd::prober, output::Reporter};\n",
    );

    assert_eq!(
        complaints(&tree),
        [
            "src/engine/tests.rs: engine imports crate::exit, a layer above it",
            "src/error.rs: error imports crate::fleet, a layer above it",
            "src/fleet.rs: fleet imports crate::output, a layer above it",
            "src/gadget.rs: module gadget has no rank in scripts/check-layers.sh",
            "src/seq.rs: seq imports crate::wire, a layer above it",
            "src/sys/cap.rs: sys imports crate::engine, which it must not know",
        ]
    );
}
