"""The Dask client a fit runs on: the caller's, the current one, or an embedded LocalCluster."""

import contextlib

from .._validation import available_cores


def local_cluster(n_workers=None, **options):
    """A LocalCluster on this machine, reachable only through the loopback interface.

    One worker process per core (None: every core this process may use), one thread each:
    the kernel runs single-threaded inside a worker, so the processes are the parallelism.
    No dashboard (it needs bokeh); the scheduler's small HTTP server (health checks) gets a
    free port on the loopback interface. ``options`` go to LocalCluster.
    """
    from distributed import LocalCluster

    settings = dict(n_workers=n_workers or available_cores(), threads_per_worker=1,
                    processes=True, host="127.0.0.1", dashboard_address=None,
                    scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
    settings.update(options)
    return LocalCluster(**settings)


@contextlib.contextmanager
def client_for_fit(client):
    """The client to use: ``client``; else the current one; else a LocalCluster's, closed at
    exit."""
    from distributed import Client
    from distributed.client import default_client

    if client is not None:
        if not isinstance(client, Client):
            raise TypeError(f"client must be a distributed.Client or None, got "
                            f"{type(client).__name__}")
        if client.status != "running":
            raise ValueError(f"client is not running (status {client.status!r})")
        yield client
        return
    try:
        current = default_client()
    except ValueError:  # no current client: embed a cluster for this call
        current = None
    if current is not None:
        yield current
        return
    with local_cluster() as cluster, Client(cluster, set_as_default=False) as embedded:
        yield embedded
