"""Optimizers whose loops run in C++, a readable NumPy mirror, checkpoints.

    opt = jl.optim.Adam(1e-3)
    r = jl.optim.train(model, params, "cross_entropy", (X, y), opt, steps=1000, batch_size=32, seed=0)
    r.params, r.losses, r.batches

- Update rules: :mod:`jaclab.optim.optimizers` (``SGD``, ``Momentum``, ``Adam``/``AdamW``,
  ``RK``, ``Polyak``), implemented in ``cpp/src/optim/`` (one file each, formulas in comments).
- ``train``: the loop, in C++ with the GIL released; forward order or backward-SGD.
- ``init`` / ``step``: one update at a time, state visible (momentum buffers, RK stages).
- ``reference``: every rule and the loop in plain NumPy + ``jl.grad``, to read; it agrees with
  the C++ loop to float64 rounding (tests/test_optim.py).
- ``save_checkpoint`` / ``load_checkpoint`` and ``train(checkpoint=..., resume=...)``.
"""
from . import reference  # noqa: F401
from .loop import (  # noqa: F401
    TrainResult,
    batches,
    flatten_params,
    init,
    load_checkpoint,
    save_checkpoint,
    step,
    train,
    unflatten_params,
)
from .optimizers import RK, SGD, Adam, AdamW, Momentum, Optimizer, Polyak  # noqa: F401
