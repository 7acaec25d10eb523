#!/usr/bin/env bash
# The prepared GPU check (issue #21): 7B-size speed and memory, the CUDA tests, the benchmark on CUDA.
#   examples/gpu_check.sh                      # on a CUDA machine, from the repository root; results in gpu_check_results/
#   examples/gpu_check.sh --dry-run            # the same code paths on CPU, tiny sizes
# Extra arguments go to `python -m omnisift_hf.tools.gpu_check` (see its --help). The working tree is used as it is
# (PYTHONPATH=src); wheels carried in .whl/ are installed into /tmp/site first when transformers 5.24 is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1 && [ ! -d /tmp/site ]; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
fi
if [ -d /tmp/site ]; then export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"; fi
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
# The version check imports neither transformers nor omnisift_hf: it names what is missing first.
"$PYTHON" src/omnisift_hf/tools/gpu_check.py --check-versions
exec "$PYTHON" -m omnisift_hf.tools.gpu_check "$@"
