"""Blocks, functional style: ``params = model.init(seed, dtype)``; ``y = model.apply(params, x)``.

``apply`` runs the C++ blocks (``cpp/src/nn``) and is differentiable under every jaclab
transform; ``apply_layers(params, x)`` returns the activations at layer boundaries
``[x, h_1, ..., h_L]`` (for a single block: ``[x, y]``).

Conventions (fixed so any result can be checked against another framework):

- ``Linear(d_in, d_out)``: ``{"W": (d_in, d_out), "b": (d_out,)}``; ``y = x @ W + b``
- ``MLP(d_in, d_hidden, d_out=d_in, activation="gelu")``: ``{"W1","b1","W2","b2"}``;
  ``y = act(x @ W1 + b1) @ W2 + b2``
- ``LayerNorm(d)``: ``{"g","b"}``, biased variance over the last axis, eps 1e-5;
  ``RMSNorm(d)``: ``{"g"}``, eps 1e-6
- ``Attention(d_model, n_heads, causal=True)``: ``{"Wq","Wk","Wv","Wo"}`` each ``(d, d)``;
  input ``(B, T, d)``; heads split the last axis in order; ``softmax(q k^T / sqrt(dh))`` with
  the causal mask; heads merged back in order; output ``@ Wo``
- ``Residual(block, scale=1.0)``: ``x + scale * block(x)``; params are the block's
- ``TransformerBlock(d_model, n_heads, d_hidden, causal=True, norm="layer", scale=1.0)``:
  pre-norm, ``h = x + scale*Attn(N1(x))``, ``y = h + scale*MLP(N2(h))``;
  params ``{"norm1", "attn", "norm2", "mlp"}`` (norm entries are ``{}`` when ``norm=None``)
- ``Sequential(*layers)``: params is a list, one entry per layer (``{}`` for layers without
  params); activation layers ``Tanh()``, ``ReLU()``, ``GELU()``, ``GELUTanh()``, ``Sigmoid()``;
  ``LastToken()`` maps ``(B, T, d)`` to ``(B, d)`` (last position; a readout for sequence models).

C++ specs: ``model._spec()`` builds the same model in C++ (``cpp/include/jaclab/model.h``) for
loops that run without Python (``jl.optim.train``). The spec takes the parameters as ONE flat
list in ``jl.tree_flatten(params)`` order: depth first, dict keys sorted (upper case before lower
case), e.g. MLP ``[W1, W2, b1, b2]``, Attention ``[Wk, Wo, Wq, Wv]``, LayerNorm ``[b, g]``,
TransformerBlock ``attn, mlp, norm1, norm2``; ``model._spec().apply(flat, x)`` equals
``model.apply(params, x)``.

Initialisation (deterministic per seed, NumPy ``default_rng``): weight matrices are drawn
from ``N(0, 1/fan_in)`` in the order the parameters are listed above; biases are 0; norm gains
are 1. ``Sequential`` and ``TransformerBlock`` give their children ``SeedSequence(seed).spawn(n)``
(in order); ``Residual`` passes its seed to its block. Seeds may be ints or ``SeedSequence``s.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from . import _core
from ._core import Tensor
from ._pytree import tree_flatten as _tree_flatten

__all__ = [
    "Module", "Linear", "MLP", "LayerNorm", "RMSNorm", "Attention", "Residual", "TransformerBlock",
    "Sequential", "LastToken", "Activation", "Tanh", "ReLU", "GELU", "GELUTanh", "Sigmoid",
]


def _dtype(dtype) -> np.dtype:
    d = np.dtype(dtype)
    if d not in (np.float32, np.float64):
        raise TypeError(f"init: dtype must be float32 or float64, got {d}")
    return d


def _rng(seed) -> np.random.Generator:
    return np.random.default_rng(seed)


def _spawn(seed, n: int) -> list:
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    return ss.spawn(n)


def _check_feature(block: str, name: str, p, x) -> None:
    d = tuple(np.shape(x)[-1:])
    if np.shape(p) != d:
        raise ValueError(f"{block}: parameter {name} must have shape {d} to match input of shape {np.shape(x)}, got {np.shape(p)}")


def _normal(rng, shape, fan_in, dtype):
    return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(dtype)


def _check_keys(block: str, params: Any, keys: tuple[str, ...]) -> None:
    if not isinstance(params, dict):
        raise TypeError(f"{block}: params must be a dict with keys {list(keys)}, got {type(params).__name__}")
    missing = [k for k in keys if k not in params]
    extra = [k for k in params if k not in keys]
    if missing or extra:
        raise ValueError(
            f"{block}: params must have keys {list(keys)}"
            + (f"; missing {missing}" if missing else "")
            + (f"; unexpected {extra}" if extra else "")
        )


def _tensor(a) -> Tensor:
    return a if isinstance(a, Tensor) else _core.array(a)


def _slope(fn: str, z: Tensor) -> Tensor:
    """``act'(z)`` elementwise, from the engine's own JVP rule of the activation (tangent 1)."""
    ones = _core.ones(tuple(z.shape), z.dtype, z.device)
    _, (slope,) = _core.jvp_flat(lambda zs: [_core.nn_activate(zs[0], fn)], [z], [ones])
    return slope


class Module:
    """Base class. Subclasses define ``init`` and ``apply``."""

    def init(self, seed=0, dtype=np.float64):
        raise NotImplementedError

    def apply(self, params, x) -> Tensor:
        raise NotImplementedError

    def _spec(self):
        """The C++ model spec of this block (``jaclab/model.h``), used by ``jl.optim.train``.

        It takes the parameters as one flat list in ``jl.tree_flatten(params)`` order."""
        raise NotImplementedError(f"{type(self).__name__} has no C++ spec")

    def apply_layers(self, params, x) -> list:
        """Activations at layer boundaries: ``[x, output]`` for a single block."""
        return [_tensor(x), self.apply(params, x)]

    def _jacobian_factors(self, params, x) -> list | None:
        """The per-sample Jacobian of ``apply(params, .)`` at a batch of vectors ``x`` (B, n),
        as a product of simple factors, or None where the block has no such structure (the
        analyses then use basis sweeps). Factors are listed input side first:

        - ``("W", W)``: ``y = x @ W``, one ``(n_in, n_out)`` matrix shared by every sample;
        - ``("d", d)``: ``y = d * x``, a per-sample diagonal, ``d`` of shape ``(B, n)``;
        - ``("res", s, inner)``: ``I + s * (product of the factors in inner)``, a residual block.
        """
        return None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


class Linear(Module):
    def __init__(self, d_in: int, d_out: int):
        self.d_in, self.d_out = d_in, d_out

    def init(self, seed=0, dtype=np.float64):
        rng, dt = _rng(seed), _dtype(dtype)
        return {"W": _normal(rng, (self.d_in, self.d_out), self.d_in, dt), "b": np.zeros(self.d_out, dt)}

    def _spec(self):
        return _core.spec_linear(self.d_in, self.d_out)

    def _check(self, params, x):
        _check_keys("Linear", params, ("W", "b"))
        W, b = np.shape(params["W"]), np.shape(params["b"])
        if W != (self.d_in, self.d_out) or b != (self.d_out,):
            raise ValueError(
                f"Linear({self.d_in}, {self.d_out}): expected W {(self.d_in, self.d_out)} and b {(self.d_out,)}, "
                f"got W {W} and b {b}"
            )
        if np.shape(x)[-1:] != (self.d_in,):
            raise ValueError(f"Linear({self.d_in}, {self.d_out}): input must have last dim {self.d_in}, got shape {np.shape(x)}")

    def apply(self, params, x):
        self._check(params, x)
        return _core.linear(x, params["W"], params["b"])

    def _jacobian_factors(self, params, x):
        self._check(params, x)
        return [("W", _tensor(params["W"]))]


class MLP(Module):
    def __init__(self, d_in: int, d_hidden: int, d_out: int | None = None, activation: str = "gelu"):
        self.d_in, self.d_hidden, self.d_out = d_in, d_hidden, d_in if d_out is None else d_out
        self.activation = activation
        _core.nn_activate(np.zeros(1), activation)  # validates the name early

    def init(self, seed=0, dtype=np.float64):
        rng, dt = _rng(seed), _dtype(dtype)
        return {
            "W1": _normal(rng, (self.d_in, self.d_hidden), self.d_in, dt),
            "b1": np.zeros(self.d_hidden, dt),
            "W2": _normal(rng, (self.d_hidden, self.d_out), self.d_hidden, dt),
            "b2": np.zeros(self.d_out, dt),
        }

    def _spec(self):
        return _core.spec_mlp(self.d_in, self.d_hidden, self.d_out, self.activation)

    def _check(self, params):
        _check_keys("MLP", params, ("W1", "b1", "W2", "b2"))
        want = {"W1": (self.d_in, self.d_hidden), "b1": (self.d_hidden,), "W2": (self.d_hidden, self.d_out),
                "b2": (self.d_out,)}
        for k, shape in want.items():
            if np.shape(params[k]) != shape:
                raise ValueError(f"MLP({self.d_in}, {self.d_hidden}, {self.d_out}): parameter {k} must have shape "
                                 f"{shape}, got {np.shape(params[k])}")

    def apply(self, params, x):
        self._check(params)
        return _core.nn_mlp(x, params["W1"], params["b1"], params["W2"], params["b2"], self.activation)

    def _jacobian_factors(self, params, x):
        self._check(params)
        if x.shape[-1] != self.d_in:  # the message nn_mlp gives
            raise ValueError(f"MLP: input has last dim {x.shape[-1]} (shape {tuple(x.shape)}) but W1 is "
                             f"{tuple(np.shape(params['W1']))}")
        z = _core.linear(x, params["W1"], params["b1"])  # the pre-activation
        return [("W", _tensor(params["W1"])), ("d", _slope(self.activation, z)), ("W", _tensor(params["W2"]))]


class LayerNorm(Module):
    def __init__(self, d: int, eps: float = 1e-5):
        self.d, self.eps = d, eps

    def init(self, seed=0, dtype=np.float64):
        dt = _dtype(dtype)
        return {"g": np.ones(self.d, dt), "b": np.zeros(self.d, dt)}

    def _spec(self):
        return _core.spec_layer_norm(self.d, self.eps)

    def apply(self, params, x):
        _check_keys("LayerNorm", params, ("g", "b"))
        _check_feature("LayerNorm", "g", params["g"], x)
        _check_feature("LayerNorm", "b", params["b"], x)
        return _core.layer_norm(x, params["g"], params["b"], self.eps)


class RMSNorm(Module):
    def __init__(self, d: int, eps: float = 1e-6):
        self.d, self.eps = d, eps

    def init(self, seed=0, dtype=np.float64):
        return {"g": np.ones(self.d, _dtype(dtype))}

    def _spec(self):
        return _core.spec_rms_norm(self.d, self.eps)

    def apply(self, params, x):
        _check_keys("RMSNorm", params, ("g",))
        _check_feature("RMSNorm", "g", params["g"], x)
        return _core.rms_norm(x, params["g"], self.eps)


class Attention(Module):
    def __init__(self, d_model: int, n_heads: int, causal: bool = True):
        if n_heads <= 0 or d_model % n_heads:
            raise ValueError(f"Attention: n_heads={n_heads} does not divide d_model={d_model}")
        self.d_model, self.n_heads, self.causal = d_model, n_heads, causal

    def init(self, seed=0, dtype=np.float64):
        rng, dt, d = _rng(seed), _dtype(dtype), self.d_model
        return {k: _normal(rng, (d, d), d, dt) for k in ("Wq", "Wk", "Wv", "Wo")}

    def _spec(self):
        return _core.spec_attention(self.d_model, self.n_heads, self.causal)

    def apply(self, params, x):
        _check_keys("Attention", params, ("Wq", "Wk", "Wv", "Wo"))
        return _core.nn_attention(x, params["Wq"], params["Wk"], params["Wv"], params["Wo"], self.n_heads, self.causal)


class Residual(Module):
    def __init__(self, block: Module, scale: float = 1.0):
        self.block, self.scale = block, scale

    def init(self, seed=0, dtype=np.float64):
        return self.block.init(seed, dtype)

    def _spec(self):
        return _core.spec_residual(self.block._spec(), self.scale)

    def apply(self, params, x):
        return _core.residual(x, self.block.apply(params, x), self.scale)

    def _jacobian_factors(self, params, x):
        inner = self.block._jacobian_factors(params, x)
        return None if inner is None else [("res", self.scale, inner)]


class TransformerBlock(Module):
    def __init__(self, d_model: int, n_heads: int, d_hidden: int, causal: bool = True, norm: str | None = "layer",
                 scale: float = 1.0, activation: str = "gelu"):
        if norm not in ("layer", "rms", None):
            raise ValueError(f"TransformerBlock: norm must be 'layer', 'rms' or None, got {norm!r}")
        self.d_model, self.n_heads, self.d_hidden, self.causal = d_model, n_heads, d_hidden, causal
        self.norm, self.scale, self.activation = norm, scale, activation
        self.attn = Attention(d_model, n_heads, causal)
        self.mlp = MLP(d_model, d_hidden, d_model, activation)
        self._norm = {"layer": LayerNorm(d_model), "rms": RMSNorm(d_model), None: None}[norm]

    def init(self, seed=0, dtype=np.float64):
        s1, s2 = _spawn(seed, 2)
        n = self._norm.init(0, dtype) if self._norm else {}
        return {"norm1": dict(n), "attn": self.attn.init(s1, dtype), "norm2": dict(n), "mlp": self.mlp.init(s2, dtype)}

    def _spec(self):
        return _core.spec_transformer_block(self.d_model, self.n_heads, self.d_hidden, self.causal,
                                            self.norm or "none", self.scale, self.activation)

    def apply(self, params, x):
        _check_keys("TransformerBlock", params, ("norm1", "attn", "norm2", "mlp"))
        nkeys = {"layer": ("g", "b"), "rms": ("g",), None: ()}[self.norm]
        for which in ("norm1", "norm2"):
            _check_keys(f"TransformerBlock.{which}", params[which], nkeys)
        _check_keys("TransformerBlock.attn", params["attn"], ("Wq", "Wk", "Wv", "Wo"))
        _check_keys("TransformerBlock.mlp", params["mlp"], ("W1", "b1", "W2", "b2"))
        a, m, n1, n2 = params["attn"], params["mlp"], params["norm1"], params["norm2"]
        return _core.nn_transformer_block(
            x, n1.get("g"), n1.get("b"), a["Wq"], a["Wk"], a["Wv"], a["Wo"], n2.get("g"), n2.get("b"),
            m["W1"], m["b1"], m["W2"], m["b2"], self.n_heads, self.causal, self.norm or "none", self.scale,
            self.activation,
        )


class Activation(Module):
    """An elementwise activation as a layer (no params)."""

    fn = "identity"

    def init(self, seed=0, dtype=np.float64):
        return {}

    def _spec(self):
        return _core.spec_activation(self.fn)

    def _check(self, params):
        if params not in ({}, None):
            raise ValueError(f"{type(self).__name__}: has no params, got {params!r}")

    def apply(self, params, x):
        self._check(params)
        return _core.nn_activate(x, self.fn)

    def _jacobian_factors(self, params, x):
        self._check(params)
        return [("d", _slope(self.fn, _tensor(x)))]

    def __repr__(self):
        return f"{type(self).__name__}()"


class Tanh(Activation):
    fn = "tanh"


class ReLU(Activation):
    fn = "relu"


class GELU(Activation):
    fn = "gelu"


class GELUTanh(Activation):
    fn = "gelu_tanh"


class Sigmoid(Activation):
    fn = "sigmoid"


class LastToken(Module):
    """``(B, T, d) -> (B, d)``: the last position of each sequence (a readout; no params)."""

    def init(self, seed=0, dtype=np.float64):
        return {}

    def apply(self, params, x):
        if params not in ({}, None):
            raise ValueError(f"LastToken: has no params, got {params!r}")
        return _core.spec_last_token().apply([], x)

    def _spec(self):
        return _core.spec_last_token()

    def __repr__(self):
        return "LastToken()"


class Sequential(Module):
    def __init__(self, *layers: Module):
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        self.layers = list(layers)

    def init(self, seed=0, dtype=np.float64):
        seeds = _spawn(seed, len(self.layers))
        return [layer.init(s, dtype) for layer, s in zip(self.layers, seeds)]

    def _spec(self):
        return _core.spec_sequential([layer._spec() for layer in self.layers])

    def _check(self, params):
        if not isinstance(params, (list, tuple)) or len(params) != len(self.layers):
            got = len(params) if isinstance(params, (list, tuple)) else type(params).__name__
            raise ValueError(f"Sequential: params must be a list with one entry per layer ({len(self.layers)}), got {got}")

    def apply(self, params, x):
        # One C++ call for the whole stack (the C++ spec, built fresh: the model may have been
        # changed), instead of one Python call per layer with its checks: ~0.3-0.5 ms less per
        # forward for W1 / W3. Only for params whose pytree structure already passed the
        # per-layer checks on this model; any error goes back to the Python path, whose message
        # names the layer.
        leaves, tree = _tree_flatten(params)
        if tree == getattr(self, "_checked_tree", None):
            try:
                return self._spec().apply(leaves, x)
            except (ValueError, TypeError, NotImplementedError):  # NotImplementedError: a layer without a spec
                pass
        out = self.apply_layers(params, x)[-1]
        self._checked_tree = tree
        return out

    def apply_layers(self, params, x):
        self._check(params)
        hs = [_tensor(x)]
        for layer, p in zip(self.layers, params):
            hs.append(layer.apply(p, hs[-1]))
        return hs

    def _jacobian_factors(self, params, x):
        # One chain through every layer, each at its own input; None if any layer has no structure.
        hs = self.apply_layers(params, x)
        chain = []
        for layer, p, h in zip(self.layers, params, hs[:-1]):
            factors = layer._jacobian_factors(p, h)
            if factors is None:
                return None
            chain += factors
        return chain
