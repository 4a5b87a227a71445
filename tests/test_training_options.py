"""Training options: mini-batches, bias, reporting, callbacks, progress, gradient(); the model
options (activations, outputs, optimizers, alpha, reduction) through ``Network``: sample
weights, resume, report_every, loss_gradient(), predict, transactional fits."""

import contextlib
import io
import pathlib
import re
import runpy
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import nnfast
from conftest import (ATOL, DTYPES, GENERAL_ATOL, GENERAL_BACKENDS, GENERAL_RTOL,
                      HIDDEN_ACTIVATIONS, OUTPUTS, RTOL)
from nnfast import reference
from nnfast._training.objective import full_batch_objective
from nnfast._training.layout import pack_params
from nnfast._training.plan import FitPlan, OptimizerState
from nnfast.optimizers import SGD, Adam, GradientStep
from nnfast.cli.bench.workloads import TUTORIAL3_Y, TUTORIAL_X

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
    before = fast.params.copy()
    ours = fast.gradient(X, y)
    theirs = nnfast.Network([5, 4, 2], bias=True, backend="numpy").gradient(X, y)
    for a, b in zip(ours[0] + ours[1], theirs[0] + theirs[1]):
        assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    assert_array_equal(fast.params, before)


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


# =============================================================================== model options
# Network's general path against nnfast.reference's runner driven by hand (the oracle is
# itself checked against scikit-learn in test_reference_sklearn.py). The numpy backend is
# the reference, so it must agree to the last bit; a compiled one to rounding.


def _model_data(output, n_rows=23, n_in=4, n_out=3, dtype=np.float64):
    rng = np.random.RandomState(5)
    X = rng.normal(size=(n_rows, n_in)).astype(dtype)
    if output == "exp":
        X *= 0.3  # exp of a layer of identity units of the original's weights overflows
    if output == "softmax":
        y = np.eye(n_out)[np.arange(n_rows) % n_out]
    elif output in ("logistic", "original"):
        y = (rng.uniform(size=(n_rows, n_out)) < 0.5).astype(float)
    elif output == "exp":
        y = rng.poisson(1.5, size=(n_rows, n_out)).astype(float)
    else:
        y = rng.normal(size=(n_rows, n_out))
    return X, y.astype(dtype)


def _by_hand(sizes, options, X, y, epochs, batch_size, shuffle, sample_weight=None, seed=1,
             dtype=np.float64, orders=None):
    """(params, state, epoch losses) of reference.make_runner on a network drawn and shuffled
    as Network draws and shuffles (init_params, then one permutation per epoch), or in the
    given (epochs, n_rows) row orders."""
    options = dict(options)
    activation = options.pop("activation", "logistic")
    activations = ((activation,) * (len(sizes) - 2) if isinstance(activation, str)
                   else tuple(activation))
    output = options.pop("output", "original")
    optimizer = options.pop("optimizer", None) or GradientStep()
    bias = options.pop("bias", False)
    plan = FitPlan(sizes=tuple(sizes), bias=bias, dtype=np.dtype(dtype),
                   activations=activations, output=output,
                   reduction=options.pop("reduction", "sum" if output == "original" else "mean"),
                   alpha=options.pop("alpha", 0.0), optimizer=optimizer,
                   learning_rate=optimizer.learning_rate,
                   batch_size=min(batch_size or len(X), len(X)),
                   shuffled=shuffle and (batch_size or len(X)) < len(X),
                   weighted=sample_weight is not None)
    assert not options
    random_state = np.random.RandomState(seed)
    params = pack_params(*reference.init_params(sizes, random_state, dtype, bias))
    if plan.shuffled and orders is None:
        orders = np.empty((epochs, len(X)), dtype=np.intp)
        for order in orders:
            order[...] = np.arange(len(X))
            random_state.shuffle(order)
    state = OptimizerState.fresh(plan)
    losses, done, diverged = reference.make_runner(plan, X, y, sample_weight)(
        params, state, epochs, orders)
    assert (done, diverged) == (epochs, False)
    return params, state, losses


MODELS = {
    "relu_softmax_adam": dict(activation="relu", output="softmax", optimizer=Adam(0.01),
                              alpha=1e-3, bias=True),
    "mixed_identity_sgd": dict(activation=("tanh", "relu"), output="identity",
                               optimizer=SGD(0.02, momentum=0.9), bias=True),
    "logistic_nesterov_invscaling": dict(activation="logistic", output="logistic",
                                         optimizer=SGD(0.3, schedule="invscaling"), alpha=0.1,
                                         bias=True),
    "identity_exp_plain_sum": dict(activation="identity", output="exp",
                                   optimizer=GradientStep(0.002), reduction="sum"),
    "original_output_mean_alpha": dict(output="original", reduction="mean", alpha=0.01,
                                       optimizer=Adam(0.05), bias=True),
    "original_output_plain_tanh": dict(activation="tanh", optimizer=GradientStep(0.1)),
}


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("batch_size, shuffle", [(None, True), (5, False), (5, True)])
@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("backend", GENERAL_BACKENDS)
def test_model_fit_is_the_reference_runner(backend, model, batch_size, shuffle, weighted):
    options = MODELS[model]
    X, y = _model_data(options.get("output", "original"))
    sample_weight = np.random.RandomState(2).uniform(0, 2, len(X)) if weighted else None
    sizes = [4, 6, 5, 3]
    net = nnfast.Network(sizes, backend=backend, **options)
    net.fit(X, y, 12, batch_size=batch_size, shuffle=shuffle, sample_weight=sample_weight,
            report_every=1)
    params, state, losses = _by_hand(sizes, options, X, y, 12, batch_size, shuffle,
                                     sample_weight)
    tolerance = {"rtol": GENERAL_RTOL[np.float64], "atol": GENERAL_ATOL[np.float64]}
    assert_allclose(net.params, params, **tolerance)
    assert [i for i, _ in net.history] == list(range(12))
    assert_allclose([e for _, e in net.history], losses, **tolerance)
    assert net.iterations_run == 12
    if isinstance(net.optimizer, GradientStep):
        assert net.optimizer_state is None
    else:
        assert net.optimizer_state.step == state.step
        assert net.optimizer_state.samples_seen == state.samples_seen == 12 * len(X)
        assert net.optimizer_state.learning_rate == pytest.approx(state.learning_rate)
        assert_allclose(net.optimizer_state.values, state.values, **tolerance)
    if backend == "numpy":
        assert_array_equal(net.params, params)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("backend", GENERAL_BACKENDS)
def test_model_fit_in_float32_and_float64(backend, dtype):
    options = MODELS["relu_softmax_adam"]
    X, y = _model_data("softmax", dtype=dtype)
    net = nnfast.Network([4, 6, 3], backend=backend, dtype=dtype, **options)
    net.fit(X, y, 8, batch_size=6, shuffle=True)
    params, state, _ = _by_hand([4, 6, 3], options, X, y, 8, 6, True, dtype=dtype)
    assert net.params.dtype == net.optimizer_state.values.dtype == np.dtype(dtype)
    assert_allclose(net.params, params, rtol=GENERAL_RTOL[dtype], atol=GENERAL_ATOL[dtype])


@pytest.mark.parametrize("model", ["relu_softmax_adam", "logistic_nesterov_invscaling",
                                   "mixed_identity_sgd"])
@pytest.mark.parametrize("backend", GENERAL_BACKENDS)
def test_resume_continues_the_optimizer_and_the_row_order(backend, model):
    """fit(7) then fit(5, resume=True) is fit(12): velocities, moments, Adam's step, the
    samples seen (invscaling) and the shuffled row order all carry over."""
    options = MODELS[model]
    X, y = _model_data(options["output"])
    straight = nnfast.Network([4, 6, 5, 3], backend=backend, **options)
    straight.fit(X, y, 12, batch_size=5)
    resumed = nnfast.Network([4, 6, 5, 3], backend=backend, **options)
    resumed.fit(X, y, 7, batch_size=5).fit(X, y, 5, batch_size=5, resume=True)
    assert_allclose(resumed.params, straight.params, rtol=1e-12, atol=1e-14)
    assert resumed.optimizer_state.samples_seen == straight.optimizer_state.samples_seen
    assert resumed.optimizer_state.step == straight.optimizer_state.step
    restarted = nnfast.Network([4, 6, 5, 3], backend=backend, **options)
    restarted.fit(X, y, 7, batch_size=5).fit(X, y, 5, batch_size=5, resume=False)
    assert not np.allclose(restarted.params, straight.params, rtol=1e-6, atol=0)
    assert restarted.optimizer_state.samples_seen == 5 * len(X)


def test_resume_without_a_previous_state_starts_fresh():
    X, y = _model_data("softmax")
    options = MODELS["relu_softmax_adam"]
    fresh = nnfast.Network([4, 6, 5, 3], backend="numpy", **options).fit(X, y, 3)
    resumed = nnfast.Network([4, 6, 5, 3], backend="numpy", **options).fit(X, y, 3, resume=True)
    assert_array_equal(resumed.params, fresh.params)


def test_learning_rate_on_resume_replaces_sgds_current_rate():
    """scikit-learn's "adaptive" schedule divides the current rate by 5; with resume=True a
    given learning_rate replaces the current rate and keeps velocities and counters."""
    X, y = _model_data("identity")
    options = dict(activation="relu", output="identity", bias=True,
                   optimizer=SGD(0.05, momentum=0.9, schedule="adaptive"))
    net = nnfast.Network([4, 6, 3], backend="numpy", **options).fit(X, y, 4, batch_size=5,
                                                                    shuffle=False)
    state = net.optimizer_state.copy()
    assert state.learning_rate == 0.05
    net.fit(X, y, 3, 0.01, batch_size=5, shuffle=False, resume=True)
    # By hand: the same state with the rate replaced, three more epochs.
    plan = FitPlan(sizes=(4, 6, 3), bias=True, dtype=np.dtype(np.float64),
                   activations=("relu",), output="identity", reduction="mean", alpha=0.0,
                   optimizer=options["optimizer"], learning_rate=0.05, batch_size=5,
                   shuffled=False, weighted=False)
    params = pack_params(*reference.init_params([4, 6, 3], 1, np.float64, True))
    by_hand = OptimizerState.fresh(plan)
    run = reference.make_runner(plan, X, y, None)
    run(params, by_hand, 4, None)
    assert by_hand == state
    by_hand.learning_rate = 0.01
    run(params, by_hand, 3, None)
    assert_array_equal(net.params, params)
    assert net.optimizer_state == by_hand and by_hand.learning_rate == 0.01


def test_sample_weights_are_repeated_rows():
    """Integer weights count a row that many times: a full-batch fit with weights equals the
    fit on the rows repeated (mean and sum reductions, every output's loss)."""
    for output, reduction in [("softmax", "mean"), ("identity", "sum"), ("exp", "mean"),
                              ("original", "sum"), ("logistic", "mean")]:
        X, y = _model_data(output)
        weights = np.arange(len(X)) % 3  # 0, 1 and 2
        repeated = np.repeat(np.arange(len(X)), weights)
        options = dict(activation="tanh", output=output, reduction=reduction, alpha=0.05,
                       bias=True, optimizer=Adam(0.01))
        weighted = nnfast.Network([4, 5, 3], backend="numpy", **options)
        weighted.fit(X, y, 6, sample_weight=weights, report_every=1)
        plain = nnfast.Network([4, 5, 3], backend="numpy", **options)
        plain.fit(X[repeated], y[repeated], 6, report_every=1)
        assert_allclose(weighted.params, plain.params, rtol=1e-9, atol=1e-12)
        if output != "original":  # the original's error is mean |y - a|, unweighted
            assert_allclose([e for _, e in weighted.history], [e for _, e in plain.history],
                            rtol=1e-11)


@pytest.mark.parametrize("backend", GENERAL_BACKENDS)
def test_history_callback_and_verbose_report_the_epoch_loss(backend, capsys):
    X, y = _model_data("softmax")
    options = MODELS["relu_softmax_adam"]
    _, _, losses = _by_hand([4, 6, 3], options, X, y, 20, None, False)
    seen = []
    net = nnfast.Network([4, 6, 3], backend=backend, **options)
    net.fit(X, y, 20, verbose=1, report_every=5, callback=lambda i, e: seen.append((i, e)))
    assert [i for i, _ in seen] == [0, 5, 10, 15]
    assert_allclose([e for _, e in seen], losses[::5], rtol=1e-10)
    assert net.history == seen
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"Iteration {i + 1}, loss = {e:.8f}" for i, e in seen]
    stopped = nnfast.Network([4, 6, 3], backend=backend, **options)
    stopped.fit(X, y, 20, report_every=5, callback=lambda i, e: i >= 5)
    assert stopped.iterations_run == 10  # the chunk up to the next report had run
    straight = nnfast.Network([4, 6, 3], backend=backend, **options).fit(X, y, 10)
    assert_array_equal(stopped.params, straight.params)


def test_report_every_without_a_callback_fills_history_in_one_run():
    X, y = _model_data("identity")
    net = nnfast.Network([4, 6, 3], backend="numpy", output="identity", bias=True)
    net.fit(X, y, 9, report_every=4)
    assert [i for i, _ in net.history] == [0, 4, 8]
    silent = nnfast.Network([4, 6, 3], backend="numpy", output="identity", bias=True)
    assert silent.fit(X, y, 9).history == []
    assert_array_equal(silent.params, net.params)


@pytest.mark.parametrize("backend", GENERAL_BACKENDS)
def test_report_every_applies_to_the_original_model(backend):
    net = nnfast.Network([3, 4, 1], backend=backend).fit(TUTORIAL_X, TUTORIAL3_Y, 10,
                                                         report_every=3)
    assert [i for i, _ in net.history] == [0, 3, 6, 9]


# ----------------------------------------------------------------- transactional general fits

def _snapshot(net):
    state = net.optimizer_state
    return (net.params.copy(), net.random_state.get_state()[1].copy(),
            net.random_state.get_state()[2], list(net.history), net.iterations_run,
            None if state is None else state.copy())


def _assert_untouched(net, snapshot):
    params, key, pos, history, iterations_run, state = snapshot
    assert_array_equal(net.params, params)
    assert_array_equal(net.random_state.get_state()[1], key)
    assert net.random_state.get_state()[2] == pos
    assert net.history == history and net.iterations_run == iterations_run
    assert net.optimizer_state == state


@pytest.mark.parametrize("backend", GENERAL_BACKENDS)
def test_divergence_leaves_weights_state_random_state_and_history(backend):
    X, y = _model_data("identity")
    net = nnfast.Network([4, 6, 3], backend=backend, activation="relu", output="identity",
                         optimizer=SGD(0.01), bias=True)
    net.fit(X, y, 3, batch_size=5, report_every=1)
    before = _snapshot(net)
    with pytest.raises(nnfast.TrainingDivergedError, match="iteration"):
        net.fit(X * 1e150, y, 20, 1e150, batch_size=5, resume=True, report_every=1)
    _assert_untouched(net, before)
    net.fit(X, y, 2, batch_size=5, resume=True)  # and it trains on
    assert net.optimizer_state.samples_seen == 5 * len(X)


@pytest.mark.parametrize("backend", GENERAL_BACKENDS)
def test_interrupted_fit_leaves_everything(backend):
    X, y = _model_data("softmax")
    net = nnfast.Network([4, 6, 3], backend=backend, **MODELS["relu_softmax_adam"])
    net.fit(X, y, 3, batch_size=5, report_every=1)
    before = _snapshot(net)

    def interrupt(iteration, loss):
        if iteration == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        net.fit(X, y, 10, batch_size=5, resume=True, report_every=1, callback=interrupt)
    _assert_untouched(net, before)


# ------------------------------------------------------------------ loss_gradient, gradient

@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("backend", GENERAL_BACKENDS)
def test_loss_gradient_is_the_references_and_the_plain_step(backend, model):
    options = dict(MODELS[model])
    X, y = _model_data(options.get("output", "original"))
    sample_weight = np.random.RandomState(4).uniform(0.5, 1.5, len(X))
    options["optimizer"] = GradientStep(0.1)
    net = nnfast.Network([4, 6, 5, 3], backend=backend, **options)
    loss, weight_grads, bias_grads = net.loss_gradient(X, y, sample_weight)
    plan = FitPlan(sizes=net.sizes, bias=net.bias, dtype=net.dtype,
                   activations=net.activations, output=net.output, reduction=net.reduction,
                   alpha=net.alpha, optimizer=net.optimizer, learning_rate=0.1,
                   batch_size=len(X), shuffled=False, weighted=True)
    expected_loss, expected = reference.loss_gradient(plan, net.params, X, y, sample_weight)
    assert loss == pytest.approx(expected_loss, rel=1e-12)
    ours = pack_params(weight_grads, bias_grads)
    assert_allclose(ours, expected, rtol=1e-10, atol=1e-14)
    # The plain step subtracts learning_rate * G.
    before = net.params.copy()
    net.fit(X, y, 1, sample_weight=sample_weight)
    assert_allclose(net.params, before - 0.1 * ours, rtol=1e-12, atol=1e-14)
    # gradient() is the update direction: minus G for any model.
    minus = net.gradient(X, y)
    again = net.loss_gradient(X, y)
    for a, b in zip(minus[0], again[1]):
        assert_allclose(a, -b, rtol=1e-12)


def test_loss_gradient_leaves_network_and_inputs_alone():
    X, y = _model_data("softmax")
    w = np.ones(len(X))
    net = nnfast.Network([4, 6, 3], backend="numpy", **MODELS["relu_softmax_adam"])
    net.fit(X, y, 2)
    before = _snapshot(net)
    copies = X.copy(), y.copy(), w.copy()
    net.loss_gradient(X, y, w)
    _assert_untouched(net, before)
    for a, b in zip((X, y, w), copies):
        assert_array_equal(a, b)


# -------------------------------------------- the full-batch objective (L-BFGS's evaluations)

@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
@pytest.mark.parametrize("backend", GENERAL_BACKENDS)
def test_objective_is_the_references_loss_gradient_at_each_point(backend, activation, output,
                                                                  dtype):
    X, y = _model_data(output, dtype=dtype)
    rng = np.random.RandomState(7)
    for weighted, bias in [(False, True), (True, False), (True, True)]:
        sample_weight = rng.uniform(0.5, 1.5, len(X)).astype(dtype) if weighted else None
        net = nnfast.Network([4, 6, 5, 3], backend=backend, dtype=dtype, activation=activation,
                             output=output, alpha=0.01, bias=bias)
        before = net.params.copy()
        objective = full_batch_objective(net, X, y, sample_weight)
        assert_array_equal(objective.params, before)
        plan = FitPlan(sizes=net.sizes, bias=bias, dtype=net.dtype,
                       activations=net.activations, output=output, reduction=net.reduction,
                       alpha=0.01, optimizer=net.optimizer, learning_rate=1.0,
                       batch_size=len(X), shuffled=False, weighted=weighted)
        points = [before] + [rng.uniform(-1, 1, before.size).astype(dtype) for _ in range(2)]
        results = []
        # The first point again at the end: nothing carries over between evaluations.
        for point in points + points[:1]:
            objective.params[...] = point
            with objective.thread_limits():
                loss = objective()
            expected_loss, expected = reference.loss_gradient(plan, point, X, y, sample_weight)
            assert loss == pytest.approx(expected_loss, rel=RTOL[dtype])
            assert objective.grad.dtype == dtype
            assert_allclose(objective.grad, expected, rtol=RTOL[dtype], atol=ATOL[dtype])
            results.append((loss, objective.grad.copy()))
        assert results[-1][0] == results[0][0]
        assert_array_equal(results[-1][1], results[0][1])
        assert_array_equal(net.params, before)


def test_objective_checks_sample_weight_and_leaves_the_network_alone():
    # X and y come validated (loss_gradient's or the estimators' checks); sample weights are
    # checked here.
    X, y = _model_data("softmax")
    net = nnfast.Network([4, 6, 3], activation="relu", output="softmax", bias=True)
    with pytest.raises(ValueError, match="sample_weight has 24"):
        full_batch_objective(net, X, y, np.ones(len(X) + 1))
    with pytest.raises(ValueError, match="sample_weight must be >= 0"):
        full_batch_objective(net, X, y, -np.ones(len(X)))
    before = net.params.copy()
    objective = full_batch_objective(net, X, y, np.ones(len(X)))
    objective.params[...] = 0.25
    loss = objective()
    moved = nnfast.Network([4, 6, 3], activation="relu", output="softmax", bias=True)
    moved.params[...] = 0.25
    # loss_gradient converts lists before its objective sees them.
    expected_loss, expected_weights, expected_biases = moved.loss_gradient(X.tolist(),
                                                                           y.tolist())
    assert loss == pytest.approx(expected_loss, rel=1e-12)
    assert_allclose(objective.grad, pack_params(expected_weights, expected_biases),
                    rtol=1e-12, atol=1e-15)
    assert_array_equal(net.params, before)


# ------------------------------------------------------------------------------ predictions

@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_predict_gives_each_outputs_range(backend):
    X = np.random.RandomState(0).normal(scale=3, size=(50, 4))
    for output in ["original", "logistic", "softmax", "exp", "identity"]:
        net = nnfast.Network([4, 6, 3], backend=backend, activation="tanh", output=output,
                             bias=True)
        pred = net.predict(X)
        assert pred.shape == (50, 3) and pred.dtype == np.float64
        if output in ("original", "logistic"):
            assert ((pred >= 0) & (pred <= 1)).all()
        elif output == "softmax":
            assert (pred >= 0).all()
            assert_allclose(pred.sum(axis=1), 1.0, rtol=1e-14)
        elif output == "exp":
            assert (pred > 0).all()
        # Each output's activation applied to the identity model's pre-activation.
        linear = nnfast.Network([4, 6, 3], backend=backend, activation="tanh",
                                output="identity", bias=True)
        z = linear.predict(X)
        expected = {"original": 1 / (1 + np.exp(-z)), "logistic": 1 / (1 + np.exp(-z)),
                    "softmax": np.exp(z) / np.exp(z).sum(axis=1, keepdims=True),
                    "exp": np.exp(z), "identity": z}[output]
        assert_allclose(pred, expected, rtol=1e-12)


def test_identity_network_predicts_the_product_of_its_weights():
    net = nnfast.Network([4, 5, 6, 2], activation="identity", output="identity")
    X = np.random.RandomState(0).normal(size=(7, 4))
    w = net.weights
    assert_allclose(net.predict(X), X @ w[0] @ w[1] @ w[2], rtol=1e-12)
    relu = nnfast.Network([4, 5, 2], activation="relu", output="identity")
    assert_allclose(relu.predict(X), np.maximum(X @ relu.weights[0], 0) @ relu.weights[1],
                    rtol=1e-12)


def test_default_network_is_the_original():
    net = nnfast.Network([3, 4, 1])
    assert net.activations == ("logistic",) and net.activation == "logistic"
    assert net.output == "original" and net.reduction == "sum" and net.alpha == 0
    assert net.optimizer == GradientStep(1.0) and net.optimizer_state is None
    assert repr(net) == ("Network([3, 4, 1], seed=1, dtype=float64, backend='cython', "
                         "bias=False)")
    mixed = nnfast.Network([3, 4, 4, 2], activation=["relu", "tanh"], output="softmax")
    assert mixed.activation == ("relu", "tanh") and mixed.reduction == "mean"
    assert "activation=('relu', 'tanh')" in repr(mixed) and "softmax" in repr(mixed)


@pytest.mark.parametrize("batch_size", [None, 5])
def test_chunking_a_long_fit_changes_nothing(monkeypatch, batch_size):
    """The general path runs at most MAX_CHUNK_EPOCHS epochs per backend call (bounded
    memory); chunk boundaries change neither the arithmetic nor the history."""
    from nnfast._training import threads

    X, y = _model_data("softmax")
    options = MODELS["relu_softmax_adam"]
    whole = nnfast.Network([4, 6, 3], backend="numpy", **options)
    whole.fit(X, y, 11, batch_size=batch_size, report_every=3)
    calls = []
    real = reference.make_runner

    def counting_runner(*args, **kwargs):
        run = real(*args, **kwargs)

        def counted(params, state, n_epochs, orders):
            calls.append(n_epochs)
            return run(params, state, n_epochs, orders)
        return counted

    monkeypatch.setattr(threads, "MAX_CHUNK_EPOCHS", 4)
    monkeypatch.setattr(reference, "make_runner", counting_runner)
    chunked = nnfast.Network([4, 6, 3], backend="numpy", **options)
    chunked.fit(X, y, 11, batch_size=batch_size, report_every=3)
    assert calls == [4, 4, 3]
    assert_array_equal(chunked.params, whole.params)
    assert chunked.history == whole.history and [i for i, _ in whole.history] == [0, 3, 6, 9]
    assert chunked.optimizer_state == whole.optimizer_state


@pytest.mark.parametrize("backend", ["cython", "numpy"])
def test_only_the_originals_options_take_the_original_path(backend, monkeypatch):
    """FitPlan.is_original picks the original's fit (the fused kernel on cython); any other
    option (even the original's sigmoid with sample weights or alpha) takes the general path."""
    used = []
    real = nnfast.network.TrainingRun
    monkeypatch.setattr(nnfast.network, "TrainingRun",
                        lambda *args: used.append(True) or real(*args))
    X, y = _model_data("original")
    nnfast.Network([4, 5, 3], backend=backend).fit(X, y, 2, 0.5, batch_size=5)
    nnfast.Network([4, 5, 3], backend=backend, bias=True).fit(X, y, 2)
    assert used == []
    for options, fit_options in [({"alpha": 0.1}, {}), ({}, {"sample_weight": np.ones(len(X))}),
                                 ({"reduction": "mean"}, {}), ({"activation": "tanh"}, {}),
                                 ({"optimizer": SGD()}, {})]:
        try:
            nnfast.Network([4, 5, 3], backend=backend, **options).fit(X, y, 2, **fit_options)
        except NotImplementedError:
            assert backend == "cython" and "cython" not in GENERAL_BACKENDS
    assert len(used) == 5


# ------------------------------------------------------------------------ caller's row orders

def _scripted_orders(n_epochs, n_rows, seed=7):
    """(every epoch's row order, a callable ``orders(out)`` handing them out chunk by chunk,
    the list of chunk lengths it was asked for)."""
    rng = np.random.default_rng(seed)
    script = np.array([rng.permutation(n_rows) for _ in range(n_epochs)], dtype=np.intp)
    asked = []

    def orders(out):
        start = sum(asked)
        asked.append(len(out))
        out[...] = script[start:start + len(out)]
    return script, orders, asked


@pytest.mark.parametrize("live", [False, True])
@pytest.mark.parametrize("model", ["relu_softmax_adam", "mixed_identity_sgd"])
@pytest.mark.parametrize("backend", GENERAL_BACKENDS)
def test_caller_orders_are_the_reference_with_those_orders(backend, model, live):
    """The network runs the epochs in the caller's orders (asked for chunk by chunk, the
    chunks ending at the reports a callback needs), the reference runner in the same ones;
    the network's own random state draws nothing."""
    options = MODELS[model]
    X, y = _model_data(options["output"])
    script, orders, asked = _scripted_orders(10, len(X))
    net = nnfast.Network([4, 6, 5, 3], backend=backend, **options)
    untouched_stream = net.random_state.get_state()
    # A history alone runs one chunk; a callback every 3 epochs splits it there.
    report_every = 3 if live else 1
    callback = (lambda iteration, loss: None) if live else None
    net.fit(X, y, 10, batch_size=7, orders=orders, callback=callback,
            report_every=report_every)
    params, state, losses = _by_hand([4, 6, 5, 3], options, X, y, 10, 7, True, orders=script)
    tolerance = {"rtol": GENERAL_RTOL[np.float64], "atol": GENERAL_ATOL[np.float64]}
    assert_allclose(net.params, params, **tolerance)
    assert_allclose(net.optimizer_state.values, state.values, **tolerance)
    assert asked == ([3, 3, 3, 1] if live else [10])
    assert [i for i, _ in net.history] == list(range(0, 10, report_every))
    assert_allclose([loss for _, loss in net.history], losses[::report_every], **tolerance)
    assert_array_equal(net.random_state.get_state()[1], untouched_stream[1])
    assert net.random_state.get_state()[2] == untouched_stream[2]


@pytest.mark.parametrize("backend", BACKENDS)
def test_caller_orders_on_the_original_model_are_the_reference(backend):
    X, y = _batch_data()
    script, orders, _ = _scripted_orders(6, len(X))
    net = nnfast.Network([5, 6, 2], backend=backend).fit(X, y, 6, 0.3, batch_size=8,
                                                         orders=orders)
    weights, _ = reference.init_params([5, 6, 2], 1)
    reference.fit(weights, None, X, y, 6, 0.3, 8, script)
    for a, b in zip(net.weights, weights):
        assert_allclose(a, b, rtol=0, atol=1e-11)


@pytest.mark.parametrize("batch_size, shuffle", [(None, True), (5, False)])
def test_caller_orders_are_not_asked_for_unshuffled_fits(batch_size, shuffle):
    X, y = _model_data("identity")
    _, orders, asked = _scripted_orders(4, len(X))
    options = MODELS["mixed_identity_sgd"]
    net = nnfast.Network([4, 6, 5, 3], **options).fit(X, y, 4, batch_size=batch_size,
                                                      shuffle=shuffle, orders=orders)
    plain = nnfast.Network([4, 6, 5, 3], **options).fit(X, y, 4, batch_size=batch_size,
                                                        shuffle=shuffle)
    assert asked == []
    assert_array_equal(net.params, plain.params)


def _repeat_first_row(out):
    out[...] = np.arange(out.shape[1])
    out[-1, 1] = 0


def _out_of_bounds(out):
    out[...] = np.arange(out.shape[1])
    out[0, 0] = out.shape[1]


def _negative(out):
    out[...] = np.arange(out.shape[1])[::-1]
    out[0, -1] = -1


def _fails(out):
    raise RuntimeError("no orders today")


@pytest.mark.parametrize("orders, error", [
    (_repeat_first_row, ValueError), (_out_of_bounds, ValueError), (_negative, ValueError),
    (_fails, RuntimeError)])
@pytest.mark.parametrize("original", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_caller_orders_fail_and_leave_the_network_as_it_was(backend, original, orders,
                                                                 error):
    options = {} if original else MODELS["relu_softmax_adam"]
    X, y = _model_data(options.get("output", "original"))
    net = nnfast.Network([4, 6, 3], backend=backend, **options).fit(X, y, 2, batch_size=5)
    before = _snapshot(net)
    with pytest.raises(error, match="permutation of range|no orders today"):
        net.fit(X, y, 3, batch_size=5, orders=orders, resume=not original)
    _assert_untouched(net, before)


def test_orders_must_be_callable():
    X, y = _model_data("identity")
    net = nnfast.Network([4, 6, 3])
    with pytest.raises(TypeError, match="orders must be callable"):
        net.fit(X, y, 2, batch_size=5, orders=np.zeros((2, len(X)), dtype=np.intp))


@pytest.mark.parametrize("backend", GENERAL_BACKENDS)
def test_verbose_lines_follow_the_output_whatever_the_optimizer(backend, capsys):
    """Output "original" reports the original's Error: line (mean |y - output|) also when
    another optimizer sends it down the general path; other outputs their loss."""
    for output, pattern in (("original", r"Error:(\S+)"),
                            ("identity", r"Iteration \d+, loss = (\S+)")):
        X, y = _model_data(output)
        net = nnfast.Network([4, 6, 3], output=output, optimizer=Adam(learning_rate=0.01),
                             backend=backend)
        net.fit(X, y, 6, verbose=2)
        lines = capsys.readouterr().out.splitlines()
        matches = [re.fullmatch(pattern, line) for line in lines]
        assert len(lines) == 3 and all(matches), lines
        assert_allclose([float(m.group(1)) for m in matches], [e for _, e in net.history],
                        rtol=1e-6)
