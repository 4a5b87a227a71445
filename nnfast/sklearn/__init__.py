"""scikit-learn estimators around :class:`nnfast.Network`.

``MLPClassifier`` and ``MLPRegressor`` (``_mlp``) are scikit-learn's multi-layer
perceptron: its parameters, defaults, attributes and arithmetic, trained by nnfast's kernel;
replacing ``from sklearn.neural_network import MLPClassifier`` by
``from nnfast.sklearn import MLPClassifier`` is the whole migration, and ``patch_sklearn()``
(``_patch``) or ``python -m nnfast.sklearn script.py`` makes it without
changing the import.

``NetworkClassifier`` and ``NetworkRegressor`` (``_network_estimators``) are the original's
sigmoid network as estimators.

``skl2onnx.to_onnx`` converts ``MLPClassifier`` and ``MLPRegressor`` to ONNX (``_onnx``)
once skl2onnx and this package are both imported (``_onnx_hook``); ``model.to_sklearn()`` and
``MLPClassifier.from_sklearn(fitted)`` move a fitted model to and from scikit-learn's own
estimators (``_convert``).

This package needs scikit-learn (``pip install 'nnfast[sklearn]'``); ``import nnfast`` does
not import it.
"""

try:
    import sklearn
except ImportError as exc:
    raise ImportError(
        "nnfast.sklearn needs scikit-learn: pip install 'nnfast[sklearn]' "
        "(or pip install scikit-learn)") from exc
try:
    # Public since scikit-learn 1.6, as is __sklearn_tags__, which the estimators rely on.
    from sklearn.utils.validation import validate_data  # noqa: F401
except ImportError as exc:
    raise ImportError(
        f"nnfast.sklearn needs scikit-learn >= 1.6, found {sklearn.__version__}: "
        "pip install -U 'nnfast[sklearn]'") from exc

from ._mlp import MLPClassifier, MLPRegressor
from ._network_estimators import NetworkClassifier, NetworkRegressor
from ._onnx_hook import install as _install_onnx_hook
from ._onnx_hook import register_onnx
from ._patch import is_patched, patch_sklearn, unpatch_sklearn

__all__ = ["MLPClassifier", "MLPRegressor", "NetworkClassifier", "NetworkRegressor",
           "is_patched", "patch_sklearn", "register_onnx", "unpatch_sklearn"]

# skl2onnx converts MLPClassifier / MLPRegressor once both packages are imported, in either
# order, without importing skl2onnx here (_onnx_hook).
_install_onnx_hook()
