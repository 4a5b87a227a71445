"""What a fit is made of, whichever API drives it (``Network``, the estimators, Dask).

``plan`` turns a network's options into what a fit runs (``FitPlan``, ``OptimizerState``,
the runner contract the backends meet); ``layout`` owns where the numbers live (parameters,
scikit-learn's packed vector, the workspace); ``threads`` decides a fit's threads;
``objective`` is the full-batch loss and gradient that L-BFGS evaluates; ``sparse`` brings
sparse X to the one form the kernel reads; ``random`` makes seeded ``RandomState`` objects
cheaply.
"""
