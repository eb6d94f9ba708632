# Sourced by test.sh and demo.sh: make sure .venv exists and holds requirements.txt.
PYTHON_BIN=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON_BIN --version)"
  "$PYTHON_BIN" -m venv .venv
fi
VENV_PY=.venv/bin/python
stamp=.venv/.requirements.sha
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing requirements into .venv (torch==2.13.0 CPU wheel on this machine)"
  "$VENV_PY" -m pip install -q --disable-pip-version-check -r requirements.txt 2>&1 | grep -v "is ignored: it is neither" || true
  "$VENV_PY" -c "import torch, numpy, configargparse, cv2, tqdm, matplotlib" || { echo "[setup] install failed"; return 1 2>/dev/null || exit 1; }
  echo "$want" > "$stamp"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
