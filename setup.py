"""Build the mdesc torch extension.

CPU kernels are always built.  CUDA kernels (csrc/cuda/*.cu) are built only when torch has
CUDA and nvcc's major version matches torch's CUDA major version.  Overrides:

    MDESC_FORCE_CPU=1   never build CUDA sources
    FORCE_CUDA=1        build CUDA sources even if the auto-detection says no (e.g. no GPU
                        on the build machine); fails loudly if it cannot
"""
import glob
import os
import re
import subprocess

from setuptools import setup

import torch
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def _nvcc_major():
    if CUDA_HOME is None:
        return None
    nvcc = os.path.join(CUDA_HOME, "bin", "nvcc")
    try:
        out = subprocess.check_output([nvcc, "--version"], text=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    m = re.search(r"release (\d+)\.", out)
    return int(m.group(1)) if m else None


def _want_cuda():
    if os.environ.get("MDESC_FORCE_CPU", "0") == "1":
        return False, "MDESC_FORCE_CPU=1"
    forced = os.environ.get("FORCE_CUDA", "0") == "1"
    if torch.version.cuda is None:
        if forced:
            raise RuntimeError("FORCE_CUDA=1 but this torch has no CUDA (torch.version.cuda is None)")
        return False, "torch has no CUDA"
    nvcc = _nvcc_major()
    torch_major = int(torch.version.cuda.split(".")[0])
    if nvcc is None:
        if forced:
            raise RuntimeError("FORCE_CUDA=1 but no nvcc found; set CUDA_HOME to the CUDA toolkit")
        return False, "no nvcc (set CUDA_HOME)"
    if nvcc != torch_major:
        if forced:
            raise RuntimeError(f"FORCE_CUDA=1 but nvcc is CUDA {nvcc} and torch is CUDA {torch_major}")
        return False, f"nvcc CUDA {nvcc} != torch CUDA {torch_major}"
    if not glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")):
        return False, "no CUDA sources"
    return True, f"torch CUDA {torch.version.cuda}, nvcc {nvcc}"


def _extension():
    rel = lambda pattern: sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))
    sources = rel("csrc/*.cpp") + rel("csrc/cpu/*.cpp")
    use_cuda, why = _want_cuda()
    print(f"mdesc: building {'CPU + CUDA' if use_cuda else 'CPU only'} extension ({why})")
    cxx = ["-O3", "-std=c++20", "-fopenmp"]
    if os.environ.get("MDESC_NATIVE", "0") == "1":
        cxx.append("-march=native")
    define_macros = [("MDESC_TORCH_VERSION", f'"{torch.__version__}"')]
    kwargs = dict(
        name="mdesc._C",
        include_dirs=[os.path.join(ROOT, "csrc")],
        define_macros=define_macros,
        py_limited_api=False,
    )
    if use_cuda:
        sources += rel("csrc/cuda/*.cu") + rel("csrc/cuda/*.cpp")
        define_macros.append(("MDESC_WITH_CUDA", "1"))
        nvcc = ["-O3", "--use_fast_math", "-std=c++20", "-lineinfo"]
        return CUDAExtension(sources=sources, extra_compile_args={"cxx": cxx, "nvcc": nvcc},
                             extra_link_args=["-fopenmp"], **kwargs)
    return CppExtension(sources=sources, extra_compile_args={"cxx": cxx},
                        extra_link_args=["-fopenmp"], **kwargs)


def _write_build_info(with_cuda):
    # Read at import time so a mismatch between the compiled extension and the running torch
    # gives a clear error instead of an undefined-symbol crash.
    with open(os.path.join(ROOT, "mdesc", "_build_info.py"), "w") as f:
        f.write("# Written by setup.py at build time.\n")
        f.write(f"TORCH_VERSION = {torch.__version__!r}\n")
        f.write(f"TORCH_CUDA = {torch.version.cuda!r}\n")
        f.write(f"WITH_CUDA = {bool(with_cuda)!r}\n")


_EXT = _extension()
_write_build_info(any(s.endswith(".cu") for s in _EXT.sources))

setup(
    ext_modules=[_EXT],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
