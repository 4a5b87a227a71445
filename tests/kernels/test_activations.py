"""The kernel's hidden activations beyond scikit-learn's, unit by unit, against SciPy.

``nnfast._kernels``' ``activate`` runs a layer's forward loop and then its backward loop on ones
(the derivative from the outputs, or from the slopes the forward loop keeps), so each unit's
value and slope can be compared with the formula evaluated in float64 by NumPy and SciPy:
over [-40, 40] finely, near zero down to 1e-300, and through overflow, infinities and NaN.
Tolerances: 8 ulp relative, plus an absolute floor for results far below anything a fit can
see (a slope of 4e-18 computed as 0, gelu's 1e-306 as 0 where the kernel's exp stops at -707,
float32's exp clamped at -86).
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.special import erfcx, expit

from nnfast import reference
from nnfast._kernels import codes

from conftest import NNFAST_ACTIVATIONS


def _exact(name, z):
    """(activation, derivative) at z, in float64, by each formula written out."""
    z = z.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        if name == "leaky_relu":
            return np.where(z < 0, 0.01 * z, z), np.where(z > 0, 1.0, 0.01)
        if name == "elu":
            return np.where(z > 0, z, np.expm1(z)), np.where(z > 0, 1.0, np.exp(z))
        if name == "gelu":
            cdf, density = _normal_cdf(z)
            return z * cdf, cdf + z * density
        if name == "silu":
            s = expit(z)
            return z * s, s * (1 + z * expit(-z))  # 1 - s without its cancellation
        if name == "softplus":
            return np.logaddexp(0, z), expit(z)
    raise AssertionError(name)


def _normal_cdf(z):
    """Phi(z) and phi(z) in float64 to a few ulp, also deep in the tails: exp(-z^2 / 2) in
    long double (SciPy's ndtr rounds z^2 in float64 first, 2e-13 off at z = -36, as mpmath
    shows), times erfcx(|z| / sqrt 2), which varies slowly enough for z's float64 rounding."""
    gauss = np.exp(-np.square(z.astype(np.longdouble)) / 2).astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        half_tail = 0.5 * erfcx(np.abs(z) / np.sqrt(2)) * gauss
        cdf = np.where(z < 0, half_tail, 1 - half_tail)
    return np.where(np.isnan(z), np.nan, cdf), gauss / np.sqrt(2 * np.pi)


def _inputs():
    rng = np.random.RandomState(0)
    tiny = np.logspace(-300, 1.5, 3000)
    return np.concatenate([np.linspace(-40, 40, 80001), rng.randn(5000) * 1e-3, tiny, -tiny,
                           [0.0, -0.0, 100.0, -100.0, 800.0, -800.0]])


def _activate(kernels, name, values):
    values = values.copy()
    slopes = np.empty_like(values)
    kernels.activate(values, int(codes.Activation["ACTIVATION_" + name.upper()]), slopes)
    return values, slopes


@pytest.mark.parametrize("name", NNFAST_ACTIVATIONS)
def test_activation_and_slope_match_the_formulas(kernels, dtype, name):
    z = _inputs().astype(dtype)
    values, slopes = _activate(kernels, name, z)
    exact_values, exact_slopes = _exact(name, z)
    eps = np.finfo(dtype).eps
    floor = 1e-300 if dtype == np.float64 else 1e-30
    assert values.dtype == slopes.dtype == dtype
    # gelu's lower tail: exp(-z^2 / 2) of a rounded z^2 (up to 6 ulp at z = -40).
    assert_allclose(values, exact_values, rtol=8 * eps, atol=floor)
    assert_allclose(slopes, exact_slopes, rtol=8 * eps, atol=eps)


@pytest.mark.parametrize("name", NNFAST_ACTIVATIONS)
def test_infinities_and_nan(kernels, dtype, name):
    """NaN propagates (a diverging fit is seen); +inf stays +inf where the function does."""
    values, _ = _activate(kernels, name, np.array([np.nan, np.inf], dtype=dtype))
    assert np.isnan(values[0])
    assert values[1] == np.inf


@pytest.mark.parametrize("name", NNFAST_ACTIVATIONS)
def test_reference_formulas_match_the_exact_ones(dtype, name):
    """nnfast.reference, the oracle of the fits, states the same functions: its activation in
    place, its derivative applied to ones from the pre-activation."""
    z = np.linspace(-30, 30, 6001).astype(dtype)
    exact_values, exact_slopes = _exact(name, z)
    values = z.copy()
    reference.ACTIVATIONS[name](values)
    slopes = np.ones_like(z)
    reference.DERIVATIVES[name](values, slopes, z)
    eps = np.finfo(dtype).eps
    # SciPy's ndtr, the reference's Phi, rounds z^2 before exp: 1.2e-13 off at z = -30.
    rtol = 1e-12 if name == "gelu" and dtype == np.float64 else 4 * eps
    assert_allclose(values, exact_values, rtol=rtol, atol=np.finfo(dtype).tiny)
    assert_allclose(slopes, exact_slopes, rtol=rtol, atol=eps)


def test_activate_checks_its_arguments(kernels):
    values = np.zeros(4)
    with pytest.raises(ValueError, match="activation = 99 is not a code of Activation"):
        kernels.activate(values, 99, np.zeros(4))
    with pytest.raises(ValueError, match="slopes"):
        kernels.activate(values, int(codes.Activation.ACTIVATION_GELU), np.zeros(3))
