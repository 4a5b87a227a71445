"""JAX as a peer of the MLP rows of ``python -m nnfast bench``: scikit-learn's stochastic MLP
(relu hidden layers, softmax output, log loss with its L2 term, Adam or Nesterov SGD at
scikit-learn's defaults, ``batch_size="auto"``) written in JAX with the whole training loop
compiled by XLA: ``lax.scan`` over an epoch's mini-batches inside ``lax.fori_loop`` over the
epochs, one ``jax.jit`` call per fit.

It is the same fit as scikit-learn's, not just the same model: the initial weights and the
row order of every epoch are drawn on the host from ``RandomState(random_state)`` exactly as
scikit-learn draws them (Glorot-uniform weights layer by layer, then
``sklearn.utils.shuffle`` of the index vector each epoch), and passed in, so in float64 the
final weights agree with scikit-learn's (and nnfast's) to rounding, which the bench reports.
The loop does not compute the loss (scikit-learn and nnfast do, for ``loss_curve_``): that
only makes JAX's work smaller.

The model is written once against two small namespaces, an array module and a ``lax``
(``scan`` / ``fori_loop``), so the same code runs under ``jax.numpy`` / ``jax.lax`` in the bench
and under NumPy with Python loops (``NUMPY_LAX``) where JAX is not installed: the tests check
that fit against scikit-learn's without JAX.

Timing: compilation (``jit(...).lower(...).compile()``) happens once per (workload, dtype,
epochs) and is reported separately (``compile_seconds``); a timed fit starts from NumPy data,
draws the weights and orders, moves the arrays to the device, runs the compiled loop, waits
for it and copies the weights back. XLA's CPU threads are its default (every core); set
``XLA_FLAGS`` before the bench starts to change them.
"""

import time
import warnings

import numpy as np

# scikit-learn's defaults for the solvers the workloads use.
ALPHA = 1e-4
LEARNING_RATE = 1e-3
BETA_1, BETA_2, EPSILON = 0.9, 0.999, 1e-8
MOMENTUM = 0.9
MAX_BATCH = 200  # batch_size="auto": min(200, n_samples)


class _NumpyLax:
    """``lax.scan`` / ``lax.fori_loop`` as Python loops, for running the model on NumPy."""

    @staticmethod
    def scan(step, carry, xs):
        for i in range(len(xs[0])):
            carry, _ = step(carry, tuple(x[i] for x in xs))
        return carry, None

    @staticmethod
    def fori_loop(lower, upper, body, carry):
        for i in range(lower, upper):
            carry = body(i, carry)
        return carry


NUMPY_LAX = _NumpyLax()


def jax_available():
    try:
        import jax  # noqa: F401
    except ImportError:
        return False
    return True


def supports(workload):
    """Whether the JAX peer has this workload's model: the stochastic solvers on dense data
    with more than two classes (softmax output)."""
    return workload.solver in ("adam", "sgd") and not workload.sparse and workload.classes > 2


def batch_layout(n_samples):
    """(batch size, full batches, rows of the last, partial batch) of scikit-learn's
    ``gen_batches(n_samples, min(200, n_samples))``."""
    batch = min(MAX_BATCH, n_samples)
    return batch, n_samples // batch, n_samples % batch


def make_train(xp, lax, solver, n_samples):
    """The whole training loop ``train(params, state, X, Y, orders) -> (params, state)``.

    ``params`` is ``(coefs, intercepts)`` (lists, scikit-learn's layout), ``state`` the
    optimizer's (``initial_state``), ``Y`` one-hot targets in X's dtype, ``orders`` the row
    order of each epoch (epochs x n_samples integers). Shapes are fixed by the arguments, so
    under ``jax.jit`` one compilation serves every fit of the same shapes.
    """
    batch, n_full, remainder = batch_layout(n_samples)

    def gradients(coefs, intercepts, X, Y):
        # Forward: relu hidden layers, softmax output (scikit-learn's _forward_pass).
        activations = [X]
        for k, (W, b) in enumerate(zip(coefs, intercepts)):
            z = activations[-1] @ W + b
            if k < len(coefs) - 1:
                activations.append(xp.maximum(z, 0))
            else:
                z = z - z.max(axis=1, keepdims=True)
                e = xp.exp(z)
                activations.append(e / e.sum(axis=1, keepdims=True))
        # Backward (scikit-learn's _backprop / _compute_loss_grad, no sample weights).
        n = X.shape[0]
        delta = activations[-1] - Y
        coef_grads, intercept_grads = [None] * len(coefs), [None] * len(coefs)
        for k in range(len(coefs) - 1, -1, -1):
            coef_grads[k] = (activations[k].T @ delta + ALPHA * coefs[k]) / n
            intercept_grads[k] = delta.sum(axis=0) / n
            if k > 0:
                delta = (delta @ coefs[k].T) * (activations[k] > 0)
        return coef_grads + intercept_grads

    def adam(params, state, grads):
        t, ms, vs = state
        t = t + 1
        ms = [BETA_1 * m + (1 - BETA_1) * g for m, g in zip(ms, grads)]
        vs = [BETA_2 * v + (1 - BETA_2) * (g * g) for v, g in zip(vs, grads)]
        # The step size in float64 as scikit-learn's (a Python float), then in the
        # parameters' dtype.
        tf = t.astype(np.float64) if hasattr(t, "astype") else float(t)
        rate = (LEARNING_RATE * xp.sqrt(1 - BETA_2 ** tf) / (1 - BETA_1 ** tf))
        rate = xp.asarray(rate, dtype=params[0].dtype)
        params = [p - rate * m / (xp.sqrt(v) + EPSILON) for p, m, v in zip(params, ms, vs)]
        return params, (t, ms, vs)

    def nesterov_sgd(params, state, grads):
        velocities = [MOMENTUM * v - LEARNING_RATE * g for v, g in zip(state, grads)]
        updates = [MOMENTUM * v - LEARNING_RATE * g for v, g in zip(velocities, grads)]
        return [p + u for p, u in zip(params, updates)], velocities

    update = {"adam": adam, "sgd": nesterov_sgd}[solver]

    def step(carry, batch_data):
        (coefs, intercepts), state = carry
        X, Y = batch_data
        params, state = update(list(coefs) + list(intercepts), state,
                               gradients(coefs, intercepts, X, Y))
        half = len(coefs)
        return ((params[:half], params[half:]), state), None

    def train(params, state, X, Y, orders):
        def epoch(e, carry):
            Xe, Ye = X[orders[e]], Y[orders[e]]
            full = n_full * batch
            carry, _ = lax.scan(step, carry,
                                (Xe[:full].reshape(n_full, batch, X.shape[1]),
                                 Ye[:full].reshape(n_full, batch, Y.shape[1])))
            if remainder:
                carry, _ = step(carry, (Xe[full:], Ye[full:]))
            return carry

        return lax.fori_loop(0, orders.shape[0], epoch, (params, state))

    return train


def initial_state(xp, solver, coefs, intercepts):
    """The optimizer's state before the first step: Adam's (t, m, v), SGD's velocities."""
    zeros = [xp.zeros_like(p) for p in list(coefs) + list(intercepts)]
    if solver == "adam":
        return (xp.asarray(0), zeros, [xp.zeros_like(z) for z in zeros])
    return zeros


def host_inputs(workload, dtype, max_iter):
    """What scikit-learn draws before and during its fit, drawn the same way: the initial
    (coefs, intercepts), the one-hot targets and each epoch's row order."""
    from sklearn.utils import shuffle

    X, y = workload.data(dtype)
    layer_units = [X.shape[1], *workload.params()["hidden_layer_sizes"], workload.classes]
    random_state = np.random.RandomState(workload.params()["random_state"])
    coefs, intercepts = [], []
    for fan_in, fan_out in zip(layer_units, layer_units[1:]):
        bound = np.sqrt(6.0 / (fan_in + fan_out))  # relu: scikit-learn's factor 6
        coefs.append(random_state.uniform(-bound, bound, (fan_in, fan_out)).astype(dtype))
        intercepts.append(random_state.uniform(-bound, bound, fan_out).astype(dtype))
    classes = np.unique(y)
    Y = (y[:, None] == classes[None, :]).astype(dtype)
    order = np.arange(len(X))
    orders = np.empty((max_iter, len(X)), dtype=np.int64)
    for epoch in range(max_iter):
        order = shuffle(order, random_state=random_state)
        orders[epoch] = order
    return X, Y, coefs, intercepts, orders


def fit_numpy(workload, dtype, max_iter):
    """The model's fit run on NumPy with Python loops: (coefs, intercepts)."""
    X, Y, coefs, intercepts, orders = host_inputs(workload, np.dtype(dtype), max_iter)
    train = make_train(np, NUMPY_LAX, workload.solver, len(X))
    (coefs, intercepts), _ = train((coefs, intercepts),
                                   initial_state(np, workload.solver, coefs, intercepts),
                                   X, Y, orders)
    return coefs, intercepts


_compiled = {}  # (workload, dtype, epochs) -> (compiled train, compile seconds)


def _jax():
    import jax

    # float64 rows need 64-bit arrays (JAX's default is 32-bit); float32 rows stay float32
    # (Python scalars are weakly typed in JAX, as in NumPy 2).
    jax.config.update("jax_enable_x64", True)
    return jax


def _compiled_train(workload, dtype, max_iter, args):
    key = (workload, np.dtype(dtype).name, max_iter)
    if key not in _compiled:
        jax = _jax()
        train = make_train(jax.numpy, jax.lax, workload.solver, args[2].shape[0])
        start = time.perf_counter()
        compiled = jax.jit(train).lower(*args).compile()
        _compiled[key] = compiled, time.perf_counter() - start
    return _compiled[key][0]


def compile_seconds(workload, dtype, max_iter):
    """Seconds XLA took to compile the loop of this (workload, dtype, epochs); None if it has
    not been compiled in this process."""
    entry = _compiled.get((workload, np.dtype(dtype).name, max_iter))
    return None if entry is None else entry[1]


def fit(workload, dtype, n_threads, max_iter):
    """One timed JAX fit, as ``nnfast.cli.bench.mlp``'s implementations: (seconds, coefs), None
    for a workload the peer does not have. The first call for a shape compiles, untimed."""
    if not supports(workload):
        return None
    jax = _jax()
    jnp = jax.numpy

    def device_arguments():
        X, Y, coefs, intercepts, orders = host_inputs(workload, np.dtype(dtype), max_iter)
        params = ([jnp.asarray(c) for c in coefs], [jnp.asarray(b) for b in intercepts])
        return (params, initial_state(jnp, workload.solver, *params), jnp.asarray(X),
                jnp.asarray(Y), jnp.asarray(orders))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # jax's notes on x64 / donated buffers
        compiled = _compiled_train(workload, dtype, max_iter, device_arguments())
        start = time.perf_counter()
        (coefs, _), _ = compiled(*device_arguments())
        coefs = [np.asarray(jax.block_until_ready(c)) for c in coefs]
        return time.perf_counter() - start, coefs
