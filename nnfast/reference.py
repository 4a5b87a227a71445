"""The pure-NumPy reference: the original "neural network in 11 lines", generalised.

This module is the oracle the compiled kernel is tested against and the ``backend="numpy"``
of :class:`nnfast.Network`. Its arithmetic is the original's, operation for operation::

    l[k+1]      = nonlin(l[k] @ W[k])
    delta_last  = (y - l_last) * nonlin(l_last, deriv=True)
    delta[k]    = (delta[k+1] @ W[k].T) * nonlin(l[k], deriv=True)
    W[k]       += learning_rate * (l[k].T @ delta[k+1])      (after all deltas)

generalised to any list of layer sizes, a learning rate (1.0 reproduces the original, since
multiplying by 1.0 is exact), an optional bias per layer and mini-batches. The per-step
helpers work in place on caller-provided arrays, mirroring the kernel's entry points in
``nnfast._kernels``.

The second half is the model families of ``Network`` (hidden activations, outputs and their
losses, L2, sample weights, the plain / SGD / Adam optimizers), shaped like scikit-learn's
``neural_network/_base.py`` (``ACTIVATIONS``, ``DERIVATIVES``, ``LOSS_FUNCTIONS`` tables) and
``_stochastic_optimizers.py`` (optimizer objects with ``update_params`` /
``iteration_ends``), with the same operations in the same order, so that it reproduces
scikit-learn's MLP to rounding. ``make_runner``, ``make_loss_gradient`` and ``loss_gradient``
are its side of the runner contract (``nnfast._training.plan``).
"""

import math

import numpy as np
from scipy.special import expit, ndtr, xlogy

from ._training.layout import optimizer_state_views, param_views

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
    # The model families (scikit-learn's MLP arithmetic).
    "ACTIVATIONS",
    "DERIVATIVES",
    "LOSS_FUNCTIONS",
    "OUTPUT_ACTIVATIONS",
    "OUTPUT_LOSSES",
    "REGRESSION_LOSSES",
    "REGRESSION_DERIVATIVES",
    "clip_grad_norm",
    "cosine_rate",
    "init_coefs",
    "forward_model",
    "predict_model",
    "dropout_keeps",
    "dropout_threshold",
    "dropout_masks",
    "backprop",
    "GradientStepOptimizer",
    "SGDOptimizer",
    "AdamOptimizer",
    "make_optimizer",
    "make_runner",
    "make_loss_gradient",
    "loss_gradient",
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
        Whether to compute each epoch's ``mean |y - output|`` (the benchmarks turn it off, so the
        baseline they time is the original loop and nothing more).

    Returns
    -------
    list of float
        ``mean |y - output|`` of each epoch, over its batches' forward passes (empty when
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
# The model families: scikit-learn's MLP arithmetic, operation for operation.
# ================================================================================================

# ------------------------------------------------------------------------------ activations

def inplace_identity(Z):
    """Z = Z."""


def inplace_logistic(Z):
    """Z = 1 / (1 + exp(-Z)): the original's sigmoid formula (scikit-learn's expit agrees to
    an ulp); exp(-Z) overflowing to inf gives the exact 0."""
    np.negative(Z, out=Z)
    np.exp(Z, out=Z)
    Z += 1
    np.reciprocal(Z, out=Z)


def inplace_tanh(Z):
    """Z = tanh(Z)."""
    np.tanh(Z, out=Z)


def inplace_relu(Z):
    """Z = max(Z, 0)."""
    np.maximum(Z, 0, out=Z)


def inplace_leaky_relu(Z):
    """Z = Z where Z >= 0, else 0.01 * Z."""
    np.multiply(Z, 0.01, out=Z, where=Z < 0)


def inplace_elu(Z):
    """Z = Z where Z > 0, else exp(Z) - 1 (alpha = 1)."""
    np.expm1(Z, out=Z, where=Z <= 0)


def inplace_gelu(Z):
    """Z = Z * Phi(Z), Phi the standard normal distribution function (the exact GELU,
    0.5 * Z * (1 + erf(Z / sqrt(2))), with Phi from SciPy's ndtr)."""
    Z *= ndtr(Z)


def inplace_silu(Z):
    """Z = Z * sigmoid(Z) (SiLU, "swish")."""
    Z *= expit(Z)


def inplace_softplus(Z):
    """Z = log(1 + exp(Z)), as logaddexp(0, Z): no overflow."""
    np.logaddexp(0, Z, out=Z)


def inplace_softmax(Z):
    """Z = exp(Z - max_row(Z)) / sum_row(exp(Z - max_row(Z))): never overflows."""
    shifted = Z - Z.max(axis=1)[:, np.newaxis]
    np.exp(shifted, out=Z)
    Z /= Z.sum(axis=1)[:, np.newaxis]


def inplace_exp(Z):
    """Z = exp(Z)."""
    np.exp(Z, out=Z)


ACTIVATIONS = {
    "identity": inplace_identity,
    "logistic": inplace_logistic,
    "tanh": inplace_tanh,
    "relu": inplace_relu,
    "leaky_relu": inplace_leaky_relu,
    "elu": inplace_elu,
    "gelu": inplace_gelu,
    "silu": inplace_silu,
    "softplus": inplace_softplus,
    "softmax": inplace_softmax,
    "exp": inplace_exp,
}
# The activation of each output; "original" is the sigmoid.
OUTPUT_ACTIVATIONS = {
    "original": inplace_logistic,
    "identity": inplace_identity,
    "logistic": inplace_logistic,
    "softmax": inplace_softmax,
    "exp": inplace_exp,
}


# Derivatives applied to the back-propagated delta in place: scikit-learn's four from the
# activation's output Z (as its DERIVATIVES), the others from the pre-activation P, each by
# its own formula (the kernel computes them otherwise: from outputs, or kept slopes).
def inplace_identity_derivative(Z, delta, P):
    """delta *= 1."""


def inplace_logistic_derivative(Z, delta, P):
    """delta *= Z; delta *= 1 - Z."""
    delta *= Z
    delta *= 1 - Z


def inplace_tanh_derivative(Z, delta, P):
    """delta *= 1 - Z**2."""
    delta *= 1 - Z**2


def inplace_relu_derivative(Z, delta, P):
    """delta = 0 where Z == 0."""
    delta[Z == 0] = 0


def inplace_leaky_relu_derivative(Z, delta, P):
    """delta *= 0.01 where P <= 0 (PyTorch's choice at 0)."""
    np.multiply(delta, 0.01, out=delta, where=P <= 0)


def inplace_elu_derivative(Z, delta, P):
    """delta *= exp(P) where P <= 0."""
    np.multiply(delta, np.exp(P), out=delta, where=P <= 0)


def inplace_gelu_derivative(Z, delta, P):
    """delta *= Phi(P) + P * phi(P), phi the standard normal density."""
    delta *= ndtr(P) + P * (np.exp(-0.5 * P * P) / np.sqrt(2 * np.pi)).astype(P.dtype)


def inplace_silu_derivative(Z, delta, P):
    """delta *= s * (1 + P * (1 - s)), s = sigmoid(P), with 1 - s as sigmoid(-P) (no
    cancellation where s is near 1)."""
    delta *= expit(P) * (1 + P * expit(-P))


def inplace_softplus_derivative(Z, delta, P):
    """delta *= sigmoid(P)."""
    delta *= expit(P)


DERIVATIVES = {
    "identity": inplace_identity_derivative,
    "logistic": inplace_logistic_derivative,
    "tanh": inplace_tanh_derivative,
    "relu": inplace_relu_derivative,
    "leaky_relu": inplace_leaky_relu_derivative,
    "elu": inplace_elu_derivative,
    "gelu": inplace_gelu_derivative,
    "silu": inplace_silu_derivative,
    "softplus": inplace_softplus_derivative,
}


# ----------------------------------------------------------------------------------- losses

def squared_loss(y_true, y_pred, sample_weight=None):
    """0.5 * mean over outputs of the (weighted) mean over rows of (y - a)**2."""
    return 0.5 * np.average((y_true - y_pred) ** 2, weights=sample_weight, axis=0).mean()


def original_loss(y_true, y_pred, sample_weight=None):
    """0.5 * sum over outputs of the (weighted) mean over rows of (y - a)**2: the loss whose
    gradient the original's delta (a - y) * a * (1 - a) is."""
    return 0.5 * np.average((y_true - y_pred) ** 2, weights=sample_weight, axis=0).sum()


def poisson_loss(y_true, y_pred, sample_weight=None):
    """Half the Poisson deviance: sum over outputs of the mean of y log(y / a) - y + a."""
    return np.average(xlogy(y_true, y_true / y_pred) - y_true + y_pred,
                      weights=sample_weight, axis=0).sum()


def log_loss(y_true, y_prob, sample_weight=None):
    """Categorical cross-entropy with probabilities clipped to [eps, 1 - eps]; one column is
    read as the probability of the second of two classes."""
    eps = np.finfo(y_prob.dtype).eps
    y_prob = np.clip(y_prob, eps, 1 - eps)
    if y_prob.shape[1] == 1:
        y_prob = np.append(1 - y_prob, y_prob, axis=1)
    if y_true.shape[1] == 1:
        y_true = np.append(1 - y_true, y_true, axis=1)
    return -np.average(xlogy(y_true, y_prob), weights=sample_weight, axis=0).sum()


def binary_log_loss(y_true, y_prob, sample_weight=None):
    """Binary cross-entropy of each output unit, summed over units, clipped as log_loss."""
    eps = np.finfo(y_prob.dtype).eps
    y_prob = np.clip(y_prob, eps, 1 - eps)
    return -np.average(xlogy(y_true, y_prob) + xlogy(1 - y_true, 1 - y_prob),
                       weights=sample_weight, axis=0).sum()


LOSS_FUNCTIONS = {
    "squared_error": squared_loss,
    "poisson": poisson_loss,
    "log_loss": log_loss,
    "binary_log_loss": binary_log_loss,
    "original": original_loss,
}
# The loss of each output.
OUTPUT_LOSSES = {
    "original": original_loss,
    "identity": squared_loss,
    "logistic": binary_log_loss,
    "softmax": log_loss,
    "exp": poisson_loss,
}


# The robust regression losses of an identity output (Network's ``loss=``, MLPRegressor's
# ``loss=``), on squared_loss's conventions: a per-element loss of the residual
# r = prediction - y, its weighted average over rows, then the mean over outputs; the output
# delta is the per-element derivative, as squared error's delta is a - y (that mean over
# outputs is not in the delta, as in scikit-learn's squared error). Each takes its parameter
# (Huber's delta, the quantile q; absolute error ignores it).

def absolute_loss(y_true, y_pred, sample_weight=None, parameter=None):
    """mean over outputs of the (weighted) mean over rows of |a - y|."""
    return np.average(np.abs(y_pred - y_true), weights=sample_weight, axis=0).mean()


def huber_loss(y_true, y_pred, sample_weight=None, parameter=1.0):
    """mean over outputs of the (weighted) mean over rows of 0.5 r**2 where |r| <= delta,
    else delta * (|r| - delta / 2), r = a - y, delta = parameter."""
    r = y_pred - y_true
    size = np.abs(r)
    elements = np.where(size <= parameter, 0.5 * r**2, parameter * (size - 0.5 * parameter))
    return np.average(elements, weights=sample_weight, axis=0).mean()


def quantile_loss(y_true, y_pred, sample_weight=None, parameter=0.5):
    """The pinball loss of quantile q = parameter: mean over outputs of the (weighted) mean
    over rows of q * (y - a) where y >= a, else (1 - q) * (a - y)."""
    r = y_true - y_pred
    elements = np.where(r >= 0, parameter * r, (parameter - 1) * r)
    return np.average(elements, weights=sample_weight, axis=0).mean()


def absolute_derivative(y, a, parameter=None):
    """sign(a - y), 0 at equality."""
    return np.sign(a - y)


def huber_derivative(y, a, parameter=1.0):
    """clip(a - y, -delta, delta)."""
    return np.clip(a - y, -parameter, parameter)


def quantile_derivative(y, a, parameter=0.5):
    """-q where y > a, 1 - q where y < a, 0 at equality (in a's dtype)."""
    r = a - y
    return np.where(r > 0, 1 - parameter, np.where(r < 0, -parameter, 0.0)).astype(a.dtype)


REGRESSION_LOSSES = {
    "absolute_error": absolute_loss,
    "huber": huber_loss,
    "quantile": quantile_loss,
}
REGRESSION_DERIVATIVES = {
    "absolute_error": absolute_derivative,
    "huber": huber_derivative,
    "quantile": quantile_derivative,
}


def _data_loss(output, y, a, sample_weight, loss, loss_parameter):
    """The batch's data loss: the output's own, or a regression loss of an identity output."""
    if loss is None:
        return OUTPUT_LOSSES[output](y, a, sample_weight)
    return REGRESSION_LOSSES[loss](y, a, sample_weight, loss_parameter)


# ----------------------------------------------------------------------- forward, backward

def init_coefs(sizes, random_state, activation="relu", dtype=np.float64):
    """Initial weights and biases drawn as scikit-learn's MLP draws them.

    For each layer pair (a, b) in order: bound = sqrt(factor / (a + b)) with factor 2 for the
    logistic activation and 6 otherwise; W = uniform(-bound, bound, (a, b)), then
    b = uniform(-bound, bound, b), drawn in float64 and cast.

    Parameters
    ----------
    sizes : sequence of int
    random_state : numpy.random.RandomState (advances)
    activation : str
        The hidden activation (scikit-learn has one for all hidden layers).
    dtype : float32 or float64

    Returns
    -------
    weights, biases : lists of ndarray
    """
    factor = 2.0 if activation == "logistic" else 6.0
    weights, biases = [], []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        bound = np.sqrt(factor / (fan_in + fan_out))
        weights.append(random_state.uniform(-bound, bound, (fan_in, fan_out)).astype(dtype))
        biases.append(random_state.uniform(-bound, bound, fan_out).astype(dtype))
    return weights, biases


def forward_model(weights, biases, x, activations, output, preactivations=None,
                  masks=None, undropped=None):
    """Every layer's activations [x, a_1, ..., a_L]: a_{k+1} = act_k(a_k @ W_k + b_k), the
    hidden layers' activations by name (one per hidden layer), the last one the output's.
    preactivations: a list to which each hidden layer's a_k @ W_k + b_k is appended.
    masks: dropout, one array (or None) per hidden layer (``dropout_masks``) that multiplies
    its activations; undropped: a list to which each hidden layer's activations before the
    mask are appended."""
    layers = [x]
    for k, w in enumerate(weights):
        z = layers[-1].dot(w)
        if biases is not None:
            z += biases[k]
        if k == len(weights) - 1:
            OUTPUT_ACTIVATIONS[output](z)
        else:
            if preactivations is not None:
                preactivations.append(z.copy())
            ACTIVATIONS[activations[k]](z)
            if undropped is not None:
                undropped.append(z.copy())
            if masks is not None and masks[k] is not None:
                z *= masks[k]
        layers.append(z)
    return layers


# ------------------------------------------------------------------------------ dropout
# Inverted dropout: in training, each hidden unit of each row is kept with probability 1 - p
# and then scaled by 1 / (1 - p), else zeroed; prediction uses every unit unscaled. Whether a
# unit is kept is a function of the fit's seed and the unit's place in the stream of rows the
# fit trains on, so that the kernel and this reference draw the same masks, whatever the
# threads or batches: counter = position * H + offset_k + j, where position counts the rows
# trained before this one (the optimizer state's samples_seen at the epoch's start, plus the
# row's place in the epoch), H is the number of hidden units of the network, offset_k those of
# the hidden layers before layer k, and j the unit. The counter is mixed with the seed by
# SplitMix64's finaliser; the unit is kept when the top 53 bits of the result are at least
# floor(p * 2**53).
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX_2 = np.uint64(0x94D049BB133111EB)


def dropout_keeps(seed, counters):
    """Whether each unit of a uint64 array of counters is kept, as 53-bit integers
    (compare with ``dropout_threshold``)."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + counters * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX_1
        z = (z ^ (z >> np.uint64(27))) * _MIX_2
        z ^= z >> np.uint64(31)
    return z >> np.uint64(11)


def dropout_threshold(rate):
    """floor(rate * 2**53): a unit whose ``dropout_keeps`` value is below it is dropped."""
    return np.uint64(math.floor(rate * 2.0**53))


def dropout_masks(sizes, rates, seed, first_position, n_rows, dtype):
    """One (n_rows, width) mask per hidden layer: 1 / (1 - p) where a unit is kept, 0 where it
    is dropped (None for a layer with rate 0), for rows at positions first_position, ...,
    first_position + n_rows - 1 of the fit's stream."""
    hidden = sizes[1:-1]
    total = sum(hidden)
    positions = np.arange(first_position, first_position + n_rows, dtype=np.uint64)
    masks, offset = [], 0
    for width, rate in zip(hidden, rates):
        if rate > 0:
            counters = (positions[:, np.newaxis] * np.uint64(total) + np.uint64(offset)
                        + np.arange(width, dtype=np.uint64))
            kept = dropout_keeps(seed, counters) >= dropout_threshold(rate)
            masks.append(np.where(kept, 1.0 / (1.0 - rate), 0.0).astype(dtype))
        else:
            masks.append(None)
        offset += width
    return masks


def predict_model(weights, biases, x, activations, output):
    """The output activations of a model (no warnings for exp overflowing to inf)."""
    with np.errstate(over="ignore"):
        return forward_model(weights, biases, x, activations, output)[-1]


def _output_delta(output, y, a, loss=None, loss_parameter=None):
    """d_L, with the descent sign: a - y for scikit-learn's outputs (each output's loss is
    matched to its activation so that this is the gradient at the pre-activation), and the
    original's (a - y) * a * (1 - a) for "original"; a regression loss's derivative at
    a - y (identity output)."""
    if loss is not None:
        return REGRESSION_DERIVATIVES[loss](y, a, loss_parameter)
    if output == "original":
        return (a - y) * nonlin(a, deriv=True)
    return a - y


def backprop(weights, biases, x, y, sample_weight, activations, output, alpha, reduction,
             weight_grads, bias_grads, need_loss=True, loss=None, loss_parameter=None,
             masks=None):
    """One batch's loss and gradients, as scikit-learn's ``_backprop``.

    Parameters
    ----------
    weights, biases : lists of ndarray (biases may be None)
    x, y : 2-D arrays of the batch (x may be a scipy sparse matrix: ``x.dot(W)`` and
        ``x.T.dot(delta)`` are then scipy's products and return dense arrays)
    sample_weight : 1-D array of the batch, or None
    activations : tuple of str, one per hidden layer
    output : str
    alpha : float
    reduction : {"mean", "sum"}
    weight_grads, bias_grads : lists of ndarray, written (bias_grads None without biases)
    need_loss : bool
        False skips the data loss (returned as None).
    loss : str or None
        A key of ``REGRESSION_LOSSES`` (identity output), or None for the output's own loss.
    loss_parameter : float or None
        Its parameter: Huber's delta, or the quantile.
    masks : list or None
        Dropout's masks of the batch (``dropout_masks``), or None.

    Returns
    -------
    loss : float or None
        data loss + 0.5 * alpha * sum ||W||^2 / denom.
    layers : list of ndarray
        The forward pass, [x, a_1, ..., a_L].
    """
    preactivations, undropped = [], []
    layers = forward_model(weights, biases, x, activations, output, preactivations, masks,
                           undropped)
    data_loss = (_data_loss(output, y, layers[-1], sample_weight, loss, loss_parameter)
                 if need_loss else None)
    if reduction == "mean":
        denom = x.shape[0] if sample_weight is None else sample_weight.sum()
    else:
        denom = 1
    if need_loss:
        data_loss += l2_penalty(weights, alpha, denom)
    last = len(weights) - 1
    delta = _output_delta(output, y, layers[-1], loss, loss_parameter)
    if sample_weight is not None:
        delta *= sample_weight.reshape(-1, 1)
    for k in range(last, -1, -1):
        _layer_gradient(k, denom, reduction, alpha, weights, layers, delta, weight_grads,
                        bias_grads)
        if k > 0:
            delta = delta.dot(weights[k].T)
            DERIVATIVES[activations[k - 1]](undropped[k - 1], delta, preactivations[k - 1])
            if masks is not None and masks[k - 1] is not None:
                delta *= masks[k - 1]
    return data_loss, layers


def _layer_gradient(k, denom, reduction, alpha, weights, layers, delta, weight_grads, bias_grads):
    """G_W = (a_k.T @ d + alpha * W_k) / denom; G_b = sum_rows(d) / denom ("sum": no division)."""
    weight_grads[k][...] = layers[k].T.dot(delta)
    if bias_grads is not None:
        bias_grads[k][...] = np.sum(delta, axis=0)
    finish_gradient(weight_grads[k], None if bias_grads is None else bias_grads[k],
                    weights[k], alpha, reduction, denom)


def finish_gradient(weight_grad, bias_grad, weight, alpha, reduction, denom):
    """A layer's summed gradient (a.T @ d and, bias_grad, the column sums of d) becomes G in
    place: (sum + alpha * W) / denom for the weights, sum / denom for the biases, in
    scikit-learn's order of operations; reduction "sum" does not divide."""
    weight_grad += alpha * weight
    if reduction == "mean":
        weight_grad /= denom
        if bias_grad is not None:
            bias_grad /= denom


def l2_penalty(weights, alpha, denom):
    """The loss's L2 term, 0.5 * alpha * sum ||W||^2 / denom (biases are not penalised)."""
    values = 0
    for w in weights:
        w = w.ravel()
        values += np.dot(w, w)
    return 0.5 * alpha * values / denom


# ------------------------------------------------------------------------------- optimizers

def cosine_rate(learning_rate, epoch, epochs, warmup_epochs=0):
    """The ``"cosine"`` schedule's learning rate for the epoch at position ``epoch``.

    With W = warmup_epochs and E = epochs, for epoch e = 0, 1, ...::

        e < W:       learning_rate * (e + 1) / (W + 1)                    (linear warm-up)
        W <= e < E:  learning_rate * 0.5 * (1 + cos(pi * (e - W) / (E - W)))
        e >= E:      0                                      (the schedule is over)

    The cosine part is PyTorch's ``CosineAnnealingLR(T_max=E - W, eta_min=0)`` stepped once
    per epoch; with a warm-up, ``SequentialLR([LinearLR(start_factor=1 / (W + 1),
    end_factor=1, total_iters=W), CosineAnnealingLR(T_max=E - W)], milestones=[W])``, whose
    warm-up factors ``s + (1 - s) * e / W`` are ``(e + 1) / (W + 1)`` exactly for that start
    factor (PyTorch's factors must be > 0, so its warm-up cannot start at 0 either). Past E
    epochs the rate stays 0 (PyTorch's cosine would climb back): Adam's weights no longer
    move, SGD's only by their momentum.

    Parameters
    ----------
    learning_rate : float
        The initial (peak) rate.
    epoch : int >= 0
    epochs : int >= 1
        E, the schedule's length, warm-up included.
    warmup_epochs : int, 0 <= W < E

    Returns
    -------
    float
    """
    if epoch < warmup_epochs:
        return learning_rate * (epoch + 1.0) / (warmup_epochs + 1.0)
    if epoch >= epochs:
        return 0.0
    return learning_rate * 0.5 * (1.0 + math.cos(math.pi * (epoch - warmup_epochs)
                                                 / (epochs - warmup_epochs)))


def clip_grad_norm(grads, max_norm):
    """``torch.nn.utils.clip_grad_norm_`` on a step's flat gradient, in place: with
    ``norm = ||grads||_2`` (every weight's and bias's gradient, the L2 term included; summed
    in float64), ``grads *= max_norm / (norm + 1e-6)`` when that factor is below 1. Returns
    norm."""
    flat = grads.astype(np.float64)
    norm = math.sqrt(float(np.dot(flat, flat)))
    scale = max_norm / (norm + 1e-6)
    if scale < 1.0:
        grads *= grads.dtype.type(scale)
    return norm


class GradientStepOptimizer:
    """The plain step: params -= learning_rate * grads (state.learning_rate)."""

    def __init__(self, plan, state):
        self.state = state

    def update_params(self, params, grads):
        params -= self.state.learning_rate * grads

    def iteration_ends(self, time_step):
        pass


class SGDOptimizer:
    """scikit-learn's SGD with (Nesterov) momentum, on the flat params.

    v = momentum * v - lr * G; params += (momentum * v - lr * G) if nesterov else v.
    ``iteration_ends(samples_seen)``: invscaling sets lr = lr_init / (samples_seen + 1) **
    power_t.
    """

    def __init__(self, plan, state):
        self.config = plan.optimizer
        self.learning_rate_init = plan.learning_rate
        self.state = state
        self.velocities = optimizer_state_views(state.values, "sgd", plan.n_params)["velocity"]

    def update_params(self, params, grads):
        momentum, learning_rate = self.config.momentum, self.state.learning_rate
        updates = momentum * self.velocities - learning_rate * grads
        self.velocities[...] = updates
        if self.config.nesterov:
            updates = momentum * self.velocities - learning_rate * grads
        params += updates

    def iteration_ends(self, time_step):
        if self.config.schedule == "invscaling":
            self.state.learning_rate = (float(self.learning_rate_init)
                                        / (time_step + 1) ** self.config.power_t)


class AdamOptimizer:
    """scikit-learn's Adam, on the flat params.

    t += 1; m = beta_1 * m + (1 - beta_1) * G; v = beta_2 * v + (1 - beta_2) * G**2;
    lr_t = lr_init * sqrt(1 - beta_2**t) / (1 - beta_1**t) (float64; with "cosine" the
    epoch's rate, state.learning_rate, instead of lr_init);
    params += -lr_t * m / (sqrt(v) + epsilon).
    """

    def __init__(self, plan, state):
        self.config = plan.optimizer
        self.learning_rate_init = plan.learning_rate
        self.state = state
        views = optimizer_state_views(state.values, "adam", plan.n_params)
        self.ms, self.vs = views["m"], views["v"]

    def update_params(self, params, grads):
        beta_1, beta_2 = self.config.beta_1, self.config.beta_2
        self.state.step += 1
        t = self.state.step
        self.ms[...] = beta_1 * self.ms + (1 - beta_1) * grads
        self.vs[...] = beta_2 * self.vs + (1 - beta_2) * grads**2
        # "cosine" sets the epoch's rate on the state (make_runner); lr_t starts from it.
        rate = (self.state.learning_rate if self.config.schedule == "cosine"
                else self.learning_rate_init)
        learning_rate = (rate * np.sqrt(1 - beta_2**t) / (1 - beta_1**t))
        params += -learning_rate * self.ms / (np.sqrt(self.vs) + self.config.epsilon)

    def iteration_ends(self, time_step):
        pass


_OPTIMIZERS = {"plain": GradientStepOptimizer, "sgd": SGDOptimizer, "adam": AdamOptimizer}


def make_optimizer(plan, state):
    """The optimizer object of plan.optimizer, working on state (an OptimizerState) in place."""
    return _OPTIMIZERS[plan.optimizer_name](plan, state)


# ----------------------------------------------------------------------- the runner contract

def make_runner(plan, X, y, sample_weight, n_threads=1, check_every=0):
    """The numpy backend's runner for ``Network``'s general path (see ``nnfast._training.plan``).

    Parameters
    ----------
    plan : FitPlan
    X, y : 2-D C-contiguous arrays of plan.dtype; X may be a scipy CSR matrix instead
        (``nnfast._training.sparse.as_csr``): a batch is its rows (``X[rows]``) and the first
        layer's products are scipy's sparse x dense ones (``forward_model``, ``backprop``), as in
        scikit-learn's MLP.
    sample_weight : 1-D array of plan.dtype or None
    n_threads, check_every : ignored (NumPy's own threads; Ctrl-C between NumPy calls).

    Returns
    -------
    run(params, state, n_epochs, orders) -> (epoch_losses, epochs_done, diverged)
    """
    n_rows = X.shape[0]
    batch_size = plan.batch_size

    def run(params, state, n_epochs, orders):
        weights, biases = param_views(params, plan.sizes, plan.bias)
        grads = np.empty_like(params)
        weight_grads, bias_grads = param_views(grads, plan.sizes, plan.bias)
        optimizer = make_optimizer(plan, state)
        original = plan.output == "original"
        cosine = plan.schedule == "cosine"
        max_grad_norm = plan.max_grad_norm
        losses = np.zeros(n_epochs, dtype=np.float64)
        with np.errstate(all="ignore"):
            for epoch in range(n_epochs):
                accumulated = 0.0
                if cosine:
                    state.learning_rate = cosine_rate(plan.learning_rate, state.epochs,
                                                      plan.optimizer.epochs,
                                                      plan.optimizer.warmup_epochs)
                for start in range(0, n_rows, batch_size):
                    rows = (slice(start, start + batch_size) if orders is None
                            else orders[epoch, start:start + batch_size])
                    weight_batch = None if sample_weight is None else sample_weight[rows]
                    n_batch = min(batch_size, n_rows - start)
                    masks = (dropout_masks(plan.sizes, plan.dropout, plan.dropout_seed,
                                           state.samples_seen + start, n_batch, plan.dtype)
                             if plan.drops else None)
                    batch_loss, layers = backprop(
                        weights, biases, X[rows], y[rows], weight_batch, plan.activations,
                        plan.output, plan.alpha, plan.reduction, weight_grads, bias_grads,
                        need_loss=not original, loss=plan.loss,
                        loss_parameter=plan.loss_parameter, masks=masks)
                    if original:
                        accumulated += float(np.abs(y[rows] - layers[-1]).sum())
                    else:
                        accumulated += batch_loss * layers[0].shape[0]
                    if max_grad_norm is not None:
                        clip_grad_norm(grads, max_grad_norm)
                    optimizer.update_params(params, grads)
                losses[epoch] = accumulated / (y.size if original else n_rows)
                state.samples_seen += n_rows
                optimizer.iteration_ends(state.samples_seen)
                if cosine:
                    state.epochs += 1
                if not np.isfinite(losses[epoch]):
                    return losses, epoch, True
        return losses, n_epochs, False

    return run


def make_loss_gradient(plan, X, y, sample_weight=None, n_threads=1):
    """The numpy backend's full-batch evaluator (see ``nnfast._training.plan``).

    Returns
    -------
    evaluate(params, grad) -> loss
        The loss (float) of ``plan``'s model at params (only read), and its gradient G
        written to grad, both flat in the params layout (``nnfast._training.layout``).
    """
    def evaluate(params, grad):
        weights, biases = param_views(params, plan.sizes, plan.bias)
        weight_grads, bias_grads = param_views(grad, plan.sizes, plan.bias)
        # A loss or gradient that is not finite is returned as such, without warnings (as
        # the kernel; the caller decides).
        with np.errstate(all="ignore"):
            loss, _ = backprop(weights, biases, X, y, sample_weight, plan.activations,
                               plan.output, plan.alpha, plan.reduction, weight_grads,
                               bias_grads, loss=plan.loss,
                               loss_parameter=plan.loss_parameter)
        return float(loss)

    return evaluate


def loss_gradient(plan, params, X, y, sample_weight=None, n_threads=1):
    """The full-batch loss and gradient G of ``plan``'s model at ``params``.

    Returns
    -------
    loss : float
    grad : ndarray in the params layout (``nnfast._training.layout``)
    """
    grads = np.empty_like(params)
    loss = make_loss_gradient(plan, X, y, sample_weight, n_threads)(params, grads)
    return loss, grads
