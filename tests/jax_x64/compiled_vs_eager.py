"""Compiled (jax.jit) and eager steps in float64 on JAX with 64-bit types on: run by
tests/test_compile_x64.py in a process of its own (the test process keeps JAX's default,
64-bit types off). Prints one JSON line: the largest relative difference per optimizer."""

from __future__ import annotations

import json

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import nnbackend as nb  # noqa: E402

STEPS = 20


def build(kind: str) -> tuple[nb.Module, nb.Optimizer, nb.StepLR]:
    model = nb.Sequential(nb.Linear(5, 16, seed=0, dtype="float64"), nb.Tanh(),
                          nb.BatchNorm1d(16, dtype="float64"), nb.Dropout(0.25, seed=7),
                          nb.Linear(16, 3, seed=1, dtype="float64"), backend="jax")
    opt = {"sgd": lambda: nb.SGD(model, lr=0.05, momentum=0.9),
           "adam": lambda: nb.Adam(model, lr=0.02),
           "adamw": lambda: nb.AdamW(model, lr=0.02, weight_decay=0.1),
           "rmsprop": lambda: nb.RMSprop(model, lr=0.01, momentum=0.5)}[kind]()
    return model, opt, nb.StepLR(opt, 4, gamma=0.5)


rng = np.random.default_rng(0)
be = nb.get_backend("jax")
batches = [(be.asarray(rng.normal(size=(8, 5)), dtype="float64"),
            be.asarray(rng.integers(0, 3, size=8))) for _ in range(3)]
loss_fn = nb.CrossEntropyLoss()
worst = {}
for kind in ("sgd", "adam", "adamw", "rmsprop"):
    eager, eager_opt, eager_sched = build(kind)
    model, opt, sched = build(kind)
    step = nb.compile_step(model, loss_fn, opt)
    for t in range(STEPS):
        x, y = batches[t % 3]
        out, backprop = eager.forward(x)
        _, dy = loss_fn(out, y)
        eager_opt.zero_grad()
        backprop(dy)
        eager_opt.step()
        eager_sched.step()
        step(x, y)
        sched.step()
    step.write_back()
    diff = 0.0
    for a, b in zip(model.state_dict().values(), eager.state_dict().values(), strict=True):
        a64, b64 = np.asarray(nb.to_numpy(a), np.float64), np.asarray(nb.to_numpy(b), np.float64)
        diff = max(diff, float(np.abs(a64 - b64).max() / max(np.abs(b64).max(), 1e-300)))
    worst[kind] = {"max_relative_difference": diff, "kind": step.kind, "traces": step.traces,
                   "dtype": str(model.state_dict()["0.weight"].dtype)}
print(json.dumps(worst))
