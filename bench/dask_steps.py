"""Time per step of ``nnfast.dask.fit`` against ``Network.fit``, and the scaling model's constants.

Run from the root of a clone, on a quiet machine (``pip install -e ".[dask]"``):

    python bench/dask_steps.py                     # every workload, 2,000,000 rows included
    python bench/dask_steps.py --workload medium   # one of them
    python bench/dask_steps.py --scale 0.01        # a quick check that it runs (rows x 0.01)

It starts a LocalCluster on 127.0.0.1 (``--workers`` single-threaded processes, default one
per core) and, for each workload, times the same full-batch steps of ``Network.fit`` in this
process (all cores, its own threads) and of ``nnfast.dask.fit`` on the cluster, from the same
initial weights, interleaved ``--repeats`` times; medians are printed. A time per step is the
difference between a fit of ``1 + --steps`` iterations and a fit of 1, divided by the steps,
so the once-per-fit costs (shards put on the workers, cluster round trips to start and end)
fall out. The data are generated on the workers (dask.array.random) and persisted; the local
fit gets the same numbers, computed once.

Fixed per-step overhead: the same networks trained by nnfast.dask.fit on one row per worker,
where the gradients cost microseconds, so that a step is the scheduler round trip, the
broadcast of the parameters and the tree reduction of the gradients. The bare scheduler round
trip (submit a no-op task, wait for its result) is printed beside it.

The scaling model, printed last, uses the measured constants:
    step(n) = C_row * R / n + 2 * P_bytes * ceil(log2 n) / B + L
C_row: seconds per row of one machine's gradient (this machine, all its workers), from the
``large`` workload's distributed step minus L; R: rows; P_bytes: parameter bytes; B: network
bandwidth in bytes/s (``--bandwidth-gbit``, default 10); L: the fixed per-step overhead.
With ``sync_every=K`` the last two terms are paid once per K iterations.
"""

import argparse
import math
import statistics
import sys
import time

import numpy as np

import nnfast
import nnfast.dask
from nnfast._training.layout import param_count
from nnfast._validation import available_cores

# name: (rows, sizes, dtype, learning rate). "large" is nnfast.cli.bench.workloads' network and rows,
# the network of the scaling model; "2m" is the size where each worker's gradient
# takes well over 50 ms.
WORKLOADS = {
    "medium": (200_000, (20, 16, 1), np.float64, 1e-6),
    "large": (8_192, (512, 512, 10), np.float64, 1e-3),
    "2m": (2_000_000, (64, 128, 10), np.float32, 1e-7),
}


def _data(client, rows, sizes, dtype, n_chunks):
    """(X, y) persisted on the workers and the same as NumPy arrays here."""
    import dask.array as da

    chunk = -(-rows // n_chunks)
    X = da.random.RandomState(0).uniform(-1, 1, (rows, sizes[0]), chunks=(chunk, sizes[0]))
    y = da.random.RandomState(1).uniform(0, 1, (rows, sizes[-1]), chunks=(chunk, sizes[-1]))
    X, y = X.astype(dtype), y.astype(dtype)
    X, y = client.persist([X, y])
    X_local, y_local = client.compute([X, y], sync=True)
    return X, y, X_local, y_local


def _step_time(fit, steps):
    """Seconds per step: (fit of 1 + steps iterations - fit of 1) / steps."""
    start = time.perf_counter()
    fit(1)
    one = time.perf_counter() - start
    start = time.perf_counter()
    fit(1 + steps)
    more = time.perf_counter() - start
    return max(more - one, 0.0) / steps


def _round_trip(client, repeats=50):
    """Median seconds of submitting a no-op task and waiting for its result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        client.submit(int, 0, pure=False).result()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(client, name, rows, sizes, dtype, learning_rate, steps, repeats, n_workers):
    """{'local': s/step, 'dask': s/step, 'overhead': s/step} medians for one workload."""
    X, y, X_local, y_local = _data(client, rows, sizes, dtype, n_workers)
    tiny_X, tiny_y = X_local[:n_workers], y_local[:n_workers]
    results = {"local": [], "dask": [], "overhead": []}

    def local(iterations):
        nnfast.Network(sizes, dtype=dtype).fit(X_local, y_local, iterations=iterations,
                                               learning_rate=learning_rate)

    def distributed(iterations):
        nnfast.dask.fit(nnfast.Network(sizes, dtype=dtype), X, y, iterations=iterations,
                        learning_rate=learning_rate, client=client)

    def overhead(iterations):
        nnfast.dask.fit(nnfast.Network(sizes, dtype=dtype), tiny_X, tiny_y,
                        iterations=iterations, learning_rate=learning_rate, client=client)

    local(2)  # warm-up: imports, kernel build choice, worker caches
    distributed(2)
    for _ in range(repeats):  # interleaved: noise on a shared machine falls on all alike
        results["local"].append(_step_time(local, steps))
        results["dask"].append(_step_time(distributed, steps))
        results["overhead"].append(_step_time(overhead, max(steps, 20)))
    del X, y
    return {key: statistics.median(values) for key, values in results.items()}


def scaling_table(large, rows, bandwidth, n_workers, max_machines):
    """Lines of the scaling model for the large workload's network on its rows."""
    _, sizes, dtype, _ = WORKLOADS["large"]
    p_bytes = param_count(sizes, False) * np.dtype(dtype).itemsize
    latency = large["overhead"]
    c_row = max(large["dask"] - latency, 0.0) / rows
    lines = [
        f"Scaling model, 'large' network {list(sizes)} {np.dtype(dtype).name}, R = {rows:,} "
        f"rows, machines like this one ({n_workers} workers):",
        f"  C_row = {c_row * 1e6:.4f} us per row (large: dask step {large['dask'] * 1e3:.3f} ms "
        f"- L), L = {latency * 1e3:.3f} ms, P_bytes = {p_bytes:,}, "
        f"B = {bandwidth / 1e9 * 8:g} Gbit/s",
        "",
        "| machines | gradient ms | broadcast + reduce ms | L ms | step ms (K=1) "
        "| per iteration ms, sync_every=10 | speedup vs 1 machine (K=1) |",
        "|---|---|---|---|---|---|---|",
    ]
    one = None
    n = 1
    while n <= max_machines:
        compute = c_row * rows / n
        comm = 2 * p_bytes * math.ceil(math.log2(n)) / bandwidth if n > 1 else 0.0
        step = compute + comm + latency
        one = one or step
        lines.append(f"| {n} | {compute * 1e3:.3f} | {comm * 1e3:.3f} | {latency * 1e3:.3f} "
                     f"| {step * 1e3:.3f} | {(compute + (comm + latency) / 10) * 1e3:.3f} "
                     f"| {one / step:.2f}x |")
        n *= 2
    lines.append("sync_every pays where broadcast + reduce + L is a large share of the step "
                 "(K divides that share); exact steps stop scaling where it exceeds the "
                 "gradient.")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), action="append",
                        help="repeat for several; default all")
    parser.add_argument("--workers", type=int, default=available_cores())
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every row count")
    parser.add_argument("--bandwidth-gbit", type=float, default=10.0)
    parser.add_argument("--max-machines", type=int, default=64)
    args = parser.parse_args(argv)
    names = args.workload or list(WORKLOADS)

    from distributed import Client

    with nnfast.dask.local_cluster(args.workers) as cluster, Client(cluster) as client:
        print(f"LocalCluster: {args.workers} workers x 1 thread on 127.0.0.1; Network.fit in "
              f"this process with its own threads; {args.steps} steps, {args.repeats} "
              "repeats, medians")
        print(f"scheduler round trip (no-op task): {_round_trip(client) * 1e3:.3f} ms")
        print()
        print("| workload | rows | sizes | dtype | Network.fit ms/step "
              "| nnfast.dask.fit ms/step | dask / local | fixed overhead ms/step |")
        print("|---|---|---|---|---|---|---|---|")
        measured = {}
        for name in names:
            rows, sizes, dtype, learning_rate = WORKLOADS[name]
            rows = max(args.workers, int(rows * args.scale))
            result = measure(client, name, rows, sizes, dtype, learning_rate, args.steps,
                             args.repeats, args.workers)
            measured[name] = (result, rows)
            print(f"| {name} | {rows:,} | {list(sizes)} | {np.dtype(dtype).name} "
                  f"| {result['local'] * 1e3:.3f} | {result['dask'] * 1e3:.3f} "
                  f"| {result['dask'] / result['local']:.2f}x "
                  f"| {result['overhead'] * 1e3:.3f} |", flush=True)
        if "large" in measured:
            print()
            print("\n".join(scaling_table(*measured["large"], args.bandwidth_gbit * 1e9 / 8,
                                          args.workers, args.max_machines)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
