"""The PyTorch peer of the MLP rows: scikit-learn's MLP, as nnfast's estimators fit it, written
as a ``torch.nn`` model and a plain mini-batch loop over shuffled rows (autograd, CPU).

``Peer.from_params`` reads the same estimator parameters that the nnfast side of a row is given,
so that one dictionary says what both fit:

- the model: ``Linear`` layers of ``hidden_layer_sizes``, the hidden ``activation`` after each
  hidden one (``ACTIVATIONS``: PyTorch's modules for nnfast's functions) and, with
  ``dropout``, ``torch.nn.Dropout(p)`` after each hidden activation (inverted dropout, in
  training only, as nnfast's);
- the loss: for a classifier, cross-entropy on the logits (nnfast's softmax and log-loss); for a
  regressor, scikit-learn's squared error ``0.5 * mean`` (half ``MSELoss``, since PyTorch's has
  no 0.5) or ``HuberLoss(delta=huber_delta)``, whose mean over every element of 0.5 r**2 /
  delta * (|r| - delta / 2) is ``nnfast.reference.huber_loss`` (the mean over outputs of the
  means over rows is the mean over all elements); either plus scikit-learn's L2 term
  ``0.5 * alpha * sum ||W||**2 / rows`` (biases not penalised). A regressor of k outputs
  steps along the gradient of k times the data loss (``backward``), as scikit-learn's does;
- the optimizer: ``Adam`` or ``SGD`` with Nesterov momentum at scikit-learn's defaults, the
  ``"cosine"`` schedule as ``CosineAnnealingLR(T_max=epochs)`` stepped once per epoch, and
  ``max_grad_norm`` as ``clip_grad_norm_`` over every parameter's gradient (the L2 term's
  included) before each step; batches of ``min(200, rows)`` for ``batch_size="auto"``.

Initial weights are PyTorch's own (what a fit costs does not depend on them). PyTorch's Adam adds
epsilon after its bias correction, where scikit-learn adds it before: the steps differ by
about epsilon / sqrt(v), which does not change the work a step does. With SGD, PyTorch's
momentum buffer holds gradients, not steps, so under a schedule that changes the rate its
steps are not scikit-learn's; the rows time the cosine schedule with Adam.
"""

import dataclasses
import time

import numpy as np

ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "silu", "softplus", "tanh", "logistic",
               "identity")
#: Estimator parameters the peer ignores: the stopping rule (the rows switch it off and run
#: every epoch), the seed (PyTorch draws its own), nnfast's threads (the peer's are its own).
_IGNORED = {"max_iter", "tol", "n_iter_no_change", "random_state", "n_threads", "verbose"}


def available():
    """Whether torch can be imported."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


@dataclasses.dataclass(frozen=True)
class Peer:
    """What the PyTorch peer fits: one MLP estimator's model, loss and optimizer."""

    classifier: bool
    hidden_layer_sizes: tuple = (100,)
    activation: str = "relu"
    dropout: tuple = ()  # one rate per hidden layer; () for none
    loss: str = "log_loss"  # classifier; a regressor's "squared_error" or "huber"
    huber_delta: float = 1.0
    solver: str = "adam"
    alpha: float = 1e-4
    learning_rate_init: float = 0.001
    batch_size: object = "auto"
    schedule: str = "constant"  # or "cosine"
    max_grad_norm: object = None

    @classmethod
    def from_params(cls, params, classifier):
        """The peer of ``MLPClassifier(**params)`` (classifier True) or ``MLPRegressor(**params)``.

        Raises ValueError for a parameter or value the peer does not write in PyTorch, so
        that a row never times a different model on one side.
        """
        params = {k: v for k, v in params.items() if k not in _IGNORED}
        fields = {"classifier": classifier}
        for name in ("hidden_layer_sizes", "activation", "solver", "alpha",
                     "learning_rate_init", "batch_size", "max_grad_norm", "huber_delta"):
            if name in params:
                fields[name] = params.pop(name)
        fields["hidden_layer_sizes"] = tuple(fields.get("hidden_layer_sizes", (100,)))
        if "learning_rate" in params:
            fields["schedule"] = params.pop("learning_rate")
        if "loss" in params:
            fields["loss"] = params.pop("loss")
        elif not classifier:
            fields["loss"] = "squared_error"
        dropout = params.pop("dropout", 0.0)
        n_hidden = len(fields["hidden_layer_sizes"])
        rates = (tuple(float(r) for r in dropout) if np.ndim(dropout)
                 else (float(dropout),) * n_hidden)
        fields["dropout"] = rates if any(rates) else ()
        if params.pop("shuffle", True) is not True:
            raise ValueError("the PyTorch peer always shuffles the rows")
        if params:
            raise ValueError(f"the PyTorch peer has no {sorted(params)}")
        peer = cls(**fields)
        if peer.activation not in ACTIVATIONS:
            raise ValueError(f"the PyTorch peer has no activation {peer.activation!r}")
        if peer.solver not in ("adam", "sgd"):
            raise ValueError(f"the PyTorch peer has no solver {peer.solver!r}")
        if peer.schedule not in ("constant", "cosine"):
            raise ValueError(f"the PyTorch peer has no learning_rate {peer.schedule!r}")
        if peer.loss not in (("log_loss",) if classifier else ("squared_error", "huber")):
            raise ValueError(f"the PyTorch peer has no loss {peer.loss!r}")
        if peer.dropout and len(peer.dropout) != n_hidden:
            raise ValueError(f"dropout has {len(peer.dropout)} rates for {n_hidden} hidden "
                             "layers")
        return peer

    def batch_rows(self, n_rows):
        return min(200, n_rows) if self.batch_size == "auto" else min(self.batch_size, n_rows)


def _activation_module(name):
    import torch

    modules = {
        "relu": torch.nn.ReLU,
        "leaky_relu": lambda: torch.nn.LeakyReLU(negative_slope=0.01),
        "elu": lambda: torch.nn.ELU(alpha=1.0),
        "gelu": lambda: torch.nn.GELU(approximate="none"),
        "silu": torch.nn.SiLU,
        # PyTorch returns z itself above z = 20, within 2e-9 of log(1 + exp(z)).
        "softplus": torch.nn.Softplus,
        "tanh": torch.nn.Tanh,
        "logistic": torch.nn.Sigmoid,
        "identity": torch.nn.Identity,
    }
    return modules[name]()


def build_model(peer, n_features, n_outputs, dtype):
    """The peer's ``torch.nn.Sequential`` in dtype (a torch or NumPy float dtype)."""
    import torch

    if not isinstance(dtype, torch.dtype):
        dtype = {np.float32: torch.float32, np.float64: torch.float64}[np.dtype(dtype).type]
    sizes = (n_features, *peer.hidden_layer_sizes, n_outputs)
    layers = []
    for k, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(fan_in, fan_out))
        if k < len(sizes) - 2:
            layers.append(_activation_module(peer.activation))
            if peer.dropout and peer.dropout[k] > 0:
                layers.append(torch.nn.Dropout(peer.dropout[k]))
    return torch.nn.Sequential(*layers).to(dtype)


def linear_layers(model):
    """The model's ``Linear`` layers, in order."""
    import torch

    return [layer for layer in model if isinstance(layer, torch.nn.Linear)]


def set_weights(model, coefs, intercepts):
    """Loads scikit-learn's ``coefs_`` (fan_in x fan_out) and ``intercepts_`` into the model."""
    import torch

    with torch.no_grad():
        for layer, coef, intercept in zip(linear_layers(model), coefs, intercepts):
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(coef.T)))
            layer.bias.copy_(torch.from_numpy(np.asarray(intercept)))


def coefs(model):
    """The model's weights as scikit-learn's ``coefs_`` (NumPy copies, fan_in x fan_out)."""
    return [layer.weight.detach().numpy().T.copy() for layer in linear_layers(model)]


def data_loss(peer):
    """The batch's data loss, ``(outputs, targets) -> scalar``: see the module docstring."""
    import torch

    if peer.classifier:
        return torch.nn.CrossEntropyLoss()
    if peer.loss == "huber":
        return torch.nn.HuberLoss(delta=peer.huber_delta)
    mse = torch.nn.MSELoss()
    return lambda outputs, targets: 0.5 * mse(outputs, targets)


def targets(peer, y):
    """y as the loss takes it: class indices for a classifier (labels 0, ..., k - 1, the
    order of scikit-learn's one-hot columns), a 2-D float tensor of outputs otherwise."""
    import torch

    y = torch.from_numpy(np.asarray(y))
    return y.long() if peer.classifier else y.reshape(len(y), -1)


def make_optimizer(peer, model, epochs):
    """(optimizer, scheduler or None): the step and the per-epoch schedule of ``epochs``."""
    import torch

    if peer.solver == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=peer.learning_rate_init,
                                     betas=(0.9, 0.999), eps=1e-8)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=peer.learning_rate_init,
                                    momentum=0.9, nesterov=True)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
                 if peer.schedule == "cosine" else None)
    return optimizer, scheduler


def backward(peer, model, weights, loss_function, X, y):
    """One batch's gradient, clipped to ``max_grad_norm``, in the parameters' ``.grad``.

    The gradient is nnfast's (scikit-learn's): a classifier's of its loss, a regressor's of
    the per-output losses summed, not averaged, over its outputs (scikit-learn's output delta
    is a - y whatever the number of outputs, while its ``loss_`` reports their mean), in both
    cases plus the L2 term of ``weights``, the model's ``Linear`` weights.

    Returns
    -------
    (data loss, L2 term) : scalar tensors, whose sum is the loss the estimator reports (its
        ``loss_curve_`` averages it over an epoch's batches, weighted by their rows)
    """
    import torch

    model.zero_grad()
    data = loss_function(model(X), y)
    penalty = 0.5 * peer.alpha * sum((w * w).sum() for w in weights) / len(X)
    outputs = 1 if peer.classifier else y.shape[1]
    (data * outputs + penalty if outputs > 1 else data + penalty).backward()
    if peer.max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), peer.max_grad_norm)
    return data, penalty


def fit(peer, X, y, epochs, n_threads=None, track_loss=False):
    """Trains the peer on NumPy data for ``epochs`` epochs of shuffled mini-batches.

    Parameters
    ----------
    peer : Peer
    X : 2-D float array; y : labels 0, ..., k - 1 (classifier) or targets (regressor)
    epochs : int
    n_threads : int or None
        ``torch.set_num_threads``; None leaves PyTorch's own count.
    track_loss : bool
        Also return the last epoch's mean batch loss, weighted by batch rows (an estimator's
        ``loss_curve_[-1]``).

    Returns
    -------
    (seconds, coefs) or, with track_loss, (seconds, coefs, last epoch's loss)
    """
    import torch

    if n_threads is not None:
        torch.set_num_threads(n_threads)
    torch.manual_seed(0)
    X_t, y_t = torch.from_numpy(np.asarray(X)), targets(peer, y)
    n_outputs = int(y_t.max()) + 1 if peer.classifier else y_t.shape[1]
    if peer.classifier and n_outputs < 3:
        # scikit-learn's binary model has one logistic output, not two softmax ones.
        raise ValueError("the PyTorch peer fits classifiers of three or more classes")
    model = build_model(peer, X_t.shape[1], n_outputs, X_t.dtype)
    model.train()
    optimizer, scheduler = make_optimizer(peer, model, epochs)
    loss_function = data_loss(peer)
    weights = [layer.weight for layer in linear_layers(model)]
    n_rows = len(X_t)
    batch = peer.batch_rows(n_rows)
    total = None
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(n_rows)
        total = torch.zeros((), dtype=torch.float64) if track_loss else None
        for first in range(0, n_rows, batch):
            rows = order[first:first + batch]
            data, penalty = backward(peer, model, weights, loss_function, X_t[rows],
                                     y_t[rows])
            optimizer.step()
            if track_loss:
                total += (data.detach() + penalty.detach()) * len(rows)
        if scheduler is not None:
            scheduler.step()
    elapsed = time.perf_counter() - start
    if track_loss:
        return elapsed, coefs(model), float(total) / n_rows
    return elapsed, coefs(model)
