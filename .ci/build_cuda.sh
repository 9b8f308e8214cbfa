#!/usr/bin/env bash
# Compile mdesc with its CUDA kernels against the CUDA build of torch, and check that the
# extension loads and registers the CUDA kernel.  Needs nvcc, not a GPU.
#
#   .ci/build_cuda.sh [VENV]
#
# VENV: a virtual environment holding a CUDA build of torch (default: .venv-cuda).  If it does
# not exist it is created with torch==2.14.1 (CUDA 13.0 on Linux x86-64) numpy pybind11 ninja
# setuptools wheel.
#
# The build runs in a temporary copy of the working tree (tracked and untracked, not ignored
# files), so an in-place build never replaces the CPU extension of this checkout, and mdesc is
# installed (--no-deps) into VENV.  Any compile error fails the script.
#
# Environment: CUDA_HOME (default: /usr/local/cuda-13.0, else /usr/local/cuda, else the toolkit of
# the nvcc on PATH), TORCH_CUDA_ARCH_LIST (default 9.0: H100/H200), MAX_JOBS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
venv=${1:-.venv-cuda}

if [ ! -x "$venv/bin/python" ]; then
  echo "build_cuda: creating $venv with the CUDA build of torch 2.14.1"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q torch==2.14.1 numpy pybind11 ninja setuptools wheel
fi
py=$(cd "$(dirname "$venv/bin/python")" && pwd)/python

if [ -z "${CUDA_HOME:-}" ]; then
  # The toolkit holding include/cuda_runtime.h; `nvcc` on PATH may be a wrapper script elsewhere.
  for dir in /usr/local/cuda-13.0 /usr/local/cuda \
      "$(dirname "$(dirname "$(readlink -f "$(command -v nvcc || echo /nonexistent)")")")"; do
    if [ -x "$dir/bin/nvcc" ] && [ -f "$dir/include/cuda_runtime.h" ]; then CUDA_HOME=$dir; break; fi
  done
fi
if [ -z "${CUDA_HOME:-}" ] || [ ! -f "$CUDA_HOME/include/cuda_runtime.h" ]; then
  echo "build_cuda: no CUDA toolkit found; set CUDA_HOME to one with bin/nvcc and include/cuda_runtime.h" >&2
  exit 1
fi
export CUDA_HOME
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-2}
export FORCE_CUDA=1  # setup.py fails loudly instead of quietly building CPU only
"$CUDA_HOME/bin/nvcc" --version | tail -1
"$py" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git -C "$repo" ls-files -z --cached --others --exclude-standard | (cd "$repo" && tar --null -T - -cf -) \
    | tar -xf - -C "$work"
else
  (cd "$repo" && tar --exclude=./build --exclude='*.so' --exclude=./.venv* -cf - .) | tar -xf - -C "$work"
fi

echo "build_cuda: building in $work (CUDA_HOME=$CUDA_HOME, arch $TORCH_CUDA_ARCH_LIST, $MAX_JOBS jobs)"
(cd "$work" && "$py" -m pip install --no-build-isolation --no-deps -v . > "$work/build.log" 2>&1) || {
  grep -n -i -E "error|FAILED" "$work/build.log" | head -40
  tail -40 "$work/build.log"
  echo "build_cuda: FAILED to build the CUDA extension" >&2
  exit 1
}
grep -m1 -E "mdesc: building" "$work/build.log" || { echo "build_cuda: setup.py did not report what it built" >&2; exit 1; }

# Load the installed extension without importing the mdesc package (whose Python dependencies
# this venv need not have) and check what it registered.
mkdir "$work/check" && cd "$work/check"  # an empty folder: no source tree can shadow the installed package
"$py" - <<'EOF'
import glob, importlib.util, os
import torch
spec = importlib.util.find_spec("mdesc")
pkg = os.path.dirname(spec.origin)
assert "site-packages" in pkg, f"mdesc was not installed into the venv: {pkg}"
so = glob.glob(os.path.join(pkg, "_C*.so"))
assert len(so) == 1, f"expected one compiled extension in {pkg}, found {so}"
torch.ops.load_library(so[0])
info = {}
exec(open(os.path.join(pkg, "_build_info.py")).read(), info)
assert info["WITH_CUDA"], "mdesc/_build_info.py says the extension was built without CUDA"
for op in ("tangent_run", "lstm_twin_run", "ensemble_rnn_forward", "ensemble_rnn_backward"):
    assert hasattr(torch.ops.mdesc, op), f"torch.ops.mdesc.{op} is missing"
    for key in ("CPU", "CUDA"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"mdesc::{op}", key), \
            f"no {key} kernel registered for mdesc::{op}"
assert torch.ops.mdesc.counted_blocks(1600, 100, 10) == 150
print(f"build_cuda: OK  {so[0]}  (CPU and CUDA kernels of both runs and the ensemble op registered; "
      f"torch {torch.__version__})")
EOF
