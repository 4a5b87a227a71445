"""Optimizers a ``Network`` can train with: small frozen configurations, validated once.

Each is a description, not a running optimizer: the state an optimizer accumulates
(velocities, moments, step count, current learning rate) belongs to the network
(``Network.optimizer_state``) so that it can be resumed, copied, saved and pickled with it.
The arithmetic is scikit-learn's (``sklearn/neural_network/_stochastic_optimizers.py``) and
is written out in ``nnfast.reference``::

    GradientStep:  param -= learning_rate * G                         (the original's step)
    SGD:           v = momentum * v - lr * G
                   param += (momentum * v - lr * G) if nesterov else v
    Adam:          m = beta_1 * m + (1 - beta_1) * G;  v = beta_2 * v + (1 - beta_2) * G**2
                   lr_t = learning_rate * sqrt(1 - beta_2**t) / (1 - beta_1**t)
                   param += -lr_t * m / (sqrt(v) + epsilon)

Beyond scikit-learn, SGD and Adam take two options (``nnfast.reference`` writes them out):

- ``schedule="cosine"`` with ``epochs=E`` and ``warmup_epochs=W``: the rate of the epoch at
  position e (the epochs trained under the schedule so far, ``OptimizerState.epochs``) is
  ``nnfast.reference.cosine_rate(learning_rate, e, E, W)``, a linear warm-up then a cosine
  annealing to 0; for Adam it replaces ``learning_rate`` in lr_t.
- ``max_grad_norm=c``: each step's gradient G (every weight's and bias's, the L2 term
  included) is scaled by ``c / (||G|| + 1e-6)`` when that is below 1, as
  ``torch.nn.utils.clip_grad_norm_``, before the optimizer takes it.
"""

import dataclasses
import math
import numbers

import numpy as np

from ._kernels.codes import Schedule, names

__all__ = ["GradientStep", "SGD", "Adam", "SCHEDULES", "ADAM_SCHEDULES"]

# SGD learning-rate schedules, scikit-learn's names (its ``learning_rate`` parameter) and
# nnfast's "cosine", in the order of their codes (defined once, in nnfast/_kernels/codes.pxd).
SCHEDULES = names(Schedule)
# Adam's: scikit-learn's Adam keeps its rate; nnfast's may anneal it.
ADAM_SCHEDULES = ("constant", "cosine")


def _real(owner, name, value):
    """value as a finite float; bools and non-numbers are a TypeError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}: {name} must be a real number, got "
                        f"{type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{owner}: {name} must be finite, got {value}")
    return value


def _in_range(owner, name, value, low, high, high_closed):
    """Checks low <= value < high (or <= high when high_closed); high None is unbounded."""
    above_high = high is not None and (value > high if high_closed else value >= high)
    if value < low or above_high:
        bracket = "]" if high_closed else ")"
        upper = "inf" if high is None else high
        raise ValueError(f"{owner}: {name} must be in [{low}, {upper}{bracket}, got {value}")


def _positive(owner, name, value):
    if value <= 0:
        raise ValueError(f"{owner}: {name} must be > 0, got {value}")


def _count(owner, name, value, minimum):
    """value as an int >= minimum; bools, floats and non-numbers are a TypeError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{owner}: {name} must be an integer, got "
                        f"{type(value).__name__} {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{owner}: {name} must be >= {minimum}, got {value}")
    return value


def _repr(instance, added):
    """The dataclass repr, without the fields in ``added`` (nnfast's beyond scikit-learn's)
    that are at their defaults: the reprs of scikit-learn's configurations stay as they
    were."""
    shown = [f"{field.name}={getattr(instance, field.name)!r}"
             for field in dataclasses.fields(instance)
             if field.name not in added or getattr(instance, field.name) != field.default]
    return f"{type(instance).__name__}({', '.join(shown)})"


def _check_extensions(instance, owner, schedules):
    """Checks and stores the cosine schedule's and the clipping's fields of SGD / Adam."""
    if not isinstance(instance.schedule, str):
        raise TypeError(f"{owner}: schedule must be a string, one of {schedules}, got "
                        f"{instance.schedule!r}")
    if instance.schedule not in schedules:
        raise ValueError(f"{owner}: unknown schedule {instance.schedule!r}; choose one of "
                         f"{schedules}")
    if instance.schedule == "cosine":
        if instance.epochs is None:
            raise ValueError(f"{owner}: schedule 'cosine' needs epochs, the number of epochs "
                             "over which the rate goes to 0")
        epochs = _count(owner, "epochs", instance.epochs, 1)
        warmup = _count(owner, "warmup_epochs", instance.warmup_epochs, 0)
        if warmup >= epochs:
            raise ValueError(f"{owner}: warmup_epochs must be < epochs ({epochs}), got "
                             f"{warmup}")
        _set(instance, "epochs", epochs)
        _set(instance, "warmup_epochs", warmup)
    elif instance.epochs is not None or instance.warmup_epochs != 0:
        raise ValueError(f"{owner}: epochs and warmup_epochs belong to schedule 'cosine', "
                         f"got schedule {instance.schedule!r} with epochs={instance.epochs!r}, "
                         f"warmup_epochs={instance.warmup_epochs!r}")
    if instance.max_grad_norm is not None:
        max_grad_norm = _real(owner, "max_grad_norm", instance.max_grad_norm)
        _positive(owner, "max_grad_norm", max_grad_norm)
        _set(instance, "max_grad_norm", max_grad_norm)


def _set(instance, name, value):
    # Frozen dataclasses forbid assignment; __post_init__ stores the coerced values this way.
    object.__setattr__(instance, name, value)


@dataclasses.dataclass(frozen=True)
class GradientStep:
    """The original's step: ``param -= learning_rate * G`` with no state.

    With ``Network``'s defaults (output ``"original"``, reduction ``"sum"``) this is the 2015
    program's ``W += learning_rate * (l.T @ delta)``.

    Parameters
    ----------
    learning_rate : float
        Any finite number (0 leaves the weights unchanged; the original uses 1.0).
    """

    learning_rate: float = 1.0

    def __post_init__(self):
        _set(self, "learning_rate", _real("GradientStep", "learning_rate", self.learning_rate))


@dataclasses.dataclass(frozen=True, repr=False)
class SGD:
    """Stochastic gradient descent with (Nesterov) momentum, as scikit-learn's ``sgd`` solver.

    Parameters
    ----------
    learning_rate : float > 0
        The initial rate (scikit-learn's ``learning_rate_init``).
    momentum : float in [0, 1]
    nesterov : bool
        Nesterov's momentum (scikit-learn's ``nesterovs_momentum``).
    schedule : {"constant", "invscaling", "adaptive", "cosine"}
        ``"invscaling"``: after each epoch, ``lr = learning_rate / (samples_seen + 1) **
        power_t``; ``"adaptive"`` and ``"constant"`` keep the rate (the caller lowers it for
        ``"adaptive"`` through ``fit(learning_rate=...)``, as scikit-learn's estimator does);
        ``"cosine"``: each epoch's rate is :func:`nnfast.reference.cosine_rate` of the
        epochs trained so far.
    power_t : float >= 0
        Exponent of ``"invscaling"``.
    epochs : int >= 1 or None
        The ``"cosine"`` schedule's length in epochs (required with it, None otherwise).
    warmup_epochs : int >= 0
        The ``"cosine"`` schedule's linear warm-up, fewer than ``epochs``.
    max_grad_norm : float > 0 or None
        Clip each step's gradient to this global L2 norm (see the module notes); None never
        clips.
    """

    learning_rate: float = 0.001
    momentum: float = 0.9
    nesterov: bool = True
    schedule: str = "constant"
    power_t: float = 0.5
    epochs: object = None
    warmup_epochs: int = 0
    max_grad_norm: object = None

    def __post_init__(self):
        learning_rate = _real("SGD", "learning_rate", self.learning_rate)
        _positive("SGD", "learning_rate", learning_rate)
        momentum = _real("SGD", "momentum", self.momentum)
        _in_range("SGD", "momentum", momentum, 0.0, 1.0, high_closed=True)
        if not isinstance(self.nesterov, (bool, np.bool_)):
            raise TypeError(f"SGD: nesterov must be True or False, got {self.nesterov!r}")
        _check_extensions(self, "SGD", SCHEDULES)
        power_t = _real("SGD", "power_t", self.power_t)
        _in_range("SGD", "power_t", power_t, 0.0, None, high_closed=False)
        _set(self, "learning_rate", learning_rate)
        _set(self, "momentum", momentum)
        _set(self, "nesterov", bool(self.nesterov))
        _set(self, "power_t", power_t)

    def __repr__(self):
        return _repr(self, ("epochs", "warmup_epochs", "max_grad_norm"))


@dataclasses.dataclass(frozen=True, repr=False)
class Adam:
    """Adam with bias correction, as scikit-learn's ``adam`` solver.

    Parameters
    ----------
    learning_rate : float > 0
        scikit-learn's ``learning_rate_init``.
    beta_1, beta_2 : float in [0, 1)
        Decay rates of the first and second moment estimates.
    epsilon : float > 0
        Added to ``sqrt(v)`` in the denominator.
    schedule : {"constant", "cosine"}
        ``"constant"`` is scikit-learn's Adam; ``"cosine"`` anneals the rate that lr_t
        starts from, epoch by epoch (:func:`nnfast.reference.cosine_rate`).
    epochs, warmup_epochs, max_grad_norm
        As for :class:`SGD`.
    """

    learning_rate: float = 0.001
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-8
    schedule: str = "constant"
    epochs: object = None
    warmup_epochs: int = 0
    max_grad_norm: object = None

    def __post_init__(self):
        learning_rate = _real("Adam", "learning_rate", self.learning_rate)
        _positive("Adam", "learning_rate", learning_rate)
        beta_1 = _real("Adam", "beta_1", self.beta_1)
        _in_range("Adam", "beta_1", beta_1, 0.0, 1.0, high_closed=False)
        beta_2 = _real("Adam", "beta_2", self.beta_2)
        _in_range("Adam", "beta_2", beta_2, 0.0, 1.0, high_closed=False)
        epsilon = _real("Adam", "epsilon", self.epsilon)
        _positive("Adam", "epsilon", epsilon)
        _check_extensions(self, "Adam", ADAM_SCHEDULES)
        _set(self, "learning_rate", learning_rate)
        _set(self, "beta_1", beta_1)
        _set(self, "beta_2", beta_2)
        _set(self, "epsilon", epsilon)

    def __repr__(self):
        return _repr(self, ("schedule", "epochs", "warmup_epochs", "max_grad_norm"))
