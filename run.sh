#!/usr/bin/env bash
# One entry point that does all set-up on a fresh machine, then runs what you ask for:
#   bash run.sh demo [skmoe demo options]   the main job (report folder from the bundled SIB-200 sample)
#   bash run.sh test [pytest options]       the test suite (what CI runs)
#   bash run.sh skmoe ...                    any skmoe command inside the project's environment
set -euo pipefail
cd "$(dirname "$0")"
VENV=${SKMOE_VENV:-.venv}

if [ ! -x "$VENV/bin/python" ] || [ ! -f "$VENV/.skmoe-installed" ] || [ pyproject.toml -nt "$VENV/.skmoe-installed" ]; then
  echo "== setting up $VENV (first run only) =="
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  # The CPU wheel first: an unpinned torch would pull a multi-GB CUDA build.
  "$VENV/bin/python" -m pip install --quiet torch==2.13.0
  "$VENV/bin/python" -m pip install --quiet -e ".[test,docs]"
  touch "$VENV/.skmoe-installed"
fi

cmd=${1:-test}
shift || true
case "$cmd" in
  demo)
    exec "$VENV/bin/skmoe" demo "$@" ;;
  test)
    "$VENV/bin/ruff" check skmoe tests examples benchmarks
    HF_HUB_OFFLINE=1 exec "$VENV/bin/python" -m pytest -q --timeout 900 -p no:cacheprovider "$@" ;;
  skmoe)
    exec "$VENV/bin/skmoe" "$@" ;;
  *)
    echo "usage: bash run.sh demo|test|skmoe [args...]" >&2; exit 2 ;;
esac
