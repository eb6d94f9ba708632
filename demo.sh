#!/usr/bin/env bash
# End-to-end demo on a fresh machine: set up .venv, render the synthetic room, train NeFeS (stage 1),
# DFNet, NeFeS (stages 2-3), refine the test queries and print a before/after table.
#
#   bash demo.sh                                   # synthetic room, everything under logs/demo
#   bash demo.sh --scene DIR --dataset_type 7Scenes|7Scenes_colmap|Cambridge --out DIR
#
# Rerunning after an interruption resumes where it stopped.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/venv.sh
exec "$VENV_PY" demo.py "$@"
