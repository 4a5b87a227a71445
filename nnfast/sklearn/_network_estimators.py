"""``NetworkClassifier`` and ``NetworkRegressor`` are the original's sigmoid network as
estimators. They follow ``sklearn.neural_network.MLPClassifier`` / ``MLPRegressor`` in
parameters and fitted attributes, so they drop into pipelines, grid searches and
cross-validation::

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from nnfast.sklearn import NetworkClassifier

    model = make_pipeline(StandardScaler(), NetworkClassifier(random_state=0)).fit(X, y)

What they add to a bare ``Network``, so that a first fit on real data gives a sensible model:

* a trainable bias per layer (real data has no constant column to stand in for one);
* a learning rate per *mean* over a mini-batch: the network's update sums over the rows of a
  batch, so ``learning_rate / batch rows`` is what reaches it, and the rate does not have to
  change with ``batch_size``; by default ("auto") it also shrinks for a wide last hidden
  layer, which would otherwise make the output layer's steps diverge;
* mini-batches of 32 rows, shuffled every epoch;
* initial weights scaled to ``U(-b, b)``, ``b = sqrt(2 / (fan_in + fan_out))``, the bound
  MLPClassifier uses for sigmoid units (the original's ``U(-1, 1)`` saturates the sigmoids
  of a wide layer on standardised inputs);
* targets the sigmoid output can reach: one unit per class (one unit in all for two
  classes), and regression targets mapped linearly into [0.2, 0.8] (undone by ``predict``);
* stopping when the training loss (or, with ``early_stopping``, the loss on held-out rows)
  has not improved by ``tol`` for ``n_iter_no_change`` epochs.

Inputs should still be scaled (e.g. ``StandardScaler``), as for any neural network.
"""

import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from .._validation import check_bool, check_dtype, check_finite_real, check_int
from ..network import Network, TrainingDivergedError

# Input dtypes kept as they are; anything else (ints, bools, float16) becomes float64.
_FLOAT_DTYPES = [np.float64, np.float32]
# Regression targets are mapped onto [_TARGET_LOW, 1 - _TARGET_LOW]: the sigmoid's nearly
# linear middle, where its slope is still >= 0.16 of its peak, with room to predict a
# third of the training range beyond either end.
_TARGET_LOW = 0.2
# Seeds drawn for random_state=None or a RandomState: any value a RandomState accepts.
_MAX_SEED = np.iinfo(np.int32).max
# learning_rate="auto" is the estimator's _auto_learning_rate up to this many units feeding
# the output layer, and shrinks in proportion beyond.
_AUTO_WIDTH = 100
# Network.fit reports every epoch to its callback when given at most this many (it reports
# every iterations // 100 epochs).
_EPOCHS_PER_CALL = 100


class _BaseNetwork(BaseEstimator):
    """Training loop shared by the classifier and the regressor; not public.

    Subclasses turn y into targets in (0, 1) for ``_fit_network`` and network outputs back
    into predictions.
    """

    # One constructor for both estimators: scikit-learn reads the parameters from its
    # signature, and each subclass documents them.
    def __init__(self, hidden_layer_sizes=(100,), *, learning_rate="auto", max_iter=200,
                 batch_size=32, shuffle=True, tol=1e-4, n_iter_no_change=20,
                 early_stopping=False, validation_fraction=0.1, random_state=None, bias=True,
                 dtype=None, verbose=0, n_threads=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.bias = bias
        self.dtype = dtype
        self.verbose = verbose
        self.n_threads = n_threads

    def _check_hyperparameters(self):
        """The parameters that ``Network`` does not check itself, validated."""
        hidden = self.hidden_layer_sizes
        if isinstance(hidden, numbers.Integral) and not isinstance(hidden, (bool, np.bool_)):
            hidden = (hidden,)
        if isinstance(hidden, (str, bytes)) or not hasattr(hidden, "__iter__"):
            raise TypeError("hidden_layer_sizes must be a sequence of layer widths, got "
                            f"{hidden!r}")
        hidden = tuple(check_int(width, f"hidden_layer_sizes[{k}]", minimum=1)
                       for k, width in enumerate(hidden))
        if isinstance(self.learning_rate, str):
            if self.learning_rate != "auto":
                raise ValueError("learning_rate must be 'auto' or a number > 0, got "
                                 f"{self.learning_rate!r}")
            learning_rate = "auto"
        else:
            learning_rate = check_finite_real(self.learning_rate, "learning_rate")
            if learning_rate <= 0:
                raise ValueError(f"learning_rate must be 'auto' or > 0, got {learning_rate}")
        check_int(self.max_iter, "max_iter", minimum=1)
        if self.batch_size is not None:
            check_int(self.batch_size, "batch_size", minimum=1)
        if check_finite_real(self.tol, "tol") < 0:
            raise ValueError(f"tol must be >= 0, got {self.tol}")
        check_int(self.n_iter_no_change, "n_iter_no_change", minimum=1)
        check_bool(self.early_stopping, "early_stopping")
        fraction = check_finite_real(self.validation_fraction, "validation_fraction")
        if self.early_stopping and not 0 < fraction < 1:
            raise ValueError(f"validation_fraction must be in (0, 1), got {fraction}")
        # verbose=True, as MLPClassifier takes it, reports every epoch.
        verbose = 1 if self.verbose is True else check_int(self.verbose, "verbose", minimum=0)
        return hidden, learning_rate, verbose

    def _fit_network(self, X, targets, stratify=None):
        """Trains a new ``network_`` on targets in (0, 1) and sets the fitted attributes."""
        hidden, learning_rate, verbose = self._check_hyperparameters()
        dtype = X.dtype if self.dtype is None else check_dtype(self.dtype)
        seed = _draw_seed(self.random_state)
        if self.early_stopping:
            try:
                X, X_val, targets, targets_val = train_test_split(
                    X, targets, test_size=self.validation_fraction, random_state=seed,
                    stratify=stratify)
            except ValueError:
                if stratify is None:
                    raise
                # Too few rows of some class to stratify: an unstratified split will do.
                X, X_val, targets, targets_val = train_test_split(
                    X, targets, test_size=self.validation_fraction, random_state=seed)
        n_rows = X.shape[0]
        # What Network uses: None, or more rows than there are, is the full batch.
        batch_rows = n_rows if self.batch_size is None else min(self.batch_size, n_rows)

        sizes = [X.shape[1], *hidden, targets.shape[1]]
        if learning_rate == "auto":
            # The output layer's step grows with the number of units feeding it (its
            # gradient sums over them): past _AUTO_WIDTH of them, shrink the rate to match.
            learning_rate = self._auto_learning_rate * min(1.0, _AUTO_WIDTH / sizes[-2])
        network = Network(sizes, seed=seed, dtype=dtype, bias=self.bias,
                          n_threads=self.n_threads)
        for weights in network.weights:
            weights *= np.sqrt(2.0 / (weights.shape[0] + weights.shape[1]))

        loss_curve = []
        validation_loss_curve = []
        stopping = _StoppingRule(self.tol, self.n_iter_no_change)
        best_params = None
        epochs_run = 0

        def on_epoch(iteration, error):
            """Network's per-epoch report: records the loss; True stops the fit."""
            loss_curve.append(float(error))
            if self.early_stopping:
                return False  # decided below, on the held-out rows, after each epoch
            _report(verbose, len(loss_curve), loss_curve[-1])
            return stopping.update(loss_curve[-1])

        # Network.fit calls back after every epoch when given at most _EPOCHS_PER_CALL of
        # them. Longer calls would save its per-call overhead (checking X, a thread-limit
        # context) but it only writes the weights back at the end of a call, so early
        # stopping, which scores the weights after every epoch, calls it one epoch at a time.
        # The network's random state carries the shuffling on from one call to the next:
        # the result is the same either way.
        while epochs_run < self.max_iter and not stopping.converged:
            epochs = 1 if self.early_stopping else min(_EPOCHS_PER_CALL,
                                                       self.max_iter - epochs_run)
            try:
                network.fit(X, targets, epochs, learning_rate / batch_rows,
                            batch_size=batch_rows, shuffle=self.shuffle, callback=on_epoch)
            except TrainingDivergedError as exc:
                # Network's message names the rate per row it was given; name the user's.
                raise TrainingDivergedError(
                    f"{type(self).__name__}: training diverged (the loss is no longer finite) "
                    f"in epochs {epochs_run + 1}-{epochs_run + epochs}; try a learning_rate "
                    f"below {learning_rate:g}") from exc
            epochs_run += network.iterations_run
            if self.early_stopping:
                # The validation loss, not accuracy: on a small split accuracy stops moving
                # long before the model stops improving.
                validation_loss = float(np.mean(np.abs(targets_val - network.predict(X_val))))
                validation_loss_curve.append(validation_loss)
                _report(verbose, len(loss_curve), loss_curve[-1], validation_loss)
                if validation_loss < stopping.best:
                    best_params = _copy_params(network)
                stopping.update(validation_loss)
        if best_params is not None:
            _restore_params(network, best_params)

        self.network_ = network
        self.n_outputs_ = targets.shape[1]
        self.loss_curve_ = loss_curve
        self.loss_ = loss_curve[-1]
        self.n_iter_ = epochs_run
        self.validation_loss_curve_ = validation_loss_curve if self.early_stopping else None
        self.best_validation_loss_ = stopping.best if self.early_stopping else None
        if not stopping.converged:
            warnings.warn(
                f"{type(self).__name__}: maximum iterations ({self.max_iter}) reached and the "
                "optimization hasn't converged yet.", ConvergenceWarning, stacklevel=3)
        return self

    def _network_outputs(self, X):
        """Validates X against the fit and returns the output layer's activations, as
        float32 if X is float32, else as float64 (whatever the network's dtype)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=_FLOAT_DTYPES)
        return self.network_.predict(X).astype(X.dtype, copy=False)

    @property
    def coefs_(self):
        """list of ndarray: ``coefs_[k]`` is the weight matrix from layer k to layer k + 1.

        Views into ``network_``'s parameters: writing to them changes the model.
        """
        check_is_fitted(self)
        return self.network_.weights

    @property
    def intercepts_(self):
        """list of ndarray or None: ``intercepts_[k]`` is the bias vector of layer k + 1.

        Views into ``network_``'s parameters; None when fitted with ``bias=False``.
        """
        check_is_fitted(self)
        return self.network_.biases


_COMMON_PARAMETERS = """\
    hidden_layer_sizes : tuple of int, default=(100,)
        Widths of the hidden layers, in order; ``()`` for none. Every unit is a sigmoid.
    learning_rate : "auto" or float, default="auto"
        Step size per mini-batch, applied to the batch's *mean* gradient (the network sums
        over a batch, so it is given ``learning_rate / batch rows``). Larger rates train
        faster and, past a point, diverge; the largest stable rate falls as the layer
        feeding the output widens. "auto" is {learning_rate} while at most 100 units feed
        the output layer, and ``{auto_numerator} / n`` for n > 100 of them.
    max_iter : int, default=200
        Maximum number of epochs (passes over the training rows).
    batch_size : int or None, default=32
        Rows per update; None, or at least the number of rows, is full-batch training.
    shuffle : bool, default=True
        Visit the rows of each epoch in a new random order.
    tol : float, default=1e-4
        Decrease of the loss (with ``early_stopping``, of the validation loss) below its
        least value so far that counts as progress.
    n_iter_no_change : int, default=20
        Training stops after more than this many epochs in a row without progress. (Twice
        MLPClassifier's 10: a constant-rate SGD loss is noisier from epoch to epoch.)
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the rows, stop when their loss stops decreasing,
        and keep the weights of the epoch where it was least.
    validation_fraction : float, default=0.1
        Fraction of the rows held out with ``early_stopping``.
    random_state : int, RandomState instance or None, default=None
        An int is the ``Network``'s seed: it draws the initial weights, the epochs' row
        orders and the validation split. None (or a RandomState) draws that seed.
    bias : bool, default=True
        Give every layer a trainable bias.
    dtype : {{None, numpy.float32, numpy.float64}}, default=None
        Floating type of the network. None: float32 when X is float32, else float64.
    verbose : int or bool, default=0
        If K > 0, print the loss every K epochs (True: every epoch).
    n_threads : int or None, default=None
        Threads for the compiled kernel; None uses every core available to the process.
"""

_COMMON_ATTRIBUTES = """\
    n_features_in_ : int
        Number of features seen during fit.
    feature_names_in_ : ndarray of shape (``n_features_in_``,)
        Feature names seen during fit, when X has string column names.
    n_outputs_ : int
        Units of the output layer.
    network_ : nnfast.Network
        The fitted network.
    coefs_ : list of ndarray
        ``coefs_[k]`` is the weight matrix from layer k to layer k + 1.
    intercepts_ : list of ndarray or None
        ``intercepts_[k]`` is the bias vector of layer k + 1; None without ``bias``.
    loss_curve_ : list of float
        The loss at each epoch: mean ``|target - output|`` over the epoch's rows and
        outputs, on the network's (0, 1) scale, measured while training.
    loss_ : float
        The last epoch's loss.
    n_iter_ : int
        Epochs run.
    validation_loss_curve_ : list of float or None
        With ``early_stopping``, the loss of the held-out rows (measured as ``loss_curve_``)
        after each epoch; else None.
    best_validation_loss_ : float or None
        The least of ``validation_loss_curve_``, whose epoch's weights are kept; None
        without ``early_stopping``.
"""


class NetworkClassifier(ClassifierMixin, _BaseNetwork):
    __doc__ = f"""A sigmoid multi-layer perceptron classifier trained by ``nnfast.Network``.

    One sigmoid output per class (one in all for two classes), trained on one-hot targets by
    backpropagation of the squared error, with shuffled mini-batches.

    Parameters
    ----------
{_COMMON_PARAMETERS.format(learning_rate=1.0, auto_numerator=100)}
    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, sorted.
{_COMMON_ATTRIBUTES}
    See Also
    --------
    NetworkRegressor : The same network for regression.
    sklearn.neural_network.MLPClassifier : scikit-learn's, on which the parameters are modelled.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from nnfast.sklearn import NetworkClassifier
    >>> X, y = load_iris(return_X_y=True)
    >>> model = make_pipeline(StandardScaler(), NetworkClassifier(random_state=0)).fit(X, y)
    >>> model.score(X, y) > 0.9
    True
    """

    # learning_rate="auto" up to _AUTO_WIDTH units feeding the output layer.
    _auto_learning_rate = 1.0

    def fit(self, X, y):
        """Fits the network to X and the class labels y.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs; float32 is kept as float32 (with ``dtype=None``).
        y : array-like of shape (n_samples,)
            Class labels.

        Returns
        -------
        self : NetworkClassifier
            The fitted estimator.
        """
        X, y = validate_data(self, X, y, dtype=_FLOAT_DTYPES)
        check_classification_targets(y)
        self.classes_, labels = np.unique(y, return_inverse=True)
        if len(self.classes_) > 2:
            targets = np.zeros((len(labels), len(self.classes_)))
            targets[np.arange(len(labels)), labels] = 1
        elif len(self.classes_) == 2:
            targets = labels.reshape(-1, 1).astype(np.float64)
        else:
            # A single class: the output learns to say "yes"; predict needs no network.
            targets = np.ones((len(labels), 1))
        return self._fit_network(X, targets, stratify=labels)

    def predict(self, X):
        """Predicts class labels.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        y : ndarray of shape (n_samples,)
            The class whose output unit is the most active (two classes: the second class
            when its unit's activation exceeds 0.5).
        """
        outputs = self._network_outputs(X)
        if len(self.classes_) == 1:
            return self.classes_[np.zeros(len(outputs), dtype=np.intp)]
        return self.classes_[_class_index(outputs)]

    def predict_proba(self, X):
        """Class probability estimates.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Columns in the order of ``classes_``; float32 if X is float32, else float64.
            Two classes: ``[1 - p, p]`` for the output unit's activation p; more: the output
            units' activations divided by their sum.
        """
        outputs = self._network_outputs(X)
        if len(self.classes_) == 1:
            return np.ones_like(outputs)
        if len(self.classes_) == 2:
            return np.hstack([1 - outputs, outputs])
        total = outputs.sum(axis=1, keepdims=True)
        # Every sigmoid can underflow to 0 (float32, inputs far out): call it a tie.
        outputs[total[:, 0] == 0] = 1
        total[total == 0] = outputs.shape[1]
        return outputs / total

    def predict_log_proba(self, X):
        """Logarithm of the class probability estimates.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
            ``log(predict_proba(X))``.
        """
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))


class NetworkRegressor(RegressorMixin, _BaseNetwork):
    __doc__ = f"""A sigmoid multi-layer perceptron regressor trained by ``nnfast.Network``.

    The output units are sigmoids too: each target column is mapped linearly from its
    training range onto [0.2, 0.8] for training, and ``predict`` maps the outputs back, so
    predictions lie within the training range widened by a third of it on either side.
    Several target columns are fitted by one network with one output each.

    Parameters
    ----------
{_COMMON_PARAMETERS.format(learning_rate=0.5, auto_numerator=50)}
    Attributes
    ----------
{_COMMON_ATTRIBUTES}
    See Also
    --------
    NetworkClassifier : The same network for classification.
    sklearn.neural_network.MLPRegressor : scikit-learn's, on which the parameters are modelled.

    Examples
    --------
    >>> from sklearn.datasets import make_regression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from nnfast.sklearn import NetworkRegressor
    >>> X, y = make_regression(n_samples=200, n_features=5, noise=5, random_state=0)
    >>> model = make_pipeline(StandardScaler(), NetworkRegressor(random_state=0)).fit(X, y)
    >>> model.score(X, y) > 0.9
    True
    """

    # learning_rate="auto" up to _AUTO_WIDTH units feeding the output layer.
    _auto_learning_rate = 0.5

    def fit(self, X, y):
        """Fits the network to X and the targets y.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training inputs; float32 is kept as float32 (with ``dtype=None``).
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
            Targets.

        Returns
        -------
        self : NetworkRegressor
            The fitted estimator.
        """
        X, y = validate_data(self, X, y, dtype=_FLOAT_DTYPES, multi_output=True,
                             y_numeric=True)
        self._y_is_1d = y.ndim == 1
        y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        low, high = y.min(axis=0), y.max(axis=0)
        span = high - low
        span[span == 0] = 1  # a constant column maps to _TARGET_LOW, and back
        self._target_offset = low
        self._target_scale = span / (1 - 2 * _TARGET_LOW)
        targets = _TARGET_LOW + (y - low) / self._target_scale
        return self._fit_network(X, targets)

    def predict(self, X):
        """Predicts the targets.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Inputs.

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_targets)
            Predictions, float32 if X is float32, else float64; shaped as the y given to
            ``fit``.
        """
        outputs = self._network_outputs(X)
        y = (outputs - _TARGET_LOW) * self._target_scale + self._target_offset
        y = y.astype(outputs.dtype, copy=False)  # float32 stays float32
        return y.ravel() if self._y_is_1d else y

    def __sklearn_tags__(self):
        """scikit-learn's tags, with multi-output regression declared."""
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


class _StoppingRule:
    """MLPClassifier's: converged after more than n_iter_no_change epochs in a row whose loss
    is not below the least loss so far by more than tol."""

    def __init__(self, tol, n_iter_no_change):
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.best = np.inf
        self.epochs_without_progress = 0
        self.converged = False

    def update(self, loss):
        """Takes an epoch's loss; returns whether training has converged."""
        if loss < self.best - self.tol:
            self.epochs_without_progress = 0
        else:
            self.epochs_without_progress += 1
        self.best = min(self.best, loss)
        self.converged = self.epochs_without_progress > self.n_iter_no_change
        return self.converged


def _report(verbose, epoch, loss, validation_loss=None):
    """Prints epoch 1, 1 + verbose, 1 + 2 * verbose, ...'s loss, as MLPClassifier words it."""
    if verbose and (epoch - 1) % verbose == 0:
        print(f"Iteration {epoch}, loss = {loss:.8f}"
              + ("" if validation_loss is None else f", validation loss = {validation_loss:.8f}"),
              flush=True)


def _draw_seed(random_state):
    """The Network seed for a random_state: an int is the seed itself."""
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state,
                                                                   (bool, np.bool_)):
        return int(random_state)
    return int(check_random_state(random_state).randint(_MAX_SEED))


def _class_index(outputs):
    """Column of the most active output; for one output, whether it exceeds 0.5."""
    if outputs.shape[1] == 1:
        return (outputs[:, 0] > 0.5).astype(np.intp)
    return outputs.argmax(axis=1)


def _copy_params(network):
    """Copies of the network's weights and biases (None without biases)."""
    biases = network.biases
    return ([w.copy() for w in network.weights],
            None if biases is None else [b.copy() for b in biases])


def _restore_params(network, params):
    """Writes saved parameters back through the network's views of its buffer."""
    weights, biases = params
    for view, saved in zip(network.weights, weights):
        view[...] = saved
    if biases is not None:
        for view, saved in zip(network.biases, biases):
            view[...] = saved
