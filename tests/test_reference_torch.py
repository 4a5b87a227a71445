"""nnfast's formulas beyond scikit-learn's, checked once against PyTorch's (torch 2.13.0, CPU).

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

from conftest import NNFAST_ACTIVATIONS

pytestmark = pytest.mark.torch

torch.set_num_threads(1)


def as_tensor(array, requires_grad=False):
    """A float64 tensor copy of a NumPy array."""
    return torch.tensor(np.asarray(array, dtype=np.float64), requires_grad=requires_grad)


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
