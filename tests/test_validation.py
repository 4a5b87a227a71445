"""Every validation rule of the public API, the no-side-effects guarantees (caller arrays are
never written, a failed fit leaves the weights as they were), the input layouts that must be
accepted, and ``nnfast.nonlin``.

Each rejection is asserted with the exception type the API documents (TypeError for the
wrong kind of thing, ValueError for a bad value) and a word of the message naming the problem.
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import nnfast
from nnfast import reference
from conftest import ATOL, RTOL

BACKENDS = ["cython", "numpy"]


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


# --------------------------------------------------------------------------------------------
# Network(...) arguments
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sizes, error, match", [
    ([3], ValueError, "at least two"),
    ([], ValueError, "at least two"),
    ([3, 0], ValueError, ">= 1"),
    ([0, 1], ValueError, ">= 1"),
    ([3, -2, 1], ValueError, ">= 1"),
    ([3.0, 1], TypeError, "integer"),
    ([3, 1.5], TypeError, "integer"),
    ([3, True], TypeError, "integer"),
    ([3, "1"], TypeError, "integer"),
    ([3, None], TypeError, "integer"),
    (3, TypeError, "sequence"),
    ("31", TypeError, "sequence"),
    (None, TypeError, "sequence"),
    ([3, 2**31], ValueError, "largest supported"),
])
def test_bad_sizes(sizes, error, match):
    with pytest.raises(error, match=match):
        nnfast.Network(sizes)


@pytest.mark.parametrize("sizes", [[3, 1], (3, 4, 1), np.array([5, 7, 3]),
                                   [np.int64(2), np.int32(1)]])
def test_good_sizes(sizes):
    assert nnfast.Network(sizes).sizes == tuple(int(s) for s in sizes)


@pytest.mark.parametrize("dtype, error", [
    (int, ValueError),
    (np.int32, ValueError),
    (np.float16, ValueError),
    (np.complex128, ValueError),
    (bool, ValueError),
    ("foo", TypeError),
])
def test_bad_dtype(dtype, error):
    with pytest.raises(error, match="dtype"):
        nnfast.Network([3, 1], dtype=dtype)


@pytest.mark.parametrize("dtype, expected", [
    (np.float32, np.float32), (np.float64, np.float64), ("float32", np.float32),
    (float, np.float64), (np.dtype("f4"), np.float32),
])
def test_good_dtype(dtype, expected):
    net = nnfast.Network([3, 1], dtype=dtype)
    assert net.dtype == expected
    assert all(w.dtype == expected for w in net.weights)


@pytest.mark.parametrize("backend_name, error", [
    ("fortran", ValueError), ("CYTHON", ValueError), ("", ValueError),
    (None, TypeError), (1, TypeError),
])
def test_bad_backend(backend_name, error):
    with pytest.raises(error, match="backend"):
        nnfast.Network([3, 1], backend=backend_name)


@pytest.mark.parametrize("n_threads, error", [
    (0, ValueError), (-1, ValueError),
    (1.5, TypeError), (2.0, TypeError), ("2", TypeError), (True, TypeError),
])
def test_bad_n_threads(n_threads, error):
    with pytest.raises(error, match="n_threads"):
        nnfast.Network([3, 1], n_threads=n_threads)


@pytest.mark.parametrize("n_threads", [None, 1, 2, np.int64(3)])
def test_good_n_threads(n_threads, X, y2):
    net = nnfast.Network([3, 1], n_threads=n_threads)
    ref = nnfast.Network([3, 1], backend="numpy")
    net.fit(X, y2, iterations=20)
    ref.fit(X, y2, iterations=20)
    assert_allclose(net.weights[0], ref.weights[0], rtol=RTOL[np.float64],
                    atol=ATOL[np.float64])


@pytest.mark.parametrize("seed, error", [
    (-1, ValueError), (1.5, TypeError), ("1", TypeError), (None, TypeError), (True, TypeError),
])
def test_bad_seed(seed, error):
    with pytest.raises(error, match="seed"):
        nnfast.Network([3, 1], seed=seed)


# --------------------------------------------------------------------------------------------
# fit(X, y, iterations, learning_rate)
# --------------------------------------------------------------------------------------------

_X = [[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]]
_Y = [0, 1, 1, 0]


@pytest.mark.parametrize("X_bad, match", [
    (np.array([0, 0, 1]), "2-D"),                       # 1-D
    (np.zeros((4, 3, 1)), "2-D"),                      # 3-D
    (np.float64(1.0), "2-D"),                          # 0-D
    (np.zeros((0, 3)), "at least one row"),
    (np.zeros((4, 0)), "at least one column"),
    (np.zeros((4, 2)), "columns"),                     # width != sizes[0]
    (np.zeros((4, 4)), "columns"),
    (np.array([[0, 0, 1], [0, np.nan, 1], [1, 0, 1], [1, 1, 1]]), "NaN"),
    (np.array([[0, 0, 1], [0, np.inf, 1], [1, 0, 1], [1, 1, 1]]), "infinite"),
    (np.array([[0, 0, 1], [0, -np.inf, 1], [1, 0, 1], [1, 1, 1]]), "infinite"),
])
def test_fit_bad_X_value(X_bad, match, backend):
    net = nnfast.Network([3, 1], backend=backend)
    with pytest.raises(ValueError, match=match):
        net.fit(X_bad, _Y, iterations=1)


@pytest.mark.parametrize("y_bad, match", [
    (np.zeros(3), "rows"),                             # 1-D, too short
    (np.zeros((5, 1)), "rows"),                        # 2-D, too long
    (np.zeros((4, 2)), "columns"),                     # width != sizes[-1]
    (np.zeros((4, 1, 1)), "2-D"),
    (np.float64(0.0), "2-D"),
    (np.zeros((0, 1)), "at least one row"),
    (np.array([0, np.nan, 1, 0]), "NaN"),
    (np.array([[0], [1], [np.inf], [0]]), "infinite"),
])
def test_fit_bad_y_value(y_bad, match, backend):
    net = nnfast.Network([3, 1], backend=backend)
    with pytest.raises(ValueError, match=match):
        net.fit(_X, y_bad, iterations=1)


def test_fit_1d_y_needs_single_output():
    with pytest.raises(ValueError, match="columns"):
        nnfast.Network([3, 2]).fit(_X, _Y, iterations=1)


# Casting 1e39 to float32 makes NumPy warn before nnfast raises; the ValueError is what counts.
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_fit_value_too_large_for_float32():
    X = np.array(_X, dtype=np.float64)
    X[0, 0] = 1e39
    with pytest.raises(ValueError, match="too large"):
        nnfast.Network([3, 1], dtype=np.float32).fit(X, _Y, iterations=1)
    with pytest.raises(ValueError, match="too large"):
        nnfast.Network([3, 1], dtype=np.float32).fit(_X, [0, 1, 1e39, 0], iterations=1)


# Non-numeric inputs, each as X (with a valid y) and as y (with a valid X).
NON_NUMERIC = {
    "str": (np.array(_X).astype(str), np.array(_Y).astype(str), "integers or floats"),
    "bytes": (np.array(_X).astype(bytes), np.array(_Y).astype(bytes), "integers or floats"),
    "object": (np.array(_X, dtype=object), np.array(_Y, dtype=object), "numeric"),
    "ragged": ([[0, 0, 1], [0, 1], [1, 0, 1], [1, 1, 1]], [0, [1, 1], 1, 0], "numeric"),
    "complex": (np.array(_X, dtype=complex), np.array(_Y, dtype=complex),
                "integers or floats"),
    "bool": (np.array(_X, dtype=bool), np.array(_Y, dtype=bool), "integers or floats"),
    "datetime": (np.array(_X, dtype="datetime64[s]"), np.array(_Y, dtype="datetime64[s]"),
                 "integers or floats"),
}


@pytest.mark.parametrize("kind", list(NON_NUMERIC))
def test_fit_non_numeric_X(kind, backend):
    X_bad, _, match = NON_NUMERIC[kind]
    with pytest.raises(TypeError, match=match):
        nnfast.Network([3, 1], backend=backend).fit(X_bad, _Y, iterations=1)


@pytest.mark.parametrize("kind", list(NON_NUMERIC))
def test_fit_non_numeric_y(kind, backend):
    _, y_bad, match = NON_NUMERIC[kind]
    with pytest.raises(TypeError, match=match):
        nnfast.Network([3, 1], backend=backend).fit(_X, y_bad, iterations=1)


@pytest.mark.parametrize("kind", list(NON_NUMERIC))
def test_predict_non_numeric_X(kind, backend):
    X_bad, _, match = NON_NUMERIC[kind]
    with pytest.raises(TypeError, match=match):
        nnfast.Network([3, 1], backend=backend).predict(X_bad)


@pytest.mark.parametrize("learning_rate, error", [
    ("0.1", TypeError), (1j, TypeError), (True, TypeError),
    ([0.1], TypeError),
    (float("nan"), ValueError), (float("inf"), ValueError), (-float("inf"), ValueError),
    (np.float32("nan"), ValueError),
])
def test_bad_learning_rate(learning_rate, error, backend):
    with pytest.raises(error, match="learning_rate"):
        nnfast.Network([3, 1], backend=backend).fit(_X, _Y, learning_rate=learning_rate)


@pytest.mark.parametrize("iterations, error, match", [
    (1.5, TypeError, "integer"), (10.0, TypeError, "integer"), ("10", TypeError, "integer"),
    (True, TypeError, "integer"), (None, TypeError, "integer"),
    (-1, ValueError, ">= 0"),
])
def test_bad_iterations(iterations, error, match, backend):
    with pytest.raises(error, match="iterations") as info:
        nnfast.Network([3, 1], backend=backend).fit(_X, _Y, iterations=iterations)
    info.match(match)


@pytest.mark.parametrize("iterations", [np.int64(5), np.uint8(5), 5])
@pytest.mark.parametrize("learning_rate", [np.float32(0.5), 0.5, 1])
def test_numpy_scalars_accepted(iterations, learning_rate, backend):
    net = nnfast.Network([3, 1], backend=backend).fit(_X, _Y, iterations=iterations,
                                                      learning_rate=learning_rate)
    ref = nnfast.Network([3, 1], backend="numpy").fit(_X, _Y, iterations=5,
                                                      learning_rate=float(learning_rate))
    assert_allclose(net.weights[0], ref.weights[0], rtol=RTOL[np.float64],
                    atol=ATOL[np.float64])


@pytest.mark.parametrize("X_bad, error, match", [
    (np.zeros((4, 2)), ValueError, "columns"),
    (np.zeros(3), ValueError, "2-D"),
    (np.zeros((0, 3)), ValueError, "at least one row"),
    (np.array([[np.nan, 0, 1]]), ValueError, "NaN"),
])
def test_predict_bad_X(X_bad, error, match, backend):
    with pytest.raises(error, match=match):
        nnfast.Network([3, 1], backend=backend).predict(X_bad)


# --------------------------------------------------------------------------------------------
# Caller arrays are never written to
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("y_ndim", [1, 2])
def test_caller_arrays_not_modified(backend, dtype, y_ndim):
    rs = np.random.RandomState(0)
    # Already C-contiguous and of the network's dtype: validation passes these through
    # without a copy, so the kernel sees the caller's own memory.
    X = np.ascontiguousarray(rs.uniform(-1, 1, (64, 16)), dtype=dtype)
    y = rs.uniform(0, 1, 64).astype(dtype)
    if y_ndim == 2:
        y = np.ascontiguousarray(y.reshape(-1, 1))
    X_before, y_before = X.copy(), y.copy()
    net = nnfast.Network([16, 32, 1], dtype=dtype, backend=backend)
    net.fit(X, y, iterations=20, learning_rate=0.5)
    assert_array_equal(X, X_before)
    assert_array_equal(y, y_before)
    prediction = net.predict(X)
    assert_array_equal(X, X_before)
    assert not np.shares_memory(prediction, X)
    for w in net.weights:
        assert not np.shares_memory(w, X) and not np.shares_memory(w, y)


def test_tutorial_arrays_not_modified(backend, X, y3):
    X_before, y_before = X.copy(), y3.copy()
    net = nnfast.Network([3, 4, 1], backend=backend).fit(X, y3, iterations=10)
    net.predict(X)
    assert_array_equal(X, X_before)
    assert_array_equal(y3, y_before)


def test_nonlin_input_not_modified(dtype):
    x = np.linspace(-3, 3, 11).astype(dtype)
    before = x.copy()
    nnfast.nonlin(x)
    nnfast.nonlin(x, deriv=True)
    assert_array_equal(x, before)
    scalar = np.array(0.3, dtype=dtype)
    nnfast.nonlin(scalar)
    nnfast.nonlin(scalar, deriv=True)
    assert scalar == dtype(0.3)


# --------------------------------------------------------------------------------------------
# A failed fit leaves the weights as they were
# --------------------------------------------------------------------------------------------

def _trained(backend, dtype=np.float64):
    net = nnfast.Network([3, 4, 1], dtype=dtype, backend=backend)
    net.fit(_X, _Y, iterations=50)
    return net, [w.copy() for w in net.weights]


@pytest.mark.parametrize("bad_fit", [
    lambda net: net.fit(_X, [0, 1, 1], iterations=10),
    lambda net: net.fit(_X, [0, 1, np.nan, 0], iterations=10),
    lambda net: net.fit(_X, _Y, iterations=-1),
    lambda net: net.fit(_X, _Y, iterations=10, learning_rate=float("nan")),
], ids=["short-y", "nan-y", "negative-iterations", "nan-learning-rate"])
def test_failed_validation_leaves_weights(bad_fit, backend):
    net, before = _trained(backend)
    with pytest.raises(ValueError):
        bad_fit(net)
    for w, b in zip(net.weights, before):
        assert_array_equal(w, b)


def test_learning_rate_beyond_float32_is_refused(backend):
    net, before = _trained(backend, np.float32)
    with pytest.raises(ValueError, match="learning_rate.*overflows float32"):
        net.fit(_X, _Y, iterations=10, learning_rate=1e300)
    with pytest.raises(ValueError, match="learning_rate.*underflows"):
        net.fit(_X, _Y, iterations=10, learning_rate=1e-50)
    for w, b in zip(net.weights, before):
        assert_array_equal(w, b)


def test_divergence_float32_leaves_weights(backend):
    rs = np.random.RandomState(0)
    X = rs.uniform(0, 0.2, (200, 3))
    y = np.ones(200)
    net = nnfast.Network([3, 4, 1], backend=backend, dtype=np.float32)
    net.fit(X, y, iterations=3, learning_rate=0.01)
    before = [w.copy() for w in net.weights]
    with pytest.raises(nnfast.TrainingDivergedError, match="diverged"):
        net.fit(X, y, iterations=10, learning_rate=1e38)
    for w, b in zip(net.weights, before):
        assert_array_equal(w, b)
    # The network is still usable.
    net.fit(_X, _Y, iterations=10)
    assert np.isfinite(net.predict(_X)).all()


@pytest.mark.parametrize("iterations", [1, 5])
def test_divergence_float64_leaves_weights(backend, iterations):
    # Many small positive inputs keep the sigmoid unsaturated, so the first gradient is O(1)
    # and 1e308 times it overflows.
    rs = np.random.RandomState(0)
    X = rs.uniform(0, 0.2, (200, 3))
    y = np.ones(200)
    net = nnfast.Network([3, 4, 1], backend=backend)
    net.fit(X, y, iterations=3, learning_rate=0.01)  # a trained state, still unsaturated
    before = [w.copy() for w in net.weights]
    with pytest.raises(nnfast.TrainingDivergedError, match="diverged"):
        net.fit(X, y, iterations=iterations, learning_rate=1e308)
    for w, b in zip(net.weights, before):
        assert_array_equal(w, b)


def test_diverged_error_is_floating_point_error():
    assert issubclass(nnfast.TrainingDivergedError, FloatingPointError)


# --------------------------------------------------------------------------------------------
# Input layouts and kinds that must work, with the same result as C-contiguous float64
# --------------------------------------------------------------------------------------------

def _layouts():
    X = np.array(_X, dtype=np.float64)
    y = np.array(_Y, dtype=np.float64)
    big = np.zeros((8, 3))
    big[::2] = X
    y_columns = np.zeros((4, 3))
    y_columns[:, 1] = y
    read_only_X, read_only_y = X.copy(), y.copy()
    read_only_X.flags.writeable = False
    read_only_y.flags.writeable = False
    return {
        "fortran": (np.asfortranarray(X), y),
        "strided": (big[::2], y_columns[:, 1]),
        "read-only": (read_only_X, read_only_y),
        "int": (np.array(_X), np.array(_Y)),
        "int32": (np.array(_X, dtype=np.int32), np.array(_Y, dtype=np.uint8)),
        "float32-input": (X.astype(np.float32), y.astype(np.float32)),
        "list": (_X, _Y),
        "column-y": (X, y.reshape(-1, 1)),
    }


@pytest.mark.parametrize("layout", list(_layouts()))
def test_input_layouts_give_same_result(layout, backend, dtype):
    X_in, y_in = _layouts()[layout]
    if layout in ("fortran", "strided"):
        assert not X_in.flags.c_contiguous
    expected = nnfast.Network([3, 4, 1], dtype=dtype, backend=backend)
    expected.fit(np.array(_X, dtype=np.float64), np.array(_Y, dtype=np.float64),
                 iterations=200)
    net = nnfast.Network([3, 4, 1], dtype=dtype, backend=backend)
    net.fit(X_in, y_in, iterations=200)
    for w, e in zip(net.weights, expected.weights):
        assert_array_equal(w, e)
    assert_array_equal(net.predict(X_in), expected.predict(np.array(_X, dtype=np.float64)))


# --------------------------------------------------------------------------------------------
# nonlin
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("x", [
    pytest.param(0.5, id="python-float"),
    pytest.param(3, id="python-int"),
    pytest.param(np.float64(-2.0), id="numpy-scalar"),
    pytest.param(np.array(1.5), id="0-d"),
    pytest.param(np.linspace(-5, 5, 7), id="1-D"),
    pytest.param(np.arange(24.0).reshape(2, 3, 4) - 12, id="3-D"),
    pytest.param(np.linspace(-5, 5, 12).reshape(3, 4)[:, ::2], id="strided"),
    pytest.param(np.arange(-4, 5), id="int-array"),
    pytest.param(np.arange(-4, 5, dtype=np.int8), id="int8-array"),
    pytest.param([[1, 2], [3, -4]], id="list"),
])
@pytest.mark.parametrize("deriv", [False, True])
def test_nonlin_matches_reference(x, deriv):
    result = nnfast.nonlin(x, deriv=deriv)
    x_arr = np.asarray(x)
    expected = reference.nonlin(x_arr.astype(np.float64), deriv=deriv)
    assert np.shape(result) == x_arr.shape
    assert result.dtype == np.float64
    assert_allclose(result, expected, rtol=RTOL[np.float64], atol=ATOL[np.float64])
    if x_arr.ndim == 0:
        assert np.ndim(result) == 0


@pytest.mark.parametrize("shape", [(0,), (2, 0, 3)])
@pytest.mark.parametrize("deriv", [False, True])
def test_nonlin_empty(shape, deriv, dtype):
    result = nnfast.nonlin(np.empty(shape, dtype=dtype), deriv=deriv)
    assert result.shape == shape
    assert result.dtype == dtype


@pytest.mark.parametrize("deriv", [False, True])
def test_nonlin_keeps_float32(deriv):
    x = np.linspace(-3, 3, 13, dtype=np.float32).reshape(13, 1)
    result = nnfast.nonlin(x, deriv=deriv)
    assert result.dtype == np.float32
    assert result.shape == x.shape
    assert_allclose(result, reference.nonlin(x, deriv=deriv), rtol=RTOL[np.float32],
                    atol=ATOL[np.float32])
    assert nnfast.nonlin(np.float32(0.25), deriv=deriv).dtype == np.float32


@pytest.mark.parametrize("dt", [np.float16, np.int32, np.uint8, np.int64])
def test_nonlin_other_real_dtypes_give_float64(dt):
    x = np.arange(5).astype(dt)
    result = nnfast.nonlin(x)
    assert result.dtype == np.float64
    assert_allclose(result, reference.nonlin(x.astype(np.float64)), rtol=RTOL[np.float64])


def test_nonlin_deriv_is_x_times_one_minus_x(dtype):
    """deriv=True takes the sigmoid's output, as in the original: x * (1 - x), not
    sigmoid'(x)."""
    x = np.array([0.0, 0.25, 0.5, 1.0, 2.0, -1.0], dtype=dtype)
    assert_allclose(nnfast.nonlin(x, deriv=True), x * (1 - x), rtol=RTOL[dtype],
                    atol=ATOL[dtype])
    # Composed as the original uses it: the slope at the sigmoid's output.
    s = nnfast.nonlin(x)
    assert_allclose(nnfast.nonlin(s, deriv=True), s * (1 - s), rtol=RTOL[dtype],
                    atol=ATOL[dtype])


@pytest.mark.parametrize("x", [
    "1.0", ["a", "b"], np.array([1 + 2j, 3j]), 1j, np.array([b"x"]), None,
    np.array([1, 2], dtype=object),
])
@pytest.mark.parametrize("deriv", [False, True])
def test_nonlin_rejects_non_real(x, deriv):
    with pytest.raises(TypeError, match="integers or floats"):
        nnfast.nonlin(x, deriv=deriv)


# --------------------------------------------------------------------------------------------
# Model options: Network(activation=, output=, optimizer=, alpha=, reduction=), the optimizer
# dataclasses, and fit's sample_weight / resume / report_every
# --------------------------------------------------------------------------------------------

from nnfast.optimizers import SGD, Adam, GradientStep  # noqa: E402


@pytest.mark.parametrize("sizes, activation, error, match", [
    ([3, 4, 1], "swish", ValueError, "unknown activation 'swish'"),
    ([3, 4, 1], "ReLU", ValueError, "unknown activation"),
    ([3, 4, 1], "softmax", ValueError, "unknown activation"),
    ([3, 4, 4, 1], ["relu"], ValueError, "1 names but the network has 2 hidden layers"),
    ([3, 4, 1], ["relu", "tanh"], ValueError, "2 names but the network has 1 hidden"),
    ([3, 1], ["relu"], ValueError, "0 hidden layers"),
    ([3, 4, 4, 1], ["relu", "sigmoid"], ValueError, r"activation\[1\] 'sigmoid'"),
    ([3, 4, 4, 1], ["relu", 3], TypeError, r"activation\[1\] must be a string"),
    ([3, 4, 1], None, TypeError, "activation must be a name"),
    ([3, 4, 1], b"relu", TypeError, "activation must be a name"),
    ([3, 4, 1], 1, TypeError, "activation must be a name"),
])
def test_bad_activation(sizes, activation, error, match):
    with pytest.raises(error, match=match):
        nnfast.Network(sizes, activation=activation)


def test_activation_per_layer_accepts_any_sequence():
    for activation in (["relu", "tanh"], ("relu", "tanh"), np.array(["relu", "tanh"])):
        assert nnfast.Network([3, 4, 4, 1], activation=activation).activations == ("relu",
                                                                                    "tanh")
    assert nnfast.Network([3, 1], activation="relu").activations == ()


@pytest.mark.parametrize("kwargs, error, match", [
    ({"output": "sigmoid"}, ValueError, "unknown output 'sigmoid'"),
    ({"output": None}, TypeError, "output must be a string"),
    ({"output": "softmax"}, ValueError, "at least 2 output units"),
    ({"reduction": "average"}, ValueError, "unknown reduction"),
    ({"reduction": 1}, TypeError, "reduction must be a string"),
    ({"alpha": -0.1}, ValueError, "alpha must be >= 0"),
    ({"alpha": float("nan")}, ValueError, "alpha must be finite"),
    ({"alpha": "0.1"}, TypeError, "alpha must be a real number"),
    ({"alpha": True}, TypeError, "alpha must be a real number"),
    ({"optimizer": "adam"}, TypeError, "optimizer must be nnfast.optimizers"),
    ({"optimizer": Adam}, TypeError, "optimizer must be nnfast.optimizers"),
])
def test_bad_model_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        nnfast.Network([3, 4, 1], **kwargs)


@pytest.mark.parametrize("make, error, match", [
    (lambda: GradientStep(float("inf")), ValueError, "GradientStep: learning_rate must be "
                                                     "finite"),
    (lambda: GradientStep("1"), TypeError, "GradientStep: learning_rate must be a real"),
    (lambda: SGD(learning_rate=0), ValueError, "SGD: learning_rate must be > 0"),
    (lambda: SGD(learning_rate=-1), ValueError, "learning_rate must be > 0"),
    (lambda: SGD(momentum=1.5), ValueError, r"momentum must be in \[0.0, 1.0\]"),
    (lambda: SGD(momentum=-0.1), ValueError, "momentum"),
    (lambda: SGD(nesterov=1), TypeError, "nesterov must be True or False"),
    (lambda: SGD(schedule="linear"), ValueError, "unknown schedule 'linear'"),
    (lambda: SGD(schedule=None), TypeError, "schedule must be a string"),
    (lambda: SGD(power_t=-0.5), ValueError, "power_t"),
    (lambda: SGD(power_t=None), TypeError, "power_t must be a real"),
    (lambda: Adam(learning_rate=0.0), ValueError, "Adam: learning_rate must be > 0"),
    (lambda: Adam(beta_1=1.0), ValueError, r"beta_1 must be in \[0.0, 1.0\)"),
    (lambda: Adam(beta_2=-0.1), ValueError, "beta_2"),
    (lambda: Adam(epsilon=0), ValueError, "epsilon must be > 0"),
    (lambda: Adam(epsilon=float("nan")), ValueError, "epsilon must be finite"),
    (lambda: Adam(beta_1=True), TypeError, "beta_1 must be a real"),
])
def test_bad_optimizer_configuration(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_optimizers_are_frozen_and_coerce_numbers():
    sgd = SGD(learning_rate=np.float32(0.5), momentum=1, nesterov=np.bool_(False))
    assert type(sgd.learning_rate) is float and type(sgd.momentum) is float
    assert sgd.nesterov is False
    with pytest.raises(AttributeError):
        sgd.momentum = 0.5
    assert Adam() == Adam(0.001, 0.9, 0.999, 1e-8) and hash(Adam()) == hash(Adam())


_MODEL_X = np.random.RandomState(0).normal(size=(6, 3))


@pytest.mark.parametrize("output, y, match", [
    ("logistic", [[0.5], [1.2], [0], [1], [0], [1]], r"targets in \[0, 1\]"),
    ("logistic", [[0], [1], [-0.1], [1], [0], [1]], r"targets in \[0, 1\]"),
    ("softmax", np.eye(2)[[0, 1, 0, 1, 0, 1]] * 2, r"targets in \[0, 1\]"),
    ("softmax", [[0.5, 0.4]] * 6, "sum to 1"),
    ("softmax", [[0, 0]] * 6, "row 0 sums to 0"),
    ("exp", [[1], [0], [3], [-1], [2], [0]], "needs targets >= 0"),
])
def test_targets_outside_the_losss_domain(output, y, match, backend):
    n_out = np.asarray(y).shape[1]
    net = nnfast.Network([3, 4, n_out], output=output, backend=backend)
    before = net.params.copy()
    with pytest.raises(ValueError, match=match):
        net.fit(_MODEL_X, y, 3)
    with pytest.raises(ValueError, match=match):
        net.loss_gradient(_MODEL_X, y)
    assert_array_equal(net.params, before)


def test_targets_any_real_for_identity_and_original():
    y = np.array([[-3.0], [5.0], [0.5], [2.0], [-1.0], [0.0]])
    for output in ("identity", "original"):
        nnfast.Network([3, 4, 1], output=output, backend="numpy").fit(_MODEL_X, y, 2)
    soft = np.array([[0.25, 0.75]] * 6)  # class probabilities are fine for softmax
    nnfast.Network([3, 4, 2], output="softmax", backend="numpy").fit(_MODEL_X, soft, 2)


@pytest.mark.parametrize("sample_weight, error, match", [
    ([1, 1, 1, -1, 1, 1], ValueError, "sample_weight must be >= 0"),
    ([0] * 6, ValueError, "must not be all zero"),
    ([1, 1, np.nan, 1, 1, 1], ValueError, "NaN or infinite"),
    ([1, 1, np.inf, 1, 1, 1], ValueError, "NaN or infinite"),
    ([1, 1, 1], ValueError, "X has 6 rows but sample_weight has 3"),
    (np.ones((6, 1)), ValueError, "sample_weight must be 1-D"),
    (5.0, ValueError, "sample_weight must be 1-D"),
    (["a"] * 6, TypeError, "sample_weight must hold integers or floats"),
    ([1, 1, 1, 1, 1, [1, 2]], TypeError, "sample_weight must be a rectangular"),
    (np.ones(6, dtype=complex), TypeError, "sample_weight must hold integers or floats"),
])
def test_bad_sample_weight(sample_weight, error, match, backend):
    net = nnfast.Network([3, 4, 1], output="identity", backend=backend)
    before = net.params.copy()
    with pytest.raises(error, match=match):
        net.fit(_MODEL_X, np.ones(6), 3, sample_weight=sample_weight)
    assert_array_equal(net.params, before)


def test_sample_weight_beyond_float32_is_refused():
    net = nnfast.Network([3, 4, 1], output="identity", dtype=np.float32, backend="numpy")
    with pytest.raises(ValueError, match="too large for float32"):
        net.fit(_MODEL_X, np.ones(6), 3, sample_weight=[1e300] * 6)


def test_sample_weight_caller_array_not_modified():
    weights = np.array([3, 1, 2, 0, 1, 5], dtype=np.int64)
    before = weights.copy()
    nnfast.Network([3, 4, 1], output="identity", backend="numpy").fit(
        _MODEL_X, np.ones(6), 3, sample_weight=weights)
    assert_array_equal(weights, before)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"resume": 1}, TypeError, "resume must be True or False"),
    ({"resume": None}, TypeError, "resume must be True or False"),
    ({"report_every": 0}, ValueError, "report_every must be >= 1"),
    ({"report_every": 2.0}, TypeError, "report_every must be an integer"),
    ({"learning_rate": 0.0}, ValueError, "learning_rate must be > 0 for Adam"),
    ({"learning_rate": -1e-3}, ValueError, "learning_rate must be > 0 for Adam"),
])
def test_bad_fit_options_for_a_model(kwargs, error, match, backend):
    net = nnfast.Network([3, 4, 1], output="identity", optimizer=Adam(), backend=backend)
    with pytest.raises(error, match=match):
        net.fit(_MODEL_X, np.ones(6), 3, **kwargs)
    assert net.optimizer_state is None


def test_resume_with_another_optimizers_state_is_refused():
    net = nnfast.Network([3, 4, 1], output="identity", optimizer=SGD(), backend="numpy")
    net.fit(_MODEL_X, np.ones(6), 2)
    state = net.optimizer_state.copy()
    net.optimizer = Adam()
    with pytest.raises(ValueError, match="resume=True, but the stored optimizer state"):
        net.fit(_MODEL_X, np.ones(6), 2, resume=True)
    assert net.optimizer_state == state
    net.fit(_MODEL_X, np.ones(6), 2)  # a fresh fit replaces it
    assert net.optimizer_state.values.size == 2 * state.values.size


@pytest.mark.parametrize("attribute, value, error, match", [
    ("output", "bogus", ValueError, "unknown output"),
    ("activations", ("relu", "relu"), ValueError, "2 names"),
    ("optimizer", None, TypeError, "optimizer must be"),
    ("alpha", -1, ValueError, "alpha must be >= 0"),
    ("optimizer_state", {"step": 1}, TypeError, "optimizer_state must be an OptimizerState"),
])
def test_assigned_model_options_are_validated_at_use(attribute, value, error, match):
    net = nnfast.Network([3, 4, 1], output="identity", backend="numpy")
    setattr(net, attribute, value)
    for use in (lambda: net.fit(_MODEL_X, np.ones(6), 1), lambda: net.predict(_MODEL_X),
                lambda: net.loss_gradient(_MODEL_X, np.ones(6))):
        with pytest.raises(error, match=match):
            use()


def test_a_bad_assigned_option_leaves_the_others_as_assigned():
    """Options are normalised (a name to a tuple, reduction None to its default) only once
    all of them are valid."""
    net = nnfast.Network([3, 4, 1], output="identity", backend="numpy")
    net.activations, net.reduction, net.alpha = "tanh", None, 0
    net.output = "bogus"
    with pytest.raises(ValueError, match="unknown output"):
        net.fit(_MODEL_X, np.ones(6), 1)
    assert (net.activations, net.reduction, net.alpha, net.output) == ("tanh", None, 0, "bogus")
    net.output = "identity"
    net.fit(_MODEL_X, np.ones(6), 1)
    assert (net.activations, net.reduction, net.output) == (("tanh",), "mean", "identity")
