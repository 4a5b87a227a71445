"""Fitted models moved between nnfast's MLP estimators and scikit-learn's own.

``to_sklearn`` builds ``sklearn.neural_network.MLPClassifier`` / ``MLPRegressor`` with the
nnfast estimator's parameters and fitted state; ``from_sklearn`` reads a fitted scikit-learn
MLP into a ``FittedState`` that the nnfast estimator loads. The state includes what training
continues from: the weights, the records (``n_iter_``, ``t_``, ``loss_curve_``, the best loss
or validation score and the count of epochs without progress, which early stopping and the
stopping rule read), the label binarizer and the stochastic optimizer's state (SGD's current
rate and velocities, Adam's step and moments), so that ``partial_fit`` or a warm-start
``fit`` on either side continues where the other stopped.

scikit-learn keeps part of that state in private attributes (``_label_binarizer``,
``_optimizer``, ``_no_improvement_count``, ``_best_coefs``, ``_best_intercepts``); they are
read and written here, by their 1.9 names, and nowhere else in nnfast.

nnfast options that scikit-learn's MLP lacks are refused by name (``NOT_IN_SKLEARN``).
"""

import copy
import dataclasses

import numpy as np
from sklearn.neural_network import MLPClassifier as SkMLPClassifier
from sklearn.neural_network import MLPRegressor as SkMLPRegressor
from sklearn.neural_network._stochastic_optimizers import AdamOptimizer, SGDOptimizer
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted

from .._training.layout import optimizer_state_views, pack_params, param_count, param_views
from .._training.plan import OptimizerState, optimizer_name
from ..optimizers import SGD, Adam


def _sklearn_options(name):
    """The strings scikit-learn's MLPRegressor accepts for the parameter ``name``."""
    for constraint in SkMLPRegressor._parameter_constraints[name]:
        if isinstance(constraint, StrOptions):
            return frozenset(constraint.options)
    raise AssertionError(f"scikit-learn's MLP has no string options for {name}")


def _one_of(options):
    return lambda value: isinstance(value, str) and value in options, f"one of {sorted(options)}"


# The one table of what scikit-learn's MLP cannot represent: nnfast parameter -> (test of a
# value scikit-learn can hold, what it can hold), and the parameter's default, for options
# that estimators without them (an older nnfast) do not have. scikit-learn's own options are
# read from its constraints.
NOT_IN_SKLEARN = {
    "activation": (*_one_of(_sklearn_options("activation")), "relu"),
    "loss": (*_one_of(_sklearn_options("loss")), "squared_error"),
    "learning_rate": (*_one_of(_sklearn_options("learning_rate")), "constant"),
    "class_weight": (lambda v: v is None, "None", None),
    "dropout": (lambda v: not np.any(v), "0", 0.0),  # one rate, or one per hidden layer
    "max_grad_norm": (lambda v: v is None, "None", None),
    "scoring": (lambda v: v is None, "None", None),
}
# nnfast parameters scikit-learn has no place for that change nothing it computes: the
# kernel's threads, and settings read only with an option the table above refuses.
DROPPED = frozenset({"n_threads", "huber_delta", "quantile", "warmup_fraction"})

# Fitted attributes both estimators have under the same names (those the model has are
# copied); coefs_ and intercepts_ are copied apart, with the best weights that may alias them.
FITTED_ATTRIBUTES = ("classes_", "n_outputs_", "n_layers_", "out_activation_",
                     "n_features_in_", "feature_names_in_", "n_iter_", "t_", "loss_",
                     "loss_curve_", "best_loss_", "validation_scores_",
                     "best_validation_score_")


@dataclasses.dataclass
class FittedState:
    """A fitted MLP's state, whichever library holds it.

    Attributes
    ----------
    attributes : dict
        ``FITTED_ATTRIBUTES`` the model has, by name.
    coefs, intercepts : list of ndarray
        The weights.
    best_coefs, best_intercepts : list of ndarray or None
        The best epoch's weights kept for early stopping; the very list ``coefs`` /
        ``intercepts`` where the model aliases them (scikit-learn's state after early
        stopping, which its next warm fit trains in place).
    label_binarizer : LabelBinarizer or None
        The classifier's.
    no_improvement_count : int or None
        Epochs in a row without progress.
    optimizer : nnfast.optimizers.SGD, Adam or None
        The stochastic optimizer that ``partial_fit`` continues with.
    optimizer_state : OptimizerState or None
        Its state, in nnfast's layout (``nnfast._training.layout``).
    """

    attributes: dict
    coefs: list
    intercepts: list
    best_coefs: object = None
    best_intercepts: object = None
    label_binarizer: object = None
    no_improvement_count: object = None
    optimizer: object = None
    optimizer_state: object = None


def _copy_weights(live, best):
    """Copies of the live weights and of the best ones, the same list where they were."""
    copied = [np.array(w, copy=True) for w in live]
    if best is None:
        return copied, None
    return copied, copied if best is live else [np.array(w, copy=True) for w in best]


def check_representable(params):
    """Raises a ValueError naming the first nnfast option whose value scikit-learn's MLP
    cannot represent (``NOT_IN_SKLEARN``), or an option it does not know at all."""
    sklearn_names = SkMLPRegressor().get_params().keys() | SkMLPClassifier().get_params().keys()
    for name, (representable, accepted, default) in NOT_IN_SKLEARN.items():
        value = params.get(name, default)
        if not representable(value):
            raise ValueError(f"to_sklearn: scikit-learn's MLP has no {name}={value!r} (it "
                             f"takes {name} {accepted}); this model cannot be converted")
    unknown = sorted(set(params) - sklearn_names - DROPPED - NOT_IN_SKLEARN.keys())
    if unknown:
        raise ValueError(f"to_sklearn: scikit-learn's MLP has no option {unknown[0]!r}; this "
                         "model cannot be converted")


def to_sklearn(kind, params, state):
    """scikit-learn's estimator (``kind``: "classifier" or "regressor") with ``params``
    (the nnfast estimator's ``get_params()``) and the fitted ``state`` (a ``FittedState``)."""
    check_representable(params)
    cls = SkMLPClassifier if kind == "classifier" else SkMLPRegressor
    names = cls().get_params().keys()
    # Deep copies, as scikit-learn's clone makes them: a RandomState given as random_state
    # goes on from its current state without being shared.
    model = cls(**{name: copy.deepcopy(value) for name, value in params.items()
                   if name in names})
    for name, value in state.attributes.items():
        setattr(model, name, copy.deepcopy(value))
    model.coefs_, model._best_coefs = _copy_weights(state.coefs, state.best_coefs)
    model.intercepts_, model._best_intercepts = _copy_weights(state.intercepts,
                                                              state.best_intercepts)
    if model._best_coefs is None:
        del model._best_coefs
    if model._best_intercepts is None:
        del model._best_intercepts
    if state.label_binarizer is not None:
        model._label_binarizer = copy.deepcopy(state.label_binarizer)
    if state.no_improvement_count is not None:
        model._no_improvement_count = state.no_improvement_count
    if state.optimizer_state is not None:
        model._optimizer = _sklearn_optimizer(state.optimizer, state.optimizer_state,
                                              model.coefs_, model.intercepts_)
    return model


def _sklearn_optimizer(optimizer, state, coefs, intercepts):
    """scikit-learn's optimizer object holding nnfast's optimizer configuration and state."""
    sizes = [coefs[0].shape[0]] + [w.shape[1] for w in coefs]
    n_params = param_count(sizes, True)
    blocks = optimizer_state_views(state.values, optimizer_name(optimizer), n_params)

    def as_lists(flat):
        # scikit-learn's order: every weight matrix, then every bias vector.
        weights, biases = param_views(flat, sizes, True)
        return [w.copy() for w in weights] + [b.copy() for b in biases]

    params = list(coefs) + list(intercepts)
    if isinstance(optimizer, SGD):
        result = SGDOptimizer(params, optimizer.learning_rate, optimizer.schedule,
                              optimizer.momentum, optimizer.nesterov, optimizer.power_t)
        result.velocities = as_lists(blocks["velocity"])
        result.learning_rate = state.learning_rate
        return result
    result = AdamOptimizer(params, optimizer.learning_rate, optimizer.beta_1,
                           optimizer.beta_2, optimizer.epsilon)
    result.t = state.step
    result.ms, result.vs = as_lists(blocks["m"]), as_lists(blocks["v"])
    if result.t > 0:
        # The rate of Adam's last step, which scikit-learn keeps (it reads it nowhere).
        result.learning_rate = (optimizer.learning_rate
                                * np.sqrt(1 - optimizer.beta_2 ** result.t)
                                / (1 - optimizer.beta_1 ** result.t))
    return result


def from_sklearn(kind, fitted):
    """(parameters, ``FittedState``) of a fitted scikit-learn MLP of the ``kind``
    ("classifier" or "regressor") that an nnfast estimator loads."""
    cls = SkMLPClassifier if kind == "classifier" else SkMLPRegressor
    if not isinstance(fitted, cls):
        raise TypeError(f"from_sklearn takes a fitted sklearn.neural_network.{cls.__name__}, "
                        f"got {type(fitted).__module__}.{type(fitted).__name__}")
    check_is_fitted(fitted, "coefs_")
    attributes = {name: copy.deepcopy(getattr(fitted, name)) for name in FITTED_ATTRIBUTES
                  if hasattr(fitted, name)}
    coefs, best_coefs = _copy_weights(fitted.coefs_, getattr(fitted, "_best_coefs", None))
    intercepts, best_intercepts = _copy_weights(fitted.intercepts_,
                                                getattr(fitted, "_best_intercepts", None))
    optimizer, state = _nnfast_optimizer(fitted)
    label_binarizer = getattr(fitted, "_label_binarizer", None)
    return copy.deepcopy(fitted.get_params()), FittedState(
        attributes, coefs, intercepts, best_coefs, best_intercepts,
        copy.deepcopy(label_binarizer), getattr(fitted, "_no_improvement_count", None),
        optimizer, state)


def _nnfast_optimizer(fitted):
    """(nnfast optimizer configuration, OptimizerState) of scikit-learn's ``_optimizer``, or
    (None, None) for a model without one (fitted by L-BFGS)."""
    sk = getattr(fitted, "_optimizer", None)
    if sk is None:
        return None, None
    n_layers = len(fitted.coefs_)
    dtype = fitted.coefs_[0].dtype

    def packed(arrays):
        return pack_params(list(arrays[:n_layers]), list(arrays[n_layers:])).astype(dtype)

    samples_seen = getattr(fitted, "t_", 0)
    if isinstance(sk, SGDOptimizer):
        optimizer = SGD(learning_rate=sk.learning_rate_init, momentum=sk.momentum,
                        nesterov=sk.nesterov, schedule=sk.lr_schedule, power_t=sk.power_t)
        return optimizer, OptimizerState(packed(sk.velocities), 0, samples_seen,
                                         sk.learning_rate)
    if isinstance(sk, AdamOptimizer):
        optimizer = Adam(learning_rate=sk.learning_rate_init, beta_1=sk.beta_1,
                         beta_2=sk.beta_2, epsilon=sk.epsilon)
        values = np.concatenate([packed(sk.ms), packed(sk.vs)])
        return optimizer, OptimizerState(values, sk.t, samples_seen, sk.learning_rate_init)
    raise TypeError(f"from_sklearn: unknown scikit-learn optimizer {type(sk).__name__}")
