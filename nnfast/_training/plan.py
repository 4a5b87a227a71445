"""What one fit computes, decided once per fit: ``FitPlan``, the integer codes, ``OptimizerState``.

``Network.fit`` turns the network's model options and the fit's arguments into one frozen
``FitPlan`` and hands it to a backend's ``make_runner`` (``nnfast.reference`` for
``backend="numpy"``, ``nnfast._kernels.runner`` for the kernel). The plan names each option
by its code: the codes are defined once, in ``nnfast/_kernels/codes.pxd``, which the kernel
builds cimport and ``nnfast._kernels.codes`` exports as enums; the names below are read from
those enums.

The runner contract
-------------------
``make_runner(plan, X, y, sample_weight, n_threads, check_every)`` returns
``run(params, state, n_epochs, orders) -> (epoch_losses, epochs_done, diverged)``:

- ``params`` (flat, ``nnfast._training.layout``) and ``state`` (``OptimizerState``) are updated in
  place; ``Network`` passes copies and keeps them only when the fit succeeds.
- ``orders`` is None (rows as stored) or an ``(n_epochs, n_rows)`` intp array of row orders.
- ``epoch_losses`` (float64, n_epochs): the first ``epochs_done`` are valid; when
  ``diverged``, the epoch at index ``epochs_done`` produced a non-finite loss.
- The optimizer state moves as scikit-learn's: per batch, Adam's ``state.step += 1``; at the
  end of every epoch ``state.samples_seen += n_rows`` and, for SGD with ``"invscaling"``,
  ``state.learning_rate = plan.learning_rate / (samples_seen + 1) ** power_t``. SGD and the
  plain step use ``state.learning_rate`` as the current rate; Adam uses
  ``plan.learning_rate`` as its initial rate.
- With the ``"cosine"`` schedule (SGD or Adam), each epoch starts with
  ``state.learning_rate = cosine_rate(plan.learning_rate, state.epochs, E, W)``
  (``nnfast.reference.cosine_rate``; E, W: the optimizer's ``epochs``, ``warmup_epochs``) and
  ends with ``state.epochs += 1``; Adam's lr_t then starts from ``state.learning_rate``.
  ``state.epochs`` moves only under that schedule.
- With ``max_grad_norm`` (SGD or Adam), each step's whole gradient G is clipped
  (``nnfast.reference.clip_grad_norm``) before the optimizer takes it.

``make_loss_gradient(plan, X, y, sample_weight, n_threads)`` returns
``evaluate(params, grad) -> loss``: the full-batch loss and gradient G at params, as
scikit-learn's ``_backprop``, with G written to ``grad`` (both flat, params layout, the plan's
dtype; params only read). Everything that does not depend on params (the kernel's config, the
workspace for all rows) is built once, for optimizers that evaluate many times (L-BFGS).
``loss_gradient(plan, params, X, y, sample_weight, n_threads) -> (loss, grad_flat)`` is one
such evaluation.

Losses
------
The data loss of a batch is scikit-learn's loss of the output (squared_loss for
``"identity"``, binary_log_loss for ``"logistic"``, log_loss for ``"softmax"``,
poisson_loss for ``"exp"``), a weighted average over rows; with ``plan.loss`` (identity
output) the regression loss of that name (``nnfast.reference.REGRESSION_LOSSES``:
absolute_error, huber, quantile, on squared_loss's conventions without its 1/2; the output
delta is each element's derivative, as squared error's is a - y). For ``"original"`` it is
the squared error whose gradient the original's delta is,
``0.5 * np.average((y - a) ** 2, weights=w, axis=0).sum()``. The batch loss adds
``0.5 * alpha * sum_k ||W_k||^2 / denom`` (denom = sum of weights, or rows, for
``"mean"``; 1 for ``"sum"``). An epoch's loss is ``sum(batch_loss * batch_rows) / n_rows``
(scikit-learn's ``loss_curve_``), except for ``"original"``, whose epoch loss is the
original's reported error: ``mean |y - a|`` over the epoch's forward passes.
"""

import dataclasses

import numpy as np

from .._kernels.codes import Activation, Loss, Optimizer, Output, Reduction, Schedule, names
from ..optimizers import SCHEDULES, SGD, Adam, GradientStep
from .layout import optimizer_state_size, param_count

# ---------------------------------------------------------------------------------- codes
# Option names in code order (the code of a name is its index), read from the enums of
# nnfast._kernels.codes, whose one definition (codes.pxd) the kernel builds cimport.
HIDDEN_ACTIVATIONS = names(Activation)
OUTPUTS = names(Output)
OPTIMIZERS = names(Optimizer)
REDUCTIONS = names(Reduction)
# The regression losses an identity output may take instead of its squared error (code 0,
# "output", is the output's own loss: a network's loss=None).
LOSSES = names(Loss)[1:]
# SGD's schedules are named by nnfast.optimizers (from the same enum).
assert SCHEDULES == names(Schedule)
# Hidden activations whose derivative the kernel cannot compute from their output (neither is
# monotonic): its forward pass keeps their derivative (nnfast._training.layout's "slopes").
SLOPE_ACTIVATIONS = ("gelu", "silu")


def is_original_model(activations, output, reduction, alpha):
    """Whether these model options are the original's (sigmoid layers, its output and loss,
    summed updates, no penalty): the one definition the fit, the network and its file format
    use; the optimizer and sample weights are theirs to add."""
    return (output == "original" and reduction == "sum" and alpha == 0
            and all(name == "logistic" for name in activations))


def optimizer_name(optimizer):
    """"plain", "sgd" or "adam" for an optimizer configuration."""
    if isinstance(optimizer, GradientStep):
        return "plain"
    if isinstance(optimizer, SGD):
        return "sgd"
    if isinstance(optimizer, Adam):
        return "adam"
    raise TypeError(f"optimizer must be nnfast.optimizers.GradientStep, SGD or Adam, got "
                    f"{type(optimizer).__name__}")


@dataclasses.dataclass(frozen=True)
class FitPlan:
    """Everything one fit computes, fixed for the whole fit.

    Attributes
    ----------
    sizes : tuple of int
    bias : bool
    dtype : numpy.dtype (float32 or float64)
    activations : tuple of str
        One of ``HIDDEN_ACTIVATIONS`` per hidden layer (``len(sizes) - 2`` of them).
    output : str
        One of ``OUTPUTS``.
    reduction : str
        ``"sum"`` (the original: G = a.T @ d + alpha * W) or ``"mean"`` (scikit-learn's:
        divided by the sum of the batch's sample weights, or its row count).
    alpha : float
        L2 penalty.
    optimizer : GradientStep, SGD or Adam
    learning_rate : float
        The initial rate of this fit (Adam's and invscaling's ``learning_rate_init``).
    batch_size : int
        Rows per step (<= n_rows; the last batch of an epoch holds the remainder).
    shuffled : bool
        Whether each epoch visits the rows in a given order (``orders``).
    weighted : bool
        Whether sample weights are given.
    loss : str or None
        One of ``LOSSES`` (identity output), or None for the output's own loss.
    huber_delta, quantile : float
        The parameters of the losses "huber" and "quantile".
    dropout : tuple of float
        Each hidden layer's dropout rate in [0, 1) (empty: none).
    dropout_seed : int or None
        The seed of this fit's dropout masks (``nnfast.reference.dropout_masks``), in
        [0, 2**63): the caller's, or drawn by the fit's transaction from the network's random
        state when a rate is above 0.
    """

    sizes: tuple
    bias: bool
    dtype: np.dtype
    activations: tuple
    output: str
    reduction: str
    alpha: float
    optimizer: object
    learning_rate: float
    batch_size: int
    shuffled: bool
    weighted: bool
    loss: object = None
    huber_delta: float = 1.0
    quantile: float = 0.5
    dropout: tuple = ()
    dropout_seed: object = None  # an int once the fit's transaction has drawn it

    @property
    def is_original(self):
        """Whether this fit is the original's arithmetic, so the fused fast kernel applies."""
        return (is_original_model(self.activations, self.output, self.reduction, self.alpha)
                and not self.weighted and not self.drops
                and isinstance(self.optimizer, GradientStep))

    @property
    def n_params(self):
        return param_count(self.sizes, self.bias)

    @property
    def drops(self):
        """Whether the fit applies dropout to some hidden layer."""
        return any(rate > 0 for rate in self.dropout)

    @property
    def keeps_slopes(self):
        """Whether the kernel's forward pass keeps hidden units' derivatives in the
        workspace's "slopes": for gelu and silu, whose derivative is not a function of their
        output, and for the units dropout masks."""
        return self.drops or any(name in SLOPE_ACTIVATIONS for name in self.activations)

    @property
    def loss_parameter(self):
        """The parameter of the plan's regression loss (Huber's delta, the quantile), or
        None."""
        return {"huber": self.huber_delta, "quantile": self.quantile}.get(self.loss)

    @property
    def schedule(self):
        """The optimizer's learning-rate schedule ("constant" for the plain step)."""
        return getattr(self.optimizer, "schedule", "constant")

    @property
    def max_grad_norm(self):
        """The optimizer's gradient clipping norm, or None."""
        return getattr(self.optimizer, "max_grad_norm", None)

    @property
    def optimizer_name(self):
        return optimizer_name(self.optimizer)

    @property
    def state_size(self):
        """Values of the optimizer state array
        (``nnfast._training.layout.optimizer_state_size``)."""
        return optimizer_state_size(self.optimizer_name, self.n_params)

    # Codes for the kernel.
    @property
    def activation_codes(self):
        """intp array: the code of each hidden layer's activation."""
        return np.array([HIDDEN_ACTIVATIONS.index(a) for a in self.activations], dtype=np.intp)

    @property
    def output_code(self):
        return Output(OUTPUTS.index(self.output))

    @property
    def reduction_code(self):
        return Reduction(REDUCTIONS.index(self.reduction))

    @property
    def optimizer_code(self):
        return Optimizer(OPTIMIZERS.index(self.optimizer_name))

    @property
    def schedule_code(self):
        """The SGD or Adam schedule's code (constant for the plain step)."""
        return Schedule(SCHEDULES.index(self.schedule))

    @property
    def loss_code(self):
        return Loss(0 if self.loss is None else LOSSES.index(self.loss) + 1)


class OptimizerState:
    """The mutable state of an optimizer between steps, owned by the network.

    Attributes
    ----------
    values : ndarray, the network's dtype
        SGD: the P velocities; Adam: the P first moments then the P second moments; plain:
        empty. Params layout (``nnfast._training.layout``) within each block.
    step : int
        Adam's update count t.
    samples_seen : int
        Rows trained on over the epochs so far (scikit-learn's ``t_``).
    learning_rate : float
        The current learning rate (SGD's, after schedules; the plain step's; with
        ``"cosine"`` the last epoch's, Adam's too).
    epochs : int
        The ``"cosine"`` schedule's position: the epochs trained under it (0 otherwise).
    """

    __slots__ = ("values", "step", "samples_seen", "learning_rate", "epochs")

    def __init__(self, values, step=0, samples_seen=0, learning_rate=0.0, epochs=0):
        self.values = values
        self.step = int(step)
        self.samples_seen = int(samples_seen)
        self.learning_rate = float(learning_rate)
        self.epochs = int(epochs)

    @classmethod
    def fresh(cls, plan):
        """Zero velocities / moments, no steps, the plan's initial learning rate."""
        return cls(np.zeros(plan.state_size, dtype=plan.dtype), 0, 0, plan.learning_rate)

    def copy(self):
        return OptimizerState(self.values.copy(), self.step, self.samples_seen,
                              self.learning_rate, self.epochs)

    def __getstate__(self):
        return (self.values, self.step, self.samples_seen, self.learning_rate, self.epochs)

    def __setstate__(self, state):
        # Pickles of nnfast before the cosine schedule hold four values.
        self.values, self.step, self.samples_seen, self.learning_rate = state[:4]
        self.epochs = state[4] if len(state) > 4 else 0

    def __eq__(self, other):
        if not isinstance(other, OptimizerState):
            return NotImplemented
        return (self.step == other.step and self.samples_seen == other.samples_seen
                and self.learning_rate == other.learning_rate and self.epochs == other.epochs
                and self.values.dtype == other.values.dtype
                and np.array_equal(self.values, other.values))

    __hash__ = None

    def __repr__(self):
        epochs = f", epochs={self.epochs}" if self.epochs else ""
        return (f"OptimizerState(values={self.values.size} x {self.values.dtype}, "
                f"step={self.step}, samples_seen={self.samples_seen}, "
                f"learning_rate={self.learning_rate!r}{epochs})")
