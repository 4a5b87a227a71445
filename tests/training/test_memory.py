"""Memory: a fit allocates once, up front, and never more than the NumPy original; the
general kernel allocates nothing per epoch."""

import tracemalloc

import numpy as np
import pytest

import nnfast


def _peak_and_total_allocated(function):
    """Peak traced memory while function runs, in bytes, above what was live before it."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        function()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before


def _data(rows, n_in, n_out, seed=0):
    random_state = np.random.RandomState(seed)
    X = random_state.random_sample((rows, n_in))
    y = (random_state.random_sample((rows, n_out)) < 0.5).astype(float)
    return X, y


@pytest.mark.parametrize("batch_size", [None, 16])
def test_fit_memory_does_not_grow_with_iterations(batch_size):
    """tracemalloc sees NumPy's allocations: the kernel's buffers are allocated once per fit,
    so a fit ten times longer peaks no higher (shuffled mini-batch orders are drawn into one
    buffer of at most 2**16 entries, reused chunk after chunk)."""
    X, y = _data(256, 32, 4)

    def fit(iterations):
        net = nnfast.Network([32, 64, 4])
        return _peak_and_total_allocated(
            lambda: net.fit(X, y, iterations, 0.05, batch_size=batch_size))

    fit(1)  # warm-up: first-call caches
    short, long = fit(1000), fit(10_000)
    assert long <= short + 16 * 1024, (short, long)


def test_fit_peak_memory_is_below_the_numpy_originals():
    X, y = _data(4096, 256, 10)
    fast = nnfast.Network([256, 256, 10])
    slow = nnfast.Network([256, 256, 10], backend="numpy")
    fast.fit(X, y, 1, 0.001)  # warm-up
    fast_peak = _peak_and_total_allocated(lambda: fast.fit(X, y, 3, 0.001))
    slow_peak = _peak_and_total_allocated(lambda: slow.fit(X, y, 3, 0.001))
    assert fast_peak < slow_peak, (fast_peak, slow_peak)


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "adam_extended", "sgd_extended"])
@pytest.mark.parametrize("shuffled", [False, True])
def test_general_kernel_allocates_nothing_per_epoch(kernels, optimizer, shuffled):
    """``_kernels.fit`` works in the buffers it is given: 2000 epochs of mini-batches
    allocate no more than one (a few hundred bytes: the call's own Python objects). The
    "extended" fits add a Huber loss, the cosine schedule and clipping, whose step gathers
    the whole gradient in the workspace's buffer before it updates."""
    from nnfast._kernels import runner as _compiled
    from nnfast._training.layout import allocate_general_workspace
    from nnfast._training.plan import FitPlan, OptimizerState
    from nnfast.optimizers import SGD, Adam
    from conftest import kernel_build

    X, y = _data(64, 8, 3)
    sizes = (8, 16, 3)
    extended = (dict(schedule="cosine", epochs=1500, warmup_epochs=10, max_grad_norm=0.1)
                if optimizer.endswith("_extended") else {})
    plan = FitPlan(sizes=sizes, bias=True, dtype=np.dtype(np.float64), activations=("relu",),
                   output="identity" if extended else "softmax", reduction="mean",
                   alpha=1e-4,
                   optimizer=(Adam if optimizer.startswith("adam") else SGD)(**extended),
                   learning_rate=1e-3, batch_size=10, shuffled=shuffled, weighted=True,
                   loss="huber" if extended else None)
    with kernel_build(kernels):
        config = _compiled._config(plan, 10, 1, 0)
    params = np.random.RandomState(0).uniform(-0.3, 0.3, plan.n_params)
    state = OptimizerState(np.zeros(plan.state_size), learning_rate=plan.learning_rate)
    weights = np.ones(64)
    workspace = allocate_general_workspace(sizes, True, 10, np.float64, shuffled, True)
    n_epochs = 2000
    orders = (np.array([np.random.RandomState(e).permutation(64) for e in range(n_epochs)])
              if shuffled else np.empty((0, 0), dtype=np.intp))
    losses = np.empty(n_epochs)

    def fit(epochs):
        kernels.fit(config, params, state, X, y, weights, orders, workspace, losses[:epochs])

    fit(1)  # warm-up: first-call caches
    # tracemalloc also sees other threads' allocations (a Dask test's event loop lives on),
    # which the kernel, running without the GIL, lets run: the least of three runs. An
    # allocation of the kernel's own, per epoch or per batch, shows in every run.
    one, many = (min(_peak_and_total_allocated(lambda: fit(1)) for _ in range(3)),
                 min(_peak_and_total_allocated(lambda: fit(n_epochs)) for _ in range(3)))
    assert many <= one + 256, (one, many)
    assert np.isfinite(losses).all()


def test_the_memory_check_counts_every_buffer_of_a_team_step_fit(monkeypatch):
    """The up-front MemoryError check (check_fits_in_memory) asks for at least what the fit
    then allocates: the kernel's workspace, with a gradient and a transpose per row block of
    the team step, the parameters' copy and the optimizer state. Weights dominate here
    (batches of 32 rows, 38k parameters), where one block's count falls short."""
    from nnfast._kernels import kernels, runner
    from nnfast._training import run
    from nnfast.sklearn import MLPRegressor

    asked, workspaces = [], []
    check = run.check_fits_in_memory
    allocate = runner.allocate_general_workspace

    def counted_check(n_bytes, what):
        asked.append(n_bytes)
        check(n_bytes, what)

    def kept_workspace(*args, **kwargs):
        workspace = allocate(*args, **kwargs)
        workspaces.append((kwargs.get("blocks", 1), workspace))
        return workspace

    monkeypatch.setattr(run, "check_fits_in_memory", counted_check)
    monkeypatch.setattr(runner, "allocate_general_workspace", kept_workspace)
    X, y = _data(256, 64, 10)
    model = MLPRegressor(hidden_layer_sizes=(512,), batch_size=32, max_iter=1, n_threads=2,
                         random_state=0)
    with pytest.warns(Warning):  # one epoch does not converge
        model.fit(X, y)
    (blocks, workspace), = workspaces
    if kernels.OPENMP:
        assert blocks == 2  # the team step's blocks
    n_params = sum(c.size + b.size for c, b in zip(model.coefs_, model.intercepts_))
    adam_state = 2 * n_params
    fit_bytes = (sum(buffer.nbytes for buffer in workspace.values())
                 + X.itemsize * (n_params + adam_state))
    assert asked and asked[-1] >= fit_bytes, (asked, fit_bytes)
