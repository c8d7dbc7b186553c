"""jaclab: exact derivatives for MLP, attention and residual blocks.

A C++ autograd engine (reverse mode, forward mode, nested to second order) with a NumPy-style
API. Arrays go in as NumPy arrays or ``jl.Tensor`` and come out as ``jl.Tensor``, which
``np.asarray`` views without copying.
"""

import os as _os

# OpenBLAS's idle threads spin for 2^28 cycles (~0.1 s) after each of their jobs by default. jaclab
# runs its own OpenBLAS on one thread (its pool splits the GEMMs), but other OpenBLAS copies in the
# process (NumPy's) keep their threads: spinning ones take the core jaclab's pool needs (an HVP of
# the W1 MLP once took 2-3x as long after a NumPy BLAS call). 2^18 cycles (~0.1 ms) lets them sleep
# soon. OpenBLAS reads this when it loads, so it reaches the copies loaded after `import jaclab`;
# a value the user set wins.
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "18")

# Load the BLAS shared library first: the extension finds it through this import when it is
# not in its installed place (editable installs).
import scipy_openblas32  # noqa: F401,E402

from . import _core  # noqa: E402

_core.pool_num_threads()  # sizes jaclab's pool from OpenBLAS's count and sets OpenBLAS to one thread
from ._core import (  # noqa: F401,E402
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


def _tensor_array(self, dtype=None, copy=None):
    # NumPy reaches here only when the buffer protocol refused: a tensor on a GPU.
    raise ValueError(f"np.asarray: the tensor lives on {self.device}; call .to('cpu') first")


Tensor.numpy = _tensor_numpy
Tensor.__array__ = _tensor_array
Tensor.__repr__ = _tensor_repr


def cuda_compiled() -> bool:
    """True when this install contains the CUDA backend (built with a CUDA compiler)."""
    return bool(_core._cuda_compiled)


def cuda_available() -> bool:
    """True when the CUDA backend is compiled in and a CUDA device is present."""
    return cuda_compiled() and _core._cuda_info()["device_count"] > 0


def cuda_allow_tf32(allow: bool | None = None) -> bool:
    """Let float32 GEMMs on the GPU use TF32 tensor cores (about 3 decimal digits less precise).

    Off by default: jaclab's float32 results are plain FP32 arithmetic unless you opt in. With an
    argument, sets the switch; returns its (new) value."""
    if not cuda_available():
        raise RuntimeError("cuda_allow_tf32: no CUDA device (jl.cuda_available() is False)")
    if allow is not None:
        _core._cuda_set_allow_tf32(bool(allow))
    return bool(_core._cuda_allow_tf32())


def cuda_synchronize() -> None:
    """Wait until all queued GPU work is done (jaclab's CUDA ops are asynchronous, like CuPy's)."""
    _core._cuda_synchronize()


def _preload_cublas() -> None:
    """Load cuBLAS from the `nvidia-cublas` wheel when it is installed (pip extra jaclab[cuda]).

    The engine loads cuBLAS at run time by soname (libcublas.so.13, .12); a library loaded here
    first is the one it finds. Without the wheel it falls back to the system loader path and
    $CUDA_HOME/lib64 (see docs/engine.md)."""
    import ctypes
    import glob
    import os
    import sys

    for root in sys.path:
        for libdir in ("nvidia/cu13/lib", "nvidia/cublas/lib"):
            found = sorted(glob.glob(os.path.join(root or ".", libdir, "libcublas.so.*")))
            if not found:
                continue
            # RTLD_LOCAL (ctypes' default): cuBLAS exports C++ runtime symbols of its own, which
            # must not take the place of libstdc++'s for code loaded later. The engine's
            # dlopen("libcublas.so.13") then finds this copy by its soname.
            try:  # libcublas needs libcublasLt from the same wheel
                for lt in sorted(glob.glob(os.path.join(root or ".", libdir, "libcublasLt.so.*"))):
                    ctypes.CDLL(lt)
                ctypes.CDLL(found[0])
                return
            except OSError:
                continue


if cuda_compiled():
    _preload_cublas()


def set_num_threads(n: int) -> None:
    """Use ``n`` CPU threads for GEMMs and elementwise loops (jaclab's own pool; OpenBLAS itself
    runs on one thread and jaclab splits each large GEMM into single-threaded calls). The default
    is the count OpenBLAS picks when it loads (``OPENBLAS_NUM_THREADS``, else every core)."""
    n = int(n)
    if n < 1:
        raise ValueError(f"set_num_threads: need n >= 1, got {n}")
    _core.set_pool_num_threads(n)


def num_threads() -> int:
    """CPU threads used by jaclab's GEMMs and elementwise loops."""
    return _core.pool_num_threads()


def cached_memory() -> int:
    """Bytes of host memory the engine holds idle for reuse. Freed tensor memory is kept by size
    (blocks from 16 MiB up to 512 MiB, smaller ones from 64 KiB up to another 512 MiB), because derivative code allocates the same shapes over and over and fresh
    memory costs a page fault per 4 KB; large analyses' work arrays (a Lanczos basis) stay there
    between calls. Counts all large blocks and the calling thread's small ones."""
    return int(_core.cached_host_bytes())


def release_cached_memory() -> int:
    """Return the engine's idle host memory (see :func:`cached_memory`) to the system; returns
    the number of bytes released. Tensors in use are not affected."""
    return int(_core.release_cached_host_memory())


def info() -> dict:
    """Build facts: version, BLAS, BLAS threads, CUDA."""
    d = {
        "version": __version__,
        "blas": _core.blas_info(),
        "blas_threads": _core.blas_num_threads(),
        "threads": num_threads(),
        "cuda_compiled": cuda_compiled(),
        "cuda_available": False,
    }
    if d["cuda_compiled"]:
        ci = _core._cuda_info()
        d["cuda_available"] = ci["device_count"] > 0
        d["cuda"] = ci
    return d
