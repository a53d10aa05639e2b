#!/usr/bin/env bash
# The GPU run of the benchmarks, one command on a GPU machine (about 8 minutes at most):
#   bash bench/gpu.sh                          # the registry's current model (INKQ_REDIS_URL)
#   bash bench/gpu.sh --model DIR --out DIR    # a copy saved with `python -m bench.gpu --save-model DIR`
# Arguments go to `python -m bench.gpu` (see its --help); INKQ_BENCH_DEVICE=cpu smoke-tests it here.
set -euo pipefail
cd "$(dirname "$0")/.."
python=python3
if [ -x .venv/bin/python ]; then python=.venv/bin/python; fi
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || true
fi
exec "$python" -m bench.gpu --device "${INKQ_BENCH_DEVICE:-cuda}" "$@"
