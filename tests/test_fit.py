"""The fused kernel fit (backend="cython") against the NumPy reference (backend="numpy") and
against the original tutorial program, written out literally below.

Tolerance on the weights after a whole fit:

* float64: 1e-9. Kernel and reference round differently (summation order, exp), by a few
  ulp per step; a well-conditioned training run keeps that at ~1e-14 even after 60,000 steps.
* float32: 5e-4. float32 rounding (eps 1.2e-7) accumulates over thousands of steps to
  ~1e-5 (6e-5 for the widest network here) on weights of magnitude 2-10.

The tolerance only holds where training is well-conditioned: at large learning rates the
dynamics amplify a 1-ulp difference exponentially (e.g. [5, 7, 3] at learning rate 0.5: the
reference against itself with initial weights perturbed by 1 ulp differs by ~1e-3 after
3,000 iterations), so test_random_case_is_well_conditioned checks each random case for that.

Kernel fits run on every compiled build of the kernels that runs here (``kernels`` fixture).
"""

import functools

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import nnfast
from nnfast import reference
from conftest import ATOL, RTOL, kernel_blocks, kernel_build

FIT_ATOL = {np.float32: 5e-4, np.float64: 1e-9}

# The tutorial's published output of its 2-layer program after 10,000 iterations.
PUBLISHED_2_LAYER_OUTPUT = [0.0097, 0.0079, 0.9936, 0.9921]


def _max_weight_difference(a, b):
    return max(float(np.abs(np.asarray(p, np.float64) - np.asarray(q, np.float64)).max())
               for p, q in zip(a, b))


def _fit(sizes, X, y, iterations, learning_rate=1.0, dtype=np.float64, backend="cython",
         kernels=None):
    net = nnfast.Network(sizes, seed=1, dtype=dtype, backend=backend)
    with kernel_build(kernels):
        return net.fit(X, y, iterations=iterations, learning_rate=learning_rate)


def _original_3_layer(X, y, iterations):
    """The original "neural network in 11 lines", verbatim but for the RandomState
    (np.random.seed(1); np.random.random(...) draws the same numbers)."""
    random = np.random.RandomState(1).random_sample
    syn0 = 2 * random((3, 4)) - 1
    syn1 = 2 * random((4, 1)) - 1
    for j in range(iterations):
        l1 = 1 / (1 + np.exp(-(np.dot(X, syn0))))
        l2 = 1 / (1 + np.exp(-(np.dot(l1, syn1))))
        l2_delta = (y - l2) * (l2 * (1 - l2))
        l1_delta = l2_delta.dot(syn1.T) * (l1 * (1 - l1))
        syn1 += l1.T.dot(l2_delta)
        syn0 += X.T.dot(l1_delta)
    return [syn0, syn1]


def _original_2_layer(X, y, iterations):
    """The tutorial's 2-layer program, verbatim but for the RandomState."""
    def nonlin(x, deriv=False):
        if deriv:
            return x * (1 - x)
        return 1 / (1 + np.exp(-x))

    syn0 = 2 * np.random.RandomState(1).random_sample((3, 1)) - 1
    for iter in range(iterations):
        l0 = X
        l1 = nonlin(np.dot(l0, syn0))
        l1_error = y - l1
        l1_delta = l1_error * nonlin(l1, True)
        syn0 += np.dot(l0.T, l1_delta)
    return [syn0]


# --------------------------------------------------------------------------------------------
# The tutorial programs. The 60,000-iteration runs are shared across tests (module scope).
# --------------------------------------------------------------------------------------------

_X = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]])
_Y2 = np.array([[0, 0, 1, 1]]).T
_Y3 = np.array([[0, 1, 1, 0]]).T
TUTORIALS = {
    "2-layer": ([3, 1], _Y2, 10_000, _original_2_layer),
    "3-layer": ([3, 4, 1], _Y3, 60_000, _original_3_layer),
}


@pytest.fixture(scope="module")
def tutorial_fits():
    """(program, dtype, backend, kernel build) -> fitted Network, computed once."""
    cache = {}

    def get(program, dtype, backend, kernels=None):
        key = (program, dtype, backend, None if backend == "numpy" else kernels)
        if key not in cache:
            sizes, y, iterations, _ = TUTORIALS[program]
            cache[key] = _fit(sizes, _X, y, iterations, dtype=dtype, backend=backend,
                              kernels=kernels)
        return cache[key]

    return get


@pytest.fixture(scope="module")
def original_weights():
    return {name: original(_X, y, iterations)
            for name, (_, y, iterations, original) in TUTORIALS.items()}


@pytest.mark.parametrize("program", list(TUTORIALS))
def test_tutorial_kernel_matches_reference(program, dtype, kernels, tutorial_fits):
    kernel = tutorial_fits(program, dtype, "cython", kernels)
    ref = tutorial_fits(program, dtype, "numpy")
    assert _max_weight_difference(kernel.weights, ref.weights) <= FIT_ATOL[dtype]
    # And training moved the weights far more than the tolerance.
    start = nnfast.Network(TUTORIALS[program][0], seed=1, dtype=dtype).weights
    assert _max_weight_difference(kernel.weights, start) > 1.0


@pytest.mark.parametrize("program", list(TUTORIALS))
def test_tutorial_matches_original_program(program, kernels, tutorial_fits,
                                           original_weights):
    kernel = tutorial_fits(program, np.float64, "cython", kernels)
    ref = tutorial_fits(program, np.float64, "numpy")
    assert _max_weight_difference(kernel.weights, original_weights[program]) <= 1e-9
    assert _max_weight_difference(ref.weights, original_weights[program]) <= 1e-9


@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_tutorial_2_layer_published_output(backend, tutorial_fits):
    net = tutorial_fits("2-layer", np.float64, backend)
    assert_allclose(net.predict(_X).ravel(), PUBLISHED_2_LAYER_OUTPUT, atol=1e-3)


@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_tutorial_3_layer_learns_xor(backend, tutorial_fits):
    output = tutorial_fits("3-layer", np.float64, backend).predict(_X)
    assert output.shape == (4, 1)
    assert_array_equal(np.round(output).ravel(), [0, 1, 1, 0])


# --------------------------------------------------------------------------------------------
# Initial weights
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sizes", [[3, 1], [3, 4, 1], [5, 7, 3], [6, 10, 8, 2]])
@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_initial_weights_follow_original_recipe(sizes, backend, dtype):
    random_state = np.random.RandomState(1)
    expected = [2 * random_state.random_sample((a, b)) - 1 for a, b in zip(sizes, sizes[1:])]
    net = nnfast.Network(sizes, seed=1, dtype=dtype, backend=backend)
    assert len(net.weights) == len(sizes) - 1
    for w, e in zip(net.weights, expected):
        assert w.dtype == dtype
        assert w.shape == e.shape
        assert_array_equal(w, e.astype(dtype))


def test_seed_changes_initial_weights():
    a = nnfast.Network([3, 4, 1], seed=1).weights
    b = nnfast.Network([3, 4, 1], seed=2).weights
    expected = 2 * np.random.RandomState(2).random_sample((3, 4)) - 1
    assert_array_equal(b[0], expected)
    assert not np.array_equal(a[0], b[0])


# --------------------------------------------------------------------------------------------
# Random networks
# --------------------------------------------------------------------------------------------

RANDOM_CASES = [
    # sizes, rows, learning rate, iterations
    pytest.param([5, 7, 3], 30, 0.25, 4000, id="5-7-3"),
    # 64 * 16 * 32 multiply-adds: the first layer's products take the BLAS path.
    pytest.param([16, 32, 1], 64, 0.1, 3000, id="16-32-1"),
    pytest.param([6, 10, 8, 2], 25, 0.1, 3000, id="6-10-8-2"),
    pytest.param([6, 10, 8, 2], 25, 1.0, 3000, id="6-10-8-2-lr1"),
    pytest.param([32, 64, 16], 128, 0.05, 500, id="32-64-16-blas"),
]


def _random_data(sizes, n_rows):
    rs = np.random.RandomState(0)
    X = rs.uniform(-1, 1, (n_rows, sizes[0]))
    y = rs.uniform(0, 1, (n_rows, sizes[-1]))
    return X, y


@functools.lru_cache(maxsize=None)
def _reference_weights(sizes, n_rows, learning_rate, iterations, dtype):
    """The reference backend's weights after the fit (computed once per case and dtype)."""
    X, y = _random_data(sizes, n_rows)
    return _fit(list(sizes), X, y, iterations, learning_rate, dtype, "numpy").weights


@pytest.mark.parametrize("sizes, n_rows, learning_rate, iterations", RANDOM_CASES)
def test_random_case_is_well_conditioned(sizes, n_rows, learning_rate, iterations):
    """The reference against itself from initial weights perturbed by ~1 ulp: a kernel that
    rounds differently can only be held to 1e-9 where this stays far below it."""
    X, y = _random_data(sizes, n_rows)
    weights, _ = reference.init_params(sizes, 1)
    noise = np.random.RandomState(5)
    perturbed = [w * (1 + 1e-15 * noise.standard_normal(w.shape)) for w in weights]
    assert _max_weight_difference(weights, perturbed) > 0
    reference.fit(weights, None, X, y, iterations, learning_rate)
    reference.fit(perturbed, None, X, y, iterations, learning_rate)
    assert _max_weight_difference(weights, perturbed) < 1e-11


@pytest.mark.parametrize("sizes, n_rows, learning_rate, iterations", RANDOM_CASES)
def test_random_network_kernel_matches_reference(sizes, n_rows, learning_rate, iterations,
                                                 dtype, kernels):
    X, y = _random_data(sizes, n_rows)
    kernel = _fit(sizes, X, y, iterations, learning_rate, dtype, "cython", kernels)
    ref = _reference_weights(tuple(sizes), n_rows, learning_rate, iterations, dtype)
    assert _max_weight_difference(kernel.weights, ref) <= FIT_ATOL[dtype]
    start = nnfast.Network(sizes, seed=1, dtype=dtype).weights
    assert _max_weight_difference(kernel.weights, start) > 0.5


# --------------------------------------------------------------------------------------------
# predict and the fit contract
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sizes, n_rows", [([3, 4, 1], 4), ([5, 7, 3], 9),
                                           ([16, 32, 1], 200), ([6, 10, 8, 2], 1)])
def test_predict_backends_agree(sizes, n_rows, dtype, kernels):
    X, y = _random_data(sizes, n_rows)
    with kernel_build(kernels):
        _check_predict_backends_agree(sizes, n_rows, dtype, X, y)


def _check_predict_backends_agree(sizes, n_rows, dtype, X, y):
    cy = nnfast.Network(sizes, dtype=dtype, backend="cython")
    np_ = nnfast.Network(sizes, dtype=dtype, backend="numpy")
    assert_allclose(cy.predict(X), np_.predict(X), rtol=RTOL[dtype], atol=ATOL[dtype])
    # After training, with the numpy network given the kernel's weights.
    cy.fit(X, y, iterations=50, learning_rate=0.5)
    for w_np, w_cy in zip(np_.weights, cy.weights):
        w_np[...] = w_cy
    prediction = cy.predict(X)
    assert prediction.shape == (n_rows, sizes[-1])
    assert prediction.dtype == dtype
    assert_allclose(prediction, np_.predict(X), rtol=RTOL[dtype], atol=ATOL[dtype])
    assert_allclose(prediction, reference.predict(np_.weights, None, X.astype(dtype)),
                    rtol=RTOL[dtype], atol=ATOL[dtype])


@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_fit_returns_self(backend, X, y3):
    net = nnfast.Network([3, 4, 1], backend=backend)
    assert net.fit(X, y3, iterations=3) is net


@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_zero_iterations_leaves_weights_unchanged(backend, dtype, X, y3):
    net = nnfast.Network([3, 4, 1], dtype=dtype, backend=backend)
    before = [w.copy() for w in net.weights]
    assert net.fit(X, y3, iterations=0) is net
    for w, b in zip(net.weights, before):
        assert_array_equal(w, b)


@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_fit_updates_weight_views_in_place(backend, dtype, X, y3):
    net = nnfast.Network([3, 4, 1], dtype=dtype, backend=backend)
    views = net.weights
    before = [w.copy() for w in views]
    net.fit(X, y3, iterations=100)
    for view, now, old in zip(views, net.weights, before):
        assert_array_equal(view, now)
        assert not np.array_equal(view, old)


@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_fitting_twice_continues_training(backend, dtype, X, y3):
    twice = nnfast.Network([3, 4, 1], dtype=dtype, backend=backend)
    twice.fit(X, y3, iterations=300, learning_rate=0.5)
    twice.fit(X, y3, iterations=700, learning_rate=0.5)
    once = nnfast.Network([3, 4, 1], dtype=dtype, backend=backend)
    once.fit(X, y3, iterations=1000, learning_rate=0.5)
    for a, b in zip(twice.weights, once.weights):
        assert_array_equal(a, b)
    # ... and that is not the same as stopping after the first fit.
    first_only = nnfast.Network([3, 4, 1], dtype=dtype, backend=backend)
    first_only.fit(X, y3, iterations=300, learning_rate=0.5)
    assert not np.array_equal(first_only.weights[0], once.weights[0])


@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("with_bias", [False, True], ids=["no-bias", "bias"])
def test_threaded_fit_matches_reference(n_threads, with_bias):
    """A network big enough for the kernel's threaded path (row and weight blocks, BLAS
    capped at one thread) agrees with the reference, for any thread count."""
    from nnfast.cli.bench.workloads import WORKLOADS

    X, y = WORKLOADS["medium"].data(np.float64)
    X, y = X[:600], y[:600]
    fast = nnfast.Network([64, 128, 10], bias=with_bias, n_threads=n_threads)
    from nnfast._validation import available_cores

    # A build without OpenMP (NNFAST_OPENMP=0; the macOS and Windows wheels) runs serially.
    threads = min(n_threads, available_cores()) if nnfast._kernels.kernels.OPENMP else 1
    assert kernel_blocks(fast, len(X)) == threads
    fast.fit(X, y, iterations=15, learning_rate=0.01)
    slow = nnfast.Network([64, 128, 10], bias=with_bias, backend="numpy")
    slow.fit(X, y, iterations=15, learning_rate=0.01)
    for a, b in zip(fast.weights, slow.weights):
        assert_allclose(a, b, rtol=0, atol=1e-9)
    if with_bias:
        for a, b in zip(fast.biases, slow.biases):
            assert_allclose(a, b, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", ["tutorial2", "tutorial3", "small", "large"])
def test_workload_matches_reference_after_its_full_iteration_count(name):
    from nnfast.cli.bench.workloads import WORKLOADS

    workload = WORKLOADS[name]
    X, y = workload.data(np.float64)
    fast = nnfast.Network(workload.sizes).fit(X, y, workload.iterations, workload.learning_rate)
    slow = nnfast.Network(workload.sizes, backend="numpy").fit(X, y, workload.iterations,
                                                               workload.learning_rate)
    for a, b in zip(fast.weights, slow.weights):
        assert_allclose(a, b, rtol=0, atol=1e-9)


def test_medium_workload_agrees_until_its_chaos_takes_over():
    """The medium workload amplifies rounding: a 1e-15 change to one initial weight moves the
    reference's own final weights by O(1). nnfast agrees with it while the dynamics are
    still tame, and the divergence at the full count is the reference's own sensitivity."""
    from nnfast.cli.bench.workloads import WORKLOADS

    workload = WORKLOADS["medium"]
    X, y = workload.data(np.float64)
    fast = nnfast.Network(workload.sizes).fit(X, y, 20, workload.learning_rate)
    slow = nnfast.Network(workload.sizes, backend="numpy").fit(X, y, 20, workload.learning_rate)
    for a, b in zip(fast.weights, slow.weights):
        assert_allclose(a, b, rtol=0, atol=1e-12)

    weights, _ = reference.init_params(workload.sizes, 1)
    perturbed = [w.copy() for w in weights]
    perturbed[0][0, 0] += 1e-15
    for params in (weights, perturbed):
        reference.fit(params, None, X, y, workload.iterations, workload.learning_rate,
                      track_errors=False)
    assert max(np.abs(a - b).max() for a, b in zip(weights, perturbed)) > 1e-3
