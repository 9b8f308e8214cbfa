#!/usr/bin/env bash
# One command for a fresh GPU machine that already has a CUDA build of torch (and nvcc):
#
#   benchmarks/gpu_check.sh [PYTHON]        (default: python3)
#
#   1. builds mdesc in place with its CUDA kernels (FORCE_CUDA=1, arch of GPU 0)
#   2. runs tests/test_cuda.py and tests/test_cells.py (CUDA == CPU == reference, identities, both
#      CUDA paths, every cell: LSTM, GRU, tanh and relu RNN), and the ensemble op's tests
#      tests/test_ensemble_cuda.py and tests/test_ensemble_op.py (CUDA == CPU op == torch
#      reference, forward and every gradient, device x dtype)
#   3. runs benchmarks/bench_lyapunov.py --device cuda and benchmarks/bench_ensemble_cuda.py
#   4. copies everything to benchmarks/results/gpu-<GPU name>/ : build log, nvidia-smi, test logs,
#      benchmark logs and the benchmarks' tables (also left where the benchmarks write them)
#
# It goes on after a failing step so the results folder always shows what happened, and exits
# non-zero if any step failed.  Python packages the tests need: pytest, hypothesis (installed
# with pip if missing).
set -uo pipefail
cd "$(dirname "$0")/.."
py=${1:-python3}
status=0

gpu=$("$py" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))") \
  || { echo "gpu_check: torch sees no CUDA device" >&2; exit 1; }
tag=$(echo "$gpu" | tr -c 'A-Za-z0-9._-' '_' | sed 's/__*/_/g; s/_$//')
out=benchmarks/results/gpu-$tag
mkdir -p "$out"
echo "gpu_check: $gpu -> $out"
{ nvidia-smi || true; "$py" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"; } \
  > "$out/nvidia-smi.txt" 2>&1

# 1. build
arch=$("$py" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability(0))")
if [ -z "${CUDA_HOME:-}" ]; then
  for dir in /usr/local/cuda-13.0 /usr/local/cuda \
      "$(dirname "$(dirname "$(readlink -f "$(command -v nvcc || echo /nonexistent)")")")"; do
    if [ -x "$dir/bin/nvcc" ] && [ -f "$dir/include/cuda_runtime.h" ]; then export CUDA_HOME=$dir; break; fi
  done
fi
echo "gpu_check: building (CUDA_HOME=${CUDA_HOME:-?}, arch $arch)"
if ! FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=$arch MAX_JOBS=${MAX_JOBS:-$(nproc)} \
    "$py" setup.py build_ext --inplace > "$out/build.log" 2>&1; then
  tail -30 "$out/build.log"
  echo "gpu_check: BUILD FAILED (log: $out/build.log)" >&2
  exit 1
fi
grep -E "^mdesc: building" "$out/build.log"

# 2. tests
"$py" -c "import pytest, hypothesis" 2>/dev/null || "$py" -m pip install -q pytest hypothesis
echo "gpu_check: tests/test_cuda.py tests/test_cells.py"
if ! PYTHONPATH=. "$py" -m pytest tests/test_cuda.py tests/test_cells.py -q -rs > "$out/test_cuda.log" 2>&1; then
  status=1
  echo "gpu_check: TESTS FAILED" >&2
fi
tail -5 "$out/test_cuda.log"

echo "gpu_check: tests/test_ensemble_cuda.py tests/test_ensemble_op.py"
if ! PYTHONPATH=. "$py" -m pytest tests/test_ensemble_cuda.py tests/test_ensemble_op.py -q -rs \
    > "$out/test_ensemble.log" 2>&1; then
  status=1
  echo "gpu_check: ENSEMBLE TESTS FAILED" >&2
fi
tail -5 "$out/test_ensemble.log"

# 3. benchmarks
echo "gpu_check: benchmarks/bench_lyapunov.py --device cuda"
marker=$(mktemp)
if ! PYTHONPATH=. "$py" benchmarks/bench_lyapunov.py --device cuda > "$out/bench.log" 2>&1; then
  status=1
  echo "gpu_check: BENCHMARK FAILED" >&2
fi
tail -30 "$out/bench.log"
echo "gpu_check: benchmarks/bench_ensemble_cuda.py"
if ! PYTHONPATH=. "$py" benchmarks/bench_ensemble_cuda.py > "$out/bench_ensemble.log" 2>&1; then
  status=1
  echo "gpu_check: ENSEMBLE BENCHMARK FAILED" >&2
fi
tail -15 "$out/bench_ensemble.log"
# 4. the tables the benchmark wrote (newer than the marker), copied beside the logs
find benchmarks/results -maxdepth 1 -type f -newer "$marker" -exec cp {} "$out/" \;
rm -f "$marker"
ls -l "$out"
[ "$status" = 0 ] && echo "gpu_check: OK ($gpu)" || echo "gpu_check: FAILED steps above ($gpu)" >&2
exit "$status"
