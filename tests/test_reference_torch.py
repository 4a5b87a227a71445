"""nnfast's formulas beyond scikit-learn's, checked once against PyTorch's (torch 2.13.0, CPU).

The hidden activations and their derivatives; the robust regression losses and their
gradients (``torch.nn.functional.huber_loss``, ``l1_loss``, a pinball loss written in torch,
each differentiated by autograd), the ``"cosine"`` schedule (``CosineAnnealingLR``, and with
a warm-up ``LinearLR`` then ``CosineAnnealingLR`` in ``SequentialLR``), gradient clipping
(``torch.nn.utils.clip_grad_norm_``) and, once end to end, a network trained by the compiled
kernel with all three against the same network trained by torch.

Marked ``torch``: the default run deselects them (pyproject.toml), and CI runs ``python -m
pytest -m torch`` in a Python 3.11 environment holding the PyTorch 2.13.0 CPU wheel these
machines carry, where a missing torch fails here at import rather than skipping.
"""

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

import nnfast
from nnfast import reference
from nnfast._training.layout import pack_params, param_views
from nnfast.optimizers import SGD

from conftest import NNFAST_ACTIVATIONS

pytestmark = pytest.mark.torch

torch.set_num_threads(1)


def as_tensor(array, requires_grad=False):
    """A float64 tensor copy of a NumPy array."""
    return torch.tensor(np.asarray(array, dtype=np.float64), requires_grad=requires_grad)


RTOL = {np.float32: 1e-5, np.float64: 1e-12}
ATOL = {np.float32: 1e-6, np.float64: 1e-14}


def tensor(array, requires_grad=False):
    """A torch tensor holding a copy of a NumPy array, its dtype kept (float32 stays
    float32)."""
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


# -------------------------------------------------------------------------------- activations

TORCH_ACTIVATIONS = {
    "leaky_relu": lambda z: torch.nn.functional.leaky_relu(z, negative_slope=0.01),
    "elu": lambda z: torch.nn.functional.elu(z, alpha=1.0),
    "gelu": lambda z: torch.nn.functional.gelu(z, approximate="none"),
    "silu": torch.nn.functional.silu,
    "softplus": torch.nn.functional.softplus,
}


@pytest.mark.parametrize("name", NNFAST_ACTIVATIONS)
def test_activation_and_derivative_are_torchs(name):
    """Value and autograd derivative at points over [-30, 30], zero and the kinks included.
    PyTorch's softplus returns z itself above 20 (threshold=20), and slope 1: within 2e-9 of
    log1p(exp(z)) and sigmoid(z) there."""
    z = np.concatenate([np.linspace(-30, 30, 6001), [0.0, -1e-8, 1e-8]])
    values = z.copy()
    reference.ACTIVATIONS[name](values)
    slopes = np.ones_like(z)
    reference.DERIVATIVES[name](values, slopes, z)
    z_torch = as_tensor(z, requires_grad=True)
    out = TORCH_ACTIVATIONS[name](z_torch)
    out.sum().backward()
    exact = z <= 20 if name == "softplus" else np.ones(z.shape, bool)
    assert_allclose(values[exact], out.detach().numpy()[exact], rtol=1e-12, atol=1e-15)
    assert_allclose(slopes[exact], z_torch.grad.numpy()[exact], rtol=1e-12, atol=1e-15)
    # Above PyTorch's threshold: z and slope 1, against log1p(exp(z)) and sigmoid(z).
    assert_allclose(values[~exact], out.detach().numpy()[~exact], rtol=0, atol=3e-9)
    assert_allclose(slopes[~exact], z_torch.grad.numpy()[~exact], rtol=0, atol=3e-9)


@pytest.mark.parametrize("backend", ["cython", "numpy"])
@pytest.mark.parametrize("name", NNFAST_ACTIVATIONS)
def test_network_gradient_is_torchs_autograd(name, backend):
    """A network with the activation in both hidden layers: Network.loss_gradient (the
    kernel's or the reference's backprop) equals autograd through PyTorch's layers, for
    scikit-learn's softmax log-loss with an L2 penalty, weighted rows."""
    rng = np.random.RandomState(3)
    sizes = [6, 9, 7, 4]
    X = rng.randn(40, sizes[0])
    y = np.eye(sizes[-1])[rng.randint(0, sizes[-1], 40)]
    w = rng.uniform(0.5, 2.0, 40)
    net = nnfast.Network(sizes, seed=2, activation=name, output="softmax", bias=True,
                         alpha=0.01, backend=backend)
    loss, weight_grads, bias_grads = net.loss_gradient(X, y, sample_weight=w)

    weights = [as_tensor(W, requires_grad=True) for W in net.weights]
    biases = [as_tensor(b, requires_grad=True) for b in net.biases]
    layer = as_tensor(X)
    for k, (W, b) in enumerate(zip(weights, biases)):
        layer = layer @ W + b
        if k < len(weights) - 1:
            layer = TORCH_ACTIVATIONS[name](layer)
    log_prob = torch.log_softmax(layer, dim=1)
    weight = as_tensor(w)
    data_loss = -(weight * (as_tensor(y) * log_prob).sum(dim=1)).sum() / weight.sum()
    penalty = 0.5 * 0.01 * sum((W * W).sum() for W in weights) / weight.sum()
    total = data_loss + penalty
    total.backward()
    assert_allclose(loss, total.item(), rtol=1e-10)
    for ours, theirs in zip(weight_grads + bias_grads, weights + biases):
        assert_allclose(ours, theirs.grad.numpy(), rtol=1e-9, atol=1e-12)


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


# ------------------------------------------ the migration page's mapping of PyTorch's Adam
# docs/user_guide/from_deep_learning.rst says how skorch / PyTorch arguments map to nnfast's,
# whose Adam is scikit-learn's. Its two claims about PyTorch's Adam, against scikit-learn's
# AdamOptimizer and torch.optim.Adam themselves.

def _sklearn_adam_steps(weights, gradients, alpha_over_n=0.0, epsilon=1e-8):
    """The weights after scikit-learn's AdamOptimizer takes each gradient in turn, the L2
    term ``alpha / n * W`` (scikit-learn's _backprop) added to each."""
    from sklearn.neural_network._stochastic_optimizers import AdamOptimizer

    params = [weights.copy()]
    adam = AdamOptimizer(params, learning_rate_init=3e-3, epsilon=epsilon)
    for gradient in gradients:
        adam.update_params(params, [gradient + alpha_over_n * params[0]])
    return params[0]


def _torch_adam_steps(weights, gradients, eps_of_step, weight_decay=0.0):
    """The weights after torch.optim.Adam takes each gradient in turn, with ``eps`` set
    before step t (1, 2, ...) to ``eps_of_step(t)``."""
    parameter = torch.tensor(weights.copy(), requires_grad=True)
    adam = torch.optim.Adam([parameter], lr=3e-3, eps=eps_of_step(1),
                            weight_decay=weight_decay)
    for t, gradient in enumerate(gradients, start=1):
        adam.param_groups[0]["eps"] = eps_of_step(t)
        parameter.grad = torch.tensor(gradient)
        adam.step()
    return parameter.detach().numpy()


def test_torch_adam_eps_is_sklearn_epsilon_over_sqrt_of_the_bias_correction():
    """scikit-learn (so nnfast) adds epsilon to sqrt(v) before the bias correction, PyTorch
    after it: PyTorch's eps at step t must be ``epsilon / sqrt(1 - beta_2 ** t)`` to take
    scikit-learn's steps, and its default eps, the same 1e-8, takes other steps where the
    gradients are small."""
    rng = np.random.RandomState(0)
    weights = rng.normal(size=(5, 3))
    # Gradients of the order of epsilon, where the two placements differ the most.
    gradients = [1e-8 * rng.normal(size=weights.shape) for _ in range(20)]
    ours = _sklearn_adam_steps(weights, gradients)
    matched = _torch_adam_steps(weights, gradients,
                                lambda t: 1e-8 / np.sqrt(1 - 0.999 ** t))
    assert_allclose(matched, ours, rtol=1e-13, atol=1e-16)
    constant = _torch_adam_steps(weights, gradients, lambda t: 1e-8)
    assert np.abs((constant - weights) - (ours - weights)).max() > 0.1 * np.abs(
        ours - weights).max()


def test_torch_weight_decay_alpha_over_batch_rows_is_sklearn_alpha():
    """PyTorch's coupled ``weight_decay`` of ``alpha / n`` (n the rows of the batch) adds the
    gradient of scikit-learn's penalty ``0.5 * alpha * sum(W ** 2) / n``: the same steps."""
    rng = np.random.RandomState(1)
    weights = rng.normal(size=(4, 6))
    gradients = [rng.normal(size=weights.shape) for _ in range(10)]
    alpha, n = 1e-1, 64
    eps_of_step = lambda t: 1e-8 / np.sqrt(1 - 0.999 ** t)  # noqa: E731 (the claim above)
    ours = _sklearn_adam_steps(weights, gradients, alpha_over_n=alpha / n)
    theirs = _torch_adam_steps(weights, gradients, eps_of_step, weight_decay=alpha / n)
    assert_allclose(theirs, ours, rtol=1e-13, atol=1e-15)
    undecayed = _sklearn_adam_steps(weights, gradients)
    assert np.abs(undecayed - ours).max() > 1e-6
