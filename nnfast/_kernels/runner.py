"""The compiled backend of the general path: the runner contract over ``nnfast._kernels``.

``Network`` drives every backend of the general path (any model but the original's, which
keeps its own fused kernel) through the functions of the contract in ``nnfast._training.plan``:
``make_runner``, ``make_loss_gradient`` and ``loss_gradient``. Here they translate a
``FitPlan`` into the kernel's ``TrainConfig`` (the fit's fixed settings, with the plan's
integer codes, defined once in ``codes.pxd``), allocate the workspace once per fit
(``nnfast._training.layout``) and hand whole chunks of epochs to ``_kernels.fit``
(``fit_sparse`` for a CSR X), with the network's ``OptimizerState``, whose values and counters
the kernel updates in place, or whole-batch evaluations to ``_kernels.loss_gradient``, which
run without the GIL. ``nnfast.reference`` is the NumPy backend with the same contract.
"""

import numpy as np

from .._training.layout import allocate_general_workspace
from .._training.threads import takes_team_step
from .._training.sparse import is_sparse
from . import kernels as _kernels

__all__ = ["make_runner", "make_loss_gradient", "loss_gradient"]


def _config(plan, batch_size, n_threads, check_every):
    """The kernel's TrainConfig for a plan: the fit's fixed settings (the optimizer's counters
    travel on the OptimizerState the kernel is given)."""
    optimizer = plan.optimizer
    return _kernels.TrainConfig(
        sizes=plan.sizes,
        bias=plan.bias,
        activations=plan.activation_codes,
        output=plan.output_code,
        reduction=plan.reduction_code,
        alpha=plan.alpha,
        optimizer=plan.optimizer_code,
        schedule=plan.schedule_code,
        learning_rate_init=plan.learning_rate,
        momentum=getattr(optimizer, "momentum", 0.0),
        nesterov=getattr(optimizer, "nesterov", False),
        power_t=getattr(optimizer, "power_t", 0.5),
        beta_1=getattr(optimizer, "beta_1", 0.9),
        beta_2=getattr(optimizer, "beta_2", 0.999),
        epsilon=getattr(optimizer, "epsilon", 1e-8),
        batch_size=batch_size,
        check_every=check_every,
        n_threads=n_threads,
        loss=plan.loss_code,
        loss_parameter=plan.loss_parameter or 0.0,
        max_grad_norm=plan.max_grad_norm or 0.0,
        schedule_epochs=getattr(optimizer, "epochs", None) or 0,
        warmup_epochs=getattr(optimizer, "warmup_epochs", 0),
        dropout=plan.dropout,
        dropout_seed=plan.dropout_seed or 0,
    )


def make_runner(plan, X, y, sample_weight, n_threads, check_every):
    """A function that trains params and an optimizer state on (X, y) with the kernel.

    Parameters
    ----------
    plan : nnfast._training.plan.FitPlan
    X, y : C-contiguous arrays of the plan's dtype, (n_rows, sizes[0]) and (n_rows, sizes[-1]);
        X may instead be a canonical CSR matrix of the plan's dtype
        (``nnfast._training.sparse.as_csr``), which trains through ``fit_sparse``.
    sample_weight : (n_rows,) array of the plan's dtype, or None.
    n_threads : int
        Kernel threads (Network decides: > 1 only for large products).
    check_every : int
        Batches between the kernel's looks at the clock for a Ctrl-C poll; 0 never polls.

    Returns
    -------
    run : callable
        ``run(params, state, n_epochs, orders) -> (epoch_losses, epochs_done, diverged)``;
        params and state (``nnfast._training.plan.OptimizerState``) are updated in place, also when
        the fit stops early (divergence, Ctrl-C): Network passes copies.
    """
    kernels = _kernels  # looked up per call: tests swap in each build of the kernels
    n_rows = X.shape[0]
    batch_size = min(plan.batch_size, n_rows)
    # Everything the kernel needs is allocated here, once per fit.
    sparse = is_sparse(X)
    # Serial sparse fits update the first layer row by row from each batch transposed, with
    # room for the most non-zeros a batch can hold (rows x the widest row); not when they
    # clip, which needs the whole gradient before any update.
    batch_entries = (min(batch_size * int(np.diff(X.indptr).max()), X.data.shape[0])
                     if sparse and n_threads <= 1 and plan.max_grad_norm is None else None)
    workspace = allocate_general_workspace(plan.sizes, plan.bias, batch_size, plan.dtype,
                                           shuffled=plan.shuffled,
                                           weighted=sample_weight is not None, sparse=sparse,
                                           batch_entries=batch_entries,
                                           slopes=plan.keeps_slopes,
                                           blocks=(n_threads if n_threads > 1
                                                   and takes_team_step(plan, sparse) else 1))
    weights = (np.empty(0, dtype=plan.dtype) if sample_weight is None else sample_weight)
    stored_order = np.empty((0, 0), dtype=np.intp)
    config = _config(plan, batch_size, n_threads, check_every)
    if sparse:
        # The sparse entry point, chosen once per fit; X's arrays are read as they are.
        def fit_chunk(params, state, order, losses):
            return kernels.fit_sparse(config, params, state, X.data, X.indptr, X.indices, y,
                                      weights, order, workspace, losses)
    else:
        def fit_chunk(params, state, order, losses):
            return kernels.fit(config, params, state, X, y, weights, order, workspace, losses)

    def run(params, state, n_epochs, orders):
        # The kernel updates state's values and counters in place, step by step, and writes
        # the counters back also when interrupted.
        losses = np.full(n_epochs, np.nan)
        epochs_done, diverged = fit_chunk(params, state,
                                          stored_order if orders is None else orders, losses)
        return losses, epochs_done, diverged

    return run


def make_loss_gradient(plan, X, y, sample_weight, n_threads):
    """A function that evaluates the full-batch loss and gradient on (X, y) many times.

    The kernel's config and the workspace for all rows are built here, once: an L-BFGS fit
    evaluates a hundred times or more, and a fresh workspace per call would cost a page fault
    per 4 KiB of it (a millisecond on scikit-learn's digits, a third of the evaluation).

    Parameters
    ----------
    plan : nnfast._training.plan.FitPlan
    X, y, sample_weight : as for ``make_runner``; kept, not copied.
    n_threads : int

    Returns
    -------
    evaluate : callable
        ``evaluate(params, grad) -> loss``: the loss (float) at params (only read), and the
        gradient G written to grad, both flat in the params layout and of the plan's dtype.
        The kernel checks their sizes at every call.
    """
    kernels = _kernels  # looked up per call: tests swap in each build of the kernels
    n_rows = X.shape[0]
    sparse = is_sparse(X)
    workspace = allocate_general_workspace(plan.sizes, plan.bias, n_rows, plan.dtype,
                                           training=False, sparse=sparse,
                                           slopes=plan.keeps_slopes)
    config = _config(plan, n_rows, n_threads, 0)
    weights = np.empty(0, dtype=plan.dtype) if sample_weight is None else sample_weight

    if sparse:
        def evaluate(params, grad):
            return kernels.loss_gradient_sparse(config, params, X.data, X.indptr, X.indices, y,
                                                weights, workspace, grad)
        return evaluate

    def evaluate(params, grad):
        return kernels.loss_gradient(config, params, X, y, weights, workspace, grad)

    return evaluate


def loss_gradient(plan, params, X, y, sample_weight, n_threads):
    """Full-batch loss and gradient of the plan's model (scikit-learn's ``_backprop``), once.

    Parameters
    ----------
    plan : nnfast._training.plan.FitPlan
    params : flat parameters (``nnfast._training.layout``), only read.
    X, y, sample_weight : as for ``make_runner``.
    n_threads : int

    Returns
    -------
    loss : float
    grad : ndarray like params
        The gradient G in the params layout.
    """
    grad = np.empty_like(params)
    loss = make_loss_gradient(plan, X, y, sample_weight, n_threads)(params, grad)
    return loss, grad


def loss_gradient_into(plan, params, X, y, sample_weight, workspace, grad):
    """One full-batch loss and gradient of the plan's model on the calling thread, in a
    caller's workspace (``allocate_general_workspace`` for at least X's rows, no training
    buffers), writing the gradient to ``grad``; returns the loss. The workspace's activations
    keep the forward pass: layers 1..L, n_rows rows each, in order (``nnfast._training.layout``).
    For callers that evaluate many small batches in reused buffers (``nnfast.dask``'s shards).
    """
    weights = np.empty(0, dtype=params.dtype) if sample_weight is None else sample_weight
    return _kernels.loss_gradient(_config(plan, X.shape[0], 1, 0), params, X, y, weights,
                                  workspace, grad)
