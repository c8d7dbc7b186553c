"""jaclab: exact derivatives for MLP, attention and residual blocks.

A C++ autograd engine (reverse mode, forward mode, nested to second order) with a NumPy-style
API. Arrays go in as NumPy arrays or ``jl.Tensor`` and come out as ``jl.Tensor``, which
``np.asarray`` views without copying.
"""
# Load the BLAS shared library first: the extension finds it through this import when it is
# not in its installed place (editable installs).
import scipy_openblas32  # noqa: F401

from . import _core
from ._core import (  # noqa: F401
    Tensor,
    UnbatchableError,
    array,
    attention,
    broadcast_to,
    cross_entropy,
    erf,
    exp,
    from_dlpack,
    gelu,
    gelu_tanh,
    layer_norm,
    linear,
    log,
    log_softmax,
    matmul,
    mean,
    mse,
    ones,
    relu,
    reshape,
    rms_norm,
    sigmoid,
    softmax,
    softplus,
    sqrt,
    square,
    sum,
    swapaxes,
    tanh,
    transpose,
    zeros,
)
from . import analysis, data, nn, optim, thought  # noqa: F401,E402
from ._pytree import tree_flatten, tree_map, tree_unflatten  # noqa: F401
from .transforms import grad, hvp, jacobian, jvp, linearize, value_and_grad, vjp  # noqa: F401

__version__ = _core.__version__


def _tensor_numpy(self):
    """Zero-copy read-only NumPy view (CPU tensors)."""
    import numpy as np

    return np.asarray(self)


def _tensor_repr(self):
    import numpy as np

    body = np.array2string(np.asarray(self), separator=", ", prefix="jl.Tensor(")
    return f"jl.Tensor({body}, dtype={self.dtype})"


Tensor.numpy = _tensor_numpy
Tensor.__repr__ = _tensor_repr


def cuda_compiled() -> bool:
    """True when this install contains the CUDA kernels (built with a CUDA compiler)."""
    try:
        from . import _cuda  # noqa: F401
    except ImportError:
        return False
    return True


def cuda_available() -> bool:
    """True when the CUDA kernels are compiled in and a CUDA device is present."""
    if not cuda_compiled():
        return False
    from . import _cuda

    return _cuda.info()["device_count"] > 0


def info() -> dict:
    """Build facts: version, BLAS, BLAS threads, CUDA."""
    d = {
        "version": __version__,
        "blas": _core.blas_info(),
        "blas_threads": _core.blas_num_threads(),
        "cuda_compiled": cuda_compiled(),
        "cuda_available": False,
    }
    if d["cuda_compiled"]:
        from . import _cuda

        ci = _cuda.info()
        d["cuda_available"] = ci["device_count"] > 0
        d["cuda"] = ci
    return d
