"""The benchmark workload matrix and the original tutorial's data.

Fixed so that results compare across versions: rows, layer sizes, iterations and learning
rate per workload; inputs drawn from ``RandomState(0)``, targets in {0, 1}; weights from the
network's seed 1. The learning rates keep activations clear of saturation and subnormal
numbers, so the benchmarks time the code, not the CPU's slow path.
"""

from dataclasses import dataclass

import numpy as np

#: The original tutorial's inputs; its third column is the constant that stands in for a bias.
TUTORIAL_X = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]])
#: Targets of the original 2-layer program.
TUTORIAL2_Y = np.array([[0, 0, 1, 1]]).T
#: Targets of the original 3-layer program (XOR of the first two columns).
TUTORIAL3_Y = np.array([[0, 1, 1, 0]]).T


@dataclass(frozen=True)
class Workload:
    name: str
    rows: int
    sizes: tuple
    iterations: int
    learning_rate: float
    input_scale: float = 1.0

    def data(self, dtype=np.float64):
        """(X, y) of this workload as C-contiguous arrays of dtype."""
        if self.name == "tutorial2":
            X, y = TUTORIAL_X, TUTORIAL2_Y
        elif self.name == "tutorial3":
            X, y = TUTORIAL_X, TUTORIAL3_Y
        else:
            random_state = np.random.RandomState(0)
            X = random_state.random_sample((self.rows, self.sizes[0])) * self.input_scale
            y = (random_state.random_sample((self.rows, self.sizes[-1])) < 0.5)
        return np.ascontiguousarray(X, dtype=dtype), np.ascontiguousarray(y, dtype=dtype)

    @property
    def flops_per_iteration(self):
        """Multiply-adds of the matrix products in one iteration (three per layer)."""
        return 3 * self.rows * sum(a * b for a, b in zip(self.sizes, self.sizes[1:]))


WORKLOADS = {
    w.name: w
    for w in (
        Workload("tutorial2", 4, (3, 1), 10_000, 1.0),
        Workload("tutorial3", 4, (3, 4, 1), 60_000, 1.0),
        Workload("small", 64, (16, 32, 1), 20_000, 0.1),
        Workload("medium", 1_024, (64, 128, 10), 300, 0.01),
        Workload("large", 8_192, (512, 512, 10), 10, 0.001, input_scale=0.1),
    )
}


@dataclass(frozen=True)
class MLPWorkload:
    """A scikit-learn MLP fit, timed for nnfast's ``MLPClassifier`` against scikit-learn's.

    Both get the same hyperparameters and run exactly ``max_iter`` epochs (iterations for
    "lbfgs"): ``tol=0`` and ``n_iter_no_change`` above ``max_iter`` switch the stopping rule
    off; every other parameter is the estimators' default (``(100,)`` relu units, batch
    ``"auto"``, shuffled rows, ``alpha=1e-4``).
    """

    name: str
    rows: int
    features: int
    classes: int
    solver: str
    max_iter: int = 50

    def data(self, dtype=np.float64):
        """(X, y): standardised inputs of dtype and integer labels. "iris-*" and "digits-*"
        are scikit-learn's datasets (bundled with it); the others a fixed random problem
        whose labels are the largest of ``classes`` noisy linear scores."""
        if self.name.startswith(("iris", "digits")):
            from sklearn.datasets import load_digits, load_iris
            load = load_iris if self.name.startswith("iris") else load_digits
            X, y = load(return_X_y=True)
        else:
            random_state = np.random.RandomState(0)
            X = random_state.normal(size=(self.rows, self.features))
            scores = (X @ random_state.normal(size=(self.features, self.classes))
                      + random_state.normal(size=(self.rows, self.classes)))
            y = scores.argmax(axis=1)
        X, y = X[:self.rows], y[:self.rows]
        std = X.std(axis=0)
        X = (X - X.mean(axis=0)) / np.where(std > 0, std, 1)
        return np.ascontiguousarray(X, dtype=dtype), y

    def params(self, **overrides):
        """The estimator parameters, shared by every implementation."""
        return {"hidden_layer_sizes": (100,), "solver": self.solver, "max_iter": self.max_iter,
                "tol": 0.0, "n_iter_no_change": self.max_iter + 1, "random_state": 0,
                **overrides}


MLP_WORKLOADS = {
    w.name: w
    for w in (
        MLPWorkload("iris-adam", 150, 4, 3, "adam"),
        MLPWorkload("digits-adam", 1_797, 64, 10, "adam"),
        MLPWorkload("digits-sgd", 1_797, 64, 10, "sgd"),
        MLPWorkload("20000x40-adam", 20_000, 40, 4, "adam"),
        MLPWorkload("digits-lbfgs", 1_797, 64, 10, "lbfgs", max_iter=100),
    )
}
