"""When the estimators are registered with skl2onnx: as soon as both are imported.

A user who has imported ``nnfast.sklearn`` and skl2onnx, in either order, expects
``skl2onnx.to_onnx(model, X)`` to work without a further call. Registering imports skl2onnx
(and onnx, hundreds of milliseconds), which ``import nnfast.sklearn`` must not pay, nor need:
skl2onnx is optional. So ``install()``, run by ``import nnfast.sklearn``:

* registers at once when skl2onnx is already imported;
* else puts a finder on ``sys.meta_path`` that lets the import system find skl2onnx as usual
  and wraps its loader, so that registration runs right after skl2onnx's own module has
  executed; the finder then leaves ``sys.meta_path``. If skl2onnx is never imported, nothing
  more happens.

A registration that fails (a skl2onnx too old or too new for this code) warns instead of
breaking the user's ``import skl2onnx``; ``nnfast.sklearn.register_onnx()`` raises the error.
"""

import importlib.abc
import importlib.util
import sys
import warnings

_MODULE = "skl2onnx"


def register_onnx():
    """Registers ``MLPClassifier`` and ``MLPRegressor`` with skl2onnx now.

    Not needed in general: importing both ``nnfast.sklearn`` and skl2onnx, in either order,
    registers them. This call imports skl2onnx and raises what goes wrong, where the
    automatic registration only warns.

    Raises
    ------
    ImportError
        If skl2onnx (or onnx) is not installed: ``pip install "nnfast[onnx]"``.
    """
    from . import _onnx

    _onnx.register()


def _register_or_warn():
    try:
        register_onnx()
    except Exception as exc:  # a broken registration must not break the user's import
        warnings.warn(f"nnfast could not register its MLP estimators with skl2onnx "
                      f"({type(exc).__name__}: {exc}); skl2onnx.to_onnx will not convert "
                      "them. nnfast.sklearn.register_onnx() raises the error.",
                      RuntimeWarning, stacklevel=2)


class _RegisteringLoader(importlib.abc.Loader):
    """skl2onnx's own loader, then the registration."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        # The module keeps its own loader, as if this one had never been there.
        module.__loader__ = module.__spec__.loader = self.loader
        _register_or_warn()

    def __getattr__(self, name):
        # Whatever else the import system or a tool asks of the real loader
        # (get_resource_reader, is_package, ...).
        return getattr(self.loader, name)


class Skl2onnxImportFinder(importlib.abc.MetaPathFinder):
    """Finds skl2onnx through the other finders and registers nnfast once it has loaded."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _MODULE:
            return None
        _uninstall()
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _RegisteringLoader(spec.loader)
        return spec


def _uninstall():
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, Skl2onnxImportFinder)]


def install():
    """Registers now if skl2onnx is imported, else when it is (see the module docstring)."""
    if sys.modules.get(_MODULE) is not None:
        _register_or_warn()
    elif not any(isinstance(f, Skl2onnxImportFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, Skl2onnxImportFinder())
