"""``Network``: the public model. Validates once, then hands the whole fit to a backend."""

import math

import numpy as np

from . import _kernels, reference
from ._layout import allocate_workspace, pack_params, param_count, param_views
from ._validation import (
    check_backend,
    check_dtype,
    check_finite_real,
    check_inputs,
    check_int,
    check_n_threads,
    check_sizes,
    check_targets,
)

# The kernel polls for Ctrl-C about every this many multiply-adds (a few milliseconds).
_SIGNAL_CHECK_FLOPS = 2e7


class TrainingDivergedError(FloatingPointError):
    """The training error stopped being finite; the network keeps its pre-fit weights."""


class Network:
    """A fully connected sigmoid network trained by full-batch backpropagation.

    A drop-in for the original NumPy program: the same initial weights for the same seed, the
    same arithmetic, the same result to rounding, computed by a compiled kernel.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths, input first: ``[3, 1]`` is the original 2-layer network, ``[3, 4, 1]``
        the 3-layer one.
    seed : int
        Seed of ``numpy.random.RandomState`` for the initial weights, drawn as in the original:
        ``2 * random_sample((a, b)) - 1`` for each layer pair in order.
    dtype : float32 or float64
    backend : {"cython", "numpy"}
        ``"numpy"`` runs ``nnfast.reference``, the original's NumPy code, behind the same API.
    n_threads : int or None
        Threads for the kernel; None uses every core available to the process.

    Attributes
    ----------
    weights : list of ndarray
        ``weights[k]`` has shape ``(sizes[k], sizes[k+1])``: the original's ``syn0``, ``syn1``.
        They are views into one buffer and are updated in place by ``fit``.
    """

    def __init__(self, sizes, *, seed=1, dtype=np.float64, backend="cython", n_threads=None):
        self.sizes = check_sizes(sizes)
        self.seed = check_int(seed, "seed", minimum=0)
        self.dtype = check_dtype(dtype)
        self.backend = check_backend(backend)
        self.n_threads = n_threads
        self._threads = check_n_threads(n_threads)
        weights, _ = reference.init_params(self.sizes, self.seed, self.dtype)
        self._params = pack_params(weights, None)
        assert self._params.size == param_count(self.sizes, False)

    @property
    def weights(self):
        return param_views(self._params, self.sizes, False)[0]

    def __repr__(self):
        return (f"Network({list(self.sizes)}, seed={self.seed}, dtype={self.dtype.name}, "
                f"backend={self.backend!r})")

    def fit(self, X, y, iterations=10000, learning_rate=1.0):
        """Trains on (X, y) by full-batch backpropagation, as the original's loop.

        Parameters
        ----------
        X : array_like (n_rows, sizes[0])
        y : array_like (n_rows, sizes[-1]), or (n_rows,) for one output unit
        iterations : int >= 0
        learning_rate : float
            ``W += learning_rate * (l.T @ delta)``; 1.0 is the original.

        Returns
        -------
        self

        Raises
        ------
        TrainingDivergedError
            When the error stops being finite; the weights are left as they were.
        """
        X = check_inputs(X, self.sizes, self.dtype)
        y = check_targets(y, X.shape[0], self.sizes, self.dtype)
        iterations = check_int(iterations, "iterations", minimum=0)
        learning_rate = check_finite_real(learning_rate, "learning_rate")
        if iterations == 0:
            return self
        # Train a copy: an error or an interrupt leaves the network as it was.
        params = self._params.copy()
        if self.backend == "cython":
            diverged_at = self._fit_kernel(params, X, y, iterations, learning_rate)
        else:
            diverged_at = self._fit_reference(params, X, y, iterations, learning_rate)
        if diverged_at is not None:
            raise TrainingDivergedError(
                f"training diverged at iteration {diverged_at}: the output error is no longer "
                f"finite (learning_rate={learning_rate} is too large?); the weights are left "
                "as they were before this fit")
        if not np.isfinite(params).all():
            raise TrainingDivergedError(
                "training diverged: weights became infinite (learning_rate="
                f"{learning_rate} is too large?); the weights are left as they were before "
                "this fit")
        self._params[...] = params
        return self

    def _fit_kernel(self, params, X, y, iterations, learning_rate):
        n_rows = X.shape[0]
        workspace = allocate_workspace(self.sizes, n_rows, self.dtype, shuffled=False)
        flops_per_epoch = 3 * n_rows * sum(a * b for a, b in zip(self.sizes[:-1], self.sizes[1:]))
        check_every = max(1, math.ceil(_SIGNAL_CHECK_FLOPS / flops_per_epoch))
        no_order = np.empty((0, 0), dtype=np.intp)
        done, _, diverged = _kernels.fit(
            params, np.asarray(self.sizes, dtype=np.intp), False, X, y, no_order, n_rows,
            iterations, learning_rate, workspace["activations"], workspace["deltas"],
            workspace["grad"], workspace["batch_x"], workspace["batch_y"], check_every)
        return done if diverged else None

    def _fit_reference(self, params, X, y, iterations, learning_rate):
        weights, biases = param_views(params, self.sizes, False)
        with np.errstate(all="ignore"):
            errors = reference.fit(weights, biases, X, y, iterations, learning_rate)
        bad = np.flatnonzero(~np.isfinite(errors))
        return int(bad[0]) if bad.size else None

    def predict(self, X):
        """The output layer's activations for X, shape (n_rows, sizes[-1])."""
        X = check_inputs(X, self.sizes, self.dtype)
        weights = self.weights
        if self.backend == "numpy":
            return reference.predict(weights, None, X)
        no_bias = np.empty(0, dtype=self.dtype)
        layer = X
        for w in weights:
            out = np.empty((layer.shape[0], w.shape[1]), dtype=self.dtype)
            _kernels.forward_layer(layer, w, no_bias, out)
            layer = out
        return layer
