import numpy as np
import pytest

from entropix.entropy import (
    alpha_req,
    diffusion_spectral_entropy,
    effective_rank,
    matrix_entropy,
    rankme,
)

RNG = np.random.default_rng(3)
Z = RNG.normal(size=(40, 6)).astype(np.float32) * np.array([3, 2, 1, 0.5, 0.2, 0.1], np.float32)


def np_entropy(p):
    p = p[p > 0]
    return -np.sum(p * np.log(p))


def test_matrix_entropy_matches_numpy_von_neumann():
    k = Z.astype(np.float64).T @ Z.astype(np.float64)
    rho = k / np.trace(k)
    lam = np.linalg.eigvalsh(rho)
    np.testing.assert_allclose(matrix_entropy(Z), np_entropy(np.clip(lam, 0, None)), rtol=1e-4)
    np.testing.assert_allclose(matrix_entropy(Z, alpha=2.0), -np.log(np.sum(lam**2)), rtol=1e-4)


def test_matrix_entropy_limits():
    iso = np.eye(6, dtype=np.float32)
    np.testing.assert_allclose(matrix_entropy(iso), np.log(6), rtol=1e-5)
    rank_one = np.outer(RNG.normal(size=10), RNG.normal(size=6)).astype(np.float32)
    assert float(matrix_entropy(rank_one)) < 1e-3


def test_effective_rank_and_rankme_match_numpy():
    s = np.linalg.svd(Z.astype(np.float64), compute_uv=False)
    p = s / s.sum()
    np.testing.assert_allclose(effective_rank(Z), np.exp(np_entropy(p)), rtol=1e-4)
    p_eps = p + 1e-7
    np.testing.assert_allclose(rankme(Z), np.exp(-np.sum(p_eps * np.log(p_eps))), rtol=1e-4)
    assert 1.0 <= float(effective_rank(Z)) <= 6.0


def test_effective_rank_is_rotation_invariant():
    q, _ = np.linalg.qr(RNG.normal(size=(6, 6)))
    np.testing.assert_allclose(
        effective_rank(Z @ q.astype(np.float32)), effective_rank(Z), rtol=1e-4
    )


def test_alpha_req_recovers_power_law():
    # Construct embeddings whose covariance eigenvalues are exactly i^(-1.5).
    d, n, alpha = 8, 400, 1.5
    white = RNG.normal(size=(n, d))
    white -= white.mean(0)
    white = white @ np.linalg.inv(np.linalg.cholesky(np.cov(white.T, bias=True))).T
    z = (white * np.arange(1, d + 1) ** (-alpha / 2)).astype(np.float32)
    got_alpha, r2 = alpha_req(z)
    np.testing.assert_allclose(got_alpha, alpha, rtol=1e-3)
    np.testing.assert_allclose(r2, 1.0, atol=1e-4)


def test_alpha_req_matches_numpy_fit_on_random_data():
    zc = Z.astype(np.float64) - Z.mean(0)
    lam = np.sort(np.linalg.eigvalsh(zc.T @ zc / len(zc)))[::-1]
    x, y = np.log(np.arange(1, 7)), np.log(lam)
    slope, intercept = np.polyfit(x, y, 1)
    r2 = 1 - np.sum((y - (slope * x + intercept)) ** 2) / np.sum((y - y.mean()) ** 2)
    got_alpha, got_r2 = alpha_req(Z)
    np.testing.assert_allclose(got_alpha, -slope, rtol=1e-3)
    np.testing.assert_allclose(got_r2, r2, rtol=1e-3)


def numpy_dse(z, sigma, t):
    z = z.astype(np.float64)
    d2 = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    k = np.exp(-d2 / (2 * sigma**2))
    p_op = k / k.sum(1, keepdims=True)  # row-stochastic diffusion operator
    lam = np.sort(np.real(np.linalg.eigvals(p_op)))
    w = np.abs(lam[:-1]) ** t
    return np_entropy(w / w.sum())


@pytest.mark.parametrize("sigma,t", [(10.0, 1), (2.0, 1), (2.0, 3)])
def test_dse_matches_numpy_diffusion_operator(sigma, t):
    np.testing.assert_allclose(
        diffusion_spectral_entropy(Z, sigma, t), numpy_dse(Z, sigma, t), rtol=2e-3
    )


def test_dse_higher_for_spread_than_clustered_data():
    clustered = (RNG.normal(size=(30, 4)) * 0.01 + np.repeat(np.eye(4)[:2] * 5, 15, 0)).astype(
        np.float32
    )
    spread = RNG.normal(size=(30, 4)).astype(np.float32) * 3
    assert float(diffusion_spectral_entropy(spread, 1.0)) > float(
        diffusion_spectral_entropy(clustered, 1.0)
    )


def test_bad_input_errors():
    with pytest.raises(ValueError, match="embeddings must have rank 2"):
        rankme(Z[0])
    with pytest.raises(TypeError, match="floating-point"):
        matrix_entropy(np.ones((3, 3), np.int32))
    with pytest.raises(ValueError, match="sigma must be > 0"):
        diffusion_spectral_entropy(Z, sigma=0.0)
    with pytest.raises(ValueError, match="at least 2 eigenvalues"):
        alpha_req(Z[:, :1])
