#!/usr/bin/env bash
# Set-up in one command: torch for this machine, requirements.txt, this checkout in editable mode, and what
# the embedded default data and encoder need (data/install_default_requirements.sh). Safe to run again: what
# is there is kept.
#
#   bash setup.sh                     PYTHON=/path/to/python bash setup.sh   (default: python3)
#   EXTRAS=hf,tensorboard,test bash setup.sh   (the optional installs of pyproject.toml; default tensorboard,test)
#
# torch: one already installed within requirements.txt's range is kept (a CUDA build you chose stays).
# Otherwise torch 2.13.0: the CPU build where there is no GPU (no working nvidia-smi), the CUDA build where
# there is one. On Linux the plain PyPI wheel is the CUDA one; for the CPU build without a local wheel, set
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
PYTHON="${PYTHON:-python3}"
EXTRAS="${EXTRAS-tensorboard,test}"
TORCH_VERSION=2.13.0

if "$PYTHON" - <<'EOF_PY'
import sys
from importlib.metadata import PackageNotFoundError, version

try:
    major, minor = (int(part) for part in version("torch").split(".")[:2])
except PackageNotFoundError:
    sys.exit(1)
sys.exit(0 if (2, 11) <= (major, minor) < (2, 16) else 1)  # requirements.txt: torch>=2.11,<2.16
EOF_PY
then
    echo "torch: $("$PYTHON" -c 'import torch; print(torch.__version__)') already installed"
else
    # The same pin either way; which build pip finds is what differs (see above).
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
        echo "installing torch==$TORCH_VERSION (a GPU is present: the CUDA build)"
    else
        echo "installing torch==$TORCH_VERSION (no GPU found: the CPU build)"
    fi
    "$PYTHON" -m pip install --quiet "torch==$TORCH_VERSION"
fi

echo "installing requirements.txt"
"$PYTHON" -m pip install --quiet -r requirements.txt

# The scripts in benchmarks/, data/, scripts/ and testing/ find the top-level modules through this install
# (pyproject.toml lists them); it points at these files, so edits need no reinstall. An environment holds one
# such install: setting up a second checkout in it makes that checkout the one those scripts import.
installed_from="$("$PYTHON" -m pip show tawt 2>/dev/null | sed -n 's/^Editable project location: //p' || true)"
if [ "$installed_from" = "$PWD" ]; then
    echo "this checkout: already installed in editable mode"
else
    if [ -n "$installed_from" ]; then
        echo "note: the editable install pointed at $installed_from; it now points at this checkout, $PWD"
    fi
    echo "installing this checkout in editable mode (pip install -e .)"
    "$PYTHON" -m pip install --quiet --no-deps --editable .
fi
# The extras (pyproject.toml): tensorboard (--report_to tensorboard), test (pytest, hypothesis), hf (datasets
# for process_data.py hf, accelerate for the Hugging Face Trainer). Requirements already satisfied, torch
# included, are kept.
if [ -n "$EXTRAS" ]; then
    echo "installing the extras: $EXTRAS (pip install -e \".[$EXTRAS]\")"
    "$PYTHON" -m pip install --quiet --editable ".[$EXTRAS]"
fi
PYTHON="$PYTHON" bash data/install_default_requirements.sh
echo "set-up done; run the tests with: $PYTHON -m pytest -q tests"
