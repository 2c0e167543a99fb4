#!/usr/bin/env bash
# The prepared GPU check of the ICM engine (plural_icm/bench/gpu_check.py): one CUDA GPU, random
# weights of Llama-3.1-8B's architecture (no download), within about 10 minutes. Prints exactness
# (fp32, bf16), prefill tokens/s, fast vs reference per-proposal wall at n=128, and the projected
# wall time of a paper-size search (n=340). Output goes to ${OUT:-.}/gpu_check.log as well.
#
#   bash scripts/gpu_check.sh              # on a GPU machine
#   bash scripts/gpu_check.sh --cpu-smoke  # CPU, scaled-down shapes (what CI runs)
#
# Needs torch (CUDA build), transformers and this repository, whose configuration layer imports
# omegaconf and hydra. A GPU machine without a network takes those from .whl/ (fill it where pip
# works with scripts/gpu_check_wheels.sh, carry .whl along): they go to /tmp/site, nothing else
# changes. Installs nothing when everything imports.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
out="${OUT:-.}"
mkdir -p "$out"
if ! "$PY" -c 'import torch, transformers, tokenizers' 2>/dev/null; then
  echo "gpu_check.sh: installing transformers (torch must already be there)" >&2
  "$PY" -m pip install -q 'transformers>=4.56' tokenizers numpy
fi
if ! "$PY" -c 'import omegaconf, hydra' 2>/dev/null; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    echo "gpu_check.sh: installing $(ls .whl | tr '\n' ' ')from .whl/ into /tmp/site" >&2
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "gpu_check.sh: omegaconf/hydra missing and no .whl/ (run scripts/gpu_check_wheels.sh where pip works)" >&2
    "$PY" -m pip install -q 'omegaconf>=2.3' 'hydra-core>=1.3'
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
timeout "${GPU_CHECK_TIMEOUT_S:-900}" "$PY" -m plural_icm.bench.gpu_check "$@" 2>&1 | tee "$out/gpu_check.log"
