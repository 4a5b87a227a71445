"""The parts of an L-BFGS fit on issue 9's "digits-lbfgs" row, timed alone.

A fit is about ``max_iter`` full-batch loss-and-gradient evaluations plus SciPy's L-BFGS-B
bookkeeping between them. ``test_lbfgs_evaluation`` times one evaluation, at the weights of
a one-iteration fit, as each implementation's fit makes it:

- "sklearn": scikit-learn's ``_loss_grad_lbfgs``;
- "nnfast-objective": ``fit_lbfgs``'s function (``packed_loss_gradient``: the packed vector
  in, the packed gradient out, on one ``FullBatchObjective`` built per fit), under the BLAS
  cap the fit holds around the minimizer;
- "nnfast-loss_gradient": ``Network.loss_gradient`` with the moves to and from the packed
  vector, each call doing all of its set-up (what every evaluation cost before the objective).

``test_lbfgsb_alone`` times SciPy's L-BFGS-B for the row's ``max_iter`` iterations on a
quadratic of the same size, whose evaluations cost next to nothing: the optimizer's own share
of a fit, with BLAS on one thread as nnfast's fit runs it and at BLAS's default as
scikit-learn's does. Grouped by dtype:
``python -m pytest bench/test_lbfgs.py --benchmark-group-by=param:dtype``.
"""

import contextlib
import warnings

import numpy as np
import pytest
import scipy.optimize

from nnfast.sklearn import _solvers as _mlp_solvers
from nnfast._training.layout import PackedLayout, pack_params
from nnfast._training.objective import full_batch_objective
from nnfast._training.threads import blas_thread_cap
from nnfast.cli.bench.workloads import MLP_WORKLOADS

pytest.importorskip("sklearn")

WORKLOAD = MLP_WORKLOADS["digits-lbfgs"]


def _one_iteration(Estimator, X, y):
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return Estimator(**WORKLOAD.params(max_iter=1)).fit(X, y)


def _sklearn(X, y):
    """(scikit-learn's evaluation at its weights, the packed vector, no context)."""
    from sklearn.neural_network import MLPClassifier

    est = _one_iteration(MLPClassifier, X, y)
    sizes = [X.shape[1], *WORKLOAD.params()["hidden_layer_sizes"], len(est.classes_)]
    # The index tables scikit-learn's _fit_lbfgs sets up before its minimizer runs.
    est._coef_indptr, est._intercept_indptr, start = [], [], 0
    for n_in, n_out in zip(sizes, sizes[1:]):
        est._coef_indptr.append((start, start + n_in * n_out, (n_in, n_out)))
        start += n_in * n_out
    for n_out in sizes[1:]:
        est._intercept_indptr.append((start, start + n_out))
        start += n_out
    packed = np.hstack([a.ravel() for a in est.coefs_ + est.intercepts_]).astype(np.float64)
    Y = est._label_binarizer.transform(y).astype(X.dtype)
    n = len(sizes) - 1
    buffers = ([X] + [None] * n, [None] * n,
               [np.empty((a, b), dtype=X.dtype) for a, b in zip(sizes, sizes[1:])],
               [np.empty(b, dtype=X.dtype) for b in sizes[1:]])

    def evaluate(p):
        return est._loss_grad_lbfgs(p, X, Y, None, *buffers)

    return evaluate, packed, contextlib.nullcontext()


def _nnfast_network(X, y):
    from nnfast.sklearn import MLPClassifier

    est = _one_iteration(MLPClassifier, X, y)
    Y = (y[:, None] == est.classes_[None, :]).astype(X.dtype)
    network = est._network
    return network, Y, PackedLayout(network.sizes, network.bias)


def _nnfast_objective(X, y):
    network, Y, packing = _nnfast_network(X, y)
    objective = full_batch_objective(network, X, Y)
    return (_mlp_solvers.packed_loss_gradient(objective, packing),
            packing.pack(objective.params), objective.thread_limits())


def _nnfast_loss_gradient(X, y):
    network, Y, packing = _nnfast_network(X, y)

    def evaluate(p):
        network.params[...] = pack_params(*packing.split(p))
        loss, weight_grads, bias_grads = network.loss_gradient(X, Y)
        return loss, packing.pack(pack_params(weight_grads, bias_grads))

    return evaluate, packing.pack(network.params), contextlib.nullcontext()


IMPLEMENTATIONS = {"sklearn": _sklearn, "nnfast-objective": _nnfast_objective,
                   "nnfast-loss_gradient": _nnfast_loss_gradient}


@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_lbfgs_evaluation(benchmark, dtype, implementation):
    X, y = WORKLOAD.data(np.dtype(dtype))
    evaluate, packed, limits = IMPLEMENTATIONS[implementation](X, y)
    with limits:
        benchmark.pedantic(evaluate, args=(packed,), rounds=50, iterations=1,
                           warmup_rounds=3)


@pytest.mark.parametrize("blas", ["one-thread", "default"])
@pytest.mark.parametrize("dtype", ["float64"])
def test_lbfgsb_alone(benchmark, dtype, blas):
    """blas: "one-thread" as nnfast's fit runs it, "default" as scikit-learn's does."""
    size = PackedLayout([WORKLOAD.features, 100, WORKLOAD.classes], True).size
    scale = np.random.RandomState(0).uniform(0.5, 2.0, size)
    start = np.ones(size)

    def quadratic(p):
        gradient = scale * p
        return 0.5 * float(p @ gradient), gradient

    def minimize():
        # tol=0 as the row's: every iteration runs.
        return scipy.optimize.minimize(quadratic, start, method="L-BFGS-B", jac=True,
                                       options={"maxiter": WORKLOAD.max_iter, "gtol": 0.0,
                                                "ftol": 0.0})

    with blas_thread_cap(1 if blas == "one-thread" else None):
        benchmark.extra_info["iterations"] = int(minimize().nit)
        benchmark.pedantic(minimize, rounds=5, iterations=1, warmup_rounds=1)
