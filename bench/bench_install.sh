#!/usr/bin/env bash
# Times the README's install command on clean caches, from a clean copy of HEAD:
#   python3 -m venv .venv && . .venv/bin/activate && pip install uv==0.13.9 && uv sync --frozen --inexact --extra dev
# and, with --pip, the pip route without the lock (pip install -U pip, then
# pip install -e ./risk_sim -e '.[dev]'; pip before 23.3 cannot resolve that pair).
# Every cache is a fresh empty directory, so each package is downloaded again.
# Usage: bash bench/bench_install.sh [--pip]
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
PYTHON=${PYTHON:-python3.11}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 UV_CACHE_DIR="$WORK/uv-cache"
timed() {  # label, command...: prints wall and CPU (user + sys, children included) seconds
  local wall user sys
  /usr/bin/time -o "$WORK/time.txt" -f '%e %U %S' "${@:2}" >/dev/null 2>&1
  read -r wall user sys <"$WORK/time.txt"
  printf '%-60s %6.1f s wall, %6.1f s CPU\n' "$1" "$wall" "$(echo "$user + $sys" | bc)"
}
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg), cores: $(nproc)"
mkdir -p "$WORK/uv"
git -C "$REPO" archive HEAD | tar -x -C "$WORK/uv"
cd "$WORK/uv"
all_start=$(date +%s.%N)
timed "python3 -m venv .venv" "$PYTHON" -m venv .venv
timed "pip install uv==0.13.9" .venv/bin/pip install -q uv==0.13.9
timed "uv sync --frozen --inexact --extra dev" env VIRTUAL_ENV="$PWD/.venv" \
  .venv/bin/uv sync -q --frozen --inexact --extra dev
printf '%-60s %6.1f s wall\n' "README install command, total" \
  "$(echo "$(date +%s.%N) - $all_start" | bc)"
.venv/bin/python -c "import risk_monitor, risk_sim, dagster_dg_cli" && echo "environment imports: ok"
if [ "${1:-}" = "--pip" ]; then
  mkdir -p "$WORK/pip"
  cd "$WORK/pip"
  git -C "$REPO" archive HEAD | tar -x -C .
  "$PYTHON" -m venv .venv
  .venv/bin/pip install -q -U pip
  timed "pip install -e ./risk_sim -e '.[dev]' (no lock)" .venv/bin/pip install -q -e ./risk_sim -e '.[dev]'
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
