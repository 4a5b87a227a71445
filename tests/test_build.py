"""The kernel modules are compiled extensions, not pure-Python stand-ins."""

import importlib.machinery
import inspect
import os

import pytest

import nnfast
from nnfast import network
from conftest import blas_min_flops, kernel_builds

KERNELS = ["sigmoid_inplace", "sigmoid_derivative", "forward_layer", "output_delta",
           "hidden_delta", "apply_gradient", "fit"]


def test_kernels_module_is_an_extension(kernels):
    path = kernels.__file__
    assert path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), path
    assert not path.endswith((".py", ".pyc", ".pyx"))
    assert isinstance(kernels.__loader__, importlib.machinery.ExtensionFileLoader)
    # Built in place, next to the package it belongs to.
    assert os.path.dirname(os.path.abspath(path)) == os.path.dirname(
        os.path.abspath(nnfast.__file__))


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
    assert network._kernels in kernel_builds()
    assert network._kernels.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def test_build_kind_is_the_one_asked_for(kernels):
    """CI runs the suite twice, NNFAST_EXPECT_DEBUG_BUILD=0 then =1 after an NNFAST_DEBUG=1
    rebuild: each run must really test the build it claims to."""
    import os

    expected = os.environ.get("NNFAST_EXPECT_DEBUG_BUILD")
    assert isinstance(kernels.DEBUG_BUILD, bool)
    if expected is not None:
        assert kernels.DEBUG_BUILD == (expected == "1")
