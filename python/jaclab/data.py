"""Small data sets for training examples and tests: seeded synthetic sets, and sklearn's digits.

Every function returns ``(X, Y)`` NumPy arrays (X float64) and is deterministic for a given
``seed`` (NumPy ``default_rng(seed)``).

- ``teacher_student``: regression targets from a random tanh MLP teacher (plus noise).
- ``spirals`` / ``two_moons``: 2-D classification, int64 labels.
- ``icl_regression``: in-context linear regression sequences for transformers.
- ``digits``: the 8x8 handwritten digits shipped with scikit-learn (optional dependency).
"""
from __future__ import annotations

import numpy as np

__all__ = ["teacher_student", "spirals", "two_moons", "icl_regression", "digits"]


def _check_n(name: str, **kw):
    for k, v in kw.items():
        if not isinstance(v, (int, np.integer)) or v <= 0:
            raise ValueError(f"{name}: {k} must be a positive int, got {v!r}")


def teacher_student(n: int = 512, d_in: int = 10, d_hidden: int = 32, d_out: int = 1, noise: float = 0.0, seed: int = 0):
    """X ~ N(0, I) of shape (n, d_in); Y = tanh(X W1 + b1) W2 (+ noise N(0, noise^2)), with the
    teacher's W1 ~ N(0, 1/d_in), b1 ~ N(0, 0.1^2), W2 ~ N(0, 1/d_hidden)."""
    _check_n("teacher_student", n=n, d_in=d_in, d_hidden=d_hidden, d_out=d_out)
    rng = np.random.default_rng(seed)
    W1 = rng.standard_normal((d_in, d_hidden)) / np.sqrt(d_in)
    b1 = 0.1 * rng.standard_normal(d_hidden)
    W2 = rng.standard_normal((d_hidden, d_out)) / np.sqrt(d_hidden)
    X = rng.standard_normal((n, d_in))
    Y = np.tanh(X @ W1 + b1) @ W2
    if noise:
        Y = Y + noise * rng.standard_normal(Y.shape)
    return X, Y


def spirals(n: int = 300, classes: int = 3, noise: float = 0.2, seed: int = 0):
    """``classes`` interleaved spiral arms in 2-D, ``n`` points in all (arm k gets every
    ``classes``-th point); labels int64 in [0, classes)."""
    _check_n("spirals", n=n, classes=classes)
    rng = np.random.default_rng(seed)
    y = np.arange(n, dtype=np.int64) % classes
    r = rng.uniform(0.05, 1.0, n)
    angle = 4.0 * r + 2 * np.pi * y / classes + noise * rng.standard_normal(n)
    X = np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1)
    return X, y


def two_moons(n: int = 200, noise: float = 0.1, seed: int = 0):
    """Two interleaved half circles (as scikit-learn's make_moons), labels 0 / 1 alternating."""
    _check_n("two_moons", n=n)
    rng = np.random.default_rng(seed)
    y = np.arange(n, dtype=np.int64) % 2
    t = rng.uniform(0, np.pi, n)
    X = np.where(y[:, None] == 0, np.stack([np.cos(t), np.sin(t)], 1), np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1))
    return X + noise * rng.standard_normal(X.shape), y


def icl_regression(n: int = 256, n_context: int = 8, d: int = 4, noise: float = 0.0, seed: int = 0):
    """In-context linear regression. Each sequence has its own w ~ N(0, I/d); tokens are
    ``[x_i, y_i]`` (y_i = w.x_i + noise) for i < n_context, then the query ``[x_q, 0]``.
    X: (n, n_context + 1, d + 1); Y: (n, 1) = w.x_q. A transformer reads the last position
    (``jl.nn.LastToken``)."""
    _check_n("icl_regression", n=n, n_context=n_context, d=d)
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, d)) / np.sqrt(d)
    x = rng.standard_normal((n, n_context + 1, d))
    y = np.einsum("ntd,nd->nt", x, w)
    if noise:
        y[:, :-1] += noise * rng.standard_normal((n, n_context))
    X = np.concatenate([x, y[:, :, None]], axis=2)
    target = X[:, -1, -1].copy()
    X[:, -1, -1] = 0.0
    return X, target[:, None]


def digits():
    """The 1797 8x8 handwritten digits of scikit-learn: X (1797, 64) in [0, 1], y int64 in [0, 10).

    Needs scikit-learn (it ships the data, no download): ``pip install scikit-learn``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError("jl.data.digits() needs scikit-learn, which ships the digits data set: "
                          "pip install scikit-learn") from None
    d = load_digits()
    return (d.data / 16.0).astype(np.float64), d.target.astype(np.int64)
