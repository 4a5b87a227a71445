"""The work ``nnfast.dask.fit`` sends to Dask workers: one shard's part of a step.

Nothing here imports Dask, so a worker needs only nnfast to run it. A shard is one chunk of
rows held in a worker's memory as ``(x, y)``, already validated and converted to the
network's dtype (``prepare_shard``). Every task returns a ``Partial``: a flat vector in the
parameter layout of ``nnfast._layout``, the shard's sum of ``|y - output|`` and whether the
shard's training diverged. ``add_partials`` sums partials; the client builds a tree of it.

Scratch buffers for the kernel are kept per worker thread and per fit (``_workspace``), so a
step allocates only its result vector, as a local fit allocates once per fit.
"""

import threading
from collections import OrderedDict, namedtuple
from dataclasses import dataclass

import numpy as np

from . import reference
from ._layout import allocate_workspace, param_views
from ._validation import check_inputs, check_target_range, check_targets

Partial = namedtuple("Partial", ["vector", "abs_error_sum", "diverged"])

# Fits whose scratch buffers a worker keeps; older ones are dropped when a new fit arrives
# (the client also releases them at the end of each fit, but it cannot reach a lost worker).
_KEPT_FITS = 4
_WORKSPACES = OrderedDict()
_WORKSPACES_GUARD = threading.Lock()


@dataclass(frozen=True)
class ShardSpec:
    """What a worker needs to know about the network and the fit (a few bytes per task)."""

    fit_id: str
    sizes: tuple
    bias: bool
    dtype: str
    backend: str
    max_rows: int  # the largest shard's rows: one workspace per thread serves every shard
    plan: object = None  # the fit's FitPlan, for models other than the original's


def prepare_shard(x, y, sizes, dtype, start, output="original"):
    """(x, y) of one chunk as the kernel needs them, with ``Network.fit``'s checks.

    The messages are ``Network.fit``'s, followed by the chunk's row range, so an error raised
    on a worker says where the bad rows are.
    """
    try:
        x = check_inputs(x, sizes, dtype)
        y = check_target_range(check_targets(y, x.shape[0], sizes, dtype), output)
    except (TypeError, ValueError) as exc:
        stop = start + len(x)
        raise type(exc)(f"{exc} (in rows {start} to {stop - 1} of the data)") from None
    return x, y


def _workspace(spec):
    """This thread's scratch buffers for the fit spec.fit_id (allocated on first use)."""
    key = threading.get_ident()
    with _WORKSPACES_GUARD:
        per_fit = _WORKSPACES.get(spec.fit_id)
        if per_fit is None:
            per_fit = _WORKSPACES[spec.fit_id] = {}
            while len(_WORKSPACES) > _KEPT_FITS:
                _WORKSPACES.popitem(last=False)
        workspace = per_fit.get(key)
        if workspace is None:
            workspace = per_fit[key] = allocate_workspace(spec.sizes, spec.max_rows,
                                                          np.dtype(spec.dtype), shuffled=False)
    return workspace


def release_workspaces(fit_id):
    """Drops a finished fit's scratch buffers (run on every worker by the client)."""
    with _WORKSPACES_GUARD:
        _WORKSPACES.pop(fit_id, None)


def _scratch(spec, n_rows):
    """Exactly-sized views of this thread's activations and deltas for n_rows rows."""
    workspace = _workspace(spec)
    used = n_rows * sum(spec.sizes[1:])
    return workspace["activations"][:used], workspace["deltas"][:used], workspace["grad"]


def _kernels():
    # The build the worker's own CPU runs best, chosen when nnfast is imported there.
    from .network import _kernels as kernels
    return kernels


def shard_gradient(spec, params, shard):
    """The shard's part of one full-batch step: ``Network.gradient`` of its rows at params.

    Returns
    -------
    Partial
        The gradient G (the step adds ``learning_rate * G``) and the shard's sum |y - output|
        of the same forward pass.
    """
    x, y = shard
    if spec.backend == "numpy":
        weights, biases = param_views(params, spec.sizes, spec.bias)
        with np.errstate(over="ignore"):  # exp overflowing to inf: the exact sigmoid 0
            weight_grads, bias_grads = reference.gradient(weights, biases, x, y)
            abs_error_sum = float(np.abs(y - reference.predict(weights, biases, x)).sum())
        vector = np.concatenate([g.ravel() for pair in zip(
            weight_grads, bias_grads if spec.bias else [None] * len(weight_grads))
            for g in pair if g is not None])
        return Partial(vector, abs_error_sum, not np.isfinite(abs_error_sum))
    activations, deltas, grad = _scratch(spec, x.shape[0])
    vector = np.empty_like(params)
    abs_error_sum = _kernels().gradient(
        params, np.asarray(spec.sizes, dtype=np.intp), spec.bias, x, y, activations, deltas,
        grad, vector, 1)
    return Partial(vector, abs_error_sum, not np.isfinite(abs_error_sum))


def shard_local_steps(spec, params, shard, n_steps, learning_rate):
    """``n_steps`` full-batch steps on the shard's rows alone, from params (``sync_every``).

    Returns
    -------
    Partial
        The change of the parameters (after - params), the shard's sum |y - output| at params
        (the first step's forward pass) and whether a step's error stopped being finite.
    """
    x, y = shard
    local = params.copy()
    if spec.backend == "numpy":
        weights, biases = param_views(local, spec.sizes, spec.bias)
        with np.errstate(all="ignore"):
            errors = reference.fit(weights, biases, x, y, n_steps, learning_rate)
        first_error, diverged = float(errors[0]), not np.isfinite(errors).all()
    else:
        activations, deltas, grad = _scratch(spec, x.shape[0])
        no_rows = np.empty(0, dtype=local.dtype)
        _, first_error, diverged = _kernels().fit(
            local, np.asarray(spec.sizes, dtype=np.intp), spec.bias, x, y,
            np.empty((0, 0), dtype=np.intp), x.shape[0], n_steps, learning_rate, activations,
            deltas, grad, no_rows, no_rows, 0, 1)
    local -= params
    # The kernel reports the mean over the shard's outputs; the client wants sums to add up.
    return Partial(local, first_error * y.size, bool(diverged) or not np.isfinite(local).all())


def same(value):
    """value itself: a task whose result is a copy of its input on the worker it runs on."""
    return value


def shard_loss_gradient(spec, params, shard):
    """The shard's part of the loss and gradient of a model other than the original's.

    The shard's rows are summed, unpenalised: the gradient ``a.T @ d`` (``reduction="sum"``,
    ``alpha=0``) and the data loss times the shard's rows. The client adds the shards, then
    the L2 term and the division that ``reduction`` and ``alpha`` ask for.
    """
    import dataclasses

    x, y = shard
    plan = dataclasses.replace(spec.plan, reduction="sum", alpha=0.0, batch_size=x.shape[0],
                               shuffled=False, weighted=False)
    if spec.backend == "numpy":
        backend = reference
    else:
        from . import _compiled as backend
    loss, vector = backend.loss_gradient(plan, params, x, y, None, 1)
    loss_sum = float(loss) * x.shape[0]
    return Partial(vector, loss_sum, not np.isfinite(loss_sum))


def add_partials(*partials):
    """The sum of partials, in the order given (one node of the reduction tree)."""
    vector = partials[0].vector.copy()
    for part in partials[1:]:
        vector += part.vector
    return Partial(vector, sum(part.abs_error_sum for part in partials),
                   any(part.diverged for part in partials))
