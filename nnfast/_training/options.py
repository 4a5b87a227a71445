"""A network's model options as a fit reads them: checked and normalised
(``check_model_options``), and turned into the ``FitPlan`` of one fit (``fit_plan``).

The options are public attributes that callers may assign between fits (``activations``,
``output``, ``optimizer``, ``alpha``, ``reduction``, ``loss``, ``huber_delta``, ``quantile``,
``optimizer_state``), so every entry
point checks them again before it uses them.
"""

import dataclasses


from .._validation import (check_activations, check_alpha, check_bool, check_choice,
                           check_dropout, check_int,
                           check_learning_rate, check_loss_options)
from ..optimizers import SGD, GradientStep
from .plan import (HIDDEN_ACTIVATIONS, LOSSES, OUTPUTS, REDUCTIONS, FitPlan, OptimizerState,
                   optimizer_name)
from .transaction import locks_of


def check_model_options(network):
    """Validates and normalises a network's model options: all of them are checked before
    any is written back (under the state lock, beside the weights), so a bad option changes
    nothing."""
    activations = check_activations(network.activations, len(network.sizes) - 2,
                                    HIDDEN_ACTIVATIONS)
    output = check_choice(network.output, "output", OUTPUTS)
    if output == "softmax" and network.sizes[-1] < 2:
        raise ValueError("output 'softmax' needs at least 2 output units (a softmax of "
                         "one unit is always 1); use output='logistic' for one")
    optimizer_name(network.optimizer)  # TypeError for anything but the three optimizers
    alpha = check_alpha(network.alpha)
    reduction = (("sum" if output == "original" else "mean") if network.reduction is None
                 else check_choice(network.reduction, "reduction", REDUCTIONS))
    state = network.optimizer_state
    if state is not None and not isinstance(state, OptimizerState):
        raise TypeError(f"optimizer_state must be an OptimizerState or None, got "
                        f"{type(state).__name__}")
    loss, huber_delta, quantile = check_loss_options(network.loss, network.huber_delta,
                                                     network.quantile, output, LOSSES)
    dropout = check_dropout(network.dropout, len(network.sizes) - 2)
    with locks_of(network)[1]:
        network.activations, network.output = activations, output
        network.alpha, network.reduction = alpha, reduction
        network.loss, network.huber_delta, network.quantile = loss, huber_delta, quantile
        network.dropout = dropout


def fit_plan(network, learning_rate, resume, batch_size, shuffled, weighted):
    """The FitPlan of a fit of the network with these (validated) arguments, on options that
    ``check_model_options`` has checked."""
    initial_rate = network.optimizer.learning_rate
    # An SGD rate given on resume replaces the current rate only (FitTransaction); the
    # initial rate, which "invscaling" divides, stays the optimizer's.
    if learning_rate is not None and not (resume and isinstance(network.optimizer, SGD)):
        initial_rate = learning_rate
    initial_rate = check_learning_rate(initial_rate, network.dtype)
    return FitPlan(sizes=network.sizes, bias=network.bias, dtype=network.dtype,
                   activations=network.activations, output=network.output,
                   reduction=network.reduction, alpha=network.alpha,
                   optimizer=network.optimizer, learning_rate=initial_rate,
                   batch_size=batch_size, shuffled=shuffled, weighted=weighted,
                   loss=network.loss, huber_delta=network.huber_delta,
                   quantile=network.quantile, dropout=network.dropout)


@dataclasses.dataclass(frozen=True)
class FitArguments:
    """The arguments every fit entry point shares (``Network.fit``, ``nnfast.dask.fit``),
    validated: see ``Network.fit``."""

    iterations: int
    learning_rate: object  # float or None
    verbose: int
    callback: object
    progress: bool
    resume: bool
    report_every: object  # int or None


def check_fit_arguments(network, *, iterations, learning_rate, verbose, callback, progress,
                        resume, report_every):
    """``FitArguments`` from a fit's arguments, each checked with a message naming it."""
    iterations = check_int(iterations, "iterations", minimum=0)
    if learning_rate is not None:
        learning_rate = check_learning_rate(learning_rate, network.dtype)
        if not isinstance(network.optimizer, GradientStep) and learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0 for {type(network.optimizer).__name__}"
                             f", got {learning_rate}")
    verbose = check_int(verbose, "verbose", minimum=0)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    progress = check_bool(progress, "progress")
    resume = check_bool(resume, "resume")
    if report_every is not None:
        report_every = check_int(report_every, "report_every", minimum=1)
    return FitArguments(iterations, learning_rate, verbose, callback, progress, resume,
                        report_every)
