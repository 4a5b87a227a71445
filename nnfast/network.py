"""``Network``: the public model. Validates once at the edge, then trains through the fit
machinery of ``nnfast._training``: a ``FitTransaction`` (copies in, all or nothing out), a
backend object (the compiled kernel or the NumPy reference) and the one chunk-and-report loop
(``driver.drive``)."""

import sys

import numpy as np

from . import reference
from ._training import threads as thread_policy
from ._training.backends import backend_named
from ._training.driver import Reports, drive, progress_bar
from ._training.layout import pack_params, param_count, param_views
from ._training.objective import full_batch_objective
from ._training.options import check_fit_arguments, check_model_options, fit_plan
from ._training.plan import is_original_model
from ._training.random import legacy_random_state
from ._training.run import TrainingRun, order_rows
from ._training.sparse import check_sparse_inputs, is_sparse
from ._training.transaction import FitTransaction, TrainingDivergedError, snapshot
from ._validation import (
    check_backend,
    check_bool,
    check_dtype,
    check_fits_in_memory,
    check_inputs,
    check_int,
    check_n_threads,
    check_sample_weight,
    check_sizes,
    check_target_range,
    check_targets,
)
from .optimizers import GradientStep

__all__ = ["Network", "TrainingDivergedError"]


class Network:
    """A fully connected sigmoid network trained by backpropagation, as in the original.

    A drop-in for the original NumPy program: the same initial weights for the same seed, the
    same arithmetic, the same result to rounding, computed by a compiled kernel.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths, input first: ``[3, 1]`` is the original 2-layer network, ``[3, 4, 1]``
        the 3-layer one.
    seed : int
        Seed of the ``numpy.random.RandomState`` that draws the initial weights as in the
        original (``2 * random_sample((a, b)) - 1`` for each layer pair in order) and then
        goes on to draw the row order of shuffled mini-batches.
    dtype : float32 or float64
    backend : {"cython", "numpy"}
        ``"numpy"`` runs ``nnfast.reference``, the original's NumPy code, behind the same API.
    bias : bool
        Add a trainable bias to every layer (initialised to zero). The original has none; it
        feeds a constant input column instead.
    n_threads : int or None
        Threads for the kernel; None uses every core available to the process.
    activation : str or sequence of str
        Hidden-layer activation, scikit-learn's names: ``"logistic"`` (the original's
        sigmoid), ``"tanh"``, ``"relu"``, ``"identity"``, or nnfast's ``"leaky_relu"``
        (slope 0.01), ``"elu"`` (alpha 1), ``"gelu"`` (exact erf form), ``"silu"``,
        ``"softplus"``; one name for every hidden layer, or one per hidden layer.
    output : {"original", "identity", "logistic", "softmax", "exp"}
        Output activation and its loss: ``"original"`` is the 2015 program's sigmoid with
        squared error and the error ``mean |y - output|``; the others are scikit-learn's
        identity + squared error, logistic + binary log-loss, softmax + cross-entropy (two or
        more outputs) and exp + Poisson loss.
    optimizer : GradientStep, SGD, Adam or None
        From ``nnfast.optimizers``; None is ``GradientStep()``, the original's plain step.
    alpha : float >= 0
        L2 penalty on the weights (not the biases), as scikit-learn's ``alpha``.
    reduction : {"sum", "mean"} or None
        How a batch's gradient combines its rows: ``"sum"`` as the original, ``"mean"``
        (divided by the batch's rows, or sum of sample weights) as scikit-learn. None picks
        ``"sum"`` for output ``"original"`` and ``"mean"`` otherwise.
    loss : {"absolute_error", "huber", "quantile"} or None
        A robust regression loss for output ``"identity"`` instead of its squared error
        (``nnfast.reference.REGRESSION_LOSSES``): per element of r = output - y, ``|r|``;
        Huber's ``0.5 r**2`` where ``|r| <= huber_delta``, else ``huber_delta * (|r| -
        huber_delta / 2)``; the pinball loss ``q (y - output)`` where y >= output, else
        ``(1 - q) (output - y)``, q = ``quantile``. Averaged over rows (weighted) and
        outputs as squared error is; the output delta is the per-element derivative. None is
        the output's own loss.
    huber_delta : float > 0
        Where Huber's loss turns from quadratic to linear.
    quantile : float in (0, 1)
        The quantile the ``"quantile"`` loss estimates (0.5: the median).
    dropout : float in [0, 1), or a sequence of them (one per hidden layer)
        Inverted dropout in ``fit``: each hidden unit of each row is zeroed with this
        probability and otherwise scaled by ``1 / (1 - rate)``; ``predict``,
        ``loss_gradient`` and ``gradient`` use every unit. The masks depend only on a seed
        each fit draws from ``random_state`` and on the rows' positions in the fit
        (``nnfast.reference.dropout_masks``), so a fit is reproducible and the same on any
        number of threads. 0 (the default) costs nothing. Stored as a tuple, one rate per
        hidden layer.

    Attributes
    ----------
    weights : list of ndarray
        ``weights[k]`` has shape ``(sizes[k], sizes[k+1])``: the original's ``syn0``, ``syn1``.
        Views into one buffer, updated in place by ``fit``.
    biases : list of ndarray or None
        ``biases[k]`` has shape ``(sizes[k+1],)``; None when ``bias`` is false.
    history : list of (int, float)
        (iteration, error) at each report of the last fit that reported: ``mean |y - output|``
        for output ``"original"``, else the epoch's loss (scikit-learn's ``loss_curve_``).
    optimizer_state : OptimizerState or None
        Velocities / moments, step count, samples seen and current learning rate of the last
        fit with ``SGD`` or ``Adam``; ``fit(..., resume=True)`` continues from it.
    iterations_run : int
        Epochs the last fit ran.
    params : ndarray
        Every weight and bias, flat, in the order W0, b0, W1, b1, ...: the one buffer that
        ``weights`` and ``biases`` view. Trained in place by ``fit``, all at once.
    random_state : numpy.random.RandomState
        Where shuffled mini-batches draw their row orders (after the initial weights, from
        ``seed``); each fit goes on from where the last one left it.
    """

    def __init__(self, sizes, *, seed=1, dtype=np.float64, backend="cython", bias=False,
                 n_threads=None, activation="logistic", output="original", optimizer=None,
                 alpha=0.0, reduction=None, loss=None, huber_delta=1.0, quantile=0.5,
                 dropout=0.0):
        self._configure(sizes, seed, dtype, backend, bias, n_threads, activation, output,
                        optimizer, alpha, reduction, loss, huber_delta, quantile, dropout)
        # The initial weights are drawn in float64 and then cast: two copies at the peak.
        check_fits_in_memory(2 * 8 * param_count(self.sizes, self.bias),
                             f"a network of sizes {list(self.sizes)}")
        self.random_state = legacy_random_state(self.seed)
        self.params = pack_params(*reference.init_params(self.sizes, self.random_state,
                                                         self.dtype, self.bias))

    @classmethod
    def from_params(cls, params, sizes, *, seed=1, dtype=np.float64, backend="cython",
                    bias=False, n_threads=None, activation="logistic", output="original",
                    optimizer=None, alpha=0.0, reduction=None, loss=None, huber_delta=1.0,
                    quantile=0.5, dropout=0.0):
        """A network holding ``params`` instead of weights drawn from the seed.

        For callers that set every weight themselves (nnfast's scikit-learn estimators,
        which draw their own initial weights; ``Network.load``): the constructor's draw
        would be thrown away, and so would a new ``RandomState``, which costs as much as a
        small fit's epoch. The network's random state is ``RandomState(seed)`` undrawn, one
        object shared by all such networks of that seed: a network never draws from its
        random state in place (a fit draws from a copy and keeps the copy).

        Parameters
        ----------
        params : ndarray
            Every weight and bias, flat (``params``' layout), C-contiguous, of ``dtype``;
            kept as the network's buffer, not copied.
        sizes, seed, dtype, backend, bias, n_threads, activation, output, optimizer, alpha,
        reduction, loss, huber_delta, quantile, dropout
            As for the constructor.
        """
        network = cls.__new__(cls)
        network._configure(sizes, seed, dtype, backend, bias, n_threads, activation, output,
                           optimizer, alpha, reduction, loss, huber_delta, quantile, dropout)
        if not (isinstance(params, np.ndarray) and params.dtype == network.dtype
                and params.shape == (param_count(network.sizes, network.bias),)
                and params.flags.c_contiguous):
            raise ValueError(f"params must be a contiguous {network.dtype} array of "
                             f"{param_count(network.sizes, network.bias)} values")
        network.random_state = _undrawn_random_state(network.seed)
        network.params = params
        return network

    def _configure(self, sizes, seed, dtype, backend, bias, n_threads, activation, output,
                   optimizer, alpha, reduction, loss=None, huber_delta=1.0, quantile=0.5,
                   dropout=0.0):
        """Checks and sets the constructor's options; no weights yet."""
        self.sizes = check_sizes(sizes)
        self.seed = check_int(seed, "seed", minimum=0)
        self.dtype = check_dtype(dtype)
        self.backend = check_backend(backend)
        self.bias = check_bool(bias, "bias")
        self.n_threads = None if n_threads is None else check_n_threads(n_threads)
        self.activations = activation
        self.output = output
        self.optimizer = GradientStep() if optimizer is None else optimizer
        self.alpha = alpha
        self.reduction = reduction
        self.loss = loss
        self.huber_delta = huber_delta
        self.quantile = quantile
        self.dropout = dropout
        self.optimizer_state = None
        check_model_options(self)
        self.history = []
        self.iterations_run = 0

    def __setstate__(self, state):
        # nnfast 0.1.0 kept the parameters and the random state in private attributes.
        for old, new in (("_params", "params"), ("_random_state", "random_state")):
            if old in state:
                state[new] = state.pop(old)
        self.__dict__.update(state)
        # A network pickled before the model options existed is the original's model.
        for name, value in (("activations", ("logistic",) * (len(self.sizes) - 2)),
                            ("output", "original"), ("optimizer", GradientStep()),
                            ("alpha", 0.0), ("reduction", "sum"), ("optimizer_state", None),
                            ("iterations_run", 0), ("loss", None), ("huber_delta", 1.0),
                            ("quantile", 0.5), ("dropout", (0.0,) * (len(self.sizes) - 2))):
            self.__dict__.setdefault(name, value)

    @property
    def weights(self):
        return param_views(self.params, self.sizes, self.bias)[0]

    @property
    def biases(self):
        return param_views(self.params, self.sizes, self.bias)[1]

    @property
    def activation(self):
        """The hidden activation: one name when every hidden layer shares it, else a tuple."""
        if len(set(self.activations)) == 1:
            return self.activations[0]
        return self.activations if self.activations else "logistic"

    def __repr__(self):
        options = ""
        if self.activations and self.activation != "logistic":
            options += f", activation={self.activation!r}"
        if self.output != "original":
            options += f", output={self.output!r}"
        if not isinstance(self.optimizer, GradientStep) or self.optimizer.learning_rate != 1:
            options += f", optimizer={self.optimizer!r}"
        if self.alpha:
            options += f", alpha={self.alpha!r}"
        if self.reduction != ("sum" if self.output == "original" else "mean"):
            options += f", reduction={self.reduction!r}"
        if self.loss is not None:
            options += f", loss={self.loss!r}"
        if self.huber_delta != 1.0:
            options += f", huber_delta={self.huber_delta!r}"
        if self.quantile != 0.5:
            options += f", quantile={self.quantile!r}"
        if any(self.dropout):
            rates = set(self.dropout)
            options += f", dropout={self.dropout[0] if len(rates) == 1 else self.dropout!r}"
        return (f"Network({list(self.sizes)}, seed={self.seed}, dtype={self.dtype.name}, "
                f"backend={self.backend!r}, bias={self.bias}{options})")

    # ------------------------------------------------------------------------------ training

    def fit(self, X, y, iterations=10000, learning_rate=None, *, batch_size=None, shuffle=True,
            verbose=0, callback=None, progress=False, sample_weight=None, resume=False,
            report_every=None, orders=None):
        """Trains on (X, y) by backpropagation, as the original's loop.

        Parameters
        ----------
        X : array_like or scipy sparse matrix (n_rows, sizes[0])
            Sparse X (CSR, CSC or any scipy format, matrix or array) is never densified: the
            kernel computes the first layer from each batch's non-zeros (a canonical CSR
            copy is made only when X is not one already).
        y : array_like (n_rows, sizes[-1]), or (n_rows,) for one output unit
            For output ``"logistic"`` values in [0, 1]; for ``"softmax"`` rows of class
            probabilities (one-hot); for ``"exp"`` values >= 0.
        iterations : int >= 0
            Epochs: passes over all rows. With full batches (the default) one epoch is one
            step, as in the original.
        learning_rate : float or None
            None uses the optimizer's ``learning_rate`` (1.0 for the default plain step: the
            original). With the plain step, ``W += learning_rate * (l.T @ delta)``: the update
            **sums** over the rows of a batch unless ``reduction="mean"``. With ``SGD`` and
            ``resume=True``, a number replaces the current rate (how scikit-learn's
            ``"adaptive"`` schedule lowers it); otherwise it replaces the initial rate.
        batch_size : int or None
            Rows per step; None (or >= n_rows) is the full batch. The last batch of an epoch
            holds the remainder.
        shuffle : bool
            With mini-batches, visit the rows of each epoch in an order drawn from the
            network's random state (reproducible from ``seed``) or given by ``orders``;
            otherwise in stored order.
        verbose : int
            If K > 0, print the error at iterations 0, K, 2K, ... (``Error:<mean |y -
            output|>`` in the original's format for output ``"original"``, else the epoch's
            loss), or at each report when ``report_every`` is given.
        callback : callable or None
            ``callback(iteration, error)`` at each report (every ``report_every`` or
            ``verbose`` iterations, else every ``iterations // 100``); returning True stops the
            fit there.
        progress : bool
            Show a progress bar (needs the optional ``tqdm``).
        sample_weight : array_like (n_rows,) or None
            Finite weights >= 0, not all zero: each row's loss and gradient are scaled by its
            weight (and ``"mean"`` divides by the batch's sum of weights), as scikit-learn's.
        resume : bool
            Continue the optimizer state of the previous fit (scikit-learn's ``partial_fit``);
            False starts fresh (zero velocities and moments, step 0, the initial rate).
        report_every : int >= 1 or None
            Report (``history``, ``callback``, ``verbose``) every this many iterations; None
            keeps the periods described above.
        orders : callable or None
            The row orders of shuffled mini-batch epochs, from the caller instead of the
            network's random state (which then stays untouched): ``orders(out)`` fills the
            intp array ``out`` of shape (n_epochs, n_rows) with the next n_epochs' orders, each
            row a permutation of ``range(n_rows)`` (checked: anything else is a ValueError
            and the network stays as it was). Called once per chunk of epochs, in order, and
            only for epochs that then run; with a callback, ``verbose`` or a progress bar a
            chunk ends at each report. Never called when the fit is not shuffled
            (``shuffle=False`` or one batch per epoch).

        Returns
        -------
        self

        Raises
        ------
        TrainingDivergedError
            When the error stops being finite. The network is left exactly as before the fit;
            so it is after any exception, including ``KeyboardInterrupt``.
        """
        check_model_options(self)
        X = _check_any_inputs(X, self.sizes, self.dtype)
        y = check_target_range(check_targets(y, X.shape[0], self.sizes, self.dtype),
                               self.output)
        arguments = check_fit_arguments(
            self, iterations=iterations, learning_rate=learning_rate, verbose=verbose,
            callback=callback, progress=progress, resume=resume, report_every=report_every)
        iterations = arguments.iterations
        if iterations > sys.maxsize:
            raise ValueError(f"iterations={iterations} exceeds the largest supported count "
                             f"{sys.maxsize}")
        n_rows = X.shape[0]
        if batch_size is not None:
            batch_size = check_int(batch_size, "batch_size", minimum=1)
        batch_size = n_rows if batch_size is None else min(batch_size, n_rows)
        shuffled = check_bool(shuffle, "shuffle") and batch_size < n_rows
        if sample_weight is not None:
            sample_weight = check_sample_weight(sample_weight, n_rows, self.dtype)
        if orders is not None and not callable(orders):
            raise TypeError(f"orders must be callable or None, got {type(orders).__name__}")
        plan = fit_plan(self, arguments.learning_rate, arguments.resume, batch_size, shuffled,
                        sample_weight is not None)
        backend = backend_named(self.backend)
        bar = progress_bar(iterations) if arguments.progress else None
        reports = Reports.of_fit(iterations, verbose=arguments.verbose,
                                 callback=arguments.callback, bar=bar,
                                 report_every=arguments.report_every, output=self.output,
                                 dtype=self.dtype)
        try:
            with FitTransaction(self, plan, resume=arguments.resume,
                                learning_rate=arguments.learning_rate,
                                orders=orders) as transaction:
                # The original's fused kernel reads dense rows; sparse X takes the general
                # path, whose kernel computes the same model from the non-zeros.
                if plan.is_original and not is_sparse(X):
                    self._train_original(transaction, backend, X, y, iterations, reports)
                else:
                    run = TrainingRun(transaction, backend, X, y, sample_weight, iterations)
                    with run.threads:
                        _, history = drive(lambda start, n_epochs: run.run(n_epochs),
                                           iterations, reports, max_chunk=run.max_chunk,
                                           every_epoch_loss=True)
                    run.commit(history)
        finally:
            if bar is not None:
                bar.close()
        return self

    def _train_original(self, transaction, backend, X, y, iterations, reports):
        """The original's model on dense X: the backend's fused step, a chunk of epochs
        per call, between reports."""
        plan = transaction.plan
        n_rows, batch_size, learning_rate = X.shape[0], plan.batch_size, plan.learning_rate
        check_fits_in_memory(
            self.dtype.itemsize * (2 * batch_size * sum(self.sizes[1:]) + self.params.size),
            f"training on batches of {batch_size} rows")
        blocks = thread_policy.kernel_blocks(self, backend, batch_size)
        run = backend.original_run(self.sizes, self.bias, X, y, learning_rate, batch_size,
                                   plan.shuffled, blocks,
                                   thread_policy.check_every(self.sizes, batch_size))
        params = transaction.params
        max_chunk = thread_policy.epochs_between_team_checks(self.sizes, blocks, n_rows)
        order_buffer = None
        if plan.shuffled:
            order_buffer = np.empty((order_rows(iterations, n_rows), n_rows), dtype=np.intp)
            max_chunk = min(max_chunk, order_buffer.shape[0])

        with thread_policy.fit_threads(self, backend, blocks, batch_size) as threads:
            def run_chunk(start, n_epochs):
                orders = (transaction.fill_orders(order_buffer[:n_epochs]) if plan.shuffled
                          else None)
                threads.refresh()
                first_error, diverged_at = run(params, n_epochs, orders)
                if diverged_at is not None:
                    raise TrainingDivergedError(
                        f"training diverged at iteration {start + diverged_at}: the output "
                        f"error is no longer finite (learning_rate={learning_rate} too "
                        "large?); the weights are left as they were before this fit")
                return (first_error,)

            done, history = drive(run_chunk, iterations, reports, max_chunk=max_chunk,
                                  every_epoch_loss=False)
        transaction.commit(history, done, hint=f" (learning_rate={learning_rate} too large?)")

    def gradient(self, X, y):
        """The update one full-batch step on (X, y) would make, without making it.

        ``fit``'s plain step adds ``learning_rate * G`` to each weight matrix; this returns
        the G (for the original's model, ``l.T @ delta``; for any other model, minus
        ``loss_gradient``'s gradient). Summing the gradients of shards of the rows gives the
        gradient of all of them (up to rounding) with ``reduction="sum"``, the building block
        of data-parallel training.

        Parameters
        ----------
        X, y : as for ``fit``.

        Returns
        -------
        weight_gradients : list of ndarray, shaped like ``weights``
        bias_gradients : list of ndarray shaped like ``biases``, or None without biases
        """
        check_model_options(self)
        if not self._is_original_model() or is_sparse(X):
            # The original's G is minus its loss gradient too (its delta has the descent
            # sign); sparse X takes the general path's kernel.
            _, weight_gradients, bias_gradients = self.loss_gradient(X, y)
            return ([-g for g in weight_gradients],
                    None if bias_gradients is None else [-g for g in bias_gradients])
        X = check_inputs(X, self.sizes, self.dtype)
        y = check_targets(y, X.shape[0], self.sizes, self.dtype)
        params = snapshot(self)
        backend = backend_named(self.backend)
        blocks = thread_policy.kernel_blocks(self, backend, X.shape[0])
        with thread_policy.fit_threads(self, backend, blocks, X.shape[0]):
            gradient, _ = backend.original_gradient(params, self.sizes, self.bias, X, y, blocks)
        return param_views(gradient, self.sizes, self.bias)

    def loss_gradient(self, X, y, sample_weight=None):
        """The loss and gradient of this network's model on (X, y) as one full batch.

        scikit-learn's ``_backprop``: the loss (data loss plus ``0.5 * alpha * sum ||W||^2 /
        denom``) and the gradient G that the optimizers step against (``fit``'s plain step
        subtracts ``learning_rate * G``); with ``reduction="mean"`` both are averages over
        the rows (weighted by ``sample_weight``). For output ``"original"`` the data loss is
        ``0.5 * sum over outputs of the mean of (y - output)**2``, whose gradient the
        original's delta is. The building block of L-BFGS and of data-parallel training.

        Parameters
        ----------
        X, y, sample_weight : as for ``fit``.

        Returns
        -------
        loss : float
        weight_gradients : list of ndarray, shaped like ``weights``
        bias_gradients : list of ndarray shaped like ``biases``, or None without biases
        """
        check_model_options(self)
        X = _check_any_inputs(X, self.sizes, self.dtype)
        y = check_target_range(check_targets(y, X.shape[0], self.sizes, self.dtype),
                               self.output)
        objective = full_batch_objective(self, X, y, sample_weight)
        with objective.thread_limits():
            loss = objective()
        weight_gradients, bias_gradients = param_views(objective.grad, self.sizes, self.bias)
        return float(loss), weight_gradients, bias_gradients

    # --------------------------------------------------------------------------- persistence

    def save(self, path):
        """Writes the network to ``path`` as a documented ``.npz`` file, atomically.

        See ``nnfast._persistence`` for the format. A crash mid-save never leaves a truncated
        file: an existing file stays intact until the new one is complete.
        """
        from ._persistence import save_network
        save_network(self, path)

    @classmethod
    def load(cls, path):
        """Reads a network written by ``save`` (never runs code: no pickles are loaded).

        Raises
        ------
        ValueError
            If the file is truncated, not an nnfast model, or inconsistent; the message names
            the file and the problem.
        """
        from ._persistence import load_network
        return load_network(cls, path)

    # ---------------------------------------------------------------------------- prediction

    def predict(self, X):
        """The output layer's activations for X, shape (n_rows, sizes[-1]).

        Probabilities for outputs ``"original"`` and ``"logistic"`` (each unit in [0, 1]) and
        ``"softmax"`` (rows sum to 1); unbounded for ``"identity"``; positive for ``"exp"``.
        """
        check_model_options(self)
        X = _check_any_inputs(X, self.sizes, self.dtype)
        weights, biases = param_views(snapshot(self), self.sizes, self.bias)
        if not self._all_sigmoid() or is_sparse(X):
            # Sparse X: scipy's sparse x dense product for the first layer, then NumPy's.
            # The kernel's forward_layer is the sigmoid layer only; the other activations are
            # elementwise passes after NumPy's (BLAS) products, as scikit-learn predicts.
            with thread_policy.prediction_threads(self.sizes, X.shape[0]):
                return reference.predict_model(weights, biases, X, self.activations,
                                               self.output)
        return backend_named(self.backend).predict_sigmoid(weights, biases, X)

    def _is_original_model(self):
        """Whether the model options are the original's (the optimizer aside)."""
        return is_original_model(self.activations, self.output, self.reduction, self.alpha)

    def _all_sigmoid(self):
        """Whether every layer is a sigmoid layer (the original's forward pass)."""
        return (self.output in ("original", "logistic")
                and all(name == "logistic" for name in self.activations))


# seed -> RandomState(seed), never drawn from: the random state of networks built from given
# parameters (Network.from_params).
_UNDRAWN = {}


def _check_any_inputs(X, sizes, dtype):
    """X for a network of these sizes: a dense array (``check_inputs``) or a sparse matrix
    (``nnfast._training.sparse.check_sparse_inputs``: canonical CSR, never densified)."""
    if is_sparse(X):
        return check_sparse_inputs(X, sizes, dtype)
    return check_inputs(X, sizes, dtype)


def _undrawn_random_state(seed):
    random_state = _UNDRAWN.get(seed)
    if random_state is None:
        # A race makes two, and one is kept: either is RandomState(seed).
        random_state = _UNDRAWN.setdefault(seed, legacy_random_state(seed))
    return random_state
