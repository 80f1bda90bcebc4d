#!/usr/bin/env bash
# Checks that kaprobe's modules point one way (CONTRIBUTING.md "Code layout"): every top-level module
# of the crate has a rank, and a file may name through `crate::` only modules of its own rank
# or below.
#
#   0  seq flow                 numbers and 4-tuples, no imports
#   1  wire keepalive_track     packet layouts, the passive keepalive tracker
#   2  engine                   the pure time/intvl/probes state machine
#   3  exit error               the one exit status and the error type
#   4  sys filter               sockets, netlink, namespaces, capabilities; connection filters
#   5  fleet                    the I/O loop over narrow traits
#   6  prober output metrics    the library's entry point (Prober, Options, Report); rendering
#                               of events and verdicts; Prometheus families
#   7  cmd                      one module per subcommand; one connection resolved and probed (cmd::prober)
#   8  cli                      the command line
#
# Besides, `sys` names nothing of `engine`: the edges do not know the pure state machine's
# types, and the fleet joins the two (the types both use, `Origin` and `Cause`, live below
# them, in `wire` and `flow`).
#
# A use is any `crate::MODULE` path outside a comment, also inside a `use crate::{...}` group.
# Test code counts too. A module missing from the table is an error: give it a rank.
#
# Usage: scripts/check-layers.sh [ROOT]   (ROOT: the crate's folder, by default this one's
# parent). Prints one line per upward use; exit status 1 if there is any, 0 otherwise.
set -euo pipefail

root=${1:-"$(cd "$(dirname "$0")/.." && pwd)"}
src="$root/src"
if [ ! -d "$src" ]; then
    echo "check-layers: no src/ under $root" >&2
    exit 2
fi

declare -A rank=(
    [seq]=0 [flow]=0
    [wire]=1 [keepalive_track]=1
    [engine]=2
    [exit]=3 [error]=3
    [sys]=4 [filter]=4
    [fleet]=5
    [prober]=6 [output]=6 [metrics]=6
    [cmd]=7
    [cli]=8
)

# Pairs "MODULE:UNNAMED" where MODULE must not name UNNAMED although its rank allows it.
apart=("sys:engine")

# The top-level modules a file names through `crate::`, one per line.
crate_modules() {
    perl -0777 -ne '
        s{//[^\n]*}{}g;            # line and doc comments
        s{/\*.*?\*/}{}gs;          # block comments
        while (/\bcrate::/g) {
            my $rest = substr($_, pos($_));
            if ($rest =~ /^([a-z_][a-z0-9_]*)/) {
                print "$1\n";
            } elsif ($rest =~ /^\{/) {
                # A use group: the first name of each item at its top level.
                my ($d, $cur, @items) = (0, "");
                for my $c (split //, substr($rest, 1)) {
                    if ($c eq "{") { $d++; }
                    if ($c eq "}") { if ($d == 0) { push @items, $cur; last; } $d--; }
                    if ($c eq "," && $d == 0) { push @items, $cur; $cur = ""; next; }
                    $cur .= $c;
                }
                for my $it (@items) {
                    print "$1\n" if $it =~ /^\s*([a-z_][a-z0-9_]*)/;
                }
            }
        }
    ' "$1"
}

# The top-level module a file under src/ belongs to: src/sys/raw.rs -> sys,
# src/engine_tests.rs -> engine (a test file beside its module).
module_of() {
    local rel=${1#"$src"/}
    rel=${rel%%/*}
    rel=${rel%.rs}
    echo "${rel%_tests}"
}

failed=0
shopt -s nullglob globstar
for f in "$src"/**/*.rs; do
    own=$(module_of "$f")
    case $own in lib | main) continue ;; esac
    if [ -z "${rank[$own]+x}" ]; then
        echo "${f#"$root"/}: module $own has no rank in scripts/check-layers.sh"
        failed=1
        continue
    fi
    for m in $(crate_modules "$f" | sort -u); do
        [ "$m" = "$own" ] && continue
        if [ -z "${rank[$m]+x}" ]; then
            echo "${f#"$root"/}: crate::$m has no rank in scripts/check-layers.sh"
            failed=1
        elif [ "${rank[$m]}" -gt "${rank[$own]}" ]; then
            echo "${f#"$root"/}: $own imports crate::$m, a layer above it"
            failed=1
        elif [[ " ${apart[*]} " == *" $own:$m "* ]]; then
            echo "${f#"$root"/}: $own imports crate::$m, which it must not know"
            failed=1
        fi
    done
done

if [ "$failed" = 0 ]; then
    echo "check-layers: every layer imports only from below"
fi
exit "$failed"
