#!/usr/bin/env bash
# Set up virsim on a Debian/Ubuntu machine: the system packages it drives (QEMU, gdb, the ARM
# toolchain for the examples, gcc for QEMU's coverage plugin, lcov's genhtml that the coverage
# tests render with, tmux and Chromium that the TUI tests drive `virsim tui` and its --serve page
# with) and a virtualenv in .venv with virsim and its test tools.
# Safe to run again; installs only what is missing. Uses sudo for apt-get when not root.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(qemu-system-arm qemu-utils gdb-multiarch gcc-arm-none-eabi binutils-arm-none-eabi
          libnewlib-arm-none-eabi make python3-venv gcc lcov tmux chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if ! command -v apt-get >/dev/null; then
    echo "setup: not a Debian-like system; install these yourself: ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}" >&2
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
echo "setup: ready — .venv/bin/virsim doctor" >&2
