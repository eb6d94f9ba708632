#!/usr/bin/env bash
# Train NeFeS for one scene, as the paper does: stage 1 (colour only), then stages 2+3
# (colour + features, then + fusion) starting from the stage-1 weights.
#
#   bash train_nefes.sh 7Scenes chess          # config/7Scenes/dfnet/config_chess_stage{1,2}.txt
#   bash train_nefes.sh Cambridge shop --device cuda
#   bash train_nefes.sh synthetic room          # the tiny CPU configs in config/synthetic/
#
# Extra arguments are passed to both runs (e.g. --field_type nefes_mlp, --device cpu).
# Rerunning after an interruption resumes each stage from its own last checkpoint.
set -euo pipefail
cd "$(dirname "$0")"
[ $# -ge 2 ] || { sed -n '2,11p' "$0"; exit 2; }
dataset=$1; scene=$2; shift 2
if [ "$dataset" = synthetic ]; then dir=config/synthetic; else dir=config/$dataset/dfnet; fi
s1=$dir/config_${scene}_stage1.txt; s2=$dir/config_${scene}_stage2.txt
for f in "$s1" "$s2"; do [ -f "$f" ] || { echo "error: config not found: $f" >&2; exit 2; }; done
PY=python3; [ -x .venv/bin/python ] && PY=.venv/bin/python
mkdir -p logs
"$PY" run_nefes.py --config "$s1" "$@" 2>&1 | tee "logs/train_nefes_${scene}_stage1.log"
"$PY" run_nefes.py --config "$s2" "$@" 2>&1 | tee "logs/train_nefes_${scene}_stage2.log"
