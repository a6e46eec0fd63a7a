"""Expecting the optimizers' flat-path fallback warnings (pytest turns any other into an error)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import pytest

from nnbackend.optim import FlatFallbackWarning


@contextlib.contextmanager
def expect_fallbacks(*reasons: str, packed: bool = True) -> Iterator[None]:
    """Expect one FlatFallbackWarning per reason, in order, where the parameters are ``packed``
    (on namespaces without views nothing is packed, so nothing falls back: no warning)."""
    if not packed:
        yield
        return
    with pytest.warns(FlatFallbackWarning) as record:
        yield
    got = [re.findall(r"path_stats\.fallbacks\['(\w+)'\]", str(w.message)) for w in record]
    assert got == [[reason] for reason in reasons], [str(w.message) for w in record]
