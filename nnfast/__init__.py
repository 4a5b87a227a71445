"""nnfast: the classic NumPy "neural network in 11 lines", compiled.

>>> import numpy as np, nnfast
>>> X = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]])
>>> net = nnfast.Network([3, 4, 1], seed=1).fit(X, [0, 1, 1, 0], iterations=60000)
"""

from . import _legacy, optimizers, reference
from .activation import nonlin
from .network import Network, TrainingDivergedError

_legacy.install()

__version__ = "0.1.0"
__all__ = ["Network", "TrainingDivergedError", "nonlin", "optimizers", "reference", "__version__"]
