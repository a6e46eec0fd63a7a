"""The compiled JAX step in float64 (JAX with 64-bit types on, in a process of its own: the
matrix's JAX row is float32): compiled and eager agree to 1e-12 over 20 steps for every
optimizer, with batch norm, dropout and a schedule, in one trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_compiled_and_eager_steps_agree_in_float64_on_jax() -> None:
    script = Path(__file__).parent / "jax_x64" / "compiled_vs_eager.py"
    env = {**os.environ, "JAX_ENABLE_X64": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(results) == {"sgd", "adam", "adamw", "rmsprop"}
    for kind, r in results.items():
        assert r["kind"] == "jax-jit" and r["traces"] == 1 and r["dtype"] == "float64", kind
        assert r["max_relative_difference"] <= 1e-12, (kind, r)
