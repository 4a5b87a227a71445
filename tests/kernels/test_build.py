"""The kernel modules are compiled extensions, not pure-Python stand-ins, and the installation
under test is the one CI asked for (editable or wheel, with or without OpenMP)."""

import importlib.machinery
import importlib.metadata
import inspect
import os

import pytest

import nnfast
from nnfast._training.backends import backend_named
from conftest import blas_min_flops, kernel_builds

KERNELS = ["sigmoid_inplace", "sigmoid_derivative", "forward_layer", "output_delta",
           "hidden_delta", "apply_gradient", "original_fit",
           "original_gradient", "fit", "fit_sparse", "loss_gradient", "loss_gradient_sparse"]


def test_kernels_module_is_an_extension(kernels):
    path = kernels.__file__
    assert path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), path
    assert not path.endswith((".py", ".pyc", ".pyx"))
    assert isinstance(kernels.__loader__, importlib.machinery.ExtensionFileLoader)
    # Built in place, in the kernels' package of the nnfast under test.
    assert os.path.dirname(os.path.abspath(path)) == os.path.join(
        os.path.dirname(os.path.abspath(nnfast.__file__)), "_kernels")


@pytest.mark.parametrize("name", KERNELS)
def test_kernels_are_compiled_functions(kernels, name):
    function = getattr(kernels, name)
    assert callable(function)
    assert not inspect.isfunction(function), f"{name} is a Python function"
    assert "cython" in type(function).__name__ or inspect.isbuiltin(function), type(function)


def test_openmp_flag_is_bool(kernels):
    assert isinstance(kernels.OPENMP, bool)


def test_thresholds_are_positive_ints(kernels):
    assert isinstance(blas_min_flops(kernels), int) and blas_min_flops(kernels) > 0


def test_network_runs_a_compiled_build():
    """What Network.fit calls is one of the compiled builds tested here."""
    kernels = backend_named("cython").kernels
    assert kernels in kernel_builds()
    assert kernels.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def test_build_kind_is_the_one_asked_for(kernels):
    """CI runs the suite twice, NNFAST_EXPECT_DEBUG_BUILD=0 then =1 after an NNFAST_DEBUG=1
    rebuild: each run must really test the build it claims to."""
    import os

    expected = os.environ.get("NNFAST_EXPECT_DEBUG_BUILD")
    assert isinstance(kernels.DEBUG_BUILD, bool)
    if expected is not None:
        assert kernels.DEBUG_BUILD == (expected == "1")


def _installed_distribution():
    """nnfast's metadata as pip installed it (a dist-info with INSTALLER), not an egg-info
    that a build left in a source tree on sys.path."""
    found = [distribution for distribution in importlib.metadata.distributions(name="nnfast")
             if distribution.read_text("INSTALLER")]
    assert len(found) == 1, [str(getattr(d, "_path", d)) for d in found]
    return found[0]


def test_version_is_the_installed_distributions():
    """nnfast.__version__ is the one place the version is set; the metadata pip installed
    (pyproject.toml reads it from there) must agree."""
    assert nnfast.__version__ == _installed_distribution().version


def test_imported_package_is_the_installation_asked_for():
    """CI runs the suite against an editable install (NNFAST_EXPECT_INSTALLED=0) and against
    the installed wheel (=1, .ci/test_installed.py): each run must import what it claims.
    A wheel's files are listed in its RECORD; an editable install lists only a finder."""
    from nnfast._kernels import baseline as _kernels

    distribution = _installed_distribution()
    recorded = {os.path.realpath(entry.locate()) for entry in distribution.files or ()}
    from_wheel = os.path.realpath(_kernels.__file__) in recorded
    assert from_wheel == (os.path.realpath(nnfast.__file__) in recorded)
    expected = os.environ.get("NNFAST_EXPECT_INSTALLED")
    if expected is not None:
        assert from_wheel == (expected == "1"), (nnfast.__file__, expected)


def test_openmp_is_the_one_the_build_promised(kernels):
    """Wheels for Linux are built with OpenMP, those for macOS and Windows without it
    (pyproject.toml, [tool.cibuildwheel]); their test runs set NNFAST_EXPECT_OPENMP."""
    expected = os.environ.get("NNFAST_EXPECT_OPENMP")
    if expected is not None:
        assert kernels.OPENMP == (expected == "1")


def test_every_requirement_declares_its_minimum():
    """CI installs the declared minimums of the runtime and test requirements
    (.ci/min_requirements.py) and runs the suite on them: a requirement without a lower
    bound would go untested at its oldest."""
    from packaging.requirements import Requirement

    for line in _installed_distribution().requires or ():
        requirement = Requirement(line)
        marker = requirement.marker
        if marker is not None and not any(marker.evaluate({"extra": extra})
                                          for extra in ("", "test")):
            continue
        assert any(spec.operator in (">=", "==", "~=") for spec in requirement.specifier), (
            f"{line!r}: declare a minimum version (name>=X.Y)")
