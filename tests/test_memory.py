"""Host memory kept between training steps (nnbackend._memory.keep_freed_memory).

Each check runs in a fresh interpreter: the setting is process-wide and glibc's thresholds
depend on what the process has freed before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

import nnbackend as nb

GLIBC = sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION") is not None

# A step's pattern: six 2 MiB arrays (activations) allocated one after the other, then freed
# together; the page faults of the last repetitions counted (memory returned to the system
# is faulted in again).
_PROBE = """
import json, resource, sys
import numpy as np
from nnbackend._memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
faults = []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    arrays = [np.ones(1 << 18) for _ in range(6)]  # 2 MiB of float64 each, every page written
    del arrays
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faults": faults[2:]}))
"""


def _probe(mode: str, **env: str) -> dict[str, Any]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], env={**clean, **env},
                         capture_output=True, text=True, check=True, timeout=120)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_freed_memory_is_reused_instead_of_faulted_in_again() -> None:
    """By default the 12 MiB freed at once go back to the system (glibc trims the top of its
    heap beyond twice the largest size freed) and the next repetition faults their 3,072
    pages in again; kept, it reuses them."""
    default = _probe("default")
    kept = _probe("keep")
    assert kept["applied"] is True
    assert min(default["faults"]) > 2000, default
    assert max(kept["faults"]) < 50, kept


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_the_environment_s_malloc_settings_stand() -> None:
    """With glibc's MALLOC_* thresholds set by the user, nothing is changed."""
    assert _probe("keep", MALLOC_TRIM_THRESHOLD_="131072")["applied"] is False


def test_fit_keeps_freed_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(nb.train, "keep_freed_memory", lambda: calls.append(True) or True)
    model = nb.Sequential(nb.Linear(3, 2, backend="numpy"))
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((8, 3)).astype(np.float32), rng.integers(0, 2, 8)
    nb.fit(model, nb.CrossEntropyLoss(), nb.SGD(model.parameters(), lr=0.1), (X, y),
           epochs=1, batch_size=4, progress=False)
    assert calls == [True]
