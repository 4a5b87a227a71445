"""The training loops of ``MLPClassifier`` / ``MLPRegressor`` over a ``Network``.

scikit-learn's MLP decides, after every epoch, whether to go on: it records the epoch's loss,
counts epochs without progress (on the training loss, or on a held-out score with early
stopping), divides the rate by 5 ("adaptive") or stops. That bookkeeping is Python here, as it
is there; the epochs themselves run in the network's backend, as many per call as the rules
allow:

* a fit opens one run of the network's training (``nnfast._training.run.training_run``: its
  workspace, parameter copies and row-order buffer made once) and hands it chunks of epochs:
  as many as cannot trigger the stopping rule, whatever their losses (from a count of c
  epochs without progress, the next ``n_iter_no_change - c``, then the one that may stop),
  so that the rule sees every epoch's loss and stops where scikit-learn stops; "adaptive"
  sets the divided rate before the next chunk. Shuffled epochs run in scikit-learn's row
  orders, which the run asks for chunk by chunk (drawn from the estimator's random state and
  composed epoch after epoch, as scikit-learn composes them);
* fits with validation data (early stopping's split or ``fit``'s ``X_val``), with
  scikit-learn's callbacks, and verbose fits run one epoch per call: the held-out score and
  loss and the callbacks need the weights after every epoch, and a verbose fit prints each
  epoch as it ends. A fit with none of them calls nothing between chunks.

``lbfgs`` hands SciPy's L-BFGS-B the network's full-batch loss and gradient, with the
parameters packed in scikit-learn's order (every weight matrix, then every bias vector), so
that the optimizer walks the same path. The loss and gradient come from one
``FullBatchObjective`` per fit (``nnfast._training.objective.full_batch_objective``): the
kernel's buffers and threads are set up once rather than at each of the hundreds of
evaluations, on the estimator's validated arrays.
"""

import dataclasses
import warnings

import numpy as np
import scipy
import scipy.optimize
from sklearn import config_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from .._training.driver import Reports, drive
from .._training.layout import PackedLayout
from .._training.objective import full_batch_objective
from .._training.sparse import as_csr, is_sparse
from .._training.threads import blas_thread_cap
from ..optimizers import SGD, Adam

# scikit-learn's "adaptive" schedule divides the rate by this when progress stalls, and stops
# instead once the rate is at most _ADAPTIVE_MIN_RATE.
_ADAPTIVE_DIVISOR = 5.0
_ADAPTIVE_MIN_RATE = 1e-6
# batch_size="auto" is min(_AUTO_BATCH, rows).
_AUTO_BATCH = 200
# SciPy 1.15 dropped L-BFGS-B's iprint option; before it, verbose fits print through it.
_SCIPY_HAS_IPRINT = tuple(int(p) for p in scipy.__version__.split(".")[:2]) < (1, 15)


def optimizer_for(params):
    """The ``nnfast.optimizers`` configuration of a stochastic solver. "cosine" anneals over
    max_iter epochs (the first round(warmup_fraction * max_iter) of them a warm-up), for
    Adam too (scikit-learn's Adam ignores learning_rate)."""
    cosine = params.learning_rate == "cosine"
    schedule = dict(epochs=params.max_iter if cosine else None,
                    warmup_epochs=params.warmup_epochs if cosine else 0,
                    max_grad_norm=params.max_grad_norm)
    if params.solver == "sgd":
        return SGD(learning_rate=params.learning_rate_init, momentum=params.momentum,
                   nesterov=params.nesterovs_momentum, schedule=params.learning_rate,
                   power_t=params.power_t, **schedule)
    return Adam(learning_rate=params.learning_rate_init, beta_1=params.beta_1,
                beta_2=params.beta_2, epsilon=params.epsilon,
                schedule="cosine" if cosine else "constant", **schedule)


def batch_rows(batch_size, n_rows):
    """Rows per mini-batch: "auto" is min(200, rows); more than the rows warns and clips."""
    if batch_size == "auto":
        return min(_AUTO_BATCH, n_rows)
    if batch_size > n_rows:
        # scikit-learn's warning, word for word (its filters and tests match the text).
        warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to "
                      "be clipped", UserWarning, stacklevel=6)
    return min(batch_size, n_rows)


class StochasticRecord:
    """The per-epoch bookkeeping of a stochastic fit (scikit-learn's fitted attributes).

    Built from the estimator's attributes at the start of a fit and written back only when
    the fit succeeds, so that a failed or interrupted fit changes nothing.
    """

    def __init__(self, estimator, params, early_stopping, validating=False):
        self.params = params
        self.early_stopping = early_stopping
        self.n_iter = 0
        self.t = getattr(estimator, "t_", 0)
        self.loss = getattr(estimator, "loss_", None)
        self.loss_curve = list(getattr(estimator, "loss_curve_", None) or [])
        self.no_improvement = getattr(estimator, "_no_improvement_count", 0)
        # Validation data (split off X or given as X_val) scores and losses every epoch; a
        # continued fit extends the curves of the fit before it.
        self.validating = early_stopping or validating
        if self.validating:
            self.validation_scores = list(getattr(estimator, "validation_scores_", None) or [])
            self.validation_losses = list(
                getattr(estimator, "validation_loss_curve_", None) or [])
        else:
            self.validation_scores = self.validation_losses = None
        if early_stopping:
            best = getattr(estimator, "best_validation_score_", None)
            self.best_validation_score = -np.inf if best is None else best
            self.best_loss = None
        else:
            self.best_validation_score = None
            best = getattr(estimator, "best_loss_", None)
            self.best_loss = np.inf if best is None else best
        # The best epoch's (coefs, intercepts) so far; None for a list that is the estimator's
        # coefs_ (intercepts_) itself, or missing: the weights being trained. scikit-learn's
        # early stopping ends with coefs_ = _best_coefs, one list, which its next (warm) fit
        # trains in place: until a held-out score beats the stored best, its "best" weights
        # are the trained ones (and weights assigned by hand have no best at all).
        self.best_params = tuple(
            None if best is None or best is getattr(estimator, live, None) else best
            for best, live in ((getattr(estimator, "_best_coefs", None), "coefs_"),
                               (getattr(estimator, "_best_intercepts", None), "intercepts_")))
        self.converged = False
        # Set when a callback's on_fit_task_end asked the fit to stop.
        self.stopped_by_callback = False

    def end_epoch(self, loss, n_rows, validation=None, weights=None):
        """Records an epoch; returns "stalled" after more than ``n_iter_no_change`` epochs in
        a row without progress (the caller stops, or divides an "adaptive" rate), else "go".

        ``validation``: (score, loss) of the epoch's weights on the validation data, when
        there is some. ``weights``: a function returning (coefs, intercepts) copies of the
        epoch's weights, called when the validation score is the best so far.
        """
        p = self.params
        self.n_iter += 1
        self.loss = float(loss)
        self.t += n_rows
        self.loss_curve.append(self.loss)
        if p.verbose:
            print(f"Iteration {self.n_iter}, loss = {self.loss:.8f}", flush=True)
        if self.validating:
            validation_score, validation_loss = validation
            self.validation_scores.append(validation_score)
            self.validation_losses.append(validation_loss)
            if p.verbose:
                print(f"Validation score: {validation_score:f}", flush=True)
        if self.early_stopping:
            stalled = validation_score < self.best_validation_score + p.tol
            if validation_score > self.best_validation_score:
                self.best_validation_score = validation_score
                self.best_params = weights()
        else:
            stalled = self.loss > self.best_loss - p.tol
            self.best_loss = min(self.best_loss, self.loss)
        self.no_improvement = self.no_improvement + 1 if stalled else 0
        if self.no_improvement > p.n_iter_no_change:
            return "stalled"
        return "go"

    def stalled_message(self):
        what = ("Validation score did not improve more than" if self.early_stopping
                else "Training loss did not improve more than")
        return (f"{what} tol={self.params.tol:f} for {self.params.n_iter_no_change} "
                "consecutive epochs.")

    def apply_to(self, estimator):
        """Writes the record into the estimator's fitted attributes."""
        estimator.n_iter_ = self.n_iter
        estimator.t_ = self.t
        estimator.loss_ = self.loss
        estimator.loss_curve_ = self.loss_curve
        estimator._no_improvement_count = self.no_improvement
        estimator.best_loss_ = self.best_loss
        estimator.validation_scores_ = self.validation_scores
        estimator.validation_loss_curve_ = self.validation_losses
        estimator.best_validation_score_ = self.best_validation_score


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """What validation asks of the estimator: ``stratify(Y)`` (the early-stopping split's
    strata, or None), ``decode(Y)`` (targets as the user's labels) and ``evaluate(trainer,
    data)`` ((score, loss) of the current weights on a ``ValidationData``)."""

    stratify: object
    decode: object
    evaluate: object


@dataclasses.dataclass(frozen=True)
class ValidationData:
    """Held-out rows: ``X`` and ``Y`` as the network takes them (its dtype, binarized labels),
    ``y`` the targets as the user's labels (what a score compares predictions with),
    ``sample_weight`` (or None), and ``X_given`` / ``y_given``: what the user passed as
    X_val / y_val (None for the early-stopping split), which a user's scorer is handed as
    it would be outside the fit."""

    X: object
    Y: object
    y: object
    sample_weight: object
    X_given: object = None
    y_given: object = None


def fit_stochastic(estimator, early_stopping_hooks, trainer, X, Y, sample_weight, params,
                   incremental, random_state, resume, shared_random_state=True, targets=None,
                   validation=None, epoch_callbacks=None):
    """scikit-learn's ``_fit_stochastic`` on a network: trains ``trainer``'s network in place
    and returns the ``StochasticRecord`` (with the best weights when early stopping).
    ``estimator``'s fitted attributes are where a continued fit starts from;
    ``early_stopping_hooks`` (``EarlyStopping``) are its part in validation.

    ``shared_random_state``: whether random_state outlives the fit (NumPy's global one, or
    the caller's instance), so that it must end where scikit-learn's ends; a fit's own
    (from an integer seed) draws only what the fit uses. ``targets``: Y as validated, before
    its conversion to the network's dtype (None: Y), which early stopping scores against.
    ``validation``: the user's validation data (``ValidationData``, X_val of ``fit``) or
    None; with early stopping it replaces the split, and all of X trains.
    ``epoch_callbacks``: None, or an object whose ``begin(epoch)`` and ``end(epoch,
    record)`` run around every epoch (scikit-learn's callbacks; ``end`` returns True to
    stop the fit)."""
    early_stopping = params.early_stopping
    record = StochasticRecord(estimator, params, early_stopping,
                              validating=validation is not None)
    if early_stopping and validation is None:
        # Without train_test_split's own parameter validation, as scikit-learn's fit calls
        # it (its _fit_context skips nested validation): validation_fraction=0 then fails
        # with scikit-learn's error (a ValueError from the split), not with one naming
        # train_test_split's test_size as an InvalidParameterError.
        # The split's row draw depends only on the row count, so splitting the validated
        # targets beside Y takes the same rows.
        targets = Y if targets is None else targets
        with config_context(skip_parameter_validation=True):
            split = train_test_split(
                *((X, Y, targets) if sample_weight is None
                  else (X, Y, targets, sample_weight)),
                random_state=random_state, test_size=params.validation_fraction,
                stratify=early_stopping_hooks.stratify(Y))
        X_train, X_val, Y_train, Y_val, _, targets_val = split[:6]
        if is_sparse(X_train):
            # The split's rows of a CSR matrix, brought back to the kernel's form.
            X_train = as_csr(X_train, "X", X_train.dtype)
        sw_train, sw_val = (split[6], split[7]) if sample_weight is not None else (None, None)
        if X_val.shape[0] < 2:
            raise ValueError("The validation set is too small. Increase "
                             "'validation_fraction' or the size of your dataset.")
        validation = ValidationData(X_val, Y_val, early_stopping_hooks.decode(targets_val),
                                    sw_val)
    else:
        X_train, Y_train, sw_train = X, Y, sample_weight
    n_rows = X_train.shape[0]
    batch = batch_rows(params.batch_size, n_rows)
    # The rate the network runs at, and a new one the estimator set ("adaptive" divides the
    # rate by 5) that the next chunk must start with; the other schedules never set one.
    current_rate = trainer.learning_rate() if resume else params.learning_rate_init
    rate = None
    epochs_left = 1 if incremental else params.max_iter
    # Dropout's seed first, then the row orders: both from random_state, so the fit is
    # reproducible from it (without dropout nothing is drawn, as in scikit-learn).
    dropout_seed = (int(random_state.randint(0, 2**63, dtype=np.int64))
                    if any(params.dropout) else None)
    orders = _EpochOrders(n_rows, random_state) if params.shuffle else None

    def decide(loss, validation_result=None):
        """After an epoch: True when training stops, or goes on at a new rate."""
        nonlocal rate, current_rate, epochs_left
        epochs_left -= 1
        action = record.end_epoch(loss, n_rows, validation_result,
                                  weights=trainer.weights_copy)
        if action == "stalled":
            message = record.stalled_message()
            adaptive = params.solver == "sgd" and params.learning_rate == "adaptive"
            if adaptive and current_rate > _ADAPTIVE_MIN_RATE:
                current_rate = rate = current_rate / _ADAPTIVE_DIVISOR
                record.no_improvement = 0
                if params.verbose:
                    print(f"{message} Setting learning rate to {rate:f}", flush=True)
            else:
                if adaptive:
                    message += " Learning rate too small."
                if params.verbose:
                    print(f"{message} Stopping.", flush=True)
                record.converged = True
                epochs_left = 0
                return True
        return epochs_left == 0 or rate is not None

    # Epochs whose loss is not finite run on, as scikit-learn's do: its early stopping keeps
    # the best epoch, a fit that ends on finite weights is a fit, and one that does not ends
    # in its ValueError (TrainingDivergedError at the run's commit), after its warnings.
    def check_nonfinite(losses):
        if sw_train is None:
            return
        for epoch in np.flatnonzero(~np.isfinite(losses)):
            order = orders.filled[epoch] if orders is not None and batch < n_rows else None
            _check_batch_weights(sw_train, order, batch)

    with trainer.training(X_train, Y_train, sw_train, batch, epochs_left, resume,
                          orders, dropout_seed) as run:
        validation_result = None
        chunk_last = None
        # The validation data and the callbacks need the weights after every epoch.
        every_epoch = record.validating or epoch_callbacks is not None

        def run_chunk(start, n_epochs):
            nonlocal rate, validation_result, chunk_last
            if rate is not None:
                run.state.learning_rate, rate = rate, None
            if epoch_callbacks is not None:  # one epoch per chunk (max_epochs)
                epoch_callbacks.begin(start)
            losses = run.run(n_epochs, through_nonfinite=True)
            check_nonfinite(losses)
            if validation is not None:  # one epoch per chunk (max_epochs)
                validation_result = early_stopping_hooks.evaluate(trainer.weights(),
                                                                  validation)
            chunk_last = start + n_epochs - 1
            return losses.tolist()

        def max_epochs(done):
            # Validation and callbacks need the weights after every epoch: one epoch per
            # call. Otherwise as many as cannot stop the fit or change its rate, so that a
            # decision only ever falls on a chunk's last epoch.
            if every_epoch:
                return 1
            return min(_undecided_epochs(record, params, epochs_left), run.max_chunk)

        def after_epoch(epoch, loss):
            """The stopping rule's decision on an epoch's loss (and the callbacks' on the
            epoch); True ends the fit."""
            if decide(loss, validation_result) and epoch != chunk_last:
                raise AssertionError("the stopping rule fired inside a chunk of epochs that "
                                     "cannot stop it")
            if epoch_callbacks is not None and epoch_callbacks.end(epoch, record):
                record.stopped_by_callback = not record.converged
                return True
            return record.converged

        # Every epoch is a report to after_epoch, read from its chunk's losses (not live:
        # chunks end where max_epochs says, not at each report).
        reports = Reports(every=1, active=True, live=False, verbose=0, callback=after_epoch,
                          bar=None, output="", dtype=None)
        drive(run_chunk, epochs_left, reports, max_chunk=max_epochs, every_epoch_loss=True)
        if rate is not None:
            # A cut on the last epoch is kept for the next partial_fit, which goes on with
            # this optimizer (scikit-learn divides its optimizer's rate in place).
            run.state.learning_rate = rate
        if early_stopping:
            # The fit's weights are the best epoch's: the network keeps them (and the
            # estimator's coefs_ are read from it).
            live = trainer.weights_copy()
            trainer.load(*(live[k] if best is None else best
                           for k, best in enumerate(record.best_params)))
        if not (record.converged or record.stopped_by_callback or incremental):
            # Warned here, at a fixed depth (stacklevel 5 is the caller of the estimator's
            # fit), and before the run's commit refuses weights that are not finite, as
            # scikit-learn warns before its error.
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({params.max_iter}) "
                          "reached and the optimization hasn't converged yet.",
                          ConvergenceWarning, stacklevel=5)
    if orders is not None and shared_random_state:
        orders.draw_until(record.n_iter)
    return record


def _check_batch_weights(sample_weight, order, batch_size):
    """scikit-learn's ZeroDivisionError (NumPy's weighted mean of a batch's loss) when a
    mini-batch of the epoch run in ``order`` (None: stored order) has weights summing to
    zero; nnfast's kernel gives such a batch a NaN loss, which brings the caller here."""
    weights = sample_weight if order is None else sample_weight[order]
    sums = np.add.reduceat(weights, np.arange(0, len(weights), batch_size))
    if (sums == 0).any():
        raise ZeroDivisionError("Weights sum to zero, can't be normalized")


def _undecided_epochs(record, params, epochs_left):
    """Epochs that can run in one call before the stopping rule is consulted: up to the first
    epoch at which it can fire. It fires when the count of epochs in a row without progress
    exceeds ``n_iter_no_change``; each epoch adds at most one to the count, so from a count c
    the first ``n_iter_no_change - c`` epochs cannot fire it, whatever their losses, and
    neither can "adaptive" change the rate before. Verbose fits print every epoch as it
    ends, as scikit-learn does: one epoch per call."""
    if params.verbose:
        return 1
    return min(epochs_left, max(1, params.n_iter_no_change + 1 - record.no_improvement))


def fit_lbfgs(trainer, X, Y, sample_weight, params, on_iteration=None):
    """scikit-learn's ``_fit_lbfgs``: L-BFGS-B over the packed parameters; trains the
    network in place; returns (iterations, final loss).

    ``on_iteration``: None, or a function called with (coefs, intercepts) after each
    iteration (SciPy's callback; validation curves and scikit-learn's callbacks)."""
    network = trainer.network
    # Buffers and thread count once for all of the minimizer's evaluations (X and Y as the
    # estimator validated them).
    objective = full_batch_objective(network, X, Y, sample_weight, weights_checked=True)
    packing = PackedLayout(network.sizes, network.bias)
    options = {"maxfun": params.max_fun, "maxiter": params.max_iter, "gtol": params.tol}
    if _SCIPY_HAS_IPRINT:
        options["iprint"] = 1 if params.verbose else -1

    # Between evaluations SciPy's L-BFGS-B calls BLAS on vectors of P values (dot products,
    # the m x P correction matrices), work that BLAS threads slow down several times over
    # (1.6 against 11.7 ms per iteration on digits' 7,510 parameters with OpenBLAS on 2
    # busy cores): BLAS gets one thread for the whole minimization. The kernel's evaluations
    # keep their own threads (nnfast.network: large products run on the kernel's, with BLAS
    # at one thread anyway).
    with objective.thread_limits(), blas_thread_cap(1):
        result = scipy.optimize.minimize(
            packed_loss_gradient(objective, packing), packing.pack(objective.params),
            method="L-BFGS-B", jac=True, options=options,
            callback=None if on_iteration is None else (
                lambda xk: on_iteration(*packing.split(xk))))
    n_iter = min(result.nit, params.max_iter)
    if result.status != 0:
        message = (f"lbfgs failed to converge after {n_iter} iteration(s) "
                   f"(status={result.status}):\n{result.message}\n")
        if n_iter == params.max_iter:
            message += ("\nIncrease the number of iterations to improve the convergence "
                        f"(max_iter={params.max_iter}).")
        message += ("\nYou might also want to scale the data as shown in:\n"
                    "    https://scikit-learn.org/stable/modules/preprocessing.html")
        warnings.warn(message, ConvergenceWarning, stacklevel=5)
    trainer.set_weights(*packing.split(result.x))
    return n_iter, float(result.fun)


def packed_loss_gradient(objective, packing):
    """The function L-BFGS minimizes: scikit-learn's packed float64 vector in, (loss, packed
    float64 gradient) out, evaluated by ``objective`` (a ``FullBatchObjective``) and moved
    between the layouts by ``packing`` (a ``PackedLayout``)."""
    def loss_and_gradient(packed):
        packing.unpack(packed, objective.params)
        loss = objective()
        # A new vector per call: SciPy keeps the gradient it is given as its current one.
        return loss, packing.pack(objective.grad)

    return loss_and_gradient


class _EpochOrders:
    """scikit-learn's row orders of shuffled epochs, as ``Network.fit``'s ``orders``.

    Each epoch's order is the previous one permuted by one ``random_state.shuffle`` of
    ``arange``: the same draw and composition as scikit-learn's per-epoch
    ``sklearn.utils.shuffle(order, random_state=...)``, without its validation (a millisecond
    per epoch). Drawn only when the network asks, that is for the epochs that run.
    """

    def __init__(self, n_rows, random_state):
        self.order = np.arange(n_rows)
        self.random_state = random_state
        self.drawn = 0
        self.filled = None
        self._identity = np.arange(n_rows)
        self._permutation = np.empty(n_rows, dtype=self._identity.dtype)

    def __call__(self, out):
        """Fills each row of ``out`` with the next epoch's order (kept as ``filled`` until
        the next call)."""
        self.filled = out
        for row in out:
            self._permutation[...] = self._identity
            self._draw()
            np.take(self.order, self._permutation, out=row)
            self.order[...] = row

    def draw_until(self, n_epochs):
        """Draws the orders of the first n_epochs epochs that were not drawn yet: a fit of one
        batch per epoch never asks for them (it runs in stored order: any order gives the
        batch's sums, up to their rounding), but scikit-learn draws them, and the random state
        must end where its does. A shuffle's draws do not depend on what it shuffles, so the
        permutations are not rebuilt."""
        while self.drawn < n_epochs:
            self._draw()

    def _draw(self):
        self.random_state.shuffle(self._permutation)
        self.drawn += 1
