#!/usr/bin/env bash
# Reproduce Tables 1 (7-Scenes, SfM pseudo-GT) and 2 (Cambridge) of the NeFeS paper from the released
# result files, and show how to score your own results.
#
#   bash eval.sh [PAPER_RESULT_DIR]     # default: ../shared/nefes-reference/paper_result
# (uses .venv/bin/python when present, else $PYTHON or python3)
#
# Writes logs/eval/paper_tables.{txt,json}. Scoring your own N×12 result files (row-major 3x4
# camera-to-world poses in the APR frame, metres; what test_refinement.py writes):
#
#   python eval.py --gt GT.txt --pred RESULT.txt [--json out.json] [--plot_dir DIR]
#   python eval.py --gt GT.txt --pred APR.txt --pred REFINED.txt --name DFNet --name DFNet+NeFeS50
#   python eval.py --config CFG [--pred RESULT.txt]   # GT = test split of CFG's dataset; default
#                  RESULT = <basedir>/<expname>/<PoseEstimatorType>_<scene>_NeFeS<opt_iter>_APR_pose_results.txt
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
ROOT=${1:-../shared/nefes-reference/paper_result}
mkdir -p logs/eval
"$PY" eval.py --paper_tables --root "$ROOT" --json logs/eval/paper_tables.json | tee logs/eval/paper_tables.txt
