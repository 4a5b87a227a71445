"""``Network``: the public model. Validates once, then hands whole chunks of a fit to a backend."""

import contextlib
import copy
import functools
import math
import sys
import threading
import weakref

import numpy as np

from . import reference
from ._kernels import kernels as _kernels
from ._training.layout import allocate_workspace, pack_params, param_count, param_views
from ._training.objective import FullBatchObjective
from ._training.plan import (
    HIDDEN_ACTIVATIONS,
    OUTPUTS,
    REDUCTIONS,
    FitPlan,
    OptimizerState,
    is_original_model,
    optimizer_name,
)
from ._training.random import legacy_random_state
from ._training.sparse import check_sparse_inputs, is_sparse
from ._training.threads import FitThreads, KernelTeam, blas_thread_cap
from ._validation import (
    available_cores,
    check_activations,
    check_alpha,
    check_backend,
    check_choice,
    check_dtype,
    check_fits_in_memory,
    check_inputs,
    check_int,
    check_learning_rate,
    check_n_threads,
    check_sample_weight,
    check_sizes,
    check_target_range,
    check_targets,
)
from .optimizers import SGD, GradientStep

# The kernel looks at the clock about every this much work (a fraction of a millisecond
# optimised, a few in a debug build) and polls for Ctrl-C when 20 ms have passed; work is
# counted in multiply-adds, a parameter's update per batch as _UPDATE_WORK of them (Adam's).
_CLOCK_LOOK_WORK = 1e6
_UPDATE_WORK = 10
# Without kernel threads, an explicit n_threads caps BLAS only from this product size on;
# below it BLAS runs single-threaded anyway and the cap would cost more than the fit.
_BLAS_THREADED_FLOPS = 1 << 16
# Shuffled mini-batches: at most this many row indices of epoch orders are drawn at once.
# Kept small so that a fit's memory does not depend on its length (one buffer per fit).
_MAX_ORDER_ENTRIES = 1 << 16
# A layer product of at least this many multiply-adds per batch makes the kernel cut its
# products into blocks for threads. Measured on 2 cores (AMD EPYC, AVX-512; MLPClassifier,
# adam, (100,) or (256,) units, batches of 200 and 1,000): in a quiet process two threads
# gained 6-15% at 1.3M multiply-adds (digits), 16-47% from 2.6M to 65M, in float32 and
# float64; two blocks on one thread (another pool holding the other core) lost 9% to one
# block at 1.3M, 3-8% from 2.6M on. Digits' size stays on one block: the loss there is the
# gain's size, and a user's process is seldom quiet.
_PARALLEL_MIN_FLOPS = 1 << 21
# A threaded fit calls the kernel for about this many multiply-adds at a time (5-15 ms on
# two cores: a call's Python around it stays under 1%; another pool spins for about 100 ms),
# re-deciding its team between calls (nnfast._training.threads.KernelTeam).
_TEAM_CHECK_WORK = 3e8
# Epochs the general path runs per backend call at most: bounds the per-call epoch-loss buffer
# so that a fit's memory does not depend on its length.
_MAX_CHUNK_EPOCHS = 1 << 16
# Reports per fit when a callback or a progress bar asks for reports but verbose does not.
_DEFAULT_REPORTS = 100


# Per-network locks, kept outside the instances so that pickling and copying need no help:
# fits of one network run one at a time, and reads of its parameters never see a half-written
# update. Different networks never wait for each other.
_LOCKS = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _locks_of(net):
    """(fit lock, state lock) of a network."""
    with _LOCKS_GUARD:
        locks = _LOCKS.get(net)
        if locks is None:
            locks = _LOCKS[net] = (threading.Lock(), threading.Lock())
        return locks


def report_line(output, dtype, iteration, error):
    """What ``verbose`` prints at a report: the original's ``Error:<mean |y - output|>`` for
    output "original" (whatever the optimizer), else the epoch's loss as scikit-learn's MLP
    prints it. iteration counts from 0."""
    if output == "original":
        return "Error:" + str(np.dtype(dtype).type(error))
    return f"Iteration {iteration + 1}, loss = {error:.8f}"


class TrainingDivergedError(FloatingPointError):
    """The training error stopped being finite; the network keeps its pre-fit weights."""


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
        sigmoid), ``"tanh"``, ``"relu"``, ``"identity"``; one name for every hidden layer, or
        one per hidden layer.
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
    """

    def __init__(self, sizes, *, seed=1, dtype=np.float64, backend="cython", bias=False,
                 n_threads=None, activation="logistic", output="original", optimizer=None,
                 alpha=0.0, reduction=None):
        self._configure(sizes, seed, dtype, backend, bias, n_threads, activation, output,
                        optimizer, alpha, reduction)
        # The initial weights are drawn in float64 and then cast: two copies at the peak.
        check_fits_in_memory(2 * 8 * param_count(self.sizes, self.bias),
                             f"a network of sizes {list(self.sizes)}")
        self._random_state = legacy_random_state(self.seed)
        self._params = pack_params(*reference.init_params(self.sizes, self._random_state,
                                                          self.dtype, self.bias))

    @classmethod
    def _from_params(cls, params, sizes, *, seed, dtype, backend, bias, n_threads, activation,
                     output, optimizer, alpha, reduction):
        """A network holding ``params`` (flat, ``nnfast._training.layout``, of the network's dtype;
        kept, not copied) instead of weights drawn from the seed.

        For callers that set every weight themselves (scikit-learn's estimators, which draw
        their own initial weights): the constructor's draw would be thrown away, and so would
        a new ``RandomState``, which costs as much as a small fit's epoch. The network's
        random state is ``RandomState(seed)`` undrawn, one object shared by all such networks
        of that seed: a network never draws from its random state in place (a fit draws from
        a copy and keeps the copy, ``_order_source``). The arguments are the constructor's.
        """
        network = cls.__new__(cls)
        network._configure(sizes, seed, dtype, backend, bias, n_threads, activation, output,
                           optimizer, alpha, reduction)
        if not (isinstance(params, np.ndarray) and params.dtype == network.dtype
                and params.shape == (param_count(network.sizes, network.bias),)
                and params.flags.c_contiguous):
            raise ValueError(f"params must be a contiguous {network.dtype} array of "
                             f"{param_count(network.sizes, network.bias)} values")
        network._random_state = _undrawn_random_state(network.seed)
        network._params = params
        return network

    def _configure(self, sizes, seed, dtype, backend, bias, n_threads, activation, output,
                   optimizer, alpha, reduction):
        """Checks and sets the constructor's options; no weights yet."""
        self.sizes = check_sizes(sizes)
        self.seed = check_int(seed, "seed", minimum=0)
        self.dtype = check_dtype(dtype)
        self.backend = check_backend(backend)
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias must be True or False, got {bias!r}")
        self.bias = bool(bias)
        self.n_threads = None if n_threads is None else check_n_threads(n_threads)
        self.activations = activation
        self.output = output
        self.optimizer = GradientStep() if optimizer is None else optimizer
        self.alpha = alpha
        self.reduction = reduction
        self.optimizer_state = None
        self._check_model_options()
        self.history = []
        self.iterations_run = 0

    def _check_model_options(self):
        """Validates and normalises the model options, which callers may also assign: all
        of them are checked before any is written back (under the state lock, beside the
        weights), so a bad option changes nothing."""
        activations = check_activations(self.activations, len(self.sizes) - 2,
                                        HIDDEN_ACTIVATIONS)
        output = check_choice(self.output, "output", OUTPUTS)
        if output == "softmax" and self.sizes[-1] < 2:
            raise ValueError("output 'softmax' needs at least 2 output units (a softmax of "
                             "one unit is always 1); use output='logistic' for one")
        optimizer_name(self.optimizer)  # TypeError for anything but the three optimizers
        alpha = check_alpha(self.alpha)
        reduction = (("sum" if output == "original" else "mean") if self.reduction is None
                     else check_choice(self.reduction, "reduction", REDUCTIONS))
        state = self.optimizer_state
        if state is not None and not isinstance(state, OptimizerState):
            raise TypeError(f"optimizer_state must be an OptimizerState or None, got "
                            f"{type(state).__name__}")
        with _locks_of(self)[1]:
            self.activations, self.output = activations, output
            self.alpha, self.reduction = alpha, reduction

    def __setstate__(self, state):
        self.__dict__.update(state)
        # A network pickled before the model options existed is the original's model.
        for name, value in (("activations", ("logistic",) * (len(self.sizes) - 2)),
                            ("output", "original"), ("optimizer", GradientStep()),
                            ("alpha", 0.0), ("reduction", "sum"), ("optimizer_state", None)):
            self.__dict__.setdefault(name, value)

    @property
    def weights(self):
        return param_views(self._params, self.sizes, self.bias)[0]

    @property
    def biases(self):
        return param_views(self._params, self.sizes, self.bias)[1]

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
        self._check_model_options()
        X = _check_any_inputs(X, self.sizes, self.dtype)
        y = check_target_range(check_targets(y, X.shape[0], self.sizes, self.dtype),
                               self.output)
        iterations = check_int(iterations, "iterations", minimum=0)
        if iterations > sys.maxsize:
            raise ValueError(f"iterations={iterations} exceeds the largest supported count "
                             f"{sys.maxsize}")
        if learning_rate is not None:
            learning_rate = check_learning_rate(learning_rate, self.dtype)
            if not isinstance(self.optimizer, GradientStep) and learning_rate <= 0:
                raise ValueError(f"learning_rate must be > 0 for {type(self.optimizer).__name__}"
                                 f", got {learning_rate}")
        n_rows = X.shape[0]
        if batch_size is not None:
            batch_size = check_int(batch_size, "batch_size", minimum=1)
        batch_size = n_rows if batch_size is None else min(batch_size, n_rows)
        if not isinstance(shuffle, (bool, np.bool_)):
            raise TypeError(f"shuffle must be True or False, got {shuffle!r}")
        shuffled = bool(shuffle) and batch_size < n_rows
        verbose = check_int(verbose, "verbose", minimum=0)
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable, got {type(callback).__name__}")
        if not isinstance(progress, (bool, np.bool_)):
            raise TypeError(f"progress must be True or False, got {progress!r}")
        if sample_weight is not None:
            sample_weight = check_sample_weight(sample_weight, n_rows, self.dtype)
        if not isinstance(resume, (bool, np.bool_)):
            raise TypeError(f"resume must be True or False, got {resume!r}")
        if report_every is not None:
            report_every = check_int(report_every, "report_every", minimum=1)
        if orders is not None and not callable(orders):
            raise TypeError(f"orders must be callable or None, got {type(orders).__name__}")
        plan = self._plan(learning_rate, bool(resume), batch_size, shuffled,
                          sample_weight is not None)
        bar = _progress_bar(iterations) if progress else None

        fit_lock, state_lock = _locks_of(self)
        with fit_lock:
            try:
                random_state, fill_orders = self._order_source(shuffled, orders)
                # The original's fused kernel reads dense rows; sparse X takes the general
                # path, whose kernel computes the same model from the non-zeros.
                if plan.is_original and not is_sparse(X):
                    return self._train(X, y, iterations, plan.learning_rate, batch_size,
                                       fill_orders, random_state, verbose, callback, bar,
                                       state_lock, report_every)
                # Under the fit lock: the state of the fit before, not of one running.
                state = self._start_state(plan, bool(resume), learning_rate)
                return self._train_general(plan, state, X, y, sample_weight, iterations,
                                           fill_orders, random_state, verbose, callback, bar,
                                           state_lock, report_every)
            finally:
                if bar is not None:
                    bar.close()

    def _plan(self, learning_rate, resume, batch_size, shuffled, weighted):
        """The FitPlan of a fit with these (validated) arguments."""
        initial_rate = self.optimizer.learning_rate
        # An SGD rate given on resume replaces the current rate only (_start_state); the
        # initial rate, which "invscaling" divides, stays the optimizer's.
        if learning_rate is not None and not (resume and isinstance(self.optimizer, SGD)):
            initial_rate = learning_rate
        initial_rate = check_learning_rate(initial_rate, self.dtype)
        return FitPlan(sizes=self.sizes, bias=self.bias, dtype=self.dtype,
                       activations=self.activations, output=self.output,
                       reduction=self.reduction, alpha=self.alpha, optimizer=self.optimizer,
                       learning_rate=initial_rate, batch_size=batch_size, shuffled=shuffled,
                       weighted=weighted)

    def _order_source(self, shuffled, orders):
        """(the random state the network keeps after the fit, ``fill(buffer) -> buffer``
        writing the next epochs' row orders into an (n_epochs, n_rows) buffer, or None when
        the fit is not shuffled). The network's own draws come from a copy of its random
        state, so that a failed fit leaves its stream untouched; the caller's ``orders``
        leave it alone."""
        if not shuffled:
            return self._random_state, None
        if orders is not None:
            return self._random_state, functools.partial(_callers_orders, orders)
        random_state = copy.deepcopy(self._random_state)
        return random_state, functools.partial(_draw_epoch_orders, random_state)

    def _start_state(self, plan, resume, learning_rate):
        """A copy of the optimizer state this fit starts from (the network's own is replaced
        only when the fit succeeds)."""
        previous = self.optimizer_state
        if not resume or previous is None:
            return OptimizerState.fresh(plan)
        if previous.values.size != plan.state_size or previous.values.dtype != plan.dtype:
            raise ValueError(f"resume=True, but the stored optimizer state ({previous}) does not "
                             f"belong to this network's optimizer ({plan.optimizer!r}, "
                             f"{plan.state_size} values of {plan.dtype}); fit with resume=False")
        state = previous.copy()
        if learning_rate is not None:
            state.learning_rate = learning_rate
        return state

    def _report_period(self, iterations, verbose, callback, bar, report_every):
        """(whether the fit reports, iterations between reports)."""
        reporting = (bool(verbose) or callback is not None or bar is not None
                     or report_every is not None)
        if report_every is not None:
            return reporting, report_every
        return reporting, verbose or (max(1, iterations // _DEFAULT_REPORTS) if reporting
                                      else max(1, iterations))

    def _train(self, X, y, iterations, learning_rate, batch_size, fill_orders, random_state,
               verbose, callback, bar, state_lock, report_every_given=None):
        """The body of ``fit`` on validated input, holding the network's fit lock."""
        n_rows = X.shape[0]
        reporting, report_every = self._report_period(iterations, verbose, callback, bar,
                                                      report_every_given)
        check_fits_in_memory(
            self.dtype.itemsize * (2 * batch_size * sum(self.sizes[1:]) + self._params.size),
            f"training on batches of {batch_size} rows")
        kernel_threads = self._kernel_threads(batch_size)
        run_chunk = self._chunk_runner(X, y, learning_rate, batch_size,
                                       fill_orders is not None, kernel_threads)
        # Train copies: an error or an interrupt leaves the network as it was.
        with state_lock:
            params = self._params.copy()
        history = []
        done = 0
        with self._fit_threads(kernel_threads, batch_size) as threads:
            done = self._run_chunks(run_chunk, params, fill_orders, iterations, n_rows,
                                    report_every, learning_rate, reporting, verbose,
                                    callback, bar, history, threads)
        if not np.isfinite(params).all():
            raise TrainingDivergedError(
                f"training diverged: weights became infinite (learning_rate={learning_rate} too "
                "large?); the weights are left as they were before this fit")
        with state_lock:
            self._params[...] = params
            self._random_state = random_state
            self.history = history
            self.iterations_run = done
        return self

    def _train_general(self, plan, state, X, y, sample_weight, iterations, fill_orders,
                       random_state, verbose, callback, bar, state_lock, report_every_given):
        """``fit`` for every model but the original's: the backend's runner over the plan."""
        reporting, report_every = self._report_period(iterations, verbose, callback, bar,
                                                      report_every_given)
        # Reports that run user code or print between epochs split the fit into chunks; a
        # history alone is filled from the epoch losses of larger chunks.
        live = bool(verbose) or callback is not None or bar is not None
        run = _GeneralRun(self, plan, state, X, y, sample_weight, fill_orders, iterations,
                          state_lock)
        history = []
        with run.blas_limit():
            while run.done < iterations:
                done = run.done
                n_epochs = min(iterations - done, run.max_chunk)
                if live:
                    next_report = (done // report_every + 1) * report_every
                    n_epochs = min(n_epochs, min(iterations, next_report) - done)
                losses = run.run(n_epochs)
                stop = False
                # The report epochs of this chunk: multiples of report_every.
                first_report = -(-done // report_every) * report_every
                for epoch in range(first_report, done + n_epochs if reporting else 0,
                                   report_every):
                    loss = float(losses[epoch - done])
                    history.append((epoch, loss))
                    if verbose:
                        print(report_line(self.output, self.dtype, epoch, loss), flush=True)
                    if callback is not None:
                        stop = bool(callback(epoch, loss))
                if bar is not None:
                    bar.update(n_epochs)
                if stop:
                    break
        run.commit(random_state, history)
        return self

    @contextlib.contextmanager
    def _general_fit(self, X, y, sample_weight, *, batch_size, max_epochs, resume, orders):
        """A ``_GeneralRun`` for nnfast's scikit-learn estimators, which validate their input
        themselves (``nnfast.sklearn._mlp``): ``fit``'s general path without its checks and reports.

        X, y : C-contiguous 2-D arrays of the network's dtype, finite, y in the output's
            range (what ``fit`` would make of them).
        sample_weight : a C-contiguous (n_rows,) array of the network's dtype, finite, or
            None: the estimators take scikit-learn's weights, negative ones included (a batch
            whose weights sum to zero gives a non-finite loss).
        batch_size : int, 1 to n_rows.
        max_epochs : int >= 1
            The most epochs the caller will run (it sizes the row-order buffer).
        resume : bool
            As for ``fit``.
        orders : callable or None
            As for ``fit``: shuffled epochs take their orders from it (when batch_size is
            below n_rows); None is stored order.

        Yields the run under the network's fit lock; the network keeps what it trained only
        when the block ends without an exception, as after ``fit`` (a fit without reports:
        its ``history`` is empty).
        """
        self._check_model_options()
        shuffled = orders is not None and batch_size < X.shape[0]
        plan = self._plan(None, resume, batch_size, shuffled, sample_weight is not None)
        fit_lock, state_lock = _locks_of(self)
        with fit_lock:
            state = self._start_state(plan, resume, None)
            random_state, fill_orders = self._order_source(shuffled, orders)
            run = _GeneralRun(self, plan, state, X, y, sample_weight, fill_orders, max_epochs,
                              state_lock)
            with run.blas_limit():
                yield run
            run.commit(random_state, [])

    def _general_backend(self):
        """The module whose make_runner / loss_gradient run the general path."""
        if self.backend == "numpy":
            return reference
        try:
            from ._kernels import runner as _compiled
        except ImportError as exc:
            raise NotImplementedError(
                "the compiled kernel for this model (activation, output, optimizer, alpha or "
                "sample weights beyond the original's) is not built yet; use "
                "backend='numpy'") from exc
        return _compiled

    def _check_every(self, batch_size):
        """Batches between the kernel's looks at the clock for a Ctrl-C poll (0: never, off
        the main thread)."""
        weights = sum(a * b for a, b in zip(self.sizes, self.sizes[1:]))
        work_per_batch = 3 * batch_size * weights + _UPDATE_WORK * weights
        # Only the main thread handles signals: elsewhere a poll would only take the GIL.
        return (max(1, math.ceil(_CLOCK_LOOK_WORK / work_per_batch))
                if threading.current_thread() is threading.main_thread() else 0)

    def _run_chunks(self, run_chunk, params, fill_orders, iterations, n_rows, report_every,
                    learning_rate, reporting, verbose, callback, bar, history, threads):
        """Runs the backend chunk by chunk between reports (and, with kernel threads, often
        enough for the team to follow the free cores); returns the iterations run."""
        done = 0
        shuffled = fill_orders is not None
        order_buffer = (np.empty((_order_rows(iterations, n_rows), n_rows), dtype=np.intp)
                        if shuffled else None)
        most_epochs = self._epochs_between_team_checks(threads.team.blocks, n_rows)
        while done < iterations:
            next_report = (done // report_every + 1) * report_every
            n_epochs = min(iterations, next_report, done + most_epochs) - done
            if shuffled:
                n_epochs = min(n_epochs, order_buffer.shape[0])
            orders = fill_orders(order_buffer[:n_epochs]) if shuffled else None
            threads.refresh()
            first_error, diverged_at = run_chunk(params, n_epochs, orders)
            if diverged_at is not None:
                raise TrainingDivergedError(
                    f"training diverged at iteration {done + diverged_at}: the output error "
                    f"is no longer finite (learning_rate={learning_rate} too large?); the "
                    "weights are left as they were before this fit")
            stop = False
            if reporting and done % report_every == 0:
                history.append((done, first_error))
                if verbose:
                    print(report_line(self.output, self.dtype, done, first_error),
                          flush=True)
                if callback is not None:
                    stop = bool(callback(done, first_error))
            done += n_epochs
            if bar is not None:
                bar.update(n_epochs)
            if stop:
                break
        return done

    def _kernel_threads(self, batch_rows, row_inputs=None):
        """The blocks the kernel cuts each large product into for batches of batch_rows rows
        (its n_threads argument), which fix its arithmetic: the threads that share them are
        decided as the fit runs (``nnfast._training.threads.KernelTeam``).

        More than one only when the build has OpenMP and the largest product is big enough
        to repay a fork; small networks run on the calling thread, which is faster. By
        default one per core, at most the calling thread's OpenMP setting (OMP_NUM_THREADS,
        a threadpoolctl limit); an explicit n_threads is taken as given (up to the cores).
        row_inputs: the first layer's inputs a row really multiplies (``_row_inputs``).
        """
        requested = min(check_n_threads(self.n_threads), available_cores())
        if self.n_threads is None and self.backend == "cython":
            requested = min(requested, max(1, _kernels.team_threads()))
        if self.backend != "cython" or requested == 1 or not _kernels.OPENMP:
            return 1
        return (requested
                if self._largest_product(batch_rows, row_inputs) >= _PARALLEL_MIN_FLOPS
                else 1)

    def _epochs_between_team_checks(self, blocks, n_rows, row_inputs=None):
        """Epochs per kernel call at most, so that a threaded fit re-decides its team every
        few milliseconds (another pool's spinning ends, another fit starts); unbounded for
        one block, where there is no team."""
        if blocks <= 1:
            return _MAX_CHUNK_EPOCHS
        widths = self._row_widths(row_inputs)
        work_per_epoch = 3 * n_rows * sum(a * b for a, b in zip(widths, widths[1:]))
        return max(1, min(_MAX_CHUNK_EPOCHS, int(_TEAM_CHECK_WORK // work_per_epoch)))

    def _row_widths(self, row_inputs=None):
        """The layer widths a row's products multiply: the first layer's row_inputs when
        given (sparse X: its non-zeros, not its width, are the work)."""
        return self.sizes if row_inputs is None else [row_inputs, *self.sizes[1:]]

    def _largest_product(self, batch_rows, row_inputs=None):
        """Multiply-adds of the largest matrix product of a step on batch_rows rows; the
        first layer's with row_inputs inputs per row when given (``_row_widths``)."""
        widths = self._row_widths(row_inputs)
        return batch_rows * max(a * b for a, b in zip(widths, widths[1:]))

    def _fit_threads(self, kernel_threads, batch_rows, row_inputs=None):
        """The threads a fit holds (``nnfast._training.threads.FitThreads``): the kernel's team for
        kernel_threads blocks, and BLAS's cap. The compiled kernel's BLAS calls get one
        thread each (two pools on the same cores would take turns spinning; the kernel's
        blocks are its threads), except in a build without OpenMP, where BLAS's threads are
        the only ones. The NumPy backend's BLAS keeps its own default, or n_threads
        when the caller set it. The cap is process-wide (``nnfast._training.threads``), so it is only
        taken when the products are big enough for BLAS to thread them."""
        if kernel_threads > 1 or (
                self.backend == "cython" and _kernels.OPENMP
                and self._largest_product(batch_rows, row_inputs) >= _BLAS_THREADED_FLOPS):
            # The kernel owns the threading: below its blocks' size BLAS's own threads gained
            # 20% on digits in a quiet process, and lost 1.4-1.8x right after other libraries'
            # BLAS work, whose spinning threads hold the core they need.
            cap = blas_thread_cap(1)
        elif (self.n_threads is not None
                and self._largest_product(batch_rows, row_inputs) >= _BLAS_THREADED_FLOPS):
            cap = blas_thread_cap(min(self.n_threads, available_cores()))
        else:
            cap = blas_thread_cap(None)
        return FitThreads(cap, KernelTeam(_kernels, kernel_threads))

    def _chunk_runner(self, X, y, learning_rate, batch_size, shuffled, n_threads):
        """A function (params, n_epochs, orders) -> (first epoch's error, diverged epoch or
        None) that trains params in place with this network's backend."""
        if self.backend == "numpy":
            def run_reference(params, n_epochs, orders):
                weights, biases = param_views(params, self.sizes, self.bias)
                with np.errstate(all="ignore"):
                    errors = reference.fit(weights, biases, X, y, n_epochs, learning_rate,
                                           batch_size, orders)
                bad = np.flatnonzero(~np.isfinite(errors))
                return errors[0], (int(bad[0]) if bad.size else None)
            return run_reference

        # Everything the kernel needs is allocated here, once per fit.
        workspace = allocate_workspace(self.sizes, batch_size, self.dtype, shuffled)
        sizes = np.asarray(self.sizes, dtype=np.intp)
        check_every = self._check_every(batch_size)
        stored_order = np.empty((0, 0), dtype=np.intp)

        def run_kernel(params, n_epochs, orders):
            done, first_error, diverged = _kernels.original_fit(
                params, sizes, self.bias, X, y, stored_order if orders is None else orders,
                batch_size, n_epochs, learning_rate, workspace["activations"],
                workspace["deltas"], workspace["grad"], workspace["batch_x"],
                workspace["batch_y"], check_every, n_threads)
            return first_error, (done if diverged else None)
        return run_kernel

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
        self._check_model_options()
        if not self._is_original_model() or is_sparse(X):
            # The original's G is minus its loss gradient too (its delta has the descent
            # sign); sparse X takes the general path's kernel.
            _, weight_gradients, bias_gradients = self.loss_gradient(X, y)
            return ([-g for g in weight_gradients],
                    None if bias_gradients is None else [-g for g in bias_gradients])
        X = check_inputs(X, self.sizes, self.dtype)
        y = check_targets(y, X.shape[0], self.sizes, self.dtype)
        params = self._snapshot()
        if self.backend == "numpy":
            weights, biases = param_views(params, self.sizes, self.bias)
            with np.errstate(over="ignore"):  # exp overflowing to inf: the exact sigmoid 0
                return reference.gradient(weights, biases, X, y)
        workspace = allocate_workspace(self.sizes, X.shape[0], self.dtype, shuffled=False)
        result = np.empty_like(params)
        n_threads = self._kernel_threads(X.shape[0])
        with self._fit_threads(n_threads, X.shape[0]):
            _kernels.original_gradient(params, np.asarray(self.sizes, dtype=np.intp), self.bias,
                                       X, y, workspace["activations"], workspace["deltas"],
                                       workspace["grad"], result, n_threads)
        return param_views(result, self.sizes, self.bias)

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
        self._check_model_options()
        X = _check_any_inputs(X, self.sizes, self.dtype)
        y = check_target_range(check_targets(y, X.shape[0], self.sizes, self.dtype),
                               self.output)
        objective = self._objective(X, y, sample_weight)
        with objective.thread_limits():
            loss = objective()
        weight_gradients, bias_gradients = param_views(objective.grad, self.sizes, self.bias)
        return float(loss), weight_gradients, bias_gradients

    def _objective(self, X, y, sample_weight=None, weights_checked=False):
        """The full-batch loss and gradient on (X, y) as a ``FullBatchObjective``, for
        optimizers that evaluate them many times (L-BFGS): the plan, the backend's buffers,
        the thread count and the BLAS cap are decided here, once. Its ``params`` start as a
        copy of the network's.

        For ``loss_gradient`` and nnfast's scikit-learn estimators, which validate X and y
        themselves (as for ``_general_fit``).

        Parameters
        ----------
        X, y : C-contiguous 2-D arrays of the network's dtype, finite, y in the output's
            range (what ``loss_gradient`` makes of them); kept, not copied.
        sample_weight : as for ``loss_gradient`` (checked here), or None.
        weights_checked : bool
            sample_weight is already as ``_general_fit`` takes it (the estimators' weights,
            any sign): not checked again.

        Returns
        -------
        FullBatchObjective
        """
        self._check_model_options()
        if sample_weight is not None and not weights_checked:
            sample_weight = check_sample_weight(sample_weight, X.shape[0], self.dtype)
        n_rows = X.shape[0]
        plan = FitPlan(sizes=self.sizes, bias=self.bias, dtype=self.dtype,
                       activations=self.activations, output=self.output,
                       reduction=self.reduction, alpha=self.alpha, optimizer=self.optimizer,
                       learning_rate=self.optimizer.learning_rate, batch_size=n_rows,
                       shuffled=False, weighted=sample_weight is not None)
        row_inputs = _row_inputs(X)
        n_threads = self._kernel_threads(n_rows, row_inputs)
        evaluate = self._general_backend().make_loss_gradient(plan, X, y, sample_weight,
                                                              n_threads)
        return FullBatchObjective(evaluate, self._snapshot(),
                                  self._fit_threads(n_threads, n_rows, row_inputs))

    def _snapshot(self):
        """A copy of the parameters, never taken halfway through a fit's write-back."""
        with _locks_of(self)[1]:
            return self._params.copy()

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
        self._check_model_options()
        X = _check_any_inputs(X, self.sizes, self.dtype)
        weights, biases = param_views(self._snapshot(), self.sizes, self.bias)
        if not self._all_sigmoid() or is_sparse(X):
            # Sparse X: scipy's sparse x dense product for the first layer, then NumPy's.
            # The kernel's forward_layer is the sigmoid layer only; the other activations are
            # elementwise passes after NumPy's (BLAS) products, as scikit-learn predicts.
            return reference.predict_model(weights, biases, X, self.activations, self.output)
        if self.backend == "numpy":
            # exp(-x) overflowing to inf is the exact sigmoid 0 here; no warning, as the kernel.
            with np.errstate(over="ignore"):
                return reference.predict(weights, biases, X)
        no_bias = np.empty(0, dtype=self.dtype)
        layer = X
        for k, w in enumerate(weights):
            out = np.empty((layer.shape[0], w.shape[1]), dtype=self.dtype)
            _kernels.forward_layer(layer, w, no_bias if biases is None else biases[k], out)
            layer = out
        return layer


    def _is_original_model(self):
        """Whether the model options are the original's (the optimizer aside)."""
        return is_original_model(self.activations, self.output, self.reduction, self.alpha)

    def _all_sigmoid(self):
        """Whether every layer is a sigmoid layer (the original's forward pass)."""
        return (self.output in ("original", "logistic")
                and all(name == "logistic" for name in self.activations))


class _GeneralRun:
    """One fit of the general path on validated arrays, trained a chunk of epochs at a time.

    Holds what the fit needs for its whole length, made once: the backend's runner (its
    workspace), copies of the parameters and of the optimizer state that it trains, and the
    buffer of row orders. ``Network.fit`` drives one between its reports, nnfast's
    scikit-learn estimators between their stopping decisions (``Network._general_fit``).
    Nothing reaches the network before ``commit``, so a fit that fails or is interrupted
    leaves it as it was.

    Attributes
    ----------
    params : ndarray
        The parameters being trained (flat, ``nnfast._training.layout``).
    state : OptimizerState
        The optimizer state being trained; its ``learning_rate`` may be set between chunks
        (scikit-learn's "adaptive" schedule).
    done : int
        Epochs run so far.
    max_chunk : int
        The most epochs one ``run`` call takes.
    """

    def __init__(self, network, plan, state, X, y, sample_weight, fill_orders, max_epochs,
                 state_lock):
        self.network = network
        self.plan = plan
        self.state = state
        self._fill_orders = fill_orders
        self._state_lock = state_lock
        n_rows = X.shape[0]
        # Activations, deltas and gathered rows per batch; the params copy, the workspace's
        # gradient and two transposes (nnfast._training.layout), and the optimizer state.
        check_fits_in_memory(
            network.dtype.itemsize * (3 * plan.batch_size * sum(network.sizes[1:])
                                      + 4 * network._params.size + plan.state_size),
            f"training on batches of {plan.batch_size} rows")
        self._row_inputs = _row_inputs(X)
        self.kernel_threads = network._kernel_threads(plan.batch_size, self._row_inputs)
        self.threads = network._fit_threads(self.kernel_threads, plan.batch_size,
                                            self._row_inputs)
        self._run = network._general_backend().make_runner(
            plan, X, y, sample_weight, self.kernel_threads,
            network._check_every(plan.batch_size))
        with state_lock:
            self.params = network._params.copy()
        self._order_buffer = (np.empty((_order_rows(max_epochs, n_rows), n_rows),
                                       dtype=np.intp) if plan.shuffled else None)
        self.max_chunk = min(
            network._epochs_between_team_checks(self.kernel_threads, n_rows, self._row_inputs),
            _MAX_CHUNK_EPOCHS if self._order_buffer is None else self._order_buffer.shape[0])
        self.done = 0

    def blas_limit(self):
        """The threads to hold while the run trains (``Network._fit_threads``), refreshed
        before each of its backend calls."""
        return self.threads

    def run(self, n_epochs, through_nonfinite=False):
        """Trains the next n_epochs (1 to ``max_chunk``) epochs in one backend call; returns
        their losses (float64 array). TrainingDivergedError when one is not finite, unless
        ``through_nonfinite``: then every epoch runs, as scikit-learn's MLP runs them (the
        backend stops after an epoch whose loss is not finite; it is called again for the
        rest)."""
        orders = (self._fill_orders(self._order_buffer[:n_epochs]) if self.plan.shuffled
                  else None)
        self.threads.refresh()
        losses, epochs_done, diverged = self._run(self.params, self.state, n_epochs, orders)
        while through_nonfinite and diverged and epochs_done + 1 < n_epochs:
            start = epochs_done + 1
            self.threads.refresh()
            rest, done, diverged = self._run(self.params, self.state, n_epochs - start,
                                             None if orders is None else orders[start:])
            losses[start:] = rest
            epochs_done = start + done
        if diverged and not through_nonfinite:
            raise TrainingDivergedError(
                f"training diverged at iteration {self.done + epochs_done}: the loss is no "
                f"longer finite (learning rate {self.state.learning_rate} too large, or a "
                "batch whose sample weights are all zero?); the network is left as it was "
                "before this fit")
        self.done += n_epochs
        return losses

    def commit(self, random_state, history):
        """Writes the trained parameters and optimizer state into the network, with the
        random state it goes on from and the fit's history."""
        if not np.isfinite(self.params).all():
            raise TrainingDivergedError(
                "training diverged: weights became infinite; the network is left as it was "
                "before this fit")
        network = self.network
        with self._state_lock:
            network._params[...] = self.params
            network._random_state = random_state
            network.history = history
            network.iterations_run = self.done
            if self.plan.state_size:
                network.optimizer_state = self.state


# seed -> RandomState(seed), never drawn from: the random state of networks built from given
# parameters (Network._from_params).
_UNDRAWN = {}


def _check_any_inputs(X, sizes, dtype):
    """X for a network of these sizes: a dense array (``check_inputs``) or a sparse matrix
    (``nnfast._training.sparse.check_sparse_inputs``: canonical CSR, never densified)."""
    if is_sparse(X):
        return check_sparse_inputs(X, sizes, dtype)
    return check_inputs(X, sizes, dtype)


def _row_inputs(X):
    """The first layer's inputs per row that a step multiplies: None (all of them) for dense
    X, the mean count of non-zeros per row (at least 1) for sparse X."""
    if not is_sparse(X):
        return None
    return max(1, -(-X.nnz // X.shape[0]))


def _undrawn_random_state(seed):
    random_state = _UNDRAWN.get(seed)
    if random_state is None:
        # A race makes two, and one is kept: either is RandomState(seed).
        random_state = _UNDRAWN.setdefault(seed, legacy_random_state(seed))
    return random_state


def _order_rows(iterations, n_rows):
    """Epochs per buffer of shuffled row orders (one buffer per fit, of bounded size)."""
    return max(1, min(iterations, _MAX_ORDER_ENTRIES // n_rows))


def _draw_epoch_orders(random_state, orders):
    """Fills each row of orders with the next epoch's row order drawn from random_state
    (the sequence random_state.permutation(n_rows) would give), in place."""
    for order in orders:
        order[...] = np.arange(orders.shape[1])
        random_state.shuffle(order)
    return orders


def _callers_orders(orders, buffer):
    """Fills buffer by the caller's ``orders(buffer)``, then checks that each of its rows
    is a permutation of the row indices (so the kernel never reads outside X and no row is
    skipped or repeated)."""
    orders(buffer)
    n_rows = buffer.shape[1]
    # A row of n_rows values is a permutation when they are all row indices and each index
    # is among them. Marking the indices seen is linear, where sorting each row is not (a
    # few percent of a shuffled fit's time).
    in_range = (buffer >= 0) & (buffer < n_rows)
    seen = np.zeros(buffer.shape, dtype=bool)
    np.put_along_axis(seen, np.where(in_range, buffer, 0), True, axis=1)
    bad = np.flatnonzero(~(in_range.all(axis=1) & seen.all(axis=1)))
    if bad.size:
        raise ValueError(f"orders must fill each row of its (n_epochs, n_rows) = "
                         f"{buffer.shape} argument with a permutation of range({n_rows}); "
                         f"row {bad[0]} is not: {_preview(buffer[bad[0]])}")
    return buffer


def _preview(values, limit=8):
    """The first few values of a 1-D array, for a message."""
    shown = ", ".join(str(v) for v in values[:limit])
    return f"[{shown}{', ...' if values.size > limit else ''}]"


def _progress_bar(total):
    try:
        from tqdm.auto import tqdm
    except ImportError as exc:
        raise ImportError("progress=True needs tqdm: pip install 'nnfast[progress]' "
                          "(or pip install tqdm)") from exc
    return tqdm(total=total, unit="it", desc="nnfast fit")
