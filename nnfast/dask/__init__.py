"""Data-parallel training of a ``Network`` on a Dask cluster: ``nnfast.dask.fit``.

The rows are split into shards that live in the workers' memory for the whole fit. Each step
the current parameters reach every worker once (a binary tree of copy tasks), each worker
computes its
shards' gradients with the compiled kernel (``Network.gradient``'s computation), the partial
sums are added in a tree on the workers, and the client applies the one summed update: the
same algorithm as ``Network.fit`` with full batches, only the order of the gradient's sum
differs. ``sync_every=K`` trades that exactness for K times fewer round trips: each shard
takes K local steps of the network's optimizer, then the shards are averaged by weight.

Needs ``pip install "nnfast[dask]"`` (``dask[array]`` and ``distributed``); ``import nnfast``
works without them.
"""

try:
    import dask.array  # noqa: F401
    import distributed  # noqa: F401
except ImportError as exc:
    raise ImportError("nnfast.dask needs dask and distributed: pip install 'nnfast[dask]' "
                      f"(or pip install 'dask[array]' distributed); {exc}") from exc

from ._cluster import local_cluster
from ._fit import WorkerLostError, fit

__all__ = ["fit", "local_cluster", "WorkerLostError"]
