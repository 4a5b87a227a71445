"""``MLPClassifier`` and ``MLPRegressor``: scikit-learn's multi-layer perceptron, trained by
``nnfast.Network``.

The parameters, defaults, fitted attributes and arithmetic are scikit-learn's (1.9): the same
``random_state`` draws the same initial weights, the same row orders and the same validation
split, and the network computes scikit-learn's forward pass, loss, gradients and optimizer
steps, so a fit gives scikit-learn's ``coefs_``, ``intercepts_`` and ``loss_curve_`` to
rounding. What differs is where the epochs run (nnfast's compiled kernel) and what a failed
or interrupted fit leaves behind: nothing (scikit-learn keeps the weights of the epochs it
completed before a Ctrl-C; here the estimator is left exactly as it was before ``fit``).
Beyond scikit-learn: ``class_weight`` for the classifier, ``n_threads``, validation data
(``fit``'s ``X_val`` / ``y_val``: per-epoch ``validation_scores_`` and
``validation_loss_curve_``, early stopping on them), ``scoring`` for early stopping, and
scikit-learn's callbacks (``set_callbacks``, ``nnfast.sklearn._callbacks``).
"""

import contextlib
import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.callback import CallbackSupportMixin
from sklearn.metrics import accuracy_score, get_scorer, r2_score
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import column_or_1d
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import (
    check_classification_targets,
    type_of_target,
    unique_labels,
)
from sklearn.utils.validation import (
    _check_sample_weight,
    _check_y,
    check_consistent_length,
    check_is_fitted,
    validate_data,
)

from .. import reference
from .._training.layout import pack_params, param_count, param_views
from .._training.plan import OptimizerState
from .._training.sparse import as_csr, is_sparse
from .._validation import as_matrix, check_finite_real
from .._training.run import training_run
from .._training.threads import prediction_threads
from ..network import Network, TrainingDivergedError
from . import _callbacks as _mlp_callbacks
from . import _convert
from . import _input as _mlp_input
from . import _params as _mlp_params
from . import _solvers as _mlp_solvers
from ._params import (
    CLASSIFIER_CONSTRAINTS,
    REGRESSOR_CONSTRAINTS,
    STOCHASTIC_SOLVERS,
    check_params,
    validate_params,
)

__all__ = ["MLPClassifier", "MLPRegressor"]

_FLOAT_DTYPES = (np.float64, np.float32)
# Sparse X as scikit-learn's MLP takes it (other formats are converted to the first).
_SPARSE_FORMATS = ("csr", "csc")
# Which Network backend trains the estimators. The compiled one for users; the test suite
# switches to "numpy" (nnfast.reference) to check the estimators' logic against scikit-learn
# independently of the kernel.
BACKEND = "cython"


def _activate(name, z):
    """The activation ``name`` applied to z in place (z is a fresh array); returns z."""
    if name == "logistic":
        # Written with exp(-|z|) so that no exp overflows: 1 / (1 + e^-z) for z >= 0 and
        # e^z / (1 + e^z) below.
        e = np.exp(-np.abs(z))
        np.divide(np.where(z >= 0, 1, e), 1 + e, out=z)
    elif name == "tanh":
        np.tanh(z, out=z)
    elif name == "relu":
        np.maximum(z, 0, out=z)
    elif name == "softmax":
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
    elif name == "exp":
        np.exp(z, out=z)
    elif name != "identity":
        # nnfast's activations beyond scikit-learn's: the reference's formulas.
        reference.ACTIVATIONS[name](z)
    return z


def _forward(coefs, intercepts, X, activation, out_activation):
    """The output layer's activations for X (scikit-learn's ``_forward_pass_fast``), with
    BLAS on one thread for small products (``prediction_threads``)."""
    layer = X
    last = len(coefs) - 1
    sizes = [coefs[0].shape[0], *(w.shape[1] for w in coefs)]
    with prediction_threads(sizes, X.shape[0]):
        for k, (w, b) in enumerate(zip(coefs, intercepts)):
            layer = layer @ w
            layer += b
            _activate(activation if k < last else out_activation, layer)
    return layer


def _unique_classes(classes):
    """``unique_labels(classes)``, computed directly for a 1-D array of labels
    (``class_labels``): a stream of ``partial_fit`` calls passes the classes every time, and
    scikit-learn's function took a third of a 50-row call."""
    labels = _mlp_input.class_labels(classes) if isinstance(classes, np.ndarray) else None
    return unique_labels(classes) if labels is None else labels[1]


def _binarize(binarizer, y):
    """``binarizer.transform(y)`` (a fitted ``LabelBinarizer``, default labels 0 and 1) for
    1-D labels already checked against its classes, computed directly: its transform
    validates y again and goes through a sparse matrix, most of a small fit's time. One
    class gives a column of zeros, two a column marking the second class, more one
    indicator column per class. Other targets (multilabel) go to the binarizer."""
    classes = binarizer.classes_
    if y.ndim != 1 or binarizer.y_type_ not in ("binary", "multiclass"):
        return binarizer.transform(y)
    if len(classes) == 1:
        return np.zeros((len(y), 1), dtype=int)
    indicator = (y[:, None] == classes[None, :]).astype(int)
    return indicator[:, 1:] if len(classes) == 2 else indicator


def _decode(binarizer, outputs):
    """``binarizer.inverse_transform(outputs)`` for a fitted ``LabelBinarizer`` (default
    labels 0 and 1) and the network's outputs, computed directly for binary and multiclass
    targets: its own validates and dispatches on array namespaces, more than an epoch of a
    small fit, and early stopping decodes every epoch. Multiclass: the class of each row's
    largest output; binary (the one output column, flattened): the second class where the
    output exceeds 0.5 (the binarizer's threshold), else the first, or the only class when
    there is one. Anything else goes to the binarizer."""
    classes = binarizer.classes_
    if binarizer.y_type_ == "multiclass" and outputs.ndim == 2:
        return classes[np.clip(outputs.argmax(axis=1), 0, len(classes) - 1)]
    if binarizer.y_type_ == "binary" and outputs.ndim == 1:
        if len(classes) == 1:
            return np.repeat(classes[0], len(outputs))
        return classes[(outputs > 0.5).astype(np.intp)]
    return binarizer.inverse_transform(outputs)


def _accuracy(y_true, y_pred, sample_weight=None):
    """scikit-learn's ``accuracy_score``: for 1-D labels of one dtype (the held-out labels
    and their predictions, both decoded from the classes) the (weighted) share of matches,
    ``numpy.average`` of them as scikit-learn computes it, without its validation of the
    targets; other targets go to ``accuracy_score``."""
    # Weights summing to zero go to accuracy_score too (its error, not NumPy's).
    if (y_true.ndim == 1 and y_pred.ndim == 1 and y_true.dtype == y_pred.dtype
            and (sample_weight is None or sample_weight.sum() != 0)):
        return float(np.average(y_true == y_pred, weights=sample_weight))
    return accuracy_score(y_true, y_pred, sample_weight=sample_weight)


def _r2(y_true, y_pred, sample_weight=None):
    """scikit-learn's ``r2_score`` (outputs averaged uniformly, scores forced finite) for
    floating targets and predictions of one dtype and row count, and weights of that dtype
    or none: the same sums, ``numpy.average`` as scikit-learn takes its mean, without its
    validation (~0.4 ms per call, which early stopping pays every epoch); other inputs go to
    ``r2_score``."""
    n_rows = len(y_true)
    fast = (isinstance(y_true, np.ndarray) and isinstance(y_pred, np.ndarray)
            and y_true.dtype == y_pred.dtype and y_true.dtype.kind == "f"
            and y_true.ndim in (1, 2) and y_pred.ndim in (1, 2) and n_rows >= 2
            and (sample_weight is None or (isinstance(sample_weight, np.ndarray)
                                           and sample_weight.dtype == y_true.dtype
                                           and sample_weight.shape == (n_rows,)
                                           and sample_weight.sum() != 0)))
    if fast:
        y_true = y_true.reshape(n_rows, -1)
        y_pred = y_pred.reshape(len(y_pred), -1)
        fast = y_true.shape == y_pred.shape
    if not fast:
        return r2_score(y_true, y_pred, sample_weight=sample_weight)
    weight = 1.0 if sample_weight is None else sample_weight[:, None]
    numerator = np.sum(weight * (y_true - y_pred) ** 2, axis=0)
    denominator = np.sum(
        weight * (y_true - np.average(y_true, axis=0, weights=sample_weight)) ** 2, axis=0)
    scores = np.ones(y_true.shape[1], dtype=numerator.dtype)
    # A perfect fit scores 1 (even of constant targets); a constant target's imperfect fit 0.
    valid = (numerator != 0) & (denominator != 0)
    scores[valid] = 1 - numerator[valid] / denominator[valid]
    scores[(numerator != 0) & (denominator == 0)] = 0.0
    return float(np.average(scores))


class _NetworkTrainer:
    """The one ``Network`` a fit trains, and the moves between its parameter layout and
    scikit-learn's lists of ``coefs_`` and ``intercepts_``."""

    def __init__(self, network):
        self.network = network
        # The parameters the weights are read from: the network's, or while ``training``
        # the copy that the run trains (the network gets it when the run ends).
        self.params = network.params

    def set_weights(self, coefs, intercepts):
        for view, value in zip(self.network.weights, coefs):
            view[...] = value
        for view, value in zip(self.network.biases, intercepts):
            view[...] = value

    def weights(self):
        """(weight matrices, bias vectors) of the current parameters, as views."""
        return param_views(self.params, self.network.sizes, True)

    def load(self, coefs, intercepts):
        """Sets the current parameters (the run's, while ``training``)."""
        weights, biases = self.weights()
        for view, value in zip(weights + biases, list(coefs) + list(intercepts)):
            view[...] = value

    def weights_copy(self):
        """(coefs, intercepts): copies of the current weight matrices and bias vectors."""
        weights, biases = self.weights()
        return [w.copy() for w in weights], [b.copy() for b in biases]

    @contextlib.contextmanager
    def training(self, X, Y, sample_weight, batch_size, max_epochs, resume, orders,
                 dropout_seed=None):
        """A run of the network's training (``nnfast._training.run.training_run``: X, Y and
        sample_weight as the estimator validated them) that trains chunks of epochs, in the
        row orders ``orders`` gives or stored order when it is None; the network keeps what it
        trained when the block ends without an exception."""
        with training_run(self.network, X, Y, sample_weight, batch_size=batch_size,
                          max_epochs=max_epochs, resume=resume, orders=orders,
                          dropout_seed=dropout_seed) as run:
            self.params = run.params
            try:
                yield run
            finally:
                self.params = self.network.params

    def learning_rate(self):
        """The network's current (SGD) learning rate."""
        return float(self.network.optimizer_state.learning_rate)


class _LbfgsIterations:
    """What runs after each L-BFGS iteration: the validation data's score and loss
    (``scores``, ``losses``) and scikit-learn's callbacks (an iteration's subtask ends, the
    next begins, as ``LogisticRegression``'s L-BFGS bridge does). The iterates are float64
    (SciPy's); they are evaluated in the network's dtype, as the fit's result is."""

    def __init__(self, dtype, validation, evaluate, callbacks):
        self.dtype = dtype
        self.validation = validation
        self.evaluate = evaluate
        self.callbacks = callbacks
        self.scores = []
        self.losses = []
        self.iteration = 0
        if callbacks is not None:
            # Before the first iteration, the callbacks see the initial weights (the
            # network's); afterwards each iterate.
            initial = callbacks.weights
            self.current = tuple([w.copy() for w in part] for part in initial())
            callbacks.weights = lambda: self.current
            callbacks.begin(0)

    def __call__(self, coefs, intercepts):
        self.current = ([w.astype(self.dtype) for w in coefs],
                        [b.astype(self.dtype) for b in intercepts])
        if self.validation is not None:
            score, loss = self.evaluate(self.current, self.validation)
            self.scores.append(score)
            self.losses.append(loss)
        if self.callbacks is not None:
            # scikit-learn's L-BFGS bridge does not stop on a callback's request either
            # (SciPy honours StopIteration only from 1.11).
            self.callbacks.end(self.iteration)
            self.iteration += 1
            self.callbacks.begin(self.iteration)


class _BaseMLP(CallbackSupportMixin, BaseEstimator):
    """What the classifier and the regressor share: scikit-learn's ``_fit`` and its solvers."""

    # scikit-learn reads the parameters from the subclasses' __init__ signatures.
    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 n_threads=None, scoring=None, warmup_fraction=0.0, max_grad_norm=None,
                 dropout=0.0):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.n_threads = n_threads
        self.scoring = scoring
        self.warmup_fraction = warmup_fraction
        self.max_grad_norm = max_grad_norm
        self.dropout = dropout

    # Parameters added since nnfast 0.1.0, with their defaults: an estimator pickled before
    # one existed loads with it at its default (get_params, clone and fit need every one).
    _ADDED_PARAMS = {"scoring": None, "warmup_fraction": 0.0, "max_grad_norm": None,
                     "dropout": 0.0}

    def __setstate__(self, state):
        super().__setstate__(state)
        for name, default in self._ADDED_PARAMS.items():
            self.__dict__.setdefault(name, default)

    # ------------------------------------------------------------------------------ fitting

    def fit(self, X, y, sample_weight=None, *, X_val=None, y_val=None,
            sample_weight_val=None):
        """Trains the network on X and y from scratch (or from the current weights with
        ``warm_start=True``).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs; float32 trains in float32, anything else in float64.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Targets: class labels (or a label indicator matrix) for the classifier, numbers
            for the regressor.
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each row in the loss and its gradient (as scikit-learn, any finite
            values, not all zero).
        X_val : array-like of shape (n_val, n_features), default=None
            Validation inputs, converted as X is (DataFrames, sparse matrices, dtypes), with
            X's features. Given with y_val: with ``early_stopping=True`` the stopping rule
            scores them instead of a ``validation_fraction`` split off X (all of X trains);
            otherwise training runs as without them and they are only scored. Either way
            ``validation_scores_`` and ``validation_loss_curve_`` record every epoch ("sgd",
            "adam") or L-BFGS iteration ("lbfgs").
        y_val : array-like of shape (n_val,) or (n_val, n_outputs), default=None
            Validation targets (the classifier's: classes seen in y).
        sample_weight_val : array-like of shape (n_val,), default=None
            Weights of the validation rows in their score and loss; needs X_val.

        Returns
        -------
        self : object
            The fitted estimator.
        """
        return self._transaction(self._fit, X, y, sample_weight, incremental=False,
                                 validation=(X_val, y_val, sample_weight_val))

    def _can_partial_fit(self):
        if self.solver not in STOCHASTIC_SOLVERS:
            raise AttributeError(f"partial_fit is only available for stochastic optimizers; "
                                 f"solver={self.solver!r} is not one")
        return True

    def _can_partial_fit_regressor(self):
        # scikit-learn's regressor offers partial_fit whatever the solver (its availability
        # test never calls its solver check), so an invalid solver reaches partial_fit and
        # its InvalidParameterError; nnfast does the same for invalid solvers but keeps
        # refusing L-BFGS, as the classifier (and scikit-learn's documentation) does.
        if isinstance(self.solver, str) and self.solver in _mlp_params.SOLVERS:
            return self._can_partial_fit()
        return True

    def _transaction(self, function, *args, **kwargs):
        """Runs a fit so that any exception (a bad input, a diverged fit, Ctrl-C) leaves
        the estimator's attributes exactly as they were. Fits never modify an attribute's
        object in place: they build new ones and assign them. A RandomState given as
        random_state is put back in its state too (scikit-learn's draws from it stay drawn);
        NumPy's global one (random_state=None) is left alone: other code shares it.
        scikit-learn's callbacks are torn down (and the fit's callback context dropped) inside
        the transaction, before a failed fit's attributes are put back; no frame is added
        between the caller and the fit (the warnings' stack levels count them)."""
        before = dict(self.__dict__)
        random_state = before.get("random_state")
        drawn_from = (random_state.get_state()
                      if isinstance(random_state, np.random.RandomState) else None)
        try:
            with _mlp_callbacks.callback_management_context(self):
                return function(*args, **kwargs)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)
            if drawn_from is not None:
                random_state.set_state(drawn_from)
            raise

    def _fit(self, X, y, sample_weight, incremental, classes=None, validation=(None,) * 3):
        # scikit-learn's parameter validation, where its _fit_context makes it.
        validate_params(self, "partial_fit" if incremental else "fit")
        params = check_params(self)
        first_pass = not hasattr(self, "coefs_") or (not params.warm_start and not incremental)
        # scikit-learn's early stopping ends with _best_coefs and coefs_ one list (and so for
        # the intercepts), which its later fits train in place: kept so (StochasticRecord).
        aliased = [not first_pass and getattr(self, "_best_" + name, None) is getattr(self,
                                                                                   name + "_")
                   for name in ("coefs", "intercepts")]
        given_sample_weight = sample_weight
        X, Y, sample_weight = self._validate_training_data(X, y, sample_weight, incremental,
                                                           first_pass, classes)
        # The network trains on C-contiguous arrays of its dtype; they are made here, and the
        # network takes them as they are (nnfast._training.run.training_run).
        if is_sparse(X):
            # Sparse X (CSR or CSC, as scikit-learn accepts) trains as a canonical CSR matrix,
            # never densified; later fits convert it to the model's dtype.
            X = as_csr(X, "X", X.dtype if first_pass else self._network.dtype)
        elif first_pass:
            X = np.ascontiguousarray(X)
        else:
            # The model's dtype was set by its first fit; later inputs are converted to it
            # (and so are weights assigned to coefs_ / intercepts_ in between); as_matrix
            # refuses values that overflow it.
            X = as_matrix(X, "X", self._continued_dtype(X))
        # The targets as validated, which early stopping scores against: scikit-learn
        # scores a float32 regressor's predictions against float64 targets in float64.
        targets = Y
        # order="C": a 2-D target comes in any layout (a DataFrame's, Fortran order, a
        # meta-estimator's indicator matrix); the copy is made anyway.
        Y = (as_matrix(Y, "y", X.dtype) if Y.dtype.kind == "f" and Y.dtype != X.dtype
             else Y.astype(X.dtype, order="C"))
        if sample_weight is not None:
            sample_weight = sample_weight.astype(X.dtype)
        layer_units = [X.shape[1], *params.hidden_layer_sizes, Y.shape[1]]
        self.n_outputs_, self.n_layers_ = Y.shape[1], len(layer_units)
        # Drawn anew at every fit, as scikit-learn does: an int seed replays the same draws.
        random_state = _mlp_input.check_random_state(self.random_state)
        if first_pass:
            self._initialize(Y, layer_units, X.dtype, params, random_state)
        else:
            self._check_weights(layer_units)
        # Where scikit-learn refuses it: after the data's checks and the first fit's set-up.
        if incremental and params.early_stopping:
            raise ValueError("partial_fit does not support early_stopping=True")
        validation_data = self._validation_data(*validation, X.dtype)
        # Made only when something is validated: a fit without validation data looks up
        # neither a scorer nor a validation loss.
        evaluate = (self._evaluator(params)
                    if validation_data is not None or params.early_stopping else None)

        stochastic = params.solver in STOCHASTIC_SOLVERS
        old = getattr(self, "_network", None)
        resume = (stochastic and incremental and old is not None
                  and old.optimizer_state is not None)
        network = self._make_network(layer_units, X.dtype, params, old if resume else None)
        # Records missing (weights assigned by hand) start empty: t_ 0 here and in the
        # StochasticRecord (README, "Differences from scikit-learn").
        t = getattr(self, "t_", 0)
        # A warm start of a "cosine" fit goes on from the schedule's position (the epochs the
        # earlier fits trained under it), as partial_fit does.
        position = (old.optimizer_state.epochs if params.learning_rate == "cosine"
                    and old is not None and old.optimizer_state is not None else 0)
        if stochastic and not resume and ((params.solver == "sgd" and t > 0) or position > 0):
            # A warm start: a new optimizer, but "invscaling" goes on counting the rows seen
            # by earlier fits (scikit-learn's t_), so the state starts there.
            n_params = param_count(layer_units, True)
            network.optimizer_state = OptimizerState(
                np.zeros(n_params * (1 if params.solver == "sgd" else 2), dtype=X.dtype),
                samples_seen=t, learning_rate=params.learning_rate_init, epochs=position)
            resume = True
        trainer = _NetworkTrainer(network)
        trainer.set_weights(self.coefs_, self.intercepts_)
        callbacks = self._fit_callbacks(
            X, targets, given_sample_weight,
            max_subtasks=(1 if incremental else params.max_iter) if stochastic
            else params.max_iter + 1,
            task_name=_mlp_callbacks.EPOCH_TASK if stochastic else _mlp_callbacks.LBFGS_TASK,
            weights=trainer.weights)
        epoch_callbacks = callbacks if callbacks is not None and callbacks.active else None
        try:
            if stochastic:
                # An integer random_state seeds a RandomState that only this fit sees.
                hooks = _mlp_solvers.EarlyStopping(
                    self._stratify_early_stopping, self._decode_targets, evaluate)
                record = _mlp_solvers.fit_stochastic(
                    self, hooks, trainer, X, Y, sample_weight, params, incremental, random_state,
                    resume, shared_random_state=not isinstance(self.random_state,
                                                               numbers.Integral),
                    targets=targets, validation=validation_data,
                    epoch_callbacks=epoch_callbacks)
            else:
                lbfgs_curves = self._lbfgs_iterations(
                    X.dtype, validation_data, evaluate, epoch_callbacks)
                n_iter, loss = _mlp_solvers.fit_lbfgs(trainer, X, Y, sample_weight, params,
                                                      on_iteration=lbfgs_curves)
                if epoch_callbacks is not None:
                    epoch_callbacks.close_iteration()
        except TrainingDivergedError as exc:
            raise ValueError("Solver produced non-finite parameter weights. The input data may "
                             "contain large values and need to be preprocessed.") from exc
        # With early stopping, the weights of the epoch with the best validation score.
        self.coefs_, self.intercepts_ = trainer.weights_copy()
        self._network = trainer.network
        if stochastic and params.early_stopping:
            aliased = [True, True]
        if aliased[0]:
            self._best_coefs = self.coefs_
        if aliased[1]:
            self._best_intercepts = self.intercepts_
        if stochastic:
            record.apply_to(self)
        else:
            self.n_iter_, self.loss_ = n_iter, loss
            if validation_data is not None:
                self.validation_scores_ = lbfgs_curves.scores
                self.validation_loss_curve_ = lbfgs_curves.losses
        if not all(np.isfinite(w).all() for w in self.coefs_ + self.intercepts_):
            raise ValueError("Solver produced non-finite parameter weights. The input data may "
                             "contain large values and need to be preprocessed.")
        if callbacks is not None:
            callbacks.finish()
        return self

    def _fit_callbacks(self, X, targets, sample_weight, max_subtasks, task_name, weights):
        """scikit-learn's callbacks for this fit (``_callbacks.FitCallbacks``, its root task
        begun), or None without callbacks and outside a meta-estimator's task tree: then
        nothing is made or called."""
        own = bool(getattr(self, "_skl_callbacks", None))
        if not (own or hasattr(self, "_parent_callback_ctx")):
            return None
        context = self._init_callback_context(max_subtasks=max_subtasks)
        # The labels (what a scorer compares predictions with), made only with callbacks.
        return _mlp_callbacks.fit_callbacks(self, context, X, self._callback_targets(targets),
                                            sample_weight, task_name, weights, active=own)

    def _lbfgs_iterations(self, dtype, validation_data, evaluate, callbacks):
        """The function L-BFGS calls after each iteration (``_LbfgsIterations``), or None
        when there is nothing to do then."""
        if validation_data is None and callbacks is None:
            return None
        return _LbfgsIterations(dtype, validation_data, evaluate, callbacks)

    def _validation_data(self, X_val, y_val, sample_weight_val, dtype):
        """fit's validation data as a ``ValidationData`` (the network's dtype), or None;
        HistGradientBoosting's checks and messages."""
        if X_val is None and y_val is None:
            if sample_weight_val is not None:
                raise ValueError("sample_weight_val is provided, but X_val and y_val were not "
                                 "provided.")
            return None
        if y_val is None:
            raise ValueError("X_val is provided, but y_val was not provided.")
        if X_val is None:
            raise ValueError("y_val is provided, but X_val was not provided.")
        checked = _mlp_input.prediction_array(self, X_val)
        X = (checked if checked is not None
             else validate_data(self, X_val, reset=False, dtype=_FLOAT_DTYPES,
                                accept_sparse=_SPARSE_FORMATS))
        X = as_csr(X, "X_val", dtype) if is_sparse(X) else as_matrix(X, "X_val", dtype)
        y = _check_y(y_val, multi_output=True, y_numeric=isinstance(self, RegressorMixin),
                     estimator=self)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        check_consistent_length(X, y)
        Y = self._validation_targets(y)
        if Y.shape[1] != self.n_outputs_:
            raise ValueError(f"y_val has {Y.shape[1]} output columns, the model "
                             f"{self.n_outputs_} (from y)")
        sample_weight = (None if sample_weight_val is None
                         else _check_sample_weight(sample_weight_val, X, dtype=np.float64))
        return _mlp_solvers.ValidationData(
            X, Y.astype(dtype, order="C"), y, sample_weight, X_given=X_val)

    def _loss_function(self, params):
        """loss(Y, outputs, sample_weight): the reference's loss function of this fit's
        loss."""
        return reference.LOSS_FUNCTIONS[self._loss_name()]

    def _evaluator(self, params):
        """``evaluate((coefs, intercepts), data)``: (score, loss) of those weights on a
        ``ValidationData``. The score is ``scoring``'s (None: accuracy or R^2); the loss is
        the model's loss function (weighted by the data's sample weights) without the L2
        term."""
        loss_function = self._loss_function(params)
        scorer = (None if params.scoring is None
                  else get_scorer(params.scoring) if isinstance(params.scoring, str)
                  else params.scoring)

        def score(weights, data, outputs):
            finite = np.isfinite(outputs).all()
            if scorer is None:
                # As scikit-learn: NaN for predictions (the regressor's) that are not
                # finite; a classifier's are labels, decoded from whatever the outputs are.
                predictions = self._predictions(outputs)
                if predictions.dtype.kind == "f" and not finite:
                    return np.nan
                return float(self._score_function(data.y, predictions,
                                                  sample_weight=data.sample_weight))
            return self._scorer_score(scorer, weights, data) if finite else np.nan

        def evaluate(weights, data):
            outputs = _forward(*weights, data.X, self.activation, self.out_activation_)
            # The score first: for early stopping's split, scikit-learn's errors (held-out
            # weights summing to zero) are its score's.
            validation_score = score(weights, data, outputs)
            with np.errstate(all="ignore"):
                loss = float(loss_function(data.Y, outputs, data.sample_weight))
            return validation_score, loss

        return evaluate

    def _scorer_score(self, scorer, weights, data):
        """``scorer(self, X, y)`` with the estimator answering from ``weights`` (the
        epoch's): they are its coefs_ and intercepts_ during the call. The fit's
        transaction puts the attributes back if the scorer raises."""
        kept = self.coefs_, self.intercepts_
        self.coefs_, self.intercepts_ = list(weights[0]), list(weights[1])
        X = data.X if data.X_given is None else data.X_given
        kwargs = {} if data.sample_weight is None else {"sample_weight": data.sample_weight}
        try:
            if data.X_given is not None or not hasattr(self, "feature_names_in_"):
                return float(scorer(self, X, data.y, **kwargs))
            # The early-stopping split's rows of a DataFrame are an array: they are the
            # fit's own features, which scikit-learn's check would warn about every epoch.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="X does not have valid feature names",
                                        category=UserWarning)
                return float(scorer(self, X, data.y, **kwargs))
        finally:
            self.coefs_, self.intercepts_ = kept

    def _initialize(self, Y, layer_units, dtype, params, random_state):
        """First fit: the output layer, scikit-learn's initial weights and empty records."""
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = Y.shape[1]
        self.n_layers_ = len(layer_units)
        self.out_activation_ = self._output_activation()
        # scikit-learn's Glorot draws, as nnfast.reference (tested against it) defines them.
        coefs, intercepts = reference.init_coefs(layer_units, random_state, params.activation,
                                                 dtype)
        self.coefs_, self.intercepts_ = coefs, intercepts
        self._best_coefs = [c.copy() for c in coefs]
        self._best_intercepts = [b.copy() for b in intercepts]
        self._network = None
        for name in ("loss_", "loss_curve_", "best_loss_", "validation_scores_",
                     "validation_loss_curve_", "best_validation_score_",
                     "_no_improvement_count"):
            self.__dict__.pop(name, None)
        if params.solver in STOCHASTIC_SOLVERS:
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if params.early_stopping:
                self.validation_scores_ = []
                self.validation_loss_curve_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.validation_loss_curve_ = None
                self.best_validation_score_ = None

    def _check_weights(self, layer_units):
        """Continuing a fit: coefs_ and intercepts_ (perhaps assigned by the user) must fit
        the layers."""
        expected = list(zip(layer_units, layer_units[1:]))
        coefs, intercepts = self.coefs_, self.intercepts_
        if len(coefs) != len(expected) or len(intercepts) != len(expected):
            raise ValueError(f"coefs_ and intercepts_ must hold {len(expected)} layers for "
                             f"layer sizes {layer_units}, got {len(coefs)} and "
                             f"{len(intercepts)}; fit with warm_start=False to start afresh")
        for k, ((fan_in, fan_out), w, b) in enumerate(zip(expected, coefs, intercepts)):
            if np.shape(w) != (fan_in, fan_out) or np.shape(b) != (fan_out,):
                raise ValueError(f"coefs_[{k}] must have shape {(fan_in, fan_out)} and "
                                 f"intercepts_[{k}] shape {(fan_out,)}, got {np.shape(w)} and "
                                 f"{np.shape(b)}")
            if not (np.isfinite(w).all() and np.isfinite(b).all()):
                raise ValueError(f"coefs_[{k}] and intercepts_[{k}] must be finite")

    def _continued_dtype(self, X):
        """The dtype a fit that continues from coefs_ and intercepts_ trains in: the last
        fit's, or, for weights assigned by hand to an estimator never fitted, float32 when
        they and X are all float32 (else float64, which scikit-learn's products of mixed
        dtypes give)."""
        network = getattr(self, "_network", None)
        if network is not None:
            return network.dtype
        arrays = [X, *self.coefs_, *self.intercepts_]
        single = all(np.asarray(a).dtype == np.float32 for a in arrays)
        return np.dtype(np.float32 if single else np.float64)

    def _make_network(self, layer_units, dtype, params, resumed):
        """A network for this fit. Resuming (partial_fit), a copy of the last fit's, with its
        optimizer and state (scikit-learn keeps its optimizer object between partial_fit
        calls); otherwise a new one with the current hyperparameters."""
        stochastic = params.solver in STOCHASTIC_SOLVERS
        optimizer = (resumed.optimizer if resumed is not None
                     else _mlp_solvers.optimizer_for(params) if stochastic else None)
        # Its weights are coefs_ and intercepts_, set at once (_fit): none are drawn.
        network = Network.from_params(
            np.empty(param_count(layer_units, True), dtype=dtype), layer_units, seed=1,
            dtype=dtype, backend=BACKEND, bias=True, n_threads=params.n_threads,
            activation=params.activation, output=self.out_activation_, optimizer=optimizer,
            alpha=params.alpha, reduction="mean", loss=self._network_loss(),
            huber_delta=params.huber_delta, quantile=params.quantile, dropout=params.dropout)
        if resumed is not None:
            network.optimizer_state = resumed.optimizer_state.copy()
        return network

    def _check_sample_weight(self, sample_weight, X):
        """scikit-learn's check of fit's sample weights (its ``_check_sample_weight``, as its
        MLP calls it: any finite values, negative ones too, not all zero), as a new array of
        X's dtype."""
        if sample_weight is None:
            return None
        return _check_sample_weight(sample_weight, X).astype(X.dtype)

    def _validate_arrays(self, X, y, reset, numeric_targets=False):
        """scikit-learn's ``validate_data`` of fit's X and y: directly for plain NumPy arrays
        (``nnfast.sklearn._input``), by scikit-learn for anything else and for any input that
        fails a check, so that the errors and warnings are scikit-learn's."""
        arrays = _mlp_input.training_arrays(self, X, y, reset, numeric_targets)
        if arrays is not None:
            return arrays
        return validate_data(self, X, y, multi_output=True, y_numeric=numeric_targets,
                             dtype=_FLOAT_DTYPES, reset=reset, accept_sparse=_SPARSE_FORMATS)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True  # CSR / CSC X, as scikit-learn's MLP
        return tags

    # ---------------------------------------------------------------------------- prediction

    def _network_outputs(self, X):
        check_is_fitted(self, "coefs_")
        checked = _mlp_input.prediction_array(self, X)
        X = (checked if checked is not None
             else validate_data(self, X, reset=False, dtype=_FLOAT_DTYPES,
                                accept_sparse=_SPARSE_FORMATS))
        return _forward(self.coefs_, self.intercepts_, X, self.activation, self.out_activation_)

    # ---------------------------------------------------------------------------- conversion

    def to_sklearn(self):
        """scikit-learn's own estimator holding this fitted model.

        Returns
        -------
        model : sklearn.neural_network.MLPClassifier or MLPRegressor
            The same parameters and fitted state: weights, classes and label binarizer,
            records (``n_iter_``, ``t_``, ``loss_curve_``, ...) and the stochastic optimizer's
            state, so that it predicts the same and its ``partial_fit`` or warm-start ``fit``
            continues where this model stopped. ``n_threads`` is dropped.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the model is not fitted.
        ValueError
            If an option has a value scikit-learn's MLP lacks (an activation or loss it does
            not have, ``class_weight``, ...); the message names it.
        """
        check_is_fitted(self, "coefs_")
        return _convert.to_sklearn(self._KIND, self.get_params(deep=False),
                                   self._fitted_state())

    @classmethod
    def from_sklearn(cls, fitted):
        """An nnfast estimator holding a fitted scikit-learn MLP.

        Parameters
        ----------
        fitted : sklearn.neural_network.MLPClassifier or MLPRegressor
            A fitted scikit-learn estimator of the same kind (classifier or regressor).

        Returns
        -------
        model : MLPClassifier or MLPRegressor
            The same parameters and fitted state (see ``to_sklearn``): it predicts the same,
            and ``partial_fit`` or a warm-start ``fit`` continue as scikit-learn's would.

        Raises
        ------
        TypeError
            If ``fitted`` is not scikit-learn's estimator of this kind.
        sklearn.exceptions.NotFittedError
            If ``fitted`` is not fitted.
        """
        params, state = _convert.from_sklearn(cls._KIND, fitted)
        estimator = cls(**params)
        estimator._load_fitted_state(state)
        return estimator

    def _fitted_state(self):
        """This model's ``_convert.FittedState`` (its own objects, not copies)."""
        network = getattr(self, "_network", None)
        resumable = network is not None and network.optimizer_state is not None
        return _convert.FittedState(
            {name: getattr(self, name) for name in _convert.FITTED_ATTRIBUTES
             if hasattr(self, name)},
            self.coefs_, self.intercepts_, getattr(self, "_best_coefs", None),
            getattr(self, "_best_intercepts", None), getattr(self, "_label_binarizer", None),
            getattr(self, "_no_improvement_count", None),
            network.optimizer if resumable else None,
            network.optimizer_state if resumable else None)

    def _load_fitted_state(self, state):
        """Takes a ``_convert.FittedState`` (its objects, not copies) as this model's."""
        self.__dict__.update(state.attributes)
        self.coefs_, self.intercepts_ = state.coefs, state.intercepts
        extras = {"_best_coefs": state.best_coefs, "_best_intercepts": state.best_intercepts,
                  "_label_binarizer": state.label_binarizer,
                  "_no_improvement_count": state.no_improvement_count}
        self.__dict__.update({k: v for k, v in extras.items() if v is not None})
        # The network that partial_fit resumes: it carries the optimizer and its state
        # (its weights are set from coefs_ at every fit).
        dtype = self.coefs_[0].dtype
        layer_units = [self.coefs_[0].shape[0]] + [w.shape[1] for w in self.coefs_]
        self._network = Network.from_params(
            pack_params(self.coefs_, self.intercepts_).astype(dtype), layer_units, seed=1,
            dtype=dtype, backend=BACKEND, bias=True, activation=self.activation,
            output=self.out_activation_, optimizer=state.optimizer, alpha=float(self.alpha),
            reduction="mean")
        self._network.optimizer_state = state.optimizer_state


_PARAMETERS = """\
    hidden_layer_sizes : array-like of int or int, default=(100,)
        Widths of the hidden layers, input side first.
    activation : {"identity", "logistic", "tanh", "relu", "leaky_relu", "elu", "gelu", \
"silu", "softplus"}, default="relu"
        Activation of every hidden unit: ``x``, ``1 / (1 + exp(-x))``, ``tanh(x)`` or
        ``max(0, x)``, as in scikit-learn; or nnfast's ``leaky_relu`` (``x``, ``0.01 * x``
        below 0), ``elu`` (``x``, ``exp(x) - 1`` below 0), ``gelu`` (``x * Phi(x)``, the
        exact erf form), ``silu`` (``x * sigmoid(x)``) and ``softplus`` (``log(1 +
        exp(x))``).
    solver : {"lbfgs", "sgd", "adam"}, default="adam"
        "adam": Adam on mini-batches; "sgd": mini-batch gradient descent with (Nesterov)
        momentum; "lbfgs": SciPy's L-BFGS-B on the full batch, often the best choice for a
        few thousand rows or fewer.
    alpha : float >= 0, default=0.0001
        L2 penalty: ``0.5 * alpha * sum of squared weights`` (biases excluded), divided by
        the batch's total sample weight (its row count without weights), is added to the loss.
    batch_size : int or "auto", default="auto"
        Rows per mini-batch for "sgd" and "adam"; "auto" is ``min(200, n_samples)``. A size
        above the row count is clipped to it, with a warning.
    learning_rate : {"constant", "invscaling", "adaptive", "cosine"}, default="constant"
        Schedule of the "sgd" step size: constant ``learning_rate_init``; "invscaling":
        ``learning_rate_init / (t + 1) ** power_t`` after each epoch, t the rows seen so far;
        "adaptive": divided by 5 each time ``n_iter_no_change`` epochs in a row fail to make
        progress by ``tol`` (training stops once it is at most 1e-6). "cosine" (nnfast's,
        for "adam" too, whose other schedules keep the rate): epoch e (counted over
        ``partial_fit`` calls and warm starts) runs at ``learning_rate_init * (e + 1) / (W +
        1)`` during a warm-up of ``W = round(warmup_fraction * max_iter)`` epochs, then at
        ``learning_rate_init * 0.5 * (1 + cos(pi * (e - W) / (max_iter - W)))``: PyTorch's
        ``CosineAnnealingLR`` (after ``LinearLR(start_factor=1 / (W + 1))``) stepped per
        epoch; past ``max_iter`` epochs the rate stays 0 (``nnfast.reference.cosine_rate``).
    learning_rate_init : float > 0, default=0.001
        Initial step size of "sgd" and "adam".
    power_t : float >= 0, default=0.5
        Exponent of the "invscaling" schedule.
    max_iter : int >= 1, default=200
        Most epochs for "sgd" and "adam" (passes over the rows); most iterations for "lbfgs".
    shuffle : bool, default=True
        Visit the rows in a new random order every epoch ("sgd", "adam").
    random_state : int, RandomState instance or None, default=None
        Draws the initial weights, the row orders and the early-stopping split, in
        scikit-learn's order: an int gives scikit-learn's draws for the same int.
    tol : float >= 0, default=1e-4
        Least improvement of the loss (or of the validation score, with ``early_stopping``)
        that counts as progress; for "lbfgs", the gradient tolerance ``gtol``.
    verbose : bool, default=False
        Print the loss after every epoch (and the stopping decisions).
    warm_start : bool, default=False
        Start ``fit`` from the current ``coefs_`` and ``intercepts_`` (including arrays
        assigned to them) instead of new random weights; the optimizer starts afresh.
    momentum : float in [0, 1], default=0.9
        Momentum of "sgd".
    nesterovs_momentum : bool, default=True
        Nesterov's momentum for "sgd".
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the rows (stratified for a single-output
        classifier), stop when their score has not improved by ``tol`` for
        ``n_iter_no_change`` epochs, and keep the weights of the best epoch ("sgd", "adam").
    validation_fraction : float in (0, 1), default=0.1
        Fraction of the rows held out by ``early_stopping``.
    beta_1 : float in [0, 1), default=0.9
        Adam's decay rate of the first-moment estimates.
    beta_2 : float in [0, 1), default=0.999
        Adam's decay rate of the second-moment estimates.
    epsilon : float > 0, default=1e-8
        Adam's guard against division by zero.
    n_iter_no_change : int >= 1 or inf, default=10
        Epochs in a row without progress by ``tol`` after which training stops (or the
        "adaptive" rate is divided).
    max_fun : int >= 1, default=15000
        Most loss evaluations for "lbfgs".
    n_threads : int or None, default=None
        Threads for nnfast's compiled kernel; None uses every core available to the process.
    warmup_fraction : float in [0, 1), default=0.0
        The share of ``max_iter`` that the "cosine" schedule warms up for (rounded half to
        even to whole epochs, fewer than ``max_iter``).
    max_grad_norm : float > 0 or None, default=None
        Clip each step's gradient ("sgd", "adam") to this L2 norm over every weight and bias
        (the L2 penalty's term included), as ``torch.nn.utils.clip_grad_norm_``: scaled by
        ``max_grad_norm / (norm + 1e-6)`` when that is below 1. None never clips; "lbfgs"
        ignores it, as it ignores the schedules.
    dropout : float in [0, 1) or sequence of them, default=0.0
        Inverted dropout on the hidden layers while training with "sgd" or "adam" (one rate
        for all, or one per hidden layer): each hidden unit of each row is zeroed with that
        probability and otherwise scaled by ``1 / (1 - rate)``; predictions and scores use
        every unit. The masks come from ``random_state`` (a seed drawn once per ``fit`` or
        ``partial_fit`` call) and the rows' positions in the fit, so the same
        ``random_state`` gives the same fit, on any number of threads. 0 trains exactly as
        without it; "lbfgs" refuses a rate above 0 (its line search needs a deterministic
        loss).
"""

_SCORING = """\
    scoring : str, callable or None, default=None
        The validation score of early stopping and of ``validation_scores_``: None is
        accuracy (classifier) or R^2 (regressor), as in scikit-learn; a name of
        ``sklearn.metrics.get_scorer``; or a callable ``scorer(estimator, X, y)`` (called
        with ``sample_weight=`` when there are validation weights), greater being better.
        During the fit the estimator answers the scorer's ``predict`` / ``predict_proba``
        with the weights of the epoch being scored.
"""

_ATTRIBUTES = """\
    loss_ : float
        The loss after the last epoch (or at the "lbfgs" solution), L2 term included.
    best_loss_ : float or None
        The least training loss so far ("sgd", "adam"); None with ``early_stopping``.
    loss_curve_ : list of float
        The loss of each epoch ("sgd", "adam"): the rows' mean batch loss while training.
    validation_scores_ : list of float or None
        With validation data (``fit``'s ``X_val``, or the ``early_stopping`` split), the
        score (``scoring``) of the validation rows after each epoch (each iteration for
        "lbfgs"); else None. A warm-started fit extends the list.
    validation_loss_curve_ : list of float or None
        With validation data, the model's loss on the validation rows after each epoch
        (each iteration for "lbfgs"), weighted by ``sample_weight_val``; else None. The L2
        penalty, which ``loss_`` and ``loss_curve_`` include, is left out: it depends on
        the weights only, not on the data, and without it the curve is the held-out loss
        that other models' losses compare with.
    best_validation_score_ : float or None
        The best of ``validation_scores_``, whose weights are kept; None without
        ``early_stopping``.
    t_ : int
        Training rows seen by the solver over all fits since the first.
    coefs_ : list of ndarray
        ``coefs_[k]``, shape (units of layer k, units of layer k + 1), weights into layer k + 1.
    intercepts_ : list of ndarray
        ``intercepts_[k]``, shape (units of layer k + 1,), the biases of layer k + 1.
    n_features_in_ : int
        Number of features seen by ``fit``.
    feature_names_in_ : ndarray of shape (``n_features_in_``,)
        Feature names seen by ``fit``, when X has string column names.
    n_iter_ : int
        Epochs (or "lbfgs" iterations) run by the last fit.
    n_layers_ : int
        Layers, input and output included.
    n_outputs_ : int
        Output units.
    out_activation_ : str
        Activation of the output units.
"""


class MLPClassifier(ClassifierMixin, _BaseMLP):
    __doc__ = f"""Multi-layer perceptron classifier: scikit-learn's ``MLPClassifier``, trained
    by nnfast's compiled kernel.

    Minimises the cross-entropy of the output units plus an L2 penalty with Adam, SGD or
    L-BFGS. Two classes use one logistic output unit, more classes a softmax over one unit
    each, and a label indicator matrix (multilabel) one logistic unit per label.
    ``from nnfast.sklearn import MLPClassifier`` in place of scikit-learn's import gives the
    same parameters, defaults, attributes and, for the same ``random_state``, the same fit.

    Parameters
    ----------
{_PARAMETERS}    class_weight : dict, "balanced" or None, default=None
        Weights of the classes, multiplied into the sample weights: ``{{label: weight}}``
        (missing labels weigh 1), or "balanced": ``n_samples / (n_classes * count of the
        class)`` in the ``y`` given to ``fit``. Single-output targets only; ``partial_fit``
        takes a dict only (one batch says nothing about the balance of the whole data).
{_SCORING}
    Attributes
    ----------
    classes_ : ndarray or list of ndarray
        The class labels (for multilabel targets, the label columns' indices).
{_ATTRIBUTES}
    See Also
    --------
    MLPRegressor : The same network for regression.
    NetworkClassifier : The original sigmoid network as a classifier.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from nnfast.sklearn import MLPClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> model = make_pipeline(StandardScaler(), MLPClassifier(max_iter=500, random_state=0))
    >>> model.fit(X, y).score(X, y) > 0.95
    True
    """

    # scikit-learn's constraints plus nnfast's n_threads and class_weight (_mlp_params).
    _parameter_constraints: dict = CLASSIFIER_CONSTRAINTS
    _KIND = "classifier"  # which scikit-learn estimator it converts to and from (_convert)

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 class_weight=None, n_threads=None, scoring=None, warmup_fraction=0.0,
                 max_grad_norm=None, dropout=0.0):
        super().__init__(
            hidden_layer_sizes, activation, solver=solver, alpha=alpha, batch_size=batch_size,
            learning_rate=learning_rate, learning_rate_init=learning_rate_init,
            power_t=power_t, max_iter=max_iter, shuffle=shuffle, random_state=random_state,
            tol=tol, verbose=verbose, warm_start=warm_start, momentum=momentum,
            nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
            validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
            epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
            n_threads=n_threads, scoring=scoring, warmup_fraction=warmup_fraction,
            max_grad_norm=max_grad_norm, dropout=dropout)
        self.class_weight = class_weight

    @available_if(_BaseMLP._can_partial_fit)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over X and y, continuing the weights and the optimizer's state.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
            Labels (or a label indicator matrix).
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each row (as for ``fit``).
        classes : array-like of shape (n_classes,), default=None
            Every class of the whole data; required on the first call, optional later.
            ``partial_fit`` takes no validation data (``X_val``): one epoch on one batch has
            no early stopping, and ``validation_scores_`` / ``validation_loss_curve_`` are
            set to None, as without validation data.

        Returns
        -------
        self : MLPClassifier
            The updated estimator.
        """
        return self._transaction(self._fit, X, y, sample_weight, incremental=True,
                                 classes=classes)

    def _network_loss(self):
        return None

    def _output_activation(self):
        return ("softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic")

    def _validate_training_data(self, X, y, sample_weight, incremental, first_pass, classes):
        if incremental:
            self._set_partial_fit_classes(y, classes)
        X, y = self._validate_arrays(X, y, first_pass)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        # scikit-learn's label functions, or their results computed directly for 1-D labels.
        labels = _mlp_input.class_labels(y)
        if labels is None:
            check_classification_targets(y)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = (LabelBinarizer().fit(y) if labels is None
                                     else _mlp_input.fitted_label_binarizer(*labels))
            self.classes_ = self._label_binarizer.classes_
        else:
            # scikit-learn's rule and messages: with warm_start (partial_fit too) the same
            # classes as before, else no class that is not among them.
            seen = unique_labels(y) if labels is None else labels[1]
            if self.warm_start:
                if set(seen) != set(self.classes_):
                    raise ValueError("warm_start can only be used where `y` has the same "
                                     "classes as in the previous call to fit. Previously got "
                                     f"{self.classes_}, `y` has {seen}")
            elif len(np.setdiff1d(seen, self.classes_, assume_unique=True)):
                raise ValueError("`y` has classes not in `self.classes_`. `self.classes_` has "
                                 f"{self.classes_}. 'y' has {seen}.")
        sample_weight = self._check_sample_weight(sample_weight, X)
        sample_weight = self._fold_class_weight(y, sample_weight, incremental)
        return X, _binarize(self._label_binarizer, y), sample_weight

    def _set_partial_fit_classes(self, y, classes):
        """scikit-learn's first-call rule for ``classes`` (required then, the same later),
        with its messages."""
        if getattr(self, "classes_", None) is None:
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            self.classes_ = _unique_classes(classes)
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y if type_of_target(y).startswith("multilabel")
                                      else classes)
        elif classes is not None and not np.array_equal(self.classes_,
                                                        _unique_classes(classes)):
            raise ValueError(f"`classes={classes!r}` is not the same as on last call to "
                             f"partial_fit, was: {self.classes_!r}")

    def _fold_class_weight(self, y, sample_weight, incremental):
        """Sample weights times the weight of each row's class."""
        if self.class_weight is None:
            return sample_weight
        if self._label_binarizer.y_type_.startswith("multilabel"):
            raise ValueError("class_weight is not supported for multilabel targets")
        if incremental and self.class_weight == "balanced":
            raise ValueError("class_weight='balanced' is not supported by partial_fit: pass "
                             "a dict of class weights computed on the whole data")
        unknown = set(self.class_weight) - set(self.classes_) if isinstance(
            self.class_weight, dict) else set()
        if unknown:
            raise ValueError(f"class_weight has labels that are not classes: "
                             f"{sorted(unknown, key=str)}; the classes are {self.classes_}")
        dtype = np.float64 if sample_weight is None else sample_weight.dtype
        if isinstance(self.class_weight, dict):
            row_weights = np.ones(len(y), dtype=dtype)
            for label, weight in self.class_weight.items():
                weight = check_finite_real(weight, f"class_weight[{label!r}]")
                if weight < 0:
                    raise ValueError(f"class_weight[{label!r}] must be >= 0, got {weight}")
                row_weights[y == label] = weight
        else:
            # "balanced": n_samples / (n_classes * count) for each class present in y.
            _, index, counts = np.unique(y, return_inverse=True, return_counts=True)
            row_weights = (len(y) / (len(counts) * counts))[index].astype(dtype)
        return row_weights if sample_weight is None else sample_weight * row_weights

    def _stratify_early_stopping(self, Y):
        # scikit-learn stratifies the split only for a single output unit (two classes), on
        # the boolean indicator (its text form orders the strata, so the type matters).
        return Y.astype(bool) if self.n_outputs_ == 1 else None

    def _decode_targets(self, Y):
        return self._label_binarizer.inverse_transform(Y)

    def _callback_targets(self, Y):
        return self._decode_targets(Y)

    def _loss_name(self):
        return "log_loss" if self.out_activation_ == "softmax" else "binary_log_loss"

    def _validation_targets(self, y):
        """y_val (checked) as the network's outputs, after scikit-learn's check that its
        labels are among the classes."""
        if y.ndim == 1:
            unknown = np.setdiff1d(unique_labels(y), self.classes_)
            if len(unknown):
                raise ValueError(f"y_val has classes not in classes_: {unknown}; the classes "
                                 f"are {self.classes_}")
        Y = _binarize(self._label_binarizer, y)
        return Y.reshape(len(Y), -1)

    def _predictions(self, outputs):
        if self.n_outputs_ == 1:
            outputs = outputs.ravel()
        return _decode(self._label_binarizer, outputs)

    _score_function = staticmethod(_accuracy)

    def predict(self, X):
        """Predicted class labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_labels)
            The most probable class (multilabel: every label whose probability exceeds 0.5).
        """
        return self._predictions(self._network_outputs(X))

    def predict_proba(self, X):
        """Class probabilities.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns in the order of ``classes_``: ``[1 - p, p]`` for two classes, the softmax
            for more, each label's probability for multilabel targets.
        """
        outputs = self._network_outputs(X)
        if self.n_outputs_ == 1:
            p = outputs.ravel()
            return np.column_stack([1 - p, p])
        return outputs

    def predict_log_proba(self, X):
        """Logarithm of ``predict_proba(X)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
            ``log(predict_proba(X))``.
        """
        proba = self.predict_proba(X)
        with np.errstate(divide="ignore"):
            return np.log(proba, out=proba)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    __doc__ = f"""Multi-layer perceptron regressor: scikit-learn's ``MLPRegressor``, trained by
    nnfast's compiled kernel.

    Minimises half the mean squared error of identity output units (or, with
    ``loss="poisson"``, half the Poisson deviance of exponential ones) plus an L2 penalty
    with Adam, SGD or L-BFGS. Targets are used as given (no scaling); several target columns
    are fitted by one network.

    Parameters
    ----------
    loss : {{"squared_error", "poisson", "absolute_error", "huber", "quantile"}}, \
default="squared_error"
        "poisson" predicts ``exp`` of the last layer; its deviance is defined for targets
        >= 0 (negative ones give a NaN loss, as in scikit-learn). nnfast's robust losses, of
        the residual r = prediction - y of identity outputs, averaged over rows (weighted)
        and outputs as "squared_error" is, without its 1/2: "absolute_error" ``|r|``;
        "huber" ``0.5 r ** 2`` where ``|r| <= huber_delta``, else ``huber_delta * (|r| -
        huber_delta / 2)``; "quantile" the pinball loss ``quantile * (y - prediction)``
        where y >= prediction, else ``(1 - quantile) * (prediction - y)``. Early stopping
        scores R^2 (or ``scoring``) whatever the loss.
{_PARAMETERS}{_SCORING}
    huber_delta : float > 0, default=1.0
        Where the "huber" loss turns from quadratic to linear.
    quantile : float in (0, 1), default=0.5
        The quantile that the "quantile" loss estimates (0.5: the median).

    Attributes
    ----------
{_ATTRIBUTES}
    See Also
    --------
    MLPClassifier : The same network for classification.
    NetworkRegressor : The original sigmoid network as a regressor.

    Examples
    --------
    >>> from sklearn.datasets import make_regression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from nnfast.sklearn import MLPRegressor
    >>> X, y = make_regression(n_samples=200, n_features=5, noise=5, random_state=0)
    >>> model = make_pipeline(StandardScaler(),
    ...                       MLPRegressor(solver="lbfgs", max_iter=500, random_state=0))
    >>> model.fit(X, y).score(X, y) > 0.95
    True
    """

    # scikit-learn's constraints plus nnfast's n_threads (_mlp_params).
    _parameter_constraints: dict = REGRESSOR_CONSTRAINTS
    _ADDED_PARAMS = {**_BaseMLP._ADDED_PARAMS, "huber_delta": 1.0, "quantile": 0.5}
    _KIND = "regressor"  # which scikit-learn estimator it converts to and from (_convert)

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 n_threads=None, scoring=None, warmup_fraction=0.0, max_grad_norm=None,
                 dropout=0.0, huber_delta=1.0, quantile=0.5):
        super().__init__(
            hidden_layer_sizes, activation, solver=solver, alpha=alpha, batch_size=batch_size,
            learning_rate=learning_rate, learning_rate_init=learning_rate_init,
            power_t=power_t, max_iter=max_iter, shuffle=shuffle, random_state=random_state,
            tol=tol, verbose=verbose, warm_start=warm_start, momentum=momentum,
            nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
            validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
            epsilon=epsilon, n_iter_no_change=n_iter_no_change, max_fun=max_fun,
            n_threads=n_threads, scoring=scoring, warmup_fraction=warmup_fraction,
            max_grad_norm=max_grad_norm, dropout=dropout)
        self.loss = loss
        self.huber_delta = huber_delta
        self.quantile = quantile

    @available_if(_BaseMLP._can_partial_fit_regressor)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over X and y, continuing the weights and the optimizer's state.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Targets.
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each row (as for ``fit``). ``partial_fit`` takes no validation data
            (``X_val``): one epoch on one batch has no early stopping, and
            ``validation_scores_`` / ``validation_loss_curve_`` are set to None, as without
            validation data.

        Returns
        -------
        self : MLPRegressor
            The updated estimator.
        """
        return self._transaction(self._fit, X, y, sample_weight, incremental=True)

    def _output_activation(self):
        return "exp" if self.loss == "poisson" else "identity"

    def _network_loss(self):
        """The network's loss= for this estimator's loss (None: its output's own)."""
        return self.loss if self.loss in _mlp_params.ROBUST_LOSSES else None

    def _validate_training_data(self, X, y, sample_weight, incremental, first_pass, classes):
        X, y = self._validate_arrays(X, y, first_pass, numeric_targets=True)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        sample_weight = self._check_sample_weight(sample_weight, X)
        return X, y.reshape(len(y), -1), sample_weight

    def _stratify_early_stopping(self, Y):
        return None

    def _decode_targets(self, Y):
        return Y

    def _callback_targets(self, Y):
        return Y.ravel() if Y.shape[1] == 1 else Y

    def _loss_name(self):
        return self.loss

    def _loss_function(self, params):
        """loss(Y, outputs, sample_weight): the reference's loss function of this fit's loss,
        a robust one with its parameter."""
        if self.loss not in _mlp_params.ROBUST_LOSSES:
            return super()._loss_function(params)
        parameter = {"huber": params.huber_delta, "quantile": params.quantile}.get(self.loss)
        robust = reference.REGRESSION_LOSSES[self.loss]
        return lambda Y, outputs, sample_weight: robust(Y, outputs, sample_weight, parameter)

    def _validation_targets(self, y):
        return y.reshape(len(y), -1)

    def _predictions(self, outputs):
        return outputs.ravel() if outputs.shape[1] == 1 else outputs

    _score_function = staticmethod(_r2)

    def predict(self, X):
        """Predicted targets.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_outputs)
            Predictions; one column is returned flat.
        """
        return self._predictions(self._network_outputs(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

