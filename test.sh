#!/usr/bin/env bash
# One command on a fresh machine: create .venv (Python 3.11) if missing, install the pinned
# requirements (skipped when unchanged), run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
exec "$VENV_PY" -m pytest "$@"
