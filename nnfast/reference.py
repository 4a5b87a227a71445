"""The pure-NumPy reference: the original "neural network in 11 lines", generalised.

This module is the oracle the compiled kernel is tested against and the ``backend="numpy"``
of :class:`nnfast.Network`. Its arithmetic is the original's, operation for operation:

    l[k+1]      = nonlin(l[k] @ W[k])
    delta_last  = (y - l_last) * nonlin(l_last, deriv=True)
    delta[k]    = (delta[k+1] @ W[k].T) * nonlin(l[k], deriv=True)
    W[k]       += learning_rate * (l[k].T @ delta[k+1])      (after all deltas)

generalised to any list of layer sizes, a learning rate (1.0 reproduces the original, since
multiplying by 1.0 is exact), an optional bias per layer and mini-batches. The per-step
helpers work in place on caller-provided arrays, mirroring the kernel's entry points in
``nnfast._kernels``.
"""

import numpy as np

__all__ = [
    "nonlin",
    "init_params",
    "forward_layer",
    "output_delta",
    "hidden_delta",
    "apply_gradient",
    "train_step",
    "gradient",
    "fit",
    "predict",
]


def nonlin(x, deriv=False):
    """The original's activation: the sigmoid, or its derivative from the sigmoid's output.

    Parameters
    ----------
    x : array_like
        Pre-activations, or activations when ``deriv`` is true.
    deriv : bool
        If true, return ``x * (1 - x)``.

    Returns
    -------
    ndarray
    """
    if deriv:
        return x * (1 - x)
    # As in the original, exp(-x) overflows for x < -709 (NumPy warns) and 1 / (1 + inf) is
    # then the exact answer 0. No errstate here: it would double the cost of a tiny step.
    return 1 / (1 + np.exp(-x))


def init_params(sizes, seed, dtype=np.float64, bias=False):
    """Initial weights exactly as the original draws them, and zero biases.

    Parameters
    ----------
    sizes : sequence of int
        Layer widths, input first.
    seed : int or numpy.random.RandomState
        Seed of the ``RandomState`` that draws, for each layer pair (a, b) in order,
        ``2 * random_sample((a, b)) - 1`` (or that RandomState itself, which advances).
    dtype : float32 or float64
        The weights are drawn in float64, as in the original, then cast.
    bias : bool
        Whether to return a zero bias per layer.

    Returns
    -------
    weights : list of ndarray
    biases : list of ndarray, or None when ``bias`` is false
    """
    random_state = (seed if isinstance(seed, np.random.RandomState)
                    else np.random.RandomState(seed))
    weights = [
        (2 * random_state.random_sample((n_in, n_out)) - 1).astype(dtype)
        for n_in, n_out in zip(sizes[:-1], sizes[1:])
    ]
    biases = [np.zeros(n_out, dtype=dtype) for n_out in sizes[1:]] if bias else None
    return weights, biases


def forward_layer(inputs, weights, bias=None):
    """sigmoid(inputs @ weights [+ bias])."""
    pre_activation = inputs.dot(weights)
    if bias is not None:
        pre_activation += bias
    return nonlin(pre_activation)


def output_delta(targets, outputs):
    """(targets - outputs) * nonlin(outputs, deriv=True), and the error targets - outputs."""
    error = targets - outputs
    return error * nonlin(outputs, deriv=True), error


def hidden_delta(delta_next, weights, activations):
    """(delta_next @ weights.T) * nonlin(activations, deriv=True)."""
    return delta_next.dot(weights.T) * nonlin(activations, deriv=True)


def apply_gradient(weights, bias, inputs, delta, learning_rate):
    """weights += learning_rate * (inputs.T @ delta); bias += learning_rate * delta.sum(0)."""
    gradient = inputs.T.dot(delta)
    # Multiplying by 1.0 is exact, so skipping it keeps the original's arithmetic and speed.
    weights += gradient if learning_rate == 1 else learning_rate * gradient
    if bias is not None:
        bias += learning_rate * delta.sum(axis=0)


def _forward(weights, biases, x):
    layers = [x]
    for k, w in enumerate(weights):
        layers.append(forward_layer(layers[-1], w, None if biases is None else biases[k]))
    return layers


def train_step(weights, biases, x, y, learning_rate=1.0):
    """One full-batch step of the original on (x, y), updating weights (and biases) in place.

    Returns
    -------
    ndarray
        The output error ``y - l_last`` of this step's forward pass (before the update).
    """
    layers = _forward(weights, biases, x)
    delta, error = output_delta(y, layers[-1])
    # Walking back, W[k] is read for delta[k] before it is updated, and nothing later reads
    # it: the same arithmetic as computing every delta first, as the original does.
    for k in range(len(weights) - 1, -1, -1):
        delta_next = delta
        if k > 0:
            delta = hidden_delta(delta_next, weights[k], layers[k])
        apply_gradient(weights[k], None if biases is None else biases[k], layers[k], delta_next,
                       learning_rate)
    return error


def gradient(weights, biases, x, y):
    """The update one full-batch step would add, without applying it.

    Returns
    -------
    weight_gradients : list of ndarray, ``layers[k].T @ delta[k+1]``
    bias_gradients : list of ndarray (``delta[k+1].sum(0)``), or None without biases
    """
    layers = _forward(weights, biases, x)
    delta, _ = output_delta(y, layers[-1])
    weight_gradients, bias_gradients = [None] * len(weights), [None] * len(weights)
    for k in range(len(weights) - 1, -1, -1):
        weight_gradients[k] = layers[k].T.dot(delta)
        bias_gradients[k] = delta.sum(axis=0)
        if k > 0:
            delta = hidden_delta(delta, weights[k], layers[k])
    return weight_gradients, (bias_gradients if biases is not None else None)


def fit(weights, biases, x, y, iterations, learning_rate=1.0, batch_size=None, orders=None,
        track_errors=True):
    """Trains in place, as the original's loop does.

    Parameters
    ----------
    weights, biases : lists of ndarray, updated in place (biases may be None).
    x, y : 2-D ndarrays of the weights' dtype.
    iterations : int
        Epochs: passes over all rows. With full batches an epoch is one step.
    learning_rate : float
    batch_size : int or None
        Rows per step, None for all rows. The last batch of an epoch may be smaller.
    orders : ndarray (iterations, n_rows) or None
        Row order of each epoch (shuffled mini-batches); None takes the rows as stored.
    track_errors : bool
        Whether to compute each epoch's mean |y - output| (the benchmarks turn it off, so the
        baseline they time is the original loop and nothing more).

    Returns
    -------
    list of float
        Mean |y - output| of each epoch, over its batches' forward passes (empty when
        ``track_errors`` is false).
    """
    n_rows = x.shape[0]
    batch_size = n_rows if batch_size is None else batch_size
    learning_rate = x.dtype.type(learning_rate)
    errors = []
    for epoch in range(iterations):
        abs_error_sum = 0.0
        for start in range(0, n_rows, batch_size):
            if orders is None:
                rows = slice(start, start + batch_size)
            else:
                rows = orders[epoch, start:start + batch_size]
            error = train_step(weights, biases, x[rows], y[rows], learning_rate)
            if track_errors:
                abs_error_sum += float(np.abs(error).sum())
        if track_errors:
            errors.append(abs_error_sum / y.size)
    return errors


def predict(weights, biases, x):
    """The last layer's activations for inputs x."""
    return _forward(weights, biases, x)[-1]


# ================================================================================================
# The model families: scikit-learn's MLP arithmetic (sklearn/neural_network/_base.py,
# _multilayer_perceptron.py, _stochastic_optimizers.py), operation for operation.
# ================================================================================================

def inplace_identity(Z):
    """Z = Z."""


def inplace_logistic(Z):
    """Z = 1 / (1 + exp(-Z)), the original's sigmoid (its formula, so the general path with
    the original's options repeats the original's rounding)."""
    np.exp(np.negative(Z, out=Z), out=Z)
    Z += 1
    np.reciprocal(Z, out=Z)


def inplace_tanh(Z):
    """Z = tanh(Z)."""
    np.tanh(Z, out=Z)


def inplace_relu(Z):
    """Z = max(Z, 0)."""
    np.maximum(Z, 0, out=Z)


def inplace_softmax(Z):
    """Z = exp(Z - max_row(Z)) / sum_row(exp(Z - max_row(Z)))."""
    shifted = Z - Z.max(axis=1)[:, np.newaxis]
    np.exp(shifted, out=Z)
    Z /= Z.sum(axis=1)[:, np.newaxis]


def inplace_exp(Z):
    """Z = exp(Z)."""
    np.exp(Z, out=Z)


# Activation of each hidden-layer name and of each output; the output "original" is the sigmoid.
ACTIVATIONS = {
    "identity": inplace_identity,
    "logistic": inplace_logistic,
    "tanh": inplace_tanh,
    "relu": inplace_relu,
    "softmax": inplace_softmax,
    "exp": inplace_exp,
}
OUTPUT_ACTIVATIONS = {
    "original": inplace_logistic,
    "identity": inplace_identity,
    "logistic": inplace_logistic,
    "softmax": inplace_softmax,
    "exp": inplace_exp,
}


def forward_model(weights, biases, x, activations, output):
    """Every layer's activations [x, a_1, ..., a_L] of a model: a_{k+1} = act_k(a_k @ W_k + b_k)."""
    layers = [x]
    for k, w in enumerate(weights):
        z = layers[-1].dot(w)
        if biases is not None:
            z += biases[k]
        is_last = k == len(weights) - 1
        (OUTPUT_ACTIVATIONS[output] if is_last else ACTIVATIONS[activations[k]])(z)
        layers.append(z)
    return layers


def predict_model(weights, biases, x, activations, output):
    """The output activations of a model (hidden activations per layer, an output name)."""
    with np.errstate(over="ignore"):  # exp overflowing: the sigmoid's exact 0, exp's inf
        return forward_model(weights, biases, x, activations, output)[-1]
