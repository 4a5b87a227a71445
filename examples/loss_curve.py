"""Train the tutorial's 3-layer network with reporting on and plot its loss curve.

    python examples/loss_curve.py [loss_curve.png]

Writes the PNG when matplotlib is installed (pip install "nnfast[plot]"); otherwise prints
the curve's points.
"""

import sys

import nnfast
from nnfast.cli.bench.workloads import TUTORIAL3_Y, TUTORIAL_X


def main(path="loss_curve.png"):
    net = nnfast.Network([3, 4, 1], seed=1)
    # verbose=0 with a callback: reports every iterations // 100 without printing.
    net.fit(TUTORIAL_X, TUTORIAL3_Y, iterations=60_000, callback=lambda iteration, error: None)
    iterations, errors = zip(*net.history)
    try:
        import matplotlib
    except ImportError:
        for iteration, error in net.history[::10]:
            print(f"{iteration:>6}  {error:.6f}")
        print("matplotlib is not installed: pip install 'nnfast[plot]' to get the PNG")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.5))
    axes.plot(iterations, errors)
    axes.set_xlabel("iteration")
    axes.set_ylabel("mean |y - output|")
    axes.set_yscale("log")
    axes.set_title("nnfast: the tutorial's 3-layer network learning XOR")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    print(f"wrote {path}")
    return path


if __name__ == "__main__":
    main(*sys.argv[1:2])
