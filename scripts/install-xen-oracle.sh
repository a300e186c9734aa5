#!/usr/bin/env bash
# Unpack Debian's xen-utils-4.17 (never installed: no services, no
# dependencies) so tests can run Xen's own `verify-stream-v2` and
# `convert-legacy-stream` as an external oracle (docs/format.md §9).
#
# Usage: scripts/install-xen-oracle.sh [DIR]     (default: target/xen-oracle)
#
# Idempotent: if DIR already holds the tools, nothing is downloaded.
# Prints the tool paths and the PYTHONPATH they need, as KEY=VALUE lines.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${1:-$repo_root/target/xen-oracle}"
wanted="${HVM_XEN_ORACLE_PACKAGE:-xen-utils-4.17}"

die() { echo "install-xen-oracle: $*" >&2; exit 1; }

find_tool() { # name -> path under $dir, or nothing
    find "$dir" -type f -path '*/usr/lib/xen-*/bin/'"$1" 2>/dev/null | sort | tail -n 1
}

report() {
    local verify convert libxc pypath
    verify="$(find_tool verify-stream-v2)"
    convert="$(find_tool convert-legacy-stream)"
    libxc="$(find "$dir" -type f -path '*/xen/migration/libxc.py' 2>/dev/null | sort | tail -n 1)"
    [ -n "$verify" ] && [ -n "$convert" ] && [ -n "$libxc" ] || return 1
    # libxc.py lives in PYTHONPATH/xen/migration/.
    pypath="$(dirname "$(dirname "$(dirname "$libxc")")")"
    # Smoke test: the tools need only Python 3's standard library.
    PYTHONPATH="$pypath" python3 "$verify" --help >/dev/null 2>&1 \
        || die "$verify does not run with python3 (PYTHONPATH=$pypath)"
    echo "verify-stream-v2=$verify"
    echo "convert-legacy-stream=$convert"
    echo "PYTHONPATH=$pypath"
}

if report 2>/dev/null; then
    exit 0
fi

command -v apt-get >/dev/null || die "apt-get not found (a Debian-like system is needed)"
command -v dpkg >/dev/null || die "dpkg not found"
command -v python3 >/dev/null || die "python3 not found"

# Pick the package: the exact name if apt knows it (after one update if the
# lists are empty or stale), else the closest xen-utils-4.x name.
have_pkg() { apt-cache show "$1" >/dev/null 2>&1; }
sudo_cmd=()
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null; then sudo_cmd=(sudo); fi

pkg=""
if have_pkg "$wanted"; then
    pkg="$wanted"
else
    echo "install-xen-oracle: $wanted unknown to apt; running apt-get update" >&2
    "${sudo_cmd[@]}" apt-get update -qq >&2 || die "apt-get update failed"
    if have_pkg "$wanted"; then
        pkg="$wanted"
    else
        pkg="$(apt-cache search --names-only '^xen-utils-4\.[0-9]+$' | awk '{print $1}' \
            | sort -V | tail -n 1)"
        [ -n "$pkg" ] || die "no xen-utils-4.x package in the apt lists"
        echo "install-xen-oracle: using $pkg instead of $wanted" >&2
    fi
fi

mkdir -p "$dir"
debs="$dir/.debs"
mkdir -p "$debs"
deb="$(find "$debs" -maxdepth 1 -name "${pkg}_*.deb" | sort | tail -n 1)"
if [ -z "$deb" ]; then
    # apt-get download writes into the current directory.
    (cd "$debs" && apt-get download -q "$pkg" >&2) || die "apt-get download $pkg failed"
    deb="$(find "$debs" -maxdepth 1 -name "${pkg}_*.deb" | sort | tail -n 1)"
    [ -n "$deb" ] || die "apt-get download $pkg produced no .deb in $debs"
fi

dpkg -x "$deb" "$dir" || die "dpkg -x $deb failed"
report || die "$deb unpacked into $dir but verify-stream-v2 / convert-legacy-stream / xen.migration are missing"
