"""companion.adapt.spectra: principal angles between singular subspaces (Figure 1's cosine)."""

import numpy as np
import pytest

from companion.adapt import spectra


def _basis(rng, n, k):
    q, _ = np.linalg.qr(rng.standard_normal((n, k)))
    return q


@pytest.mark.parametrize("theta", [0.0, 0.3, 1.0, np.pi / 2])
def test_cosines_of_known_angles(theta):
    """Two planes in R^5 sharing e1 and at angle θ in the second direction: cosines (1, cos θ)."""
    a = np.eye(5)[:, :2]
    b = np.stack([np.eye(5)[0], np.cos(theta) * np.eye(5)[1] + np.sin(theta) * np.eye(5)[2]], axis=1)
    np.testing.assert_allclose(spectra.principal_cosines(a, b), [1.0, abs(np.cos(theta))], atol=1e-12)
    assert spectra.subspace_cosine(a, b) == pytest.approx((1 + np.cos(theta)) / 2, abs=1e-12)


def test_cosine_ignores_the_basis_and_errors_on_shapes():
    rng = np.random.default_rng(0)
    a = _basis(rng, 40, 8)
    assert spectra.subspace_cosine(a, a @ _basis(rng, 8, 8)) == pytest.approx(1.0, abs=1e-12)
    other = _basis(rng, 40, 8)
    other, _ = np.linalg.qr(other - a @ (a.T @ other))  # orthogonal to span(a)
    assert spectra.subspace_cosine(a, other) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="equal shape"):
        spectra.subspace_cosine(a, a[:, :4])


def test_top_singular_bases_of_a_known_matrix():
    rng = np.random.default_rng(1)
    u, v = _basis(rng, 30, 3), _basis(rng, 20, 3)
    delta = (u * np.array([5.0, 2.0, 1.0])) @ v.T  # (out 30, in 20), rank 3
    left, right, values = spectra.top_singular_bases(delta.astype(np.float32), 2, 4)
    np.testing.assert_allclose(values, [5.0, 2.0, 1.0, 0.0], atol=1e-5)
    assert spectra.subspace_cosine(left, u[:, :2]) == pytest.approx(1.0, abs=1e-6)
    assert spectra.subspace_cosine(right, v[:, :2]) == pytest.approx(1.0, abs=1e-6)
    assert left.dtype == np.float64 and left.shape == (30, 2) and right.shape == (20, 2)


@pytest.mark.parametrize("theta", [0.0, 0.3, 1.0])
def test_largest_principal_cosine_is_the_smallest_angle(theta):
    """Planes sharing e1: the largest cosine is 1 whatever the second angle; orthogonal planes: 0."""
    a = np.eye(5)[:, :2]
    b = np.stack([np.eye(5)[0], np.cos(theta) * np.eye(5)[1] + np.sin(theta) * np.eye(5)[2]], axis=1)
    assert spectra.largest_principal_cosine(a, b) == pytest.approx(1.0, abs=1e-12)
    tilted = np.stack([np.cos(theta) * np.eye(5)[0] + np.sin(theta) * np.eye(5)[3], np.eye(5)[4]], axis=1)
    assert spectra.largest_principal_cosine(a, tilted) == pytest.approx(np.cos(theta), abs=1e-12)
