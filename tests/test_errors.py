"""Bad input raises ValueError / TypeError with messages that name the shapes and dtypes."""
from __future__ import annotations

import re

import numpy as np
import pytest

import jaclab as jl


def esc(s) -> str:
    return re.escape(str(s))


A23 = np.ones((2, 3))
B43 = np.ones((4, 3))


# ---- shapes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["+", "-", "*", "/"])
def test_broadcast_shape_mismatch(op):
    a, b = jl.array(A23), jl.array(B43)
    with pytest.raises(ValueError, match=esc((2, 3)) + ".*" + esc((4, 3))):
        eval(f"a {op} b")


def test_broadcast_shape_mismatch_numpy_operand():
    with pytest.raises(ValueError, match=esc((2, 3)) + ".*" + esc((4, 3))):
        jl.array(A23) + B43
    with pytest.raises(ValueError, match=esc((4, 3)) + ".*" + esc((2, 3))):
        B43 + jl.array(A23)


def test_matmul_shape_mismatch():
    with pytest.raises(ValueError, match=r"matmul.*" + esc((2, 3)) + ".*" + esc((2, 3))):
        jl.matmul(A23, A23)
    with pytest.raises(ValueError, match=esc((2, 3)) + ".*" + esc((4, 3))):
        jl.array(A23) @ B43
    with pytest.raises(ValueError, match=esc((5,)) + ".*" + esc((3, 2))):
        jl.matmul(np.ones(5), np.ones((3, 2)))


def test_matmul_batch_mismatch():
    # names the full operand shapes whose batch dims do not broadcast
    with pytest.raises(ValueError, match=r"matmul.*" + esc((2, 3, 4)) + ".*" + esc((3, 4, 5))):
        jl.matmul(np.ones((2, 3, 4)), np.ones((3, 4, 5)))


def test_matmul_0d():
    with pytest.raises(ValueError, match="matmul"):
        jl.matmul(np.array(2.0), np.ones(3))


def test_shape_op_errors():
    x = jl.array(np.ones((2, 3)))
    with pytest.raises(ValueError, match=esc((2, 3)) + ".*" + esc((4, 2))):
        jl.reshape(x, (4, 2))
    with pytest.raises(ValueError, match=r"-1"):
        jl.reshape(x, (-1, -1))
    with pytest.raises(ValueError, match=esc((2, 3)) + ".*" + esc((3, 3))):
        jl.broadcast_to(x, (3, 3))
    with pytest.raises(ValueError, match="transpose"):
        jl.transpose(x, (0, 1, 2))
    with pytest.raises(ValueError, match="repeated"):
        jl.transpose(x, (0, 0))
    with pytest.raises(ValueError, match="mse.*" + esc((2, 3)) + ".*" + esc((3, 2))):
        jl.mse(x, np.ones((3, 2)))


@pytest.mark.parametrize("axis", [2, -3, (0, 5), (0, 0)])
@pytest.mark.parametrize("fn", [jl.sum, jl.mean])
def test_bad_axis(fn, axis):
    with pytest.raises(ValueError, match=r"axis"):
        fn(np.ones((2, 3)), axis=axis)


def test_bad_axis_messages():
    with pytest.raises(ValueError, match=r"axis 2 .*2-d"):
        jl.sum(np.ones((2, 3)), axis=2)
    with pytest.raises(ValueError, match=r"softmax: axis 2 .*2-d"):
        jl.softmax(np.ones((2, 3)), axis=2)
    with pytest.raises(ValueError, match=r"axis -3"):
        jl.log_softmax(np.ones((2, 3)), axis=-3)
    with pytest.raises(ValueError, match=r"axis"):
        jl.array(np.ones((2, 3))).sum(axis=3)
    with pytest.raises(ValueError, match=r"axis=\(\)"):
        jl.sum(np.ones((2, 3)), axis=())


def test_layer_norm_param_shape():
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match=r"layer_norm: g must have shape \(3,\).*" + esc((2, 3)) + ".*" + esc((4,))):
        jl.layer_norm(x, np.ones(4), np.ones(3))
    with pytest.raises(ValueError, match=r"layer_norm: b must have shape \(3,\).*" + esc((3, 1))):
        jl.layer_norm(x, np.ones(3), np.ones((3, 1)))
    with pytest.raises(ValueError, match=r"rms_norm: g must have shape \(3,\).*" + esc((2,))):
        jl.rms_norm(x, np.ones(2))


def test_attention_shapes():
    q = np.ones((1, 2, 3, 4))
    with pytest.raises(ValueError, match=r"attention.*" + esc((1, 2, 3, 4)) + ".*" + esc((1, 2, 3, 5))):
        jl.attention(q, np.ones((1, 2, 3, 5)), q)
    with pytest.raises(ValueError, match=r"attention.*rank"):
        jl.attention(q, np.ones((2, 3, 4)), q)


def test_cross_entropy_errors():
    z = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"label 3 at position 1 is outside \[0, 3\)"):
        jl.cross_entropy(z, np.array([0, 3]))
    with pytest.raises(ValueError, match=r"label -1 at position 0"):
        jl.cross_entropy(z, np.array([-1, 0]))
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\).*" + esc((2, 3)) + ".*" + esc((3,))):
        jl.cross_entropy(z, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"logits must be \(B, C\).*" + esc((3,))):
        jl.cross_entropy(np.zeros(3), np.array([0]))
    with pytest.raises(ValueError, match=esc((2, 3)) + ".*" + esc((2, 4))):
        jl.cross_entropy(z, np.ones((2, 4)) / 4)


# ---- dtypes --------------------------------------------------------------------------------------


def test_dtype_mismatch_binary():
    a = jl.array(np.ones(3))
    b = jl.array(np.ones(3, np.float32))
    for expr in (lambda: a + b, lambda: a * b, lambda: b - a, lambda: a / b):
        with pytest.raises(TypeError, match=r"(?=.*float32)(?=.*float64)"):
            expr()


def test_dtype_mismatch_matmul_and_composites():
    a64, a32 = np.ones((2, 2)), np.ones((2, 2), np.float32)
    with pytest.raises(TypeError, match=r"matmul.*float64.*float32"):
        jl.matmul(a64, a32)
    with pytest.raises(TypeError, match=r"(?=.*float32)(?=.*float64)"):
        jl.layer_norm(a64, np.ones(2, np.float32), np.ones(2, np.float32))
    with pytest.raises(TypeError, match=r"(?=.*float32)(?=.*float64)"):
        jl.mse(a32, a64)
    with pytest.raises(TypeError, match=r"(?=.*float32)(?=.*float64)"):
        jl.attention(np.ones((1, 2, 2)), np.ones((1, 2, 2), np.float32), np.ones((1, 2, 2)))


def test_integer_input_to_float_op():
    with pytest.raises(TypeError, match=r"tanh.*int64"):
        jl.tanh(np.arange(3))
    with pytest.raises(TypeError, match=r"int64"):
        jl.exp(jl.array([1, 2, 3]))
    with pytest.raises(TypeError, match=r"int64"):
        jl.softmax(np.arange(6).reshape(2, 3))
    with pytest.raises(TypeError, match=r"int64"):
        jl.cross_entropy(np.arange(6).reshape(2, 3), np.array([0, 1]))


def test_integer_primal_in_transforms():
    with pytest.raises(TypeError, match=r"int64"):
        jl.grad(lambda x: jl.sum(x))(np.arange(3))
    with pytest.raises(TypeError, match=r"int64"):
        jl.jvp(jl.tanh, (np.arange(3),), (np.arange(3),))


@pytest.mark.parametrize("maker", [
    lambda: np.array([True, False]),
    lambda: np.ones((2, 2), bool),
])
def test_bool_arrays(maker):
    with pytest.raises(TypeError, match="bool"):
        jl.array(maker())
    with pytest.raises(TypeError, match="bool"):
        jl.tanh(maker())
    with pytest.raises(TypeError, match="bool"):
        jl.grad(lambda x: jl.sum(x))(maker())


def test_bool_python_scalar_operand():
    with pytest.raises(TypeError, match="bool"):
        jl.array(np.ones(2)) + True


@pytest.mark.parametrize("dtype", [np.complex128, np.float16, object, "U3"])
def test_unsupported_dtypes(dtype):
    arr = np.array([1, 2], dtype=dtype) if dtype != "U3" else np.array(["a", "b"])
    with pytest.raises(TypeError):
        jl.array(arr)


def test_bad_dtype_argument():
    with pytest.raises(TypeError, match="float16"):
        jl.zeros((2,), np.float16)


# ---- transforms ------------------------------------------------------------------------------------


def test_jvp_wrong_number_of_tangent_leaves():
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match=r"1 leaves.*2 leaves"):
        jl.jvp(jl.tanh, (x,), (x, x))
    with pytest.raises(ValueError, match=r"2 leaves.*1 leaves"):
        jl.jvp(lambda a, b: a * b, (x, x), (x,))
    with pytest.raises(ValueError, match=r"structure"):
        jl.jvp(lambda p: jl.sum(p["a"]), ({"a": x, "b": x},), ({"a": x},))
    with pytest.raises(ValueError, match=r"structure"):
        jl.jvp(lambda p: jl.sum(p["a"]), ({"a": x},), ({"b": x},))


def test_jvp_tangent_shape_and_dtype():
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match=r"tangent 0.*" + esc((3, 2)) + ".*" + esc((2, 3))):
        jl.jvp(jl.tanh, (x,), (np.ones((3, 2)),))
    with pytest.raises(ValueError, match=r"tangent 0.*float32.*float64"):
        jl.jvp(jl.tanh, (x,), (np.ones((2, 3), np.float32),))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_jvp_non_finite_tangent(bad):
    x = np.ones((2, 3))
    t = np.zeros((2, 3))
    t[1, 2] = bad
    with pytest.raises(ValueError, match=r"tangent 0 .*" + esc((2, 3)) + r".*NaN or Inf"):
        jl.jvp(jl.tanh, (x,), (t,))
    with pytest.raises(ValueError, match=r"NaN or Inf"):
        jl.hvp(lambda x: jl.sum(jl.tanh(x)), (x,), (t,))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_jvp_non_finite_tangent_found_anywhere_in_large_arrays(dtype):
    # the check runs split over threads, on the exponent bits: every position, either dtype
    n = 1_100_003
    x = np.ones(n, dtype)
    for pos in (0, n // 2, n - 1):
        for bad in (np.nan, -np.inf):
            t = np.zeros(n, dtype)
            t[pos] = bad
            with pytest.raises(ValueError, match=r"NaN or Inf"):
                jl.jvp(jl.tanh, (x,), (t,))
    fi = np.finfo(dtype)  # the extremes of the finite numbers pass
    t = np.array([fi.max, -fi.max, fi.tiny / 4, -0.0], dtype)
    jl.jvp(jl.tanh, (t,), (t,))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_jvp_non_finite_tangent_larger_than_the_output(bad):
    # Tangents larger than the outputs are scanned only when an output tangent is non-finite:
    # one that reaches the output is still an error, naming the input ...
    rng = np.random.default_rng(7)
    w, x = rng.standard_normal((64, 32)), rng.standard_normal((4, 64))
    tw = np.zeros_like(w)
    tw[3, 5] = bad
    f = lambda w: jl.tanh(jl.array(x) @ w)  # noqa: E731
    with pytest.raises(ValueError, match=r"tangent 0 .*" + esc((64, 32)) + r".*NaN or Inf"):
        jl.jvp(f, (w,), (tw,))
    with pytest.raises(ValueError, match=r"tangent 1 .*NaN or Inf"):
        jl.hvp(lambda a, w: jl.sum(jl.tanh(a @ w)), (x, w), (np.zeros_like(x), tw))
    # ... and one that no output depends on cannot change the result, which is exact.
    g = lambda w, v: jl.tanh(jl.array(x) @ w)  # noqa: E731
    out, t = jl.jvp(g, (w, w), (np.ones_like(w), tw))
    expected = (1 - np.tanh(x @ w) ** 2) * (x @ np.ones_like(w))
    # relative to the largest entry: NumPy's and jaclab's GEMMs may sum in other orders, so an
    # entry near zero can differ by a few ulps of the others
    np.testing.assert_allclose(np.asarray(t), expected, rtol=0, atol=1e-13 * np.abs(expected).max())


def test_jvp_primals_must_be_tuples():
    x = np.ones(3)
    with pytest.raises(TypeError, match="tuples"):
        jl.jvp(jl.tanh, x, x)


def test_vjp_wrong_cotangent_shape():
    x = np.ones((2, 3))
    _, fn = jl.vjp(jl.tanh, x)
    with pytest.raises(ValueError, match=r"cotangent 0.*" + esc((3,)) + ".*" + esc((2, 3))):
        fn(np.ones(3))
    with pytest.raises(ValueError, match=r"cotangent 0.*float32.*float64"):
        fn(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"structure"):
        fn((np.ones((2, 3)), np.ones((2, 3))))
    # Still usable after the errors.
    np.testing.assert_allclose(np.asarray(fn(np.ones((2, 3)))[0]), 1 - np.tanh(1.0) ** 2)


def test_grad_of_non_scalar():
    with pytest.raises(ValueError, match=r"scalar.*" + esc((2, 3))):
        jl.grad(jl.tanh)(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"scalar.*" + esc((1,))):
        jl.grad(lambda x: jl.reshape(jl.sum(x), (1,)))(np.ones(3))
    with pytest.raises(ValueError, match=r"scalar"):
        jl.hvp(jl.tanh, (np.ones(3),), (np.ones(3),))
    with pytest.raises(TypeError, match=r"scalar"):
        jl.grad(lambda x: (jl.sum(x), jl.sum(x)))(np.ones(3))


def test_bad_argnums():
    with pytest.raises(ValueError, match="argnums"):
        jl.grad(lambda x: jl.sum(x), argnums=1)(np.ones(3))
    with pytest.raises(ValueError, match="argnums"):
        jl.jacobian(lambda x: x, argnums=(0, 2))(np.ones(3))


def test_function_returning_nothing():
    with pytest.raises(ValueError, match="no arrays"):
        jl.jvp(lambda x: [], (np.ones(2),), (np.ones(2),))


def test_errors_inside_nested_transforms_propagate():
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match=esc((2, 3)) + ".*" + esc((4, 3))):
        jl.grad(lambda x: jl.sum(jl.jvp(lambda y: y + np.ones((4, 3)), (x,), (x,))[1]))(x)
    with pytest.raises(ZeroDivisionError):
        jl.hvp(lambda x: jl.sum(x) * (1 / 0), (x,), (x,))
    # the engine is still usable afterwards
    np.testing.assert_allclose(np.asarray(jl.grad(lambda x: jl.sum(x * x))(x)), 2 * x)


def test_device_strings_and_missing_cuda():
    x = jl.array(np.ones((2, 3)))
    for bad in ("gpu", "cuda:", "cuda:x", "CPU"):
        with pytest.raises(ValueError, match="unknown device"):
            x.to(bad)
    assert x.to("cpu") is not None and x.to("cpu").device == "cpu"
    assert jl.cuda_compiled() in (True, False)
    if not jl.cuda_available():  # without a GPU (or a CUDA build) a tensor on "cuda" cannot exist
        with pytest.raises(RuntimeError, match="CUDA"):
            x.to("cuda")
        with pytest.raises(RuntimeError, match="CUDA"):
            jl.zeros((2,), device="cuda")
        with pytest.raises(RuntimeError):
            jl.cuda_allow_tf32(True)


def test_vector_kernels_for_host_iterations():
    # _core._vec_dot / _vec_axpy / _vec_scal (the engine's BLAS, used by Lanczos): results and
    # argument checks
    rng = np.random.default_rng(7)
    for n in (1, 1000, 300_001):  # long enough to be threaded by the BLAS
        x, y = rng.standard_normal(n), rng.standard_normal(n)
        assert abs(jl._core._vec_dot(x, y) - float(np.sum(x * y))) <= 1e-12 * np.sqrt(n) * max(1.0, abs(float(x @ y)))
        want = y - 0.25 * x
        jl._core._vec_axpy(-0.25, x, y)
        np.testing.assert_allclose(y, want, rtol=1e-15, atol=1e-15)
        want = x / 3.0
        jl._core._vec_scal(1.0 / 3.0, x)
        np.testing.assert_allclose(x, want, rtol=1e-15, atol=0)
    x = np.ones(4)
    for bad in (x.astype(np.float32), np.ones(8)[::2], np.ones((2, 2))):
        with pytest.raises(ValueError, match=r"_vec_dot: y must be a C-contiguous 1-d float64"):
            jl._core._vec_dot(x, bad)
    with pytest.raises(ValueError, match=r"lengths differ, 4 vs 3"):
        jl._core._vec_axpy(1.0, x, np.ones(3))
    ro = np.ones(4)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"_vec_axpy: y must be a writable"):
        jl._core._vec_axpy(1.0, x, ro)
    with pytest.raises(ValueError, match=r"_vec_scal: x must be a writable"):
        jl._core._vec_scal(2.0, ro)
    with pytest.raises(ValueError, match=r"_vec_scal: x must be a writable C-contiguous 1-d float64"):
        jl._core._vec_scal(2.0, np.ones(8)[::2])
