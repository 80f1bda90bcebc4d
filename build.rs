//! Compiles the eBPF socket iterator (src/sys/kernel_seq/tcp_seq.bpf.c) into OUT_DIR with
//! clang. Where clang is missing or fails, the object committed beside the source is used
//! instead, with a warning; `KAPROBE_BPF_OBJECT` (fresh or committed) tells the binary which.

use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCE: &str = "src/sys/kernel_seq/tcp_seq.bpf.c";
const COMMITTED: &str = "src/sys/kernel_seq/tcp_seq.bpf.o";

fn main() {
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-changed={COMMITTED}");
    println!("cargo:rerun-if-env-changed=CLANG");
    // kaprobe_build_info{target} (src/metrics/process.rs).
    println!(
        "cargo:rustc-env=KAPROBE_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );

    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let object = out.join("tcp_seq.bpf.o");
    let kind = match compile(Path::new(SOURCE), &object) {
        Ok(()) => "fresh",
        Err(why) => {
            println!(
                "cargo:warning=using the committed {COMMITTED}: cannot compile {SOURCE} ({why}); \
                 install clang and libbpf-dev to build it from source"
            );
            std::fs::copy(COMMITTED, &object)
                .unwrap_or_else(|e| panic!("copy {COMMITTED} to {}: {e}", object.display()));
            "committed"
        }
    };
    println!("cargo:rustc-env=KAPROBE_BPF_OBJECT={kind}");
}

/// The compiler: $CLANG, else the first of `clang`, `clang-NN` that runs.
fn clang() -> Option<String> {
    if let Some(c) = std::env::var_os("CLANG") {
        return Some(c.to_string_lossy().into_owned());
    }
    let names = ["clang".to_string()]
        .into_iter()
        .chain((14..=21).rev().map(|v| format!("clang-{v}")));
    names.into_iter().find(|name| {
        Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// The Debian multiarch include directory of the target (for <asm/types.h>).
fn arch_include() -> Option<&'static str> {
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").ok()?;
    Some(match arch.as_str() {
        "x86_64" => "/usr/include/x86_64-linux-gnu",
        "aarch64" => "/usr/include/aarch64-linux-gnu",
        "x86" => "/usr/include/i386-linux-gnu",
        "arm" => "/usr/include/arm-linux-gnueabihf",
        "riscv64" => "/usr/include/riscv64-linux-gnu",
        "powerpc64" => "/usr/include/powerpc64le-linux-gnu",
        "s390x" => "/usr/include/s390x-linux-gnu",
        "loongarch64" => "/usr/include/loongarch64-linux-gnu",
        _ => return None,
    })
}

fn compile(source: &Path, object: &Path) -> Result<(), String> {
    let clang = clang().ok_or("no clang found")?;
    let mut cmd = Command::new(&clang);
    cmd.args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"]);
    if let Some(dir) = arch_include() {
        cmd.arg(format!("-I{dir}"));
    }
    cmd.arg("-c").arg(source).arg("-o").arg(object);
    let out = cmd.output().map_err(|e| format!("run {clang}: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().find(|l| l.contains("error")).unwrap_or("");
        return Err(format!("{clang} failed ({}): {}", out.status, first.trim()));
    }
    Ok(())
}
