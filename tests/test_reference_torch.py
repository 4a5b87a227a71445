"""nnfast.reference's formulas against PyTorch 2.13.0's.

The reference is the oracle the kernel is tested against (tests/kernels/); here its formulas
meet an independent implementation: the robust regression losses and their gradients
(``torch.nn.functional.huber_loss``, ``l1_loss``, a pinball loss written in torch, each
differentiated by autograd), the ``"cosine"`` schedule (``CosineAnnealingLR``, and with a
warm-up ``LinearLR`` then ``CosineAnnealingLR`` in ``SequentialLR``), gradient clipping
(``torch.nn.utils.clip_grad_norm_``) and, once end to end, a network trained by the compiled
kernel with all three against the same network trained by torch.

Every test is marked ``torch``: the default run deselects them (pyproject.toml); CI runs
``python -m pytest -m torch`` on Python 3.11, where torch 2.13.0's CPU wheel is installed.
torch is imported at the top, so a missing torch fails the run rather than skipping it.
"""

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

import nnfast
from nnfast import reference
from nnfast._training.layout import pack_params, param_views
from nnfast.optimizers import SGD

pytestmark = pytest.mark.torch

# ------------------------------------------------------------------------ shared helpers

RTOL = {np.float32: 1e-5, np.float64: 1e-12}
ATOL = {np.float32: 1e-6, np.float64: 1e-14}


def tensor(array, requires_grad=False):
    """A torch tensor holding a copy of a NumPy array (its dtype kept)."""
    return torch.tensor(np.array(array), requires_grad=requires_grad)


def value_and_grad(loss_of, prediction, *args):
    """(loss, d loss / d prediction) of ``loss_of(prediction_tensor, *args)`` by autograd, as
    NumPy values."""
    a = tensor(prediction, requires_grad=True)
    loss = loss_of(a, *args)
    loss.backward()
    return loss.item(), a.grad.numpy()


def weighted_mean(elements, weights):
    """scikit-learn's reduction of per-element losses, in torch: the weighted mean over rows,
    then the mean over outputs."""
    if weights is None:
        return elements.mean()
    w = tensor(weights)[:, None]
    return ((elements * w).sum(dim=0) / w.sum()).mean()


def pinball(a, y, q):
    """The pinball loss of quantile q, per element, written in torch."""
    r = y - a
    return torch.where(r >= 0, q * r, (q - 1) * r)


def regression_data(dtype, n_rows=40, n_out=3, ties=True):
    """Targets, predictions (residuals on both sides of 1, some exactly 0) and weights."""
    rs = np.random.RandomState(0)
    y = rs.randn(n_rows, n_out).astype(dtype)
    a = (y + 2 * rs.randn(n_rows, n_out)).astype(dtype)
    if ties:
        a[::5] = y[::5]
    return y, a, rs.uniform(0.2, 2.0, n_rows).astype(dtype)


# ------------------------------------------------------------------------------- losses

TORCH_LOSSES = {
    "absolute_error": lambda a, y, p: torch.nn.functional.l1_loss(a, y, reduction="none"),
    "huber": lambda a, y, p: torch.nn.functional.huber_loss(a, y, reduction="none", delta=p),
    "quantile": lambda a, y, p: pinball(a, y, p),
}
PARAMETERS = {"absolute_error": None, "huber": 0.7, "quantile": 0.2}


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("loss", list(TORCH_LOSSES))
def test_regression_losses_and_gradients_are_torchs(dtype, loss, weighted):
    """The reference's loss equals torch's mean (weighted over rows, then over outputs) and
    its output delta, weighted by the row's weight and divided by the weight sum and the
    output count, equals autograd's gradient of that mean. The pinball loss's gradient is
    compared off its kink (torch.where picks a branch there; the reference's 0 is checked
    below)."""
    y, a, w = regression_data(dtype)
    w = w if weighted else None
    p = PARAMETERS[loss]
    expected, torch_grad = value_and_grad(
        lambda t: weighted_mean(TORCH_LOSSES[loss](t, tensor(y), p), w), a)
    assert_allclose(reference.REGRESSION_LOSSES[loss](y, a, w, p), expected,
                    rtol=RTOL[dtype], atol=ATOL[dtype])
    delta = reference.REGRESSION_DERIVATIVES[loss](y, a, p)
    assert delta.dtype == dtype
    scale = (np.ones(len(y)) if w is None else w) / ((len(y) if w is None else w.sum())
                                                     * y.shape[1])
    grad = delta * scale[:, None].astype(dtype)
    off_kink = (a != y) if loss == "quantile" else np.ones(a.shape, dtype=bool)
    assert_allclose(grad[off_kink], torch_grad[off_kink], rtol=RTOL[dtype], atol=ATOL[dtype])


def test_derivatives_at_zero_residual_are_zero():
    """At a == y the absolute error's derivative is torch's sign'(0) = 0 (its l1_loss
    gradient), and the reference takes the same 0 for the pinball loss's kink."""
    y, a, _ = regression_data(np.float64)
    tie = a == y
    _, torch_grad = value_and_grad(
        lambda t: torch.nn.functional.l1_loss(t, tensor(y), reduction="sum"), a)
    assert tie.any() and (torch_grad[tie] == 0).all()
    assert (reference.REGRESSION_DERIVATIVES["absolute_error"](y, a)[tie] == 0).all()
    assert (reference.REGRESSION_DERIVATIVES["quantile"](y, a, 0.2)[tie] == 0).all()


# ----------------------------------------------------------------------------- schedule

def torch_rates(learning_rate, epochs, warmup_epochs):
    """The learning rate of each of ``epochs`` epochs under torch's schedulers, stepped once
    per epoch: CosineAnnealingLR(T_max=E - W, eta_min=0), after LinearLR(start_factor=1 /
    (W + 1), end_factor=1, total_iters=W) in SequentialLR when W > 0."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=learning_rate)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs - warmup_epochs,
                                                        eta_min=0.0)
    if warmup_epochs:
        warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1 / (warmup_epochs + 1),
                                                   end_factor=1.0, total_iters=warmup_epochs)
        scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine],
                                                          milestones=[warmup_epochs])
    else:
        scheduler = cosine
    rates = []
    for _ in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return np.array(rates)


@pytest.mark.parametrize("epochs, warmup_epochs", [(10, 0), (1, 0), (10, 3), (7, 1), (200, 20),
                                                   (5, 4)])
def test_cosine_rate_is_torchs_schedulers(epochs, warmup_epochs):
    expected = torch_rates(0.05, epochs, warmup_epochs)
    ours = [reference.cosine_rate(0.05, e, epochs, warmup_epochs) for e in range(epochs)]
    assert_allclose(ours, expected, rtol=1e-12, atol=1e-17)
    # Past the schedule the rate stays 0 (torch's cosine would climb back).
    assert reference.cosine_rate(0.05, epochs, epochs, warmup_epochs) == 0.0


def test_only_the_documented_start_factor_agrees():
    """LinearLR's own default start factor (1/3) gives other warm-up rates: the agreement
    above is the start factor 1 / (W + 1)'s."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    torch.optim.lr_scheduler.LinearLR(optimizer, total_iters=3)
    assert optimizer.param_groups[0]["lr"] != reference.cosine_rate(1.0, 0, 10, 3)


# ----------------------------------------------------------------------------- clipping

@pytest.mark.parametrize("max_norm", [0.05, 1.0, 1e6])
def test_clip_grad_norm_is_torchs(dtype, max_norm):
    """The clipped gradient and the norm returned, for a norm that clips, one near the
    gradient's and one far above it (no change)."""
    rs = np.random.RandomState(3)
    shapes = [(4, 5), (5,), (5, 2), (2,)]
    grads = [rs.randn(*shape).astype(dtype) * 0.3 for shape in shapes]
    params = [tensor(np.zeros(shape, dtype=dtype), requires_grad=True) for shape in shapes]
    for p, g in zip(params, grads):
        p.grad = tensor(g)
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    flat = np.concatenate([g.ravel() for g in grads])
    ours = reference.clip_grad_norm(flat, max_norm)
    assert flat.dtype == dtype
    assert_allclose(ours, norm.item(), rtol=RTOL[dtype])
    assert_allclose(flat, np.concatenate([p.grad.numpy().ravel() for p in params]),
                    rtol=RTOL[dtype], atol=ATOL[dtype])


# --------------------------------------------------------------------------- end to end

def test_a_network_trains_as_torch_does():
    """A [4, 6, 2] tanh network with a Huber loss, L2, SGD without momentum (whose step is
    torch's too), the cosine schedule with a warm-up and clipping, trained full batch by the
    compiled kernel, against torch training the same parameters: the same weights after
    every epoch of the schedule, and the same loss."""
    rs = np.random.RandomState(0)
    X = rs.randn(30, 4)
    y = 3 * rs.randn(30, 2)
    coefs, intercepts = reference.init_coefs([4, 6, 2], rs)
    epochs, warmup, rate, alpha, delta, max_norm = 12, 3, 0.1, 0.01, 0.8, 0.46
    optimizer = SGD(learning_rate=rate, momentum=0.0, nesterov=False, schedule="cosine",
                    epochs=epochs, warmup_epochs=warmup, max_grad_norm=max_norm)
    net = nnfast.Network.from_params(pack_params(coefs, intercepts), [4, 6, 2], bias=True,
                                     activation="tanh", output="identity", optimizer=optimizer,
                                     alpha=alpha, reduction="mean", loss="huber",
                                     huber_delta=delta)

    weights = [tensor(w, requires_grad=True) for w in coefs]
    biases = [tensor(b, requires_grad=True) for b in intercepts]
    parameters = [p for pair in zip(weights, biases) for p in pair]
    sgd = torch.optim.SGD(parameters, lr=rate)
    schedule = torch.optim.lr_scheduler.SequentialLR(
        sgd, [torch.optim.lr_scheduler.LinearLR(sgd, start_factor=1 / (warmup + 1),
                                                total_iters=warmup),
              torch.optim.lr_scheduler.CosineAnnealingLR(sgd, T_max=epochs - warmup)],
        milestones=[warmup])
    inputs, targets = tensor(X), tensor(y)
    clipped = 0
    for _ in range(epochs):
        sgd.zero_grad()
        hidden = torch.tanh(inputs @ weights[0] + biases[0])
        output = hidden @ weights[1] + biases[1]
        # scikit-learn's convention, which nnfast's losses keep: the reported loss averages
        # over the outputs, but the output delta (a - y for squared error, its derivative
        # here) is each output's own, so the step follows the loss summed over outputs.
        loss = (torch.nn.functional.huber_loss(output, targets, delta=delta,
                                               reduction="none").sum(dim=1).mean()
                + 0.5 * alpha * sum((w ** 2).sum() for w in weights) / len(X))
        loss.backward()
        clipped += torch.nn.utils.clip_grad_norm_(parameters, max_norm).item() > max_norm
        sgd.step()
        schedule.step()

        net.fit(X, y, 1, resume=net.optimizer_state is not None, report_every=1)
        # nnfast's reported loss is the mean over the outputs.
        assert_allclose(net.history[-1][1],
                        loss.item() - torch.nn.functional.huber_loss(
                            output, targets, delta=delta, reduction="none").sum(dim=1).mean()
                        .item() * (1 - 1 / y.shape[1]), rtol=1e-10)
        ours_w, ours_b = param_views(net.params, net.sizes, True)
        for ours, theirs in zip(ours_w + ours_b, weights + biases):
            assert_allclose(ours, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert 0 < clipped < epochs  # steps with and without clipping
    assert net.optimizer_state.epochs == epochs
