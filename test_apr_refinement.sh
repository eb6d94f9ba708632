#!/usr/bin/env bash
# APR + NeFeS refinement ("DFNet + NeFeS50") with the paper's DFM configs, then the medians.
#
#   bash test_apr_refinement.sh                      # every 7-Scenes and Cambridge scene
#   bash test_apr_refinement.sh 7Scenes chess fire   # some scenes of one dataset
#   bash test_apr_refinement.sh Cambridge shop -- --pose_only 3 --lr_r 0.0087 --lr_t 0.01
#   NPROC=4 bash test_apr_refinement.sh 7Scenes chess   # each scene under torchrun, 4 ranks (one GPU each on CUDA)
#
# Needs the data (data/setup_7scenes.py, data/setup_cambridge.py) and the released models under
# logs/paper_models/ (paths in config/<dataset>/dfnet/config_<scene>_DFM.txt). Arguments after --
# are passed to test_refinement.py. Results: logs/<expname>/ (see README, "Result files").
set -euo pipefail
cd "$(dirname "$0")"
PY=python3; [ -x .venv/bin/python ] && PY=.venv/bin/python
datasets=(7Scenes Cambridge); scenes=()
if [ $# -ge 1 ] && [ "$1" != "--" ]; then datasets=("$1"); shift; fi
while [ $# -ge 1 ] && [ "$1" != "--" ]; do scenes+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
run=("$PY")
if [ -n "${NPROC:-}" ]; then
  [[ "$NPROC" =~ ^[1-9][0-9]*$ ]] || { echo "error: NPROC=$NPROC: expected a number of processes (1, 2, ...)" >&2; exit 2; }
  run=("$PY" -m torch.distributed.run --standalone --nproc_per_node="$NPROC")
fi
mkdir -p logs
for ds in "${datasets[@]}"; do
  case $ds in
    7Scenes) all=(chess fire heads office pumpkin kitchen stairs) ;;
    Cambridge) all=(kings hospital shop church) ;;
    *) echo "error: unknown dataset '$ds' (7Scenes or Cambridge)" >&2; exit 2 ;;
  esac
  for scene in "${scenes[@]:-${all[@]}}"; do
    cfg=config/$ds/dfnet/config_${scene}_DFM.txt
    [ -f "$cfg" ] || { echo "error: config not found: $cfg" >&2; exit 2; }
    echo "=== $ds $scene"
    "${run[@]}" test_refinement.py --config "$cfg" "$@" 2>&1 | tee "logs/refine_${ds}_${scene}.log"
  done
done
