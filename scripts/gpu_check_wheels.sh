#!/usr/bin/env bash
# Fill .whl/ with the pure-Python packages scripts/gpu_check.sh needs beyond a CUDA image's own
# (torch, transformers, tokenizers, numpy, PyYAML are there; this repository's configuration layer
# also imports omegaconf and hydra, and omegaconf its antlr4 runtime). Run it here, where pip
# reaches a package index, then carry .whl to the GPU machine: gpu_check.sh installs from it with
# no network. Pure-Python wheels only (py3-none-any), so the platform does not matter.
#
#   bash scripts/gpu_check_wheels.sh      # writes .whl/ (ignored by git via .git/info/exclude)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
version() { "$PY" -c "from importlib.metadata import version; print(version('$1'))"; }
# the versions this environment runs (the ones the test suite passed with)
"$PY" -m pip download --quiet --no-deps --only-binary=:all: -d .whl \
  "hydra-core==$(version hydra-core)" "omegaconf==$(version omegaconf)"
# antlr4-python3-runtime 4.9.3 is published as a source archive only: build its wheel here
"$PY" -m pip wheel --quiet --no-deps -w .whl "antlr4-python3-runtime==$(version antlr4-python3-runtime)"
ls -l .whl
