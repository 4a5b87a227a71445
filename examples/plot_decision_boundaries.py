"""
Decision boundaries
===================

Four small classifiers on scikit-learn's two interleaved half moons: nnfast's
``MLPClassifier`` with three hidden activations, and ``NetworkClassifier``, the original's
sigmoid network as an estimator. The shading is each model's probability of the second
class over the plane; the points are the training data.
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import make_moons
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from nnfast.sklearn import MLPClassifier, NetworkClassifier

X, y = make_moons(n_samples=300, noise=0.25, random_state=0)

models = {
    "MLPClassifier, relu": MLPClassifier((16, 16), activation="relu", max_iter=300,
                                         random_state=0),
    "MLPClassifier, tanh": MLPClassifier((16, 16), activation="tanh", max_iter=300,
                                         random_state=0),
    "MLPClassifier, logistic": MLPClassifier((16, 16), activation="logistic", max_iter=300,
                                             random_state=0),
    "NetworkClassifier": NetworkClassifier((16,), max_iter=300, random_state=0),
}

# A grid over the data's range, a little beyond it on every side.
x_min, y_min = X.min(axis=0) - 0.5
x_max, y_max = X.max(axis=0) + 0.5
xx, yy = np.meshgrid(np.linspace(x_min, x_max, 200), np.linspace(y_min, y_max, 200))
grid = np.column_stack([xx.ravel(), yy.ravel()])

figure, axes = plt.subplots(2, 2, figsize=(8, 7), sharex=True, sharey=True)
for ax, (name, classifier) in zip(axes.flat, models.items()):
    model = make_pipeline(StandardScaler(), classifier)
    with warnings.catch_warnings():
        # A few hundred epochs may stop short of the stopping rule; the plot shows the fit.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X, y)
    accuracy = model.score(X, y)
    print(f"{name:<24} training accuracy {accuracy:.3f}")
    probability = model.predict_proba(grid)[:, 1].reshape(xx.shape)
    ax.contourf(xx, yy, probability, levels=np.linspace(0, 1, 11), cmap="RdBu", alpha=0.8)
    ax.scatter(X[:, 0], X[:, 1], c=y, cmap="RdBu", edgecolors="black", linewidths=0.5, s=15)
    ax.set_title(f"{name}\ntraining accuracy {accuracy:.2f}", fontsize=10)
figure.tight_layout()
plt.show()
