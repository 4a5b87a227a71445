"""
Optimizers and loss curves
==========================

``nnfast.Network`` beyond the original: a ReLU hidden layer, a softmax output with
cross-entropy, and the three optimizers of ``nnfast.optimizers``. Each network starts from
the same initial weights (the same ``seed``) and trains on the same mini-batches, in the
same order, for 40 epochs; ``report_every=1`` records every epoch's mean batch loss in
``net.history``.
"""

import matplotlib.pyplot as plt
import numpy as np

import nnfast
from nnfast.optimizers import SGD, Adam, GradientStep

rng = np.random.RandomState(0)
X = rng.normal(size=(400, 4))
labels = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0)  # three classes
Y = np.eye(3)[labels]

optimizers = {
    "GradientStep(0.1)": GradientStep(learning_rate=0.1),
    "SGD(0.05), Nesterov momentum": SGD(learning_rate=0.05),
    "Adam(0.01)": Adam(learning_rate=0.01),
}

figure, axes = plt.subplots(figsize=(6, 3.5))
for name, optimizer in optimizers.items():
    net = nnfast.Network([4, 32, 3], seed=1, bias=True, activation="relu", output="softmax",
                         optimizer=optimizer, alpha=1e-4)
    net.fit(X, Y, iterations=40, batch_size=32, report_every=1)
    epochs, losses = zip(*net.history)
    accuracy = (net.predict(X).argmax(axis=1) == labels).mean()
    print(f"{name:<30} final loss {losses[-1]:.4f}, training accuracy {accuracy:.3f}")
    axes.plot(epochs, losses, label=name)
axes.set_xlabel("epoch")
axes.set_ylabel("cross-entropy (epoch mean)")
axes.set_yscale("log")
axes.legend()
figure.tight_layout()
plt.show()
