"""Training options: mini-batches, bias, reporting, callbacks, progress, gradient()."""

import contextlib
import io
import pathlib
import runpy
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import nnfast
from nnfast.workloads import TUTORIAL3_Y, TUTORIAL_X

BACKENDS = ["cython", "numpy"]


def _original_program_output(iterations, every):
    """What the original 3-layer program prints, run literally (generalised print interval)."""
    def nonlin(x, deriv=False):
        if deriv:
            return x * (1 - x)
        return 1 / (1 + np.exp(-x))

    X, y = TUTORIAL_X, TUTORIAL3_Y
    np.random.seed(1)
    syn0 = 2 * np.random.random((3, 4)) - 1
    syn1 = 2 * np.random.random((4, 1)) - 1
    lines = []
    for j in range(iterations):
        l1 = nonlin(np.dot(X, syn0))
        l2 = nonlin(np.dot(l1, syn1))
        l2_error = y - l2
        if j % every == 0:
            lines.append("Error:" + str(np.mean(np.abs(l2_error))))
        l2_delta = l2_error * nonlin(l2, deriv=True)
        l1_delta = l2_delta.dot(syn1.T) * nonlin(l1, deriv=True)
        syn1 += l1.T.dot(l2_delta)
        syn0 += X.T.dot(l1_delta)
    return lines


@pytest.mark.parametrize("backend", BACKENDS)
def test_verbose_prints_the_originals_lines(backend, capsys):
    expected = _original_program_output(6000, 1000)
    nnfast.Network([3, 4, 1], backend=backend).fit(TUTORIAL_X, TUTORIAL3_Y, 6000, verbose=1000)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == len(expected) == 6
    for ours, theirs in zip(printed, expected):
        assert ours.startswith("Error:") and theirs.startswith("Error:")
        # Same format; the value to rounding (summation order of the mean, exp's last bit).
        assert float(ours[6:]) == pytest.approx(float(theirs[6:]), rel=1e-12)
    if backend == "numpy":
        assert printed == expected  # the reference is the original's arithmetic


@pytest.mark.parametrize("backend", BACKENDS)
def test_history_records_every_report(backend):
    net = nnfast.Network([3, 4, 1], backend=backend)
    net.fit(TUTORIAL_X, TUTORIAL3_Y, 2500, verbose=0, callback=lambda i, e: None)
    iterations = [i for i, _ in net.history]
    assert iterations == list(range(0, 2500, 25))  # iterations // 100 without verbose
    errors = [e for _, e in net.history]
    assert errors[-1] < errors[0]
    silent = nnfast.Network([3, 4, 1], backend=backend).fit(TUTORIAL_X, TUTORIAL3_Y, 2500)
    assert silent.history == []
    # Reporting never changes the arithmetic.
    for a, b in zip(net.weights, silent.weights):
        assert_array_equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_callback_returning_true_stops_the_fit(backend):
    seen = []

    def stop_after_300(iteration, error):
        seen.append(iteration)
        return iteration >= 300

    net = nnfast.Network([3, 4, 1], backend=backend)
    net.fit(TUTORIAL_X, TUTORIAL3_Y, 10_000, verbose=0, callback=stop_after_300)
    assert seen == list(range(0, 301, 100))
    assert net.iterations_run == 400  # the chunk from 300 to 400 had run when it reported
    straight = nnfast.Network([3, 4, 1], backend=backend).fit(TUTORIAL_X, TUTORIAL3_Y, 400)
    for a, b in zip(net.weights, straight.weights):
        assert_array_equal(a, b)


def test_callback_and_verbose_share_the_interval(capsys):
    seen = []
    nnfast.Network([3, 4, 1]).fit(TUTORIAL_X, TUTORIAL3_Y, 1000, verbose=250,
                                  callback=lambda i, e: seen.append(i))
    assert seen == [0, 250, 500, 750]
    assert len(capsys.readouterr().out.splitlines()) == 4


def test_progress_bar_shows_and_counts_every_iteration():
    stream = io.StringIO()
    with contextlib.redirect_stderr(stream):
        nnfast.Network([3, 4, 1]).fit(TUTORIAL_X, TUTORIAL3_Y, 5000, progress=True)
    text = stream.getvalue()
    assert "nnfast fit" in text and "5000/5000" in text


def test_progress_without_tqdm_is_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    net = nnfast.Network([3, 4, 1])
    before = [w.copy() for w in net.weights]
    with pytest.raises(ImportError, match=r"nnfast\[progress\]"):
        net.fit(TUTORIAL_X, TUTORIAL3_Y, 10, progress=True)
    for a, b in zip(net.weights, before):
        assert_array_equal(a, b)


def _batch_data(n_rows=37, n_in=5, n_out=2):
    random_state = np.random.RandomState(0)
    X = random_state.random_sample((n_rows, n_in))
    y = (random_state.random_sample((n_rows, n_out)) < 0.5).astype(float)
    return X, y


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("batch_size", [1, 8, 36, 37, 100])
@pytest.mark.parametrize("bias", [False, True])
def test_mini_batches_match_the_reference(batch_size, shuffle, bias):
    X, y = _batch_data()
    kwargs = dict(batch_size=batch_size, shuffle=shuffle)
    fast = nnfast.Network([5, 6, 2], bias=bias).fit(X, y, 30, 0.3, **kwargs)
    slow = nnfast.Network([5, 6, 2], bias=bias, backend="numpy").fit(X, y, 30, 0.3, **kwargs)
    for a, b in zip(fast.weights + (fast.biases or []), slow.weights + (slow.biases or [])):
        assert_allclose(a, b, rtol=0, atol=1e-11)


def test_batch_update_sums_over_rows_not_averages():
    """One epoch of two batches equals two steps of the original's summed update."""
    X, y = _batch_data(n_rows=8)
    net = nnfast.Network([5, 3, 2]).fit(X, y, 1, 0.5, batch_size=4, shuffle=False)
    weights, _ = nnfast.reference.init_params([5, 3, 2], 1)
    nnfast.reference.train_step(weights, None, X[:4], y[:4], 0.5)
    nnfast.reference.train_step(weights, None, X[4:], y[4:], 0.5)
    for a, b in zip(net.weights, weights):
        assert_allclose(a, b, rtol=0, atol=1e-14)


def test_shuffled_fits_are_reproducible_from_the_seed_and_differ_across_seeds():
    X, y = _batch_data()

    def fit(seed):
        return nnfast.Network([5, 4, 2], seed=seed).fit(X, y, 20, 0.2, batch_size=5).weights

    first, again, other_seed = fit(3), fit(3), fit(4)
    for a, b in zip(first, again):
        assert_array_equal(a, b)
    unshuffled = nnfast.Network([5, 4, 2], seed=3).fit(X, y, 20, 0.2, batch_size=5,
                                                       shuffle=False).weights
    assert not np.array_equal(first[0], unshuffled[0])
    assert not np.array_equal(first[0], other_seed[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_bias_starts_at_zero_and_trains(backend):
    X, y = _batch_data()
    net = nnfast.Network([5, 4, 2], bias=True, backend=backend)
    assert [b.tolist() for b in net.biases] == [[0.0] * 4, [0.0] * 2]
    assert nnfast.Network([5, 4, 2]).biases is None
    # Biases do not change the draw of the weights: the original's weights, then zeros.
    for a, b in zip(net.weights, nnfast.Network([5, 4, 2]).weights):
        assert_array_equal(a, b)
    net.fit(X, y, 50, 0.1)
    assert all(np.abs(b).max() > 0 for b in net.biases)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_is_the_step_fit_takes(backend, bias):
    X, y = _batch_data()
    net = nnfast.Network([5, 4, 2], bias=bias, backend=backend)
    weight_gradients, bias_gradients = net.gradient(X, y)
    stepped = nnfast.Network([5, 4, 2], bias=bias, backend=backend).fit(X, y, 1, 0.25)
    for w, g, after in zip(net.weights, weight_gradients, stepped.weights):
        assert_allclose(w + 0.25 * g, after, rtol=0, atol=1e-14)
    if bias:
        for b, g, after in zip(net.biases, bias_gradients, stepped.biases):
            assert_allclose(b + 0.25 * g, after, rtol=0, atol=1e-14)
    else:
        assert bias_gradients is None


def test_gradients_of_shards_sum_to_the_full_gradient():
    X, y = _batch_data(n_rows=40)
    net = nnfast.Network([5, 4, 2], bias=True)
    full_w, full_b = net.gradient(X, y)
    shards = [net.gradient(X[i:i + 10], y[i:i + 10]) for i in range(0, 40, 10)]
    for k in range(2):
        assert_allclose(sum(s[0][k] for s in shards), full_w[k], rtol=1e-12, atol=1e-14)
        assert_allclose(sum(s[1][k] for s in shards), full_b[k], rtol=1e-12, atol=1e-14)


def test_gradient_backends_agree_and_leave_the_network_alone():
    X, y = _batch_data()
    fast = nnfast.Network([5, 4, 2], bias=True)
    before = fast._params.copy()
    ours = fast.gradient(X, y)
    theirs = nnfast.Network([5, 4, 2], bias=True, backend="numpy").gradient(X, y)
    for a, b in zip(ours[0] + ours[1], theirs[0] + theirs[1]):
        assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    assert_array_equal(fast._params, before)


def test_loss_curve_example_writes_a_png(tmp_path):
    path = tmp_path / "curve.png"
    example = pathlib.Path(__file__).resolve().parent.parent / "examples" / "loss_curve.py"
    namespace = runpy.run_path(str(example))
    assert namespace["main"](str(path)) == str(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_divergence_names_the_same_iteration_on_both_backends():
    """A learning rate that overflows after a few steps: the error names the iteration at
    which the output error stopped being finite, the same on both backends, and the network
    keeps its pre-fit weights and trains normally afterwards."""
    random_state = np.random.RandomState(0)
    X = random_state.uniform(0, 0.2, (200, 3))
    y = np.ones(200)
    messages = []
    for backend in BACKENDS:
        net = nnfast.Network([3, 4, 1], backend=backend)
        before = [w.copy() for w in net.weights]
        with pytest.raises(nnfast.TrainingDivergedError) as info:
            net.fit(X, y, iterations=50, learning_rate=1e308)
        messages.append(str(info.value))
        for a, b in zip(net.weights, before):
            assert_array_equal(a, b)
        net.fit(X, y, iterations=5, learning_rate=0.01)
        assert np.isfinite(net.predict(X)).all()
    import re

    iterations = [int(re.search(r"at iteration (\d+)", m).group(1)) for m in messages]
    # Step 0 overflows the weights; the forward pass of iteration 1 is the first to see it.
    assert iterations == [1, 1]
