"""NumPy / DLPack interop: zero-copy wrapping and views, copies where needed, dtypes,
Tensor methods and operators with Python scalars and NumPy arrays, 0-d tensors."""
from __future__ import annotations

import numpy as np
import pytest

import jaclab as jl
from conftest import assert_close, npf


def data_ptr(a) -> int:
    return np.asarray(a).__array_interface__["data"][0]


# ---- zero-copy in and out --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_array_of_c_contiguous_is_zero_copy(dtype):
    a = np.arange(12, dtype=dtype).reshape(3, 4)
    t = jl.array(a)
    v = np.asarray(t)
    assert np.shares_memory(v, a)
    assert data_ptr(t) == data_ptr(a)
    assert v.dtype == dtype and v.shape == (3, 4)
    np.testing.assert_array_equal(v, a)
    # Tensor(...) constructor behaves the same.
    assert np.shares_memory(np.asarray(jl.Tensor(a)), a)


def test_zero_copy_tensor_keeps_array_alive():
    a = np.arange(6.0).reshape(2, 3)
    t = jl.array(a)
    expected = a.copy()
    del a
    import gc

    gc.collect()
    np.testing.assert_array_equal(np.asarray(t), expected)


@pytest.mark.parametrize("make", [
    lambda: np.arange(12.0).reshape(3, 4).T,  # Fortran order
    lambda: np.arange(24.0).reshape(4, 6)[::2, 1::2],  # strided slice
    lambda: np.arange(12.0)[::-1],  # negative stride
    lambda: np.asfortranarray(np.arange(24.0).reshape(2, 3, 4)),
    lambda: np.broadcast_to(np.arange(3.0), (4, 3)),  # zero stride
])
def test_non_contiguous_input_is_copied_and_correct(make):
    a = make()
    t = jl.array(a)
    v = np.asarray(t)
    assert not np.shares_memory(v, a)
    np.testing.assert_array_equal(v, a)
    assert t.shape == a.shape
    # and differentiates like the array it copied
    out, tan = jl.jvp(jl.tanh, (a,), (np.ones_like(a),))
    np.testing.assert_allclose(np.asarray(out), np.tanh(a), rtol=1e-15)
    np.testing.assert_allclose(np.asarray(tan), 1 - np.tanh(a) ** 2, rtol=1e-14, atol=1e-15)


def test_dtype_conversion_copies():
    a = np.arange(6.0).reshape(2, 3)
    t = jl.array(a, dtype=np.float32)
    assert t.dtype == np.float32 and not np.shares_memory(np.asarray(t), a)
    np.testing.assert_array_equal(np.asarray(t), a.astype(np.float32))
    t64 = jl.array(np.float32([1.5, 2.5]), dtype=np.float64)
    assert t64.dtype == np.float64
    assert t.astype(np.float64).dtype == np.float64
    np.testing.assert_array_equal(np.asarray(t.astype(np.float64)), a)


def test_asarray_is_read_only():
    t = jl.array(np.arange(6.0).reshape(2, 3))
    v = np.asarray(t)
    assert not v.flags.writeable
    with pytest.raises(ValueError):
        v[0, 0] = 5.0
    assert not t.numpy().flags.writeable
    assert np.asarray(jl.tanh(t)).flags.writeable is False


def test_results_are_views_without_copy():
    t = jl.tanh(np.arange(6.0).reshape(2, 3))
    assert data_ptr(t) == data_ptr(t)  # same buffer each time
    assert np.shares_memory(np.asarray(t), t.numpy())


def test_lists_and_scalars():
    assert jl.array([1.0, 2.0]).dtype == np.float64
    assert jl.array([[1, 2], [3, 4]]).dtype == np.int64
    assert jl.array(np.float32(2.0)).dtype == np.float32
    assert jl.array(2.0).shape == ()
    np.testing.assert_array_equal(np.asarray(jl.array([[1.0, 2.0]])), [[1.0, 2.0]])


# ---- DLPack ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
def test_numpy_from_dlpack_shares_memory(dtype):
    a = np.arange(12).astype(dtype).reshape(3, 4)
    t = jl.array(a)
    d = np.from_dlpack(t)
    assert d.dtype == dtype and d.shape == (3, 4)
    np.testing.assert_array_equal(d, a)
    assert np.shares_memory(d, np.asarray(t))
    assert t.__dlpack_device__() == (1, 0)  # kDLCPU


def test_numpy_from_dlpack_of_result_outlives_tensor():
    t = jl.exp(np.linspace(0, 1, 5))
    d = np.from_dlpack(t)
    del t
    import gc

    gc.collect()
    np.testing.assert_allclose(d, np.exp(np.linspace(0, 1, 5)), rtol=1e-15)


def test_numpy_from_dlpack_of_view():
    """A transposed tensor exports its strides."""
    t = jl.array(np.arange(6.0).reshape(2, 3)).T
    d = np.from_dlpack(t)
    np.testing.assert_array_equal(d, np.arange(6.0).reshape(2, 3).T)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
def test_jl_from_dlpack_zero_copy(dtype):
    a = np.arange(12).astype(dtype).reshape(3, 4)
    t = jl.from_dlpack(a)
    assert isinstance(t, jl.Tensor)
    assert t.dtype == dtype and t.shape == (3, 4)
    assert np.shares_memory(np.asarray(t), a)
    np.testing.assert_array_equal(np.asarray(t), a)


def test_jl_from_dlpack_strided_and_usable():
    a = np.arange(24.0).reshape(4, 6)[:, ::2]
    t = jl.from_dlpack(a)
    np.testing.assert_array_equal(np.asarray(t), a)
    np.testing.assert_allclose(np.asarray(jl.sum(t * t, axis=0)), np.sum(a * a, axis=0))
    g = jl.grad(lambda x: jl.sum(x * x))(t)
    np.testing.assert_allclose(np.asarray(g), 2 * a)


def test_dlpack_round_trip_through_jaclab():
    a = np.arange(6.0).reshape(2, 3)
    back = np.from_dlpack(jl.from_dlpack(a))
    assert np.shares_memory(back, a)
    np.testing.assert_array_equal(back, a)
    t = jl.array(a)
    assert jl.from_dlpack(t) is not None
    assert np.shares_memory(np.asarray(jl.from_dlpack(t)), a)


def test_from_dlpack_rejects():
    with pytest.raises(TypeError, match="__dlpack__"):
        jl.from_dlpack([1.0, 2.0])
    with pytest.raises(TypeError, match="dtype"):
        jl.from_dlpack(np.ones(3, np.int32))


def test_int64_round_trip():
    a = np.array([[3, -1, 2**40], [0, 7, -(2**50)]], dtype=np.int64)
    t = jl.array(a)
    assert t.dtype == np.int64
    np.testing.assert_array_equal(np.asarray(t), a)
    assert np.shares_memory(np.asarray(t), a)
    np.testing.assert_array_equal(np.from_dlpack(t), a)
    np.testing.assert_array_equal(np.asarray(jl.from_dlpack(a)), a)
    # other integer types are converted to int64 (labels)
    t32 = jl.array(np.array([1, 2, 3], np.int32))
    assert t32.dtype == np.int64
    np.testing.assert_array_equal(np.asarray(t32), [1, 2, 3])
    tu = jl.array(np.array([1, 2], np.uint8))
    assert tu.dtype == np.int64


# ---- Tensor attributes and methods ---------------------------------------------------------------


def test_tensor_attributes(rng):
    a = rng.standard_normal((2, 3, 4))
    t = jl.array(a)
    assert t.shape == (2, 3, 4) and isinstance(t.shape, tuple)
    assert t.dtype == np.float64 and t.ndim == 3 and t.size == 24 and len(t) == 2
    assert t.device == "cpu"
    np.testing.assert_array_equal(np.asarray(t.T), a.T)
    np.testing.assert_array_equal(np.asarray(t.reshape(6, 4)), a.reshape(6, 4))
    np.testing.assert_array_equal(np.asarray(t.reshape((4, -1))), a.reshape((4, -1)))
    np.testing.assert_array_equal(np.asarray(t.transpose(1, 0, 2)), a.transpose(1, 0, 2))
    np.testing.assert_array_equal(np.asarray(t.transpose()), a.transpose())
    assert_close(t.sum(), a.sum(), rtol=1e-14, atol=1e-14)
    assert_close(t.sum(axis=(0, 2)), a.sum(axis=(0, 2)), rtol=1e-14, atol=1e-14)
    assert_close(t.mean(axis=-1, keepdims=True), a.mean(axis=-1, keepdims=True), rtol=1e-14, atol=1e-14)
    assert t.mean().shape == ()
    assert "jl.Tensor(" in repr(t) and "float64" in repr(t)
    np.testing.assert_array_equal(t.numpy(), a)


def test_detach_blocks_derivatives(rng):
    x = rng.standard_normal(3)
    g = jl.grad(lambda x: jl.sum(x * x.detach()))(x)
    np.testing.assert_allclose(np.asarray(g), x, rtol=1e-15)


def test_zero_d_tensors():
    t = jl.array(np.float64(2.5))
    assert t.shape == () and t.ndim == 0 and t.size == 1
    assert float(t) == 2.5 and t.item() == 2.5
    with pytest.raises(TypeError):
        len(t)
    assert np.asarray(t).shape == ()
    s = t * t + 1.0
    assert s.shape == () and float(s) == 7.25
    # 0-d with n-d broadcasting, and derivatives of / wrt a 0-d input
    x = np.arange(3.0)
    assert np.asarray(t * x).shape == (3,)
    g = jl.grad(lambda s: jl.sum(s * x))(np.array(2.0))
    assert g.shape == () and float(g) == 3.0
    out, tan = jl.jvp(lambda s: jl.exp(s), (np.array(0.5),), (np.array(2.0),))
    assert tan.shape == () and abs(float(tan) - 2 * np.exp(0.5)) < 1e-15
    assert jl.sum(np.ones((2, 2))).shape == ()
    with pytest.raises(ValueError, match="elements"):
        jl.array(np.ones(2)).item()


def test_zeros_ones():
    z = jl.zeros((2, 3))
    o = jl.ones((2,), np.float32)
    assert z.shape == (2, 3) and z.dtype == np.float64 and not np.any(np.asarray(z))
    assert o.dtype == np.float32 and np.all(np.asarray(o) == 1)


# ---- operators ---------------------------------------------------------------------------------------


SCALAR_OPS = {
    "add": (lambda t, s: t + s, lambda a, s: a + s),
    "radd": (lambda t, s: s + t, lambda a, s: s + a),
    "sub": (lambda t, s: t - s, lambda a, s: a - s),
    "rsub": (lambda t, s: s - t, lambda a, s: s - a),
    "mul": (lambda t, s: t * s, lambda a, s: a * s),
    "rmul": (lambda t, s: s * t, lambda a, s: s * a),
    "div": (lambda t, s: t / s, lambda a, s: a / s),
    "rdiv": (lambda t, s: s / t, lambda a, s: s / a),
}


@pytest.mark.parametrize("op", list(SCALAR_OPS))
@pytest.mark.parametrize("scalar", [2, 2.5, -0.5, np.float64(1.5)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_operators_with_python_scalars(op, scalar, dtype):
    jf, nf = SCALAR_OPS[op]
    a = np.array([[0.5, -1.5, 2.0], [3.0, 0.25, -4.0]], dtype)
    r = jf(jl.array(a), scalar)
    assert isinstance(r, jl.Tensor)
    if not isinstance(scalar, np.generic):  # Python scalars take the tensor's dtype
        assert r.dtype == dtype
    np.testing.assert_allclose(np.asarray(r), nf(a, scalar).astype(r.dtype), rtol=1e-6 if dtype == np.float32 else 1e-15)


@pytest.mark.parametrize("op", list(SCALAR_OPS) + ["matmul", "rmatmul"])
def test_operators_with_numpy_arrays_on_either_side(op, rng):
    a = rng.standard_normal((3, 3))
    b = rng.standard_normal((3, 3)) + 4.0
    if op == "matmul":
        jf, nf = (lambda t, s: t @ s), (lambda x, s: x @ s)
    elif op == "rmatmul":
        jf, nf = (lambda t, s: s @ t), (lambda x, s: s @ x)
    else:
        jf, nf = SCALAR_OPS[op]
    r = jf(jl.array(a), b)
    assert isinstance(r, jl.Tensor), type(r)  # ndarray (op) Tensor defers to the Tensor
    np.testing.assert_allclose(np.asarray(r), nf(a, b), rtol=1e-14)
    # broadcasting with a NumPy operand on either side
    row = rng.standard_normal(3) + 4.0
    if op not in ("matmul", "rmatmul"):
        r2 = jf(jl.array(a), row)
        assert isinstance(r2, jl.Tensor)
        np.testing.assert_allclose(np.asarray(r2), nf(a, row), rtol=1e-14)


def test_ndarray_left_operand_is_differentiable(rng):
    c = rng.standard_normal((2, 3))
    x = rng.standard_normal((2, 3)) + 3.0
    for f, df in [
        (lambda x: jl.sum(c + x), lambda x: np.ones_like(x)),
        (lambda x: jl.sum(c - x), lambda x: -np.ones_like(x)),
        (lambda x: jl.sum(c * x), lambda x: c),
        (lambda x: jl.sum(c / x), lambda x: -c / x**2),
    ]:
        np.testing.assert_allclose(np.asarray(jl.grad(f)(x)), df(x), rtol=1e-14)
    W = rng.standard_normal((4, 2))
    g = jl.grad(lambda x: jl.sum(W @ x))(rng.standard_normal((2, 5)))
    np.testing.assert_allclose(np.asarray(g), np.broadcast_to(W.sum(0)[:, None], (2, 5)), rtol=1e-14)


def test_pow_operator_and_neg():
    a = np.array([1.0, 2.0, 3.0])
    t = jl.array(a)
    np.testing.assert_allclose(np.asarray(t**2), a**2)
    np.testing.assert_allclose(np.asarray(t**0.5), np.sqrt(a))
    np.testing.assert_allclose(np.asarray(-t), -a)
    np.testing.assert_array_equal(np.asarray(+t), a)


def test_tensor_inputs_accepted_everywhere(rng):
    a = rng.standard_normal((2, 3))
    t = jl.array(a)
    np.testing.assert_allclose(np.asarray(jl.tanh(t)), np.tanh(a))
    np.testing.assert_allclose(np.asarray(t + a), 2 * a)
    out, tan = jl.jvp(jl.tanh, (t,), (jl.array(np.ones((2, 3))),))
    np.testing.assert_allclose(npf(tan), 1 - np.tanh(a) ** 2, rtol=1e-14)
    assert jl.array(t) is not None and np.shares_memory(np.asarray(jl.array(t)), np.asarray(t))
