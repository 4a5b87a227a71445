"""Where a network's numbers live: the flat parameter buffer, scikit-learn's packed vector of
the same numbers (``PackedLayout``, what L-BFGS works on) and the fit workspace.

All of a network's weights (and biases) sit back to back in one flat array, in the order
W0, b0, W1, b1, ...; ``Network.weights`` are reshaped views into it. One buffer means one copy
to make a fit atomic and one pointer for the kernel. The workspace holds every scratch buffer
a fit needs, allocated once per fit, so the kernel allocates nothing while it trains.
"""

import math

import numpy as np


def param_count(sizes, bias):
    """Total number of parameters of a network with these layer sizes."""
    return sum(n_in * n_out + (n_out if bias else 0) for n_in, n_out in zip(sizes[:-1], sizes[1:]))


def param_views(params, sizes, bias):
    """The weight matrices (and biases, or None) as views into the flat ``params``."""
    weights, biases = [], []
    offset = 0
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        weights.append(params[offset:offset + n_in * n_out].reshape(n_in, n_out))
        offset += n_in * n_out
        if bias:
            biases.append(params[offset:offset + n_out])
            offset += n_out
    return weights, (biases if bias else None)


def pack_params(weights, biases):
    """The flat buffer holding these weights and biases (the inverse of param_views)."""
    pieces = []
    for k, w in enumerate(weights):
        pieces.append(np.ravel(w))
        if biases is not None:
            pieces.append(np.ravel(biases[k]))
    return np.concatenate(pieces)


class PackedLayout:
    """scikit-learn's packed parameter vector, as its MLP hands it to L-BFGS: every weight
    matrix (row-major), then every bias vector, float64.

    The params layout holds the same blocks interleaved per layer (W0, b0, W1, b1, ...); each
    block is contiguous in both, so moving between them is one copy per block, cast on the
    way (float32 params to and from float64), with no gather, concatenation or temporary.

    Parameters
    ----------
    sizes : sequence of int
    bias : bool
    """

    def __init__(self, sizes, bias):
        self.size = param_count(sizes, bias)
        self._n_layers = len(sizes) - 1
        self._bias = bias
        weights, biases = [], []
        offset = 0
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            weights.append((offset, (n_in, n_out)))
            offset += n_in * n_out
            if bias:
                biases.append((offset, (n_out,)))
                offset += n_out
        # (slice of params, slice of the packed vector, shape) of each block in packed order.
        self._blocks = []
        packed = 0
        for start, shape in weights + biases:
            length = math.prod(shape)
            self._blocks.append((slice(start, start + length), slice(packed, packed + length),
                                 shape))
            packed += length

    def _check(self, packed):
        if not (isinstance(packed, np.ndarray) and packed.shape == (self.size,)):
            raise ValueError(f"the packed parameter vector must be a 1-D array of "
                             f"{self.size} values, got {type(packed).__name__} of shape "
                             f"{np.shape(packed)}")

    def unpack(self, packed, params):
        """Writes the packed vector's values into ``params`` (params layout)."""
        self._check(packed)
        for in_params, in_packed, _ in self._blocks:
            params[in_params] = packed[in_packed]

    def pack(self, params):
        """A new float64 packed vector of ``params``' values (params layout)."""
        packed = np.empty(self.size, dtype=np.float64)
        for in_params, in_packed, _ in self._blocks:
            packed[in_packed] = params[in_params]
        return packed

    def split(self, packed):
        """(weights, biases): views of the packed vector shaped as the layers' weight
        matrices and bias vectors (biases None without biases)."""
        self._check(packed)
        arrays = [packed[in_packed].reshape(shape) for _, in_packed, shape in self._blocks]
        return (arrays[:self._n_layers],
                arrays[self._n_layers:] if self._bias else None)


def allocate_general_workspace(sizes, bias, batch_size, dtype, shuffled=False, weighted=False,
                               training=True, sparse=False, batch_entries=None, slopes=False,
                               blocks=1):
    """Scratch buffers for ``nnfast._kernels``' ``fit`` (training) or ``loss_gradient``.

    For batches of up to batch_size rows: activations and deltas of layers 1..L, as for the
    original's step; bias_sums (the widest layer: column sums of a delta); gradient (P =
    param_count values in the params layout: a step's gradient before the optimizer takes
    it; loss_gradient writes the caller's array instead); transposed and
    transposed_gradient (P values each, at each layer's params offset: its weight matrix and
    its gradient transposed, for the skinny products); and, for shuffled fits, the gathered
    rows of a batch (batch_x, batch_y, batch_w when sample weights are given).

    blocks: a threaded dense fit's row blocks (the kernel's team step, for n_threads > 1
    without clipping): each block has its own gradient, transposes and bias sums, side by
    side in those buffers.

    slopes: the forward pass keeps hidden units' derivatives (``FitPlan.keeps_slopes``: gelu,
    silu, softplus, dropout), in ``slopes``, laid out as the activations.

    sparse: for a CSR X (``fit_sparse`` / ``loss_gradient_sparse``), which reads a
    batch's rows of X where they are (no batch_x) and transposes only the dense layers' weights
    behind the first, one layer at a time (no transposed_gradient). With batch_entries (the
    most non-zeros a batch holds; serial training), the kernel updates the first layer row by
    row from the batch transposed (column_starts, column_rows: intp; column_values), and the
    gradient holds the layers behind the first only.
    """
    activations = batch_size * sum(sizes[1:])
    n_params = param_count(sizes, bias)
    if sparse:
        dense_layer = max((a * b for a, b in zip(sizes[1:], sizes[2:])), default=0)
        row_update = training and batch_entries is not None
        first_layer = param_count(sizes[:2], bias)
        buffers = {} if not row_update else {
            "column_starts": np.empty(sizes[0] + 1, dtype=np.intp),
            "column_rows": np.empty(batch_entries, dtype=np.intp),
            "column_values": np.empty(batch_entries, dtype=dtype),
        }
        return buffers | {
            "activations": np.empty(activations, dtype=dtype),
            "deltas": np.empty(activations, dtype=dtype),
            "slopes": np.empty(activations if slopes else 0, dtype=dtype),
            "bias_sums": np.empty(max(sizes[1:]), dtype=dtype),
            "gradient": np.empty((n_params - first_layer if row_update else n_params)
                                 if training else 0, dtype=dtype),
            "transposed": np.empty(dense_layer, dtype=dtype),
            "transposed_gradient": np.empty(0, dtype=dtype),
            "batch_x": np.empty(0, dtype=dtype),
            "batch_y": np.empty(batch_size * sizes[-1] if shuffled else 0, dtype=dtype),
            "batch_w": np.empty(batch_size if shuffled and weighted else 0, dtype=dtype),
        }
    return {
        "activations": np.empty(activations, dtype=dtype),
        "deltas": np.empty(activations, dtype=dtype),
        "slopes": np.empty(activations if slopes else 0, dtype=dtype),
        "bias_sums": np.empty(max(sizes[1:]) * blocks, dtype=dtype),
        "gradient": np.empty(n_params * blocks if training else 0, dtype=dtype),
        "transposed": np.empty(n_params * blocks, dtype=dtype),
        "transposed_gradient": np.empty(n_params, dtype=dtype),
        "batch_x": np.empty(batch_size * sizes[0] if shuffled else 0, dtype=dtype),
        "batch_y": np.empty(batch_size * sizes[-1] if shuffled else 0, dtype=dtype),
        "batch_w": np.empty(batch_size if shuffled and weighted else 0, dtype=dtype),
    }


def allocate_workspace(sizes, batch_size, dtype, shuffled):
    """Scratch buffers for the kernel's ``original_fit``, batches of up to batch_size rows."""
    activations = batch_size * sum(sizes[1:])
    return {
        "activations": np.empty(activations, dtype=dtype),
        "deltas": np.empty(activations, dtype=dtype),
        "grad": np.empty(max(sizes[1:]), dtype=dtype),
        "batch_x": np.empty(batch_size * sizes[0] if shuffled else 0, dtype=dtype),
        "batch_y": np.empty(batch_size * sizes[-1] if shuffled else 0, dtype=dtype),
    }


# Optimizer state: blocks of P values (P = param_count), each in the params layout above.
# SGD keeps its velocities; Adam its first moments (m) then its second moments (v); the plain
# step keeps nothing. Counters (Adam's step, samples seen, current rate) live beside the array
# in ``nnfast._training.plan.OptimizerState``.
_STATE_BLOCKS = {"plain": (), "sgd": ("velocity",), "adam": ("m", "v")}


def optimizer_state_size(optimizer_name, n_params):
    """Length of the optimizer state array of "plain", "sgd" or "adam" for P = n_params."""
    return len(_STATE_BLOCKS[optimizer_name]) * n_params


def optimizer_state_views(values, optimizer_name, n_params):
    """{block name: flat view of P values} of an optimizer state array."""
    return {name: values[k * n_params:(k + 1) * n_params]
            for k, name in enumerate(_STATE_BLOCKS[optimizer_name])}
