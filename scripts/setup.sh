#!/usr/bin/env bash
# Install everything the build and the tests need on a fresh Debian machine
# (CI starts from a clean clone). Idempotent and quiet when all is present.
#
#  - libxen-dev, libclang-dev: the `xen` feature of hvm-save (xenctrl's
#    bindings are generated with bindgen against Xen's headers);
#  - python3: Xen's own verify-stream-v2 / convert-legacy-stream (the test
#    oracle, unpacked from Debian's xen-utils-4.17 without installing it);
#  - cargo-fuzz: builds the fuzz targets (stable toolchain + RUSTC_BOOTSTRAP);
#  - chromium, only when HVM_REQUIRE names it (.ci/run does): the headless
#    screenshot check of `hvm-inspect plot`'s SVGs. It is large (~330 MB
#    installed), so a developer's test run does without it and that one
#    test skips;
#  - with HVM_SETUP_FORENSIC=1 (scripts/test.sh sets it): the consumers the
#    `extract` tests hand their files to — binutils (readelf), gdb, and
#    pinned pyelftools and volatility3 in a venv under target/forensic-venv
#    (the main job never needs them).
set -euo pipefail
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# Installs those of the named Debian packages that are missing.
apt_need() {
    local need=() pkg
    for pkg in "$@"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
    done
    if [ "${#need[@]}" -gt 0 ]; then
        echo "setup: installing ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${need[@]}" >/dev/null
    fi
}

pkgs=(libxen-dev libclang-dev python3)
if [[ ",${HVM_REQUIRE:-}," == *,chromium,* ]]; then
    pkgs+=(chromium)
fi
apt_need "${pkgs[@]}"

"$repo_root/scripts/install-xen-oracle.sh" "$repo_root/target/xen-oracle" >/dev/null

if [ "${HVM_SETUP_FUZZ:-0}" = 1 ] && ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "setup: installing cargo-fuzz"
    cargo install --quiet --locked cargo-fuzz
fi

if [ "${HVM_SETUP_FORENSIC:-0}" = 1 ]; then
    apt_need binutils gdb python3-venv
    venv="$repo_root/target/forensic-venv"
    pins="pyelftools==0.33 volatility3==2.28.2"
    if [ "$(cat "$venv/pins" 2>/dev/null)" != "$pins" ]; then
        echo "setup: installing $pins into target/forensic-venv"
        rm -rf "$venv"
        python3 -m venv "$venv"
        # shellcheck disable=SC2086
        "$venv/bin/pip" install --quiet --disable-pip-version-check $pins
        echo "$pins" >"$venv/pins"
    fi
fi
