"""A network's two backends behind one interface: ``Reference`` (``nnfast.reference``, NumPy)
and ``Compiled`` (the kernel, ``nnfast._kernels``).

Each trains chunks of the original's model (its fused step), computes the original's
gradient, predicts through sigmoid layers, and runs the general path through the runner
contract of ``nnfast._training.plan`` (``make_runner``, ``make_loss_gradient``). Callers
(``Network``, ``nnfast.dask``'s tasks) ask ``backend_named(network.backend)`` for the
object and never branch on the name.
"""

import numpy as np

from .. import reference
from .layout import allocate_workspace, param_views

# An empty order buffer: the kernel's "stored order" (unshuffled) argument.
_STORED_ORDER = np.empty((0, 0), dtype=np.intp)


class Reference:
    """The original's NumPy code and ``nnfast.reference``'s general runner."""

    name = "numpy"
    threaded = False  # threads only through NumPy's BLAS
    kernels = None  # no compiled kernels, so no kernel team to size

    def team_threads(self):
        return 1

    def original_run(self, sizes, bias, X, y, learning_rate, batch_size, shuffled,
                     n_threads, check_every, workspace=None):
        """``run(params, n_epochs, orders) -> (first epoch's error, diverged epoch or
        None)``: trains params in place by the original's step. ``workspace``: the
        compiled backend's buffers (``allocate_workspace``), when the caller keeps them."""
        def run(params, n_epochs, orders):
            weights, biases = param_views(params, sizes, bias)
            with np.errstate(all="ignore"):
                errors = reference.fit(weights, biases, X, y, n_epochs, learning_rate,
                                       batch_size, orders)
            bad = np.flatnonzero(~np.isfinite(errors))
            return errors[0], (int(bad[0]) if bad.size else None)
        return run

    def original_gradient(self, params, sizes, bias, X, y, n_threads, with_error=False,
                          workspace=None):
        """(the flat gradient G that the original's full-batch step adds, the sum of
        |y - output| of the same forward pass when ``with_error``, else None).
        ``workspace``: as for ``original_run``."""
        weights, biases = param_views(params, sizes, bias)
        abs_error_sum = None
        with np.errstate(over="ignore"):  # exp overflowing to inf: the exact sigmoid 0
            weight_grads, bias_grads = reference.gradient(weights, biases, X, y)
            if with_error:
                abs_error_sum = float(np.abs(y - reference.predict(weights, biases, X)).sum())
        pairs = zip(weight_grads, bias_grads if bias else [None] * len(weight_grads))
        return (np.concatenate([g.ravel() for pair in pairs for g in pair if g is not None]),
                abs_error_sum)

    def predict_sigmoid(self, weights, biases, X):
        """The original's forward pass (every layer a sigmoid)."""
        with np.errstate(over="ignore"):  # exp(-x) overflowing: the exact sigmoid 0
            return reference.predict(weights, biases, X)

    def require_general(self):
        """Nothing to check: the reference runs every model."""

    def loss_gradient_into(self, plan, params, X, y, sample_weight, grad, workspace=None):
        """(loss, output layer): one full-batch evaluation of the plan's model, the gradient
        written to ``grad``. ``workspace``: the compiled backend's general workspace."""
        weights, biases = param_views(params, plan.sizes, plan.bias)
        weight_grads, bias_grads = param_views(grad, plan.sizes, plan.bias)
        with np.errstate(all="ignore"):  # a non-finite loss is the caller's to report
            loss, layers = reference.backprop(
                weights, biases, X, y, sample_weight, plan.activations, plan.output,
                plan.alpha, plan.reduction, weight_grads, bias_grads,
                need_loss=plan.output != "original", loss=plan.loss,
                loss_parameter=plan.loss_parameter)
        return loss, layers[-1]

    def make_runner(self, plan, X, y, sample_weight, n_threads, check_every):
        return reference.make_runner(plan, X, y, sample_weight, n_threads, check_every)

    def make_loss_gradient(self, plan, X, y, sample_weight, n_threads):
        return reference.make_loss_gradient(plan, X, y, sample_weight, n_threads)


class Compiled:
    """The compiled kernel: its fused original step and its general runner."""

    name = "cython"

    def __init__(self):
        from .._kernels import kernels
        self.kernels = kernels
        self.threaded = bool(kernels.OPENMP)

    def team_threads(self):
        """The calling thread's OpenMP team size (OMP_NUM_THREADS, threadpoolctl)."""
        return self.kernels.team_threads()

    def original_run(self, sizes, bias, X, y, learning_rate, batch_size, shuffled,
                     n_threads, check_every, workspace=None):
        """As ``Reference.original_run``, with the fused kernel; its buffers are allocated
        here, once per fit, unless the caller gives them."""
        kernels = self.kernels
        if workspace is None:
            workspace = allocate_workspace(sizes, batch_size, X.dtype, shuffled)
        sizes = np.asarray(sizes, dtype=np.intp)

        def run(params, n_epochs, orders):
            done, first_error, diverged = kernels.original_fit(
                params, sizes, bias, X, y, _STORED_ORDER if orders is None else orders,
                batch_size, n_epochs, learning_rate, workspace["activations"],
                workspace["deltas"], workspace["grad"], workspace["batch_x"],
                workspace["batch_y"], check_every, n_threads)
            return first_error, (done if diverged else None)
        return run

    def original_gradient(self, params, sizes, bias, X, y, n_threads, with_error=False,
                          workspace=None):
        """As ``Reference.original_gradient``; the kernel's error sum comes free."""
        if workspace is None:
            workspace = allocate_workspace(sizes, X.shape[0], X.dtype, shuffled=False)
        result = np.empty_like(params)
        abs_error_sum = self.kernels.original_gradient(
            params, np.asarray(sizes, dtype=np.intp), bias, X, y, workspace["activations"],
            workspace["deltas"], workspace["grad"], result, n_threads)
        return result, abs_error_sum

    def predict_sigmoid(self, weights, biases, X):
        """As ``Reference.predict_sigmoid``, a layer at a time with the kernel."""
        no_bias = np.empty(0, dtype=X.dtype)
        layer = X
        for k, w in enumerate(weights):
            out = np.empty((layer.shape[0], w.shape[1]), dtype=X.dtype)
            self.kernels.forward_layer(layer, w, no_bias if biases is None else biases[k], out)
            layer = out
        return layer

    def require_general(self):
        """NotImplementedError when this build has no general path."""
        _runner()

    def loss_gradient_into(self, plan, params, X, y, sample_weight, grad, workspace=None):
        """As ``Reference.loss_gradient_into``; ``workspace`` is required (a general
        workspace for at least X's rows), and keeps the forward pass."""
        loss = _runner().loss_gradient_into(plan, params, X, y, sample_weight, workspace, grad)
        # Layers 1..L, n_rows rows each, in order (nnfast._training.layout): the output
        # layer is the last block.
        before = X.shape[0] * sum(plan.sizes[1:-1])
        output = workspace["activations"][before:before + y.size].reshape(y.shape)
        return loss, output

    def make_runner(self, plan, X, y, sample_weight, n_threads, check_every):
        return _runner().make_runner(plan, X, y, sample_weight, n_threads, check_every)

    def make_loss_gradient(self, plan, X, y, sample_weight, n_threads):
        return _runner().make_loss_gradient(plan, X, y, sample_weight, n_threads)


def _runner():
    try:
        from .._kernels import runner
    except ImportError as exc:
        raise NotImplementedError(
            "the compiled kernel for this model (activation, output, optimizer, alpha or "
            "sample weights beyond the original's) is not built yet; use "
            "backend='numpy'") from exc
    return runner


_BACKENDS = {}


def backend_named(name):
    """The backend object of a network's ``backend`` option ("cython" or "numpy")."""
    backend = _BACKENDS.get(name)
    if backend is None:
        backend = _BACKENDS.setdefault(name, Compiled() if name == "cython" else Reference())
    return backend
