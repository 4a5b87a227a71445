"""Each ``def`` kernel of ``nnfast._kernels`` against its counterpart in ``nnfast.reference``.

Every build of the kernels that runs on this machine is tested (``conftest.kernel_builds``:
the baseline ``nnfast._kernels`` and, where the package has one, its x86-64-v3 and v4 builds).
Shapes cover both code paths of every matrix product: plain loops below the BLAS threshold
(multiply-adds per product) and BLAS at or above it (the shapes are derived from the
threshold, so they keep straddling it if it is retuned), including 1-row, 1-column and
non-square cases. Every output buffer is pre-filled with NaN so that a kernel that leaves
part of it unwritten fails.
"""

import math
import re
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import nnfast
from nnfast import reference
from conftest import ATOL, RTOL, blas_min_flops, kernel_builds

BUILDS = kernel_builds()


def _build_id(kernels):
    return kernels.__name__.rsplit(".", 1)[-1]


def _shapes(threshold):
    """(m, n_in, n_out) triples on both sides of the BLAS threshold."""
    threshold_rows = math.ceil(threshold / (32 * 16))
    shapes = [
        (1, 1, 1),
        (1, 7, 5),            # one row
        (9, 4, 1),            # one output column
        (6, 1, 5),            # one input column
        (5, 3, 8),            # non-square
        (threshold_rows - 1, 32, 16),                     # just below the threshold
        (threshold_rows, 32, 16),                         # at (or just above) the threshold
        (1, math.ceil(threshold / 128) + 3, 128),         # one row, BLAS
        (math.ceil(threshold / 64) + 5, 64, 1),           # one output column, BLAS
        (max(97, math.ceil(threshold / (61 * 43)) + 1), 61, 43),  # non-square, BLAS
    ]
    return [shape for shape in shapes if shape[0] >= 1]


def _cases():
    """(kernel build, shape) pairs, the shapes taken from each build's own threshold."""
    params = []
    for kernels in BUILDS:
        threshold = blas_min_flops(kernels)
        for m, n_in, n_out in _shapes(threshold):
            path = "blas" if m * n_in * n_out >= threshold else "loop"
            params.append(pytest.param(kernels, (m, n_in, n_out),
                                       id=f"{_build_id(kernels)}-{m}x{n_in}x{n_out}-{path}"))
    return params


CASES = _cases()


def _uniform(rs, low, high, shape, dtype):
    return rs.uniform(low, high, shape).astype(dtype)


def _nan(shape, dtype):
    return np.full(shape, np.nan, dtype=dtype)


# --------------------------------------------------------------------------------------------
# Matrix kernels
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("kernels, shape", CASES)
@pytest.mark.parametrize("n_threads", [1, 3])
def test_forward_layer(kernels, shape, dtype, with_bias, n_threads):
    m, n_in, n_out = shape
    rs = np.random.RandomState(0)
    inputs = _uniform(rs, -1, 1, (m, n_in), dtype)
    # Scaled so the pre-activations stay O(1) and the sigmoid does not saturate.
    weights = _uniform(rs, -1, 1, (n_in, n_out), dtype) / dtype(math.sqrt(n_in))
    bias = _uniform(rs, -1, 1, n_out, dtype)
    inputs_before, weights_before, bias_before = inputs.copy(), weights.copy(), bias.copy()

    out = _nan((m, n_out), dtype)
    kernels.forward_layer(inputs, weights, bias if with_bias else np.empty(0, dtype), out,
                          n_threads)
    expected = reference.forward_layer(inputs, weights, bias if with_bias else None)

    assert expected.dtype == dtype
    assert_allclose(out, expected, rtol=RTOL[dtype], atol=ATOL[dtype])
    assert_array_equal(inputs, inputs_before)
    assert_array_equal(weights, weights_before)
    assert_array_equal(bias, bias_before)


@pytest.mark.parametrize("kernels, shape", CASES)
def test_output_delta(kernels, shape, dtype):
    m, _, n_out = shape
    rs = np.random.RandomState(0)
    targets = _uniform(rs, 0, 1, (m, n_out), dtype)
    outputs = _uniform(rs, 0, 1, (m, n_out), dtype)

    delta = _nan((m, n_out), dtype)
    abs_error_sum = kernels.output_delta(targets, outputs, delta)
    expected_delta, expected_error = reference.output_delta(targets, outputs)

    assert_allclose(delta, expected_delta, rtol=RTOL[dtype], atol=ATOL[dtype])
    assert isinstance(abs_error_sum, float)
    assert_allclose(abs_error_sum, np.abs(expected_error.astype(np.float64)).sum(),
                    rtol=RTOL[dtype])


@pytest.mark.parametrize("kernels, shape", CASES)
@pytest.mark.parametrize("n_threads", [1, 3])
def test_hidden_delta(kernels, shape, dtype, n_threads):
    m, n_in, n_out = shape
    rs = np.random.RandomState(0)
    delta_next = _uniform(rs, -0.25, 0.25, (m, n_out), dtype)
    weights = _uniform(rs, -1, 1, (n_in, n_out), dtype)
    activations = _uniform(rs, 0, 1, (m, n_in), dtype)

    delta = _nan((m, n_in), dtype)
    kernels.hidden_delta(delta_next, weights, activations, delta, n_threads)
    expected = reference.hidden_delta(delta_next, weights, activations)

    assert_allclose(delta, expected, rtol=RTOL[dtype], atol=ATOL[dtype])


@pytest.mark.parametrize("learning_rate", [1.0, 0.1])
@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("kernels, shape", CASES)
@pytest.mark.parametrize("n_threads", [1, 3])
def test_apply_gradient(kernels, shape, dtype, with_bias, learning_rate, n_threads):
    m, n_in, n_out = shape
    rs = np.random.RandomState(0)
    weights = _uniform(rs, -1, 1, (n_in, n_out), dtype)
    bias = _uniform(rs, -1, 1, n_out, dtype)
    inputs = _uniform(rs, 0, 1, (m, n_in), dtype)
    delta = _uniform(rs, -0.25, 0.25, (m, n_out), dtype)
    lr = dtype(learning_rate)

    weights_kernel, bias_kernel = weights.copy(), bias.copy()
    grad = _nan(n_in * n_out, dtype)
    kernels.apply_gradient(weights_kernel, bias_kernel if with_bias else np.empty(0, dtype),
                            inputs, delta, lr, grad, n_threads)
    weights_ref, bias_ref = weights.copy(), bias.copy()
    reference.apply_gradient(weights_ref, bias_ref if with_bias else None, inputs, delta, lr)

    assert_allclose(weights_kernel, weights_ref, rtol=RTOL[dtype], atol=ATOL[dtype])
    assert_allclose(bias_kernel, bias_ref, rtol=RTOL[dtype], atol=ATOL[dtype])
    # The update must actually have happened (guards against comparing two no-ops).
    assert not np.array_equal(weights_ref, weights)
    if not with_bias:
        assert_array_equal(bias_kernel, bias)


# --------------------------------------------------------------------------------------------
# Elementwise kernels
# --------------------------------------------------------------------------------------------

# Lengths around typical vector widths and tails, and a long buffer.
LENGTHS = [1, 2, 3, 5, 8, 17, 1000, 70_003]


@pytest.mark.parametrize("n", LENGTHS)
def test_sigmoid_inplace(kernels, n, dtype):
    rs = np.random.RandomState(0)
    values = _uniform(rs, -20, 20, n, dtype)
    expected = reference.nonlin(values)
    out = values.copy()
    kernels.sigmoid_inplace(out)
    assert_allclose(out, expected, rtol=RTOL[dtype], atol=ATOL[dtype])


@pytest.mark.parametrize("n", LENGTHS)
def test_sigmoid_derivative(kernels, n, dtype):
    rs = np.random.RandomState(0)
    activations = _uniform(rs, 0, 1, n, dtype)
    before = activations.copy()
    out = _nan(n, dtype)
    kernels.sigmoid_derivative(activations, out)
    assert_allclose(out, reference.nonlin(activations, deriv=True),
                    rtol=RTOL[dtype], atol=ATOL[dtype])
    assert_array_equal(activations, before)


# The kernel's sigmoid against float64 NumPy 1 / (1 + exp(-x)), as a relative error: a few ulp
# of the kernel's dtype (measured: ~2.3 ulp for float64, ~1 ulp for float32 including the
# rounding of the float64 result to float32).
SIGMOID_RTOL = {np.float32: 4e-7, np.float64: 1e-15}


def _numpy_sigmoid(x, dtype):
    """float64 NumPy sigmoid of x, rounded to dtype (exp(1000) overflowing to inf gives 0)."""
    with np.errstate(over="ignore"):
        return (1 / (1 + np.exp(-x.astype(np.float64)))).astype(dtype)


def test_sigmoid_accuracy_wide_range(kernels, dtype):
    x = np.concatenate([np.linspace(-50, 50, 10**6),
                        [-80, 80, -700, 700, -1000, 1000]]).astype(dtype)
    out = x.copy()
    kernels.sigmoid_inplace(out)
    # atol=0: where the reference is exactly 0 (or 1) the kernel must be too.
    assert_allclose(out, _numpy_sigmoid(x, dtype), rtol=SIGMOID_RTOL[dtype], atol=0)


def _assert_sigmoid_matches_down_to_subnormals(kernels, x, dtype):
    """The kernel's sigmoid of x within SIGMOID_RTOL of NumPy's, plus two subnormal spacings
    for the rounding of results that are subnormal."""
    out = x.copy()
    kernels.sigmoid_inplace(out)
    smallest_subnormal = np.nextafter(dtype(0), dtype(1))
    assert_allclose(out, _numpy_sigmoid(x, dtype), rtol=SIGMOID_RTOL[dtype],
                    atol=2 * smallest_subnormal)


def test_sigmoid_accuracy_near_exp_overflow(kernels, dtype):
    """sigmoid(x) for x just above the point where exp(-x) overflows in this dtype.

    The outputs there are tiny (subnormal), so the tolerance adds two subnormal spacings for
    the rounding of the result; the relative error of exp itself must stay a few ulp all the
    way up to the overflow threshold.
    """
    if dtype is np.float32:
        # Every float32 from -88.75 to -87.
        magnitudes = np.arange(np.float32(87.0).view(np.int32),
                               np.float32(88.75).view(np.int32) + 1,
                               dtype=np.int32).view(np.float32)
        x = -magnitudes
    else:
        x = np.linspace(-709.79, -700.0, 200001)
    with np.errstate(over="ignore"):
        finite_exp = np.isfinite(np.exp(-x))  # exp(-x) representable in this dtype
    x = x[finite_exp]
    assert x.size > 1000
    _assert_sigmoid_matches_down_to_subnormals(kernels, x, dtype)


def test_sigmoid_far_outside_exps_range(kernels, dtype):
    """exp's range is enforced by selects after its polynomial; inputs whose exponent
    arithmetic wraps (every power of two up to the dtype's largest finite number, both signs)
    must still give the reference's 0, 1 or its tiny value, never a wrapped scale."""
    largest_exponent = np.finfo(dtype).maxexp - 1
    magnitudes = np.ldexp(1.0, np.arange(0, largest_exponent + 1)).astype(dtype)
    magnitudes = np.concatenate([magnitudes, magnitudes * dtype(1.37), [np.finfo(dtype).max]])
    magnitudes = magnitudes[np.isfinite(magnitudes)]
    x = np.concatenate([magnitudes, -magnitudes]).astype(dtype)
    _assert_sigmoid_matches_down_to_subnormals(kernels, x, dtype)


def test_sigmoid_exact_values(kernels, dtype):
    out = np.array([-1000, 0, 1000, -np.inf, np.inf], dtype=dtype)
    kernels.sigmoid_inplace(out)
    assert out.tolist() == [0.0, 0.5, 1.0, 0.0, 1.0]
    assert out.dtype == dtype
    assert nnfast.nonlin(np.array([-1000, 0, 1000], dtype=dtype)).tolist() == [0.0, 0.5, 1.0]
    assert nnfast.nonlin(-1000) == 0.0 and nnfast.nonlin(0) == 0.5 and nnfast.nonlin(1000) == 1.0


def test_sigmoid_nan_propagates(kernels, dtype):
    out = np.array([np.nan, 0.0, -np.nan, 3.0], dtype=dtype)
    kernels.sigmoid_inplace(out)
    assert_array_equal(np.isnan(out), [True, False, True, False])
    assert_allclose(out[[1, 3]], reference.nonlin(np.array([0.0, 3.0], dtype=dtype)),
                    rtol=RTOL[dtype])
    assert np.isnan(nnfast.nonlin(np.array([np.nan], dtype=dtype))).all()


def test_sigmoid_emits_no_warnings(kernels, dtype):
    x = np.array([-1000, -800, -710, -100, 0, 100, 710, 800, 1000, np.nan, np.inf, -np.inf],
                 dtype=dtype)
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        out = x.copy()
        kernels.sigmoid_inplace(out)
        nnfast.nonlin(x)
        nnfast.nonlin(-x)


# --------------------------------------------------------------------------------------------
# Size checks: each entry point checks every buffer against the others before it runs, so a
# wrong call is a ValueError naming the buffer, never an out-of-bounds access.
# --------------------------------------------------------------------------------------------

def _layer_args(dtype, m=6, n_in=4, n_out=3):
    rs = np.random.RandomState(0)
    return dict(inputs=_uniform(rs, -1, 1, (m, n_in), dtype),
                weights=_uniform(rs, -1, 1, (n_in, n_out), dtype),
                bias=_uniform(rs, -1, 1, n_out, dtype),
                outputs=_nan((m, n_out), dtype),
                delta_next=_uniform(rs, -1, 1, (m, n_out), dtype),
                activations=_uniform(rs, 0, 1, (m, n_in), dtype),
                delta=_nan((m, n_in), dtype),
                targets=_uniform(rs, 0, 1, (m, n_out), dtype),
                grad=_nan(n_out, dtype))


def _wrong(shape_or_length, dtype):
    return np.zeros(shape_or_length, dtype=dtype)


# (entry point, argument names, {argument: wrong value maker}, text the error must contain)
def _layer_entry_cases():
    return [
        ("forward_layer", ("inputs", "weights", "bias", "outputs"), [
            ("inputs", lambda d: _wrong((6, 5), d), "inputs"),
            ("bias", lambda d: _wrong(2, d), "bias"),
            ("outputs", lambda d: _wrong((6, 2), d), "outputs"),
            ("outputs", lambda d: _wrong((5, 3), d), "outputs"),
            ("weights", lambda d: _wrong((4, 0), d), "weights"),
        ]),
        ("output_delta", ("targets", "outputs", "delta"), [
            ("outputs", lambda d: _wrong((6, 2), d), "outputs"),
            ("delta", lambda d: _wrong((5, 3), d), "delta"),
        ]),
        ("hidden_delta", ("delta_next", "weights", "activations", "delta"), [
            ("delta_next", lambda d: _wrong((6, 2), d), "delta_next"),
            ("activations", lambda d: _wrong((5, 4), d), "activations"),
            ("delta", lambda d: _wrong((6, 3), d), "delta"),
        ]),
        ("apply_gradient", ("weights", "bias", "inputs", "delta", "learning_rate", "grad"), [
            ("bias", lambda d: _wrong(4, d), "bias"),
            ("inputs", lambda d: _wrong((6, 3), d), "inputs"),
            ("delta", lambda d: _wrong((5, 3), d), "delta"),
            ("grad", lambda d: _wrong(2, d), "grad"),
        ]),
    ]


def _layer_entry_params():
    params = []
    for entry, names, cases in _layer_entry_cases():
        for argument, make, message in cases:
            params.append(pytest.param(entry, names, argument, make, message,
                                       id=f"{entry}-{argument}-{message}"))
    return params


@pytest.mark.parametrize("entry, names, argument, make, message", _layer_entry_params())
@pytest.mark.parametrize("kernels", BUILDS, ids=_build_id)
def test_layer_entry_points_check_sizes(kernels, dtype, entry, names, argument, make,
                                        message):
    args = _layer_args(dtype)
    # For output_delta and apply_gradient, "delta" is the output layer's (m, n_out).
    if entry in ("output_delta", "apply_gradient"):
        args["delta"] = _nan((6, 3), dtype)
    args["learning_rate"] = dtype(0.1)
    call = getattr(kernels, entry)
    call(*[args[name].copy() if hasattr(args[name], "copy") else args[name]
           for name in names])  # valid as given
    args[argument] = make(dtype)
    with pytest.raises(ValueError, match=message):
        call(*[args[name] for name in names])


def test_sigmoid_entry_points_check_sizes(kernels, dtype):
    with pytest.raises(ValueError, match="out"):
        kernels.sigmoid_derivative(np.zeros(5, dtype), np.zeros(4, dtype))
    empty = np.zeros(0, dtype)
    kernels.sigmoid_inplace(empty)  # nothing to do, and no out-of-bounds pointer either
    kernels.sigmoid_derivative(empty, empty.copy())


def _fit_args(dtype, batch_size=3, shuffled=True):
    sizes = np.array([3, 4, 2], dtype=np.intp)
    rs = np.random.RandomState(0)
    n_rows = 7
    params = _uniform(rs, -1, 1, 3 * 4 + 4 + 4 * 2 + 2, dtype)
    rows = min(batch_size, n_rows)
    return dict(params=params, sizes=sizes, has_bias=True,
                x=_uniform(rs, 0, 1, (n_rows, 3), dtype), y=_uniform(rs, 0, 1, (n_rows, 2), dtype),
                order=(np.array([rs.permutation(n_rows) for _ in range(2)], dtype=np.intp)
                       if shuffled else np.empty((0, 0), dtype=np.intp)),
                batch_size=batch_size, n_epochs=2, learning_rate=dtype(0.1),
                activations=_nan(rows * 6, dtype), deltas=_nan(rows * 6, dtype),
                grad=_nan(4, dtype), batch_x=_nan(rows * 3, dtype),
                batch_y=_nan(rows * 2, dtype), check_every=0)


FIT_NAMES = ("params", "sizes", "has_bias", "x", "y", "order", "batch_size", "n_epochs",
             "learning_rate", "activations", "deltas", "grad", "batch_x", "batch_y",
             "check_every")
GRADIENT_NAMES = ("params", "sizes", "has_bias", "x", "y", "activations", "deltas", "grad",
                  "gradient_out")

SPOILT_FIT = [
    ("params", lambda a: a["params"][:-1].copy(), "params"),
    ("sizes", lambda a: np.array([3], dtype=np.intp), "sizes"),
    ("sizes", lambda a: np.array([3, 0, 2], dtype=np.intp), "sizes[1]"),
    ("x", lambda a: np.ascontiguousarray(a["x"][:, :2]), "x"),
    ("y", lambda a: np.ascontiguousarray(a["y"][:-1]), "y"),
    ("y", lambda a: np.ascontiguousarray(a["y"][:, :1]), "y"),
    ("order", lambda a: np.ascontiguousarray(a["order"][:, :-1]), "order"),
    ("order", lambda a: np.ascontiguousarray(a["order"][:1]), "order"),
    ("order", lambda a: np.where(a["order"] == 0, 7, a["order"]), "order["),
    ("batch_size", lambda a: 0, "batch_size"),
    ("n_epochs", lambda a: -1, "n_epochs"),
    ("activations", lambda a: a["activations"][:-1].copy(), "activations"),
    ("deltas", lambda a: a["deltas"][:-1].copy(), "deltas"),
    ("grad", lambda a: a["grad"][:-1].copy(), "grad"),
    ("batch_x", lambda a: a["batch_x"][:-1].copy(), "batch_x"),
    ("batch_y", lambda a: a["batch_y"][:-1].copy(), "batch_y"),
    ("check_every", lambda a: -1, "check_every"),
]


@pytest.mark.parametrize("argument, make, message", SPOILT_FIT,
                         ids=[f"{case[0]}-{i}" for i, case in enumerate(SPOILT_FIT)])
def test_fit_checks_sizes(kernels, dtype, argument, make, message):
    args = _fit_args(dtype)
    before = args["params"].copy()
    kernels.original_fit(*[args[name] for name in FIT_NAMES])  # valid as given
    assert not np.array_equal(args["params"], before)
    args = _fit_args(dtype)
    before = args["params"].copy()
    args[argument] = make(args)
    with pytest.raises(ValueError, match=re.escape(message)):
        kernels.original_fit(*[args[name] for name in FIT_NAMES])
    if argument != "params":
        assert_array_equal(args["params"], before)


def test_fit_workspace_follows_the_batch_size(kernels, dtype):
    """Scratch is sized for min(batch_size, n_rows) rows; no gather buffers in stored order."""
    args = _fit_args(dtype, batch_size=100, shuffled=False)
    args.update(batch_x=np.empty(0, dtype), batch_y=np.empty(0, dtype),
                activations=_nan(7 * 6, dtype), deltas=_nan(7 * 6, dtype))
    kernels.original_fit(*[args[name] for name in FIT_NAMES])
    args["activations"] = _nan(7 * 6 - 1, dtype)
    with pytest.raises(ValueError, match="activations"):
        kernels.original_fit(*[args[name] for name in FIT_NAMES])


@pytest.mark.parametrize("argument, make, message", [
    ("params", lambda a: a["params"][1:].copy(), "params"),
    ("x", lambda a: np.zeros((0, 3), a["params"].dtype), "x"),
    ("x", lambda a: np.ascontiguousarray(a["x"][:, 1:]), "x"),
    ("y", lambda a: np.ascontiguousarray(a["y"][1:]), "y"),
    ("activations", lambda a: a["activations"][1:].copy(), "activations"),
    ("deltas", lambda a: a["deltas"][1:].copy(), "deltas"),
    ("grad", lambda a: a["grad"][1:].copy(), "grad"),
    ("gradient_out", lambda a: a["gradient_out"][1:].copy(), "gradient_out"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_gradient_checks_sizes(kernels, dtype, argument, make, message):
    args = _fit_args(dtype, batch_size=7)
    args["gradient_out"] = _nan(args["params"].size, dtype)
    kernels.original_gradient(*[args[name] for name in GRADIENT_NAMES])  # valid as given
    args[argument] = make(args)
    with pytest.raises(ValueError, match=re.escape(message)):
        kernels.original_gradient(*[args[name] for name in GRADIENT_NAMES])
