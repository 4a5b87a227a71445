"""The benchmark workload matrix and the original tutorial's data.

Fixed so that results compare across versions: rows, layer sizes, iterations and learning
rate per workload; inputs drawn from ``RandomState(0)``, targets in {0, 1}; weights from the
network's seed 1. The learning rates keep activations clear of saturation and subnormal
numbers, so the benchmarks time the code, not the CPU's slow path.
"""

import functools
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
    # Sparse X: "tfidf" (per_row distinct terms per row, Zipf-distributed, TF-IDF weights,
    # rows of unit norm) or "onehot" (per_row categorical columns one-hot encoded into
    # features / per_row categories each); "" for dense.
    sparse: str = ""
    per_row: int = 0

    def data(self, dtype=np.float64):
        """(X, y): standardised inputs of dtype and integer labels. "iris-*" and "digits-*"
        are scikit-learn's datasets (bundled with it); the others a fixed random problem
        whose labels are the largest of ``classes`` noisy linear scores (sparse workloads:
        a CSR matrix, see ``sparse``)."""
        if self.sparse:
            return self._sparse_data(dtype)
        X, y, _ = self._dense_problem(dtype)
        return X, y

    def regression_data(self, dtype=np.float64):
        """(X, Y): the inputs of ``data`` and ``classes`` regression targets of dtype, the
        noisy linear scores whose largest is the label of the random problems; for the
        datasets, scores made the same way from the standardised inputs (from
        ``RandomState(1)``). Dense workloads only."""
        if self.sparse:
            raise ValueError(f"{self.name} is sparse: its workload has no regression targets")
        X, _, scores = self._dense_problem(dtype)
        return X, scores

    def _dense_problem(self, dtype):
        """(X standardised, labels, regression targets of dtype). Made once per process and
        dtype (the same arrays for every fit, which only read them): the scores are a
        threaded NumPy product, whose OpenBLAS workers would still be spinning when a fit
        timed right after its data was made starts."""
        return _dense_problem(self.name, self.rows, self.features, self.classes,
                              np.dtype(dtype).name)

    def _make_dense_problem(self, dtype):
        if self.name.startswith(("iris", "digits")):
            from sklearn.datasets import load_digits, load_iris
            load = load_iris if self.name.startswith("iris") else load_digits
            X, y = load(return_X_y=True)
            scores = None
        else:
            random_state = np.random.RandomState(0)
            X = random_state.normal(size=(self.rows, self.features))
            scores = (X @ random_state.normal(size=(self.features, self.classes))
                      + random_state.normal(size=(self.rows, self.classes)))
            y = scores.argmax(axis=1)
        X, y = X[:self.rows], y[:self.rows]
        std = X.std(axis=0)
        X = np.ascontiguousarray((X - X.mean(axis=0)) / np.where(std > 0, std, 1), dtype=dtype)
        if scores is None:
            random_state = np.random.RandomState(1)
            scores = (X.astype(np.float64) @ random_state.normal(size=(X.shape[1], self.classes))
                      + random_state.normal(size=(X.shape[0], self.classes)))
        return X, y, np.ascontiguousarray(scores, dtype=dtype)

    def _sparse_data(self, dtype):
        X, y = _sparse_problem(self.rows, self.features, self.classes, self.sparse,
                               self.per_row, np.dtype(dtype).name)
        return X, y.copy()

    def params(self, **overrides):
        """The estimator parameters, shared by every implementation."""
        return {"hidden_layer_sizes": (100,), "solver": self.solver, "max_iter": self.max_iter,
                "tol": 0.0, "n_iter_no_change": self.max_iter + 1, "random_state": 0,
                **overrides}


@functools.lru_cache(maxsize=16)
def _dense_problem(name, rows, features, classes, dtype):
    """MLPWorkload._dense_problem, made once per process."""
    workload = MLPWorkload(name, rows, features, classes, "adam")
    return workload._make_dense_problem(dtype)


@functools.lru_cache(maxsize=4)
def _sparse_problem(n, m, classes, kind, k, dtype):
    """The CSR matrix and labels of a sparse workload (made once per process: the same
    matrix object for every fit, which only reads it)."""
    import scipy.sparse as sp

    random_state = np.random.RandomState(0)
    indptr = np.arange(0, n * k + 1, k)
    if kind == "tfidf":
        # k term draws per row by a Zipf-like law over the vocabulary; repeats count as the
        # term frequency (so about k distinct terms a row); TF-IDF weights with smoothed idf,
        # rows scaled to unit norm (TfidfVectorizer's defaults).
        cumulative = np.cumsum(1.0 / np.arange(10, m + 10))
        columns = np.minimum(np.searchsorted(cumulative, random_state.uniform(
            0, cumulative[-1], n * k)), m - 1)
        X = sp.csr_matrix((np.ones(n * k), columns, indptr), shape=(n, m))
        X.sum_duplicates()
        idf = np.log((1 + n) / (1 + np.bincount(X.indices, minlength=m))) + 1
        X.data *= idf[X.indices]
        norms = np.sqrt(np.add.reduceat(X.data ** 2, X.indptr[:-1]))
        X.data /= np.repeat(norms, np.diff(X.indptr))
    else:
        # k categorical columns of m // k categories each, one-hot encoded.
        categories = m // k
        columns = (random_state.randint(0, categories, size=(n, k))
                   + categories * np.arange(k)).ravel()
        X = sp.csr_matrix((np.ones(n * k), columns, indptr), shape=(n, m))
    scores = (X @ random_state.normal(size=(m, classes))
              + 0.1 * random_state.normal(size=(n, classes)))
    return X.astype(dtype), scores.argmax(axis=1)


MLP_WORKLOADS = {
    w.name: w
    for w in (
        MLPWorkload("iris-adam", 150, 4, 3, "adam"),
        MLPWorkload("digits-adam", 1_797, 64, 10, "adam"),
        MLPWorkload("digits-sgd", 1_797, 64, 10, "sgd"),
        MLPWorkload("20000x40-adam", 20_000, 40, 4, "adam"),
        MLPWorkload("digits-lbfgs", 1_797, 64, 10, "lbfgs", max_iter=100),
        MLPWorkload("tfidf-sparse-adam", 10_000, 20_000, 4, "adam", max_iter=10,
                    sparse="tfidf", per_row=50),
        MLPWorkload("onehot-sparse-adam", 10_000, 20_000, 4, "adam", max_iter=10,
                    sparse="onehot", per_row=20),
    )
}
