"""
The tutorial network's loss curve
=================================

Trains the tutorial's 3-layer network ``[3, 4, 1]`` on its XOR-like data for the original
60,000 iterations with reporting on, and plots ``net.history``: the original's error
``mean |y - output|`` at every report.

A ``callback`` with ``verbose=0`` makes the fit report every ``iterations // 100`` iterations
without printing anything; the kernel runs in chunks between reports, so the curve costs
next to nothing.

From a clone, the script writes the plot to a file::

    python examples/loss_curve.py [loss_curve.png]

It needs matplotlib (``pip install "nnfast[plot]"``); without it the script prints the
curve's points instead.
"""

import sys

import nnfast
from nnfast.cli.bench.workloads import TUTORIAL3_Y, TUTORIAL_X


def train():
    """The tutorial's 3-layer fit, reporting 100 times."""
    net = nnfast.Network([3, 4, 1], seed=1)
    # verbose=0 with a callback: reports every iterations // 100 without printing.
    net.fit(TUTORIAL_X, TUTORIAL3_Y, iterations=60_000, callback=lambda iteration, error: None)
    return net


def plot(history):
    """A figure of ``(iteration, error)`` pairs on a log scale."""
    import matplotlib.pyplot as plt

    iterations, errors = zip(*history)
    figure, axes = plt.subplots(figsize=(6, 3.5))
    axes.plot(iterations, errors)
    axes.set_xlabel("iteration")
    axes.set_ylabel("mean |y - output|")
    axes.set_yscale("log")
    axes.set_title("nnfast: the tutorial's 3-layer network learning XOR")
    figure.tight_layout()
    return figure


def main(path="loss_curve.png"):
    """Train, then write the plot to ``path`` (or print the points without matplotlib)."""
    net = train()
    try:
        import matplotlib
    except ImportError:
        for iteration, error in net.history[::10]:
            print(f"{iteration:>6}  {error:.6f}")
        print("matplotlib is not installed: pip install 'nnfast[plot]' to get the PNG")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plot(net.history)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    if "sphinx_gallery" in sys.modules:
        # Run by the documentation's gallery: the figure stays open for the gallery to show,
        # and no file is written into the source tree.
        net = train()
        print(f"error after {net.iterations_run} iterations: {net.history[-1][1]:.4f}")
        plot(net.history)
    else:
        main(*sys.argv[1:2])
