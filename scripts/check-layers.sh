#!/usr/bin/env bash
# Checks that kaprobe's layers point one way: wire -> engine -> sys -> fleet -> cmd -> cli,
# nothing importing from a layer above its own (README "Tests").
#
#   src/wire/**        nothing from engine, sys, fleet, cmd, cli
#   src/engine*.rs     nothing from sys, fleet, cmd, cli
#   src/sys/**         nothing from fleet, cmd, cli
#   src/fleet*.rs      nothing from cmd, cli
#   src/cmd/**         nothing from cli
#
# A use is any `crate::LAYER` path outside a comment, also inside a `use crate::{...}` group.
# Test code counts too. The shared modules beside the layers (error, exit, flow, seq, output,
# filter, ...) are not checked here.
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

failed=0

# check LAYER "FORBIDDEN ..." FILE...
check() {
    local layer=$1 forbidden=$2 f m
    shift 2
    for f in "$@"; do
        [ -f "$f" ] || continue
        for m in $(crate_modules "$f" | sort -u); do
            case " $forbidden " in
            *" $m "*)
                echo "${f#"$root"/}: $layer imports crate::$m, a layer above it"
                failed=1
                ;;
            esac
        done
    done
}

shopt -s nullglob globstar
check wire "engine sys fleet cmd cli" "$src"/wire/**/*.rs
check engine "sys fleet cmd cli" "$src"/engine*.rs "$src"/engine/**/*.rs
check sys "fleet cmd cli" "$src"/sys/**/*.rs
check fleet "cmd cli" "$src"/fleet*.rs "$src"/fleet/**/*.rs
check cmd "cli" "$src"/cmd/**/*.rs

if [ "$failed" = 0 ]; then
    echo "check-layers: every layer imports only from below"
fi
exit "$failed"
