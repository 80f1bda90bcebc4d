#!/usr/bin/env bash
# Builds the Debian package of kaprobe with cargo-deb (`cargo install cargo-deb --locked`).
#
#   scripts/deploy/build-deb.sh [--binary PATH] [--output DIR]
#
# Builds the release binary (or takes PATH, e.g. a test's debug build), stages it and what
# it generates (man pages and shell completions: `kaprobe man`, `kaprobe completions SHELL`;
# skipped while the binary lacks them) under target/deb-assets/, then runs
# `cargo deb --no-build`, which packages them as [package.metadata.deb] in Cargo.toml says.
# The last line on stdout is the .deb's path.
set -euo pipefail
cd "$(dirname "$0")/../.."

bin=
output=target/debian
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) bin="${2:?--binary needs a path}"; shift 2 ;;
        --output) output="${2:?--output needs a directory}"; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "build-deb.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

if ! cargo deb --version >/dev/null 2>&1; then
    echo "build-deb.sh: cargo-deb is missing; install it with: cargo install cargo-deb --locked" >&2
    exit 1
fi

fast=1
if [ -z "$bin" ]; then
    cargo build --locked --release --bin kaprobe >&2
    bin="${CARGO_TARGET_DIR:-target}/release/kaprobe"
    fast=0
fi
[ -x "$bin" ] || { echo "build-deb.sh: $bin is not an executable" >&2; exit 1; }

stage=target/deb-assets
rm -rf "$stage"
mkdir -p "$stage/bin"
# Debian ships binaries without their symbol tables (debian-policy 10.1).
if ! strip --strip-unneeded -o "$stage/bin/kaprobe" "$bin" 2>/dev/null; then
    echo "build-deb.sh: cannot strip $bin; packaging it as it is" >&2
    cp "$bin" "$stage/bin/kaprobe"
fi
doc="$stage/usr/share/doc/kaprobe"
mkdir -p "$doc/examples"
cp scripts/deploy/kaprobe-watch.conf.example "$doc/examples/"

# Man pages: kaprobe(1), and kaprobe-SUBCOMMAND(1) for each subcommand it knows.
man="$stage/usr/share/man/man1"
tmp="$stage/tmp"
mkdir -p "$tmp"
if "$bin" man >"$tmp/kaprobe.1" 2>/dev/null && grep -q '^\.TH' "$tmp/kaprobe.1"; then
    mkdir -p "$man"
    gzip -9n <"$tmp/kaprobe.1" >"$man/kaprobe.1.gz"
    for sub in $("$bin" --help | awk '/^Commands:/{on=1; next} on && /^  [a-z]/{print $1} on && /^$/{exit}'); do
        case "$sub" in help|man|completions) continue ;; esac
        if "$bin" man "$sub" >"$tmp/kaprobe-$sub.1" 2>/dev/null && grep -q '^\.TH' "$tmp/kaprobe-$sub.1"; then
            gzip -9n <"$tmp/kaprobe-$sub.1" >"$man/kaprobe-$sub.1.gz"
        fi
    done
    echo "build-deb.sh: man pages: $(ls "$man" | tr '\n' ' ')" >&2
else
    echo "build-deb.sh: no man page (this kaprobe has no 'man' subcommand)" >&2
fi

# Shell completions, where each shell looks for them.
completion() { # SHELL DEST
    if "$bin" completions "$1" >"$tmp/c" 2>/dev/null && [ -s "$tmp/c" ]; then
        mkdir -p "$(dirname "$2")"
        cp "$tmp/c" "$2"
        echo "build-deb.sh: $1 completion" >&2
    fi
}
completion bash "$stage/usr/share/bash-completion/completions/kaprobe"
completion zsh "$stage/usr/share/zsh/vendor-completions/_kaprobe"
completion fish "$stage/usr/share/fish/vendor_completions.d/kaprobe.fish"
rm -rf "$tmp"

mkdir -p "$output"
args=(--no-build --output "$output")
[ "$fast" = 0 ] || args+=(--fast)
deb=$(cargo deb "${args[@]}" | tail -n 1)
[ -f "$deb" ] || { echo "build-deb.sh: cargo deb made no package ($deb)" >&2; exit 1; }
echo "$deb"
