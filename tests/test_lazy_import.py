"""The extension loads lazily, only through mdesc.core, on the first fused call (issue 9)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Makes `import mdesc._C` fail as it would on an install without the compiled extension.
BLOCK_EXTENSION = textwrap.dedent("""
    import importlib.abc, sys

    class _NoExtension(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "mdesc._C":
                raise ImportError("simulated: no compiled extension in this install")
            return None

    sys.meta_path.insert(0, _NoExtension())
""")


def _python(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "tests"))
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=300)


def _check(code: str) -> str:
    out = _python(code)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_import_mdesc_and_help_load_neither_torch_nor_the_extension():
    # mdesc.core imports torch plainly (docs/architecture.md, Imports); the top level stays lazy
    out = _check(textwrap.dedent("""
        import sys
        import mdesc
        print(sorted(m for m in ("torch", "mdesc._C") if m in sys.modules))
        from mdesc.cli import main
        try:
            main(["--help"])
        except SystemExit:
            pass
        print(sorted(m for m in ("torch", "mdesc._C", "matplotlib") if m in sys.modules))
    """))
    lines = out.strip().splitlines()
    assert lines[0] == "[]" and lines[-1] == "[]", out


def test_studies_work_and_fused_calls_explain_without_the_extension():
    out = _check(BLOCK_EXTENSION + textwrap.dedent("""
        import sys
        import mdesc
        mdesc.glassy, mdesc.trajectories, mdesc.store, mdesc.core, mdesc.cells
        import torch
        lstm, seq = torch.nn.LSTM(2, 3), torch.randn(4, 1, 2)
        print("reference", round(float(mdesc.reference.max_lyapunov(lstm, seq)), 3) < 10)
        try:
            mdesc.max_lyapunov(lstm, seq)
        except ImportError as e:
            print("fused:", e)
        print("mdesc._C" in sys.modules)
    """))
    assert "reference True" in out
    assert "fused: mdesc's compiled extension (mdesc._C) could not be loaded" in out
    assert "simulated: no compiled extension" in out and "pip install --no-build-isolation" in out
    assert out.strip().endswith("False")
