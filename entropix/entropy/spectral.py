"""Entropies of representations: spectra of covariance, Gram and diffusion matrices.

Inputs are embeddings Z [N, D] (N samples). All eigen/singular-value work is float32.

* Matrix (von Neumann) entropy of order a: with the trace-normalised Gram/covariance matrix
  rho = K / tr K (K = Z^T Z, PSD, unit trace) and its eigenvalues l_i,
      S_1(rho) = -sum_i l_i log l_i,        S_a(rho) = log(sum_i l_i^a) / (1 - a).
  "Measures of Entropy From Data Using Infinitely Divisible Kernels", Giraldo, Rao & Principe 2014.
* Effective rank: p_k = s_k / sum_k s_k over singular values s of Z,
      erank(Z) = exp(-sum_k p_k log p_k).
  "The effective rank: a measure of effective dimensionality", Roy & Vetterli 2007.
* RankMe: the same with p_k = s_k / ||s||_1 + eps (eps = 1e-7) on embeddings.
  "RankMe: Assessing the Downstream Performance of Pretrained Self-Supervised Representations by
  Their Rank", Garrido et al. 2023.
* alpha-ReQ: eigenvalues l_1 >= l_2 >= ... of the covariance of Z follow l_i ~ c i^(-alpha); alpha
  is minus the slope of the least-squares line of log l_i on log i (with its R^2).
  "alpha-ReQ: Assessing Representation Quality in Self-Supervised Learning by measuring
  Eigenspectrum Decay", Agrawal et al. 2022.
* Diffusion spectral entropy (DSE): Gaussian kernel K_ij = exp(-||z_i - z_j||^2 / (2 sigma^2)),
  symmetric normalisation M = D^-1/2 K D^-1/2 (D = diag of row sums; same spectrum as the
  diffusion operator D^-1 K), eigenvalues l_i of M raised to the diffusion time t; dropping the
  trivial eigenvalue 1, p_i = |l_i|^t / sum_j |l_j|^t and DSE = -sum_i p_i log p_i.
  "Assessing Neural Network Representations During Training Using Noise-Resilient Diffusion
  Spectral Entropy", Liao et al. 2023 (defaults sigma = 10, t = 1).
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from entropix.entropy.distribution import entropy_from_probs
from entropix.validation import check_floating, check_positive, check_rank


def _embeddings(z, name="embeddings"):
    check_floating(z, name)
    check_rank(z, name, 2)
    return jnp.asarray(z, jnp.float32)


def _spectrum_entropy(weights, alpha):
    """Entropy of order alpha of the normalised non-negative ``weights`` (last axis)."""
    p = weights / jnp.sum(weights, axis=-1, keepdims=True)
    if alpha == 1:
        return entropy_from_probs(p)
    safe = jnp.where(p > 0, p, 1.0)
    return jnp.log(jnp.sum(jnp.where(p > 0, safe**alpha, 0.0), axis=-1)) / (1.0 - alpha)


def matrix_entropy(embeddings: ArrayLike, alpha: float = 1.0, center: bool = False) -> jax.Array:
    """Von Neumann (alpha=1) or matrix Renyi entropy of the unit-trace matrix Z^T Z / tr(Z^T Z).

    Formula: S_1 = -sum_i l_i log l_i, S_a = log(sum_i l_i^a) / (1 - a), l = eigenvalues of
    Z^T Z / tr(Z^T Z). Paper: "Measures of Entropy From Data Using Infinitely Divisible
    Kernels" (Giraldo, Rao & Principe 2014).

    Args:
        embeddings: floating [N, D] embeddings Z (N samples).
        alpha: the order a > 0; default 1.0 (von Neumann).
        center: subtract the mean embedding first; default False.

    Returns:
        float32 scalar entropy in nats, in [0, log D].
    """
    check_positive(alpha, "alpha")
    z = _embeddings(embeddings)
    if center:
        z = z - jnp.mean(z, axis=0, keepdims=True)
    eig = jnp.clip(jnp.linalg.eigvalsh(z.T @ z), 0.0, None)
    return _spectrum_entropy(eig, alpha)


def effective_rank(embeddings: ArrayLike, eps: float = 0.0) -> jax.Array:
    """Effective rank exp(H(p)), p_k = s_k / sum s + eps over the singular values s of Z.

    Paper: "The effective rank: a measure of effective dimensionality" (Roy & Vetterli 2007).

    Args:
        embeddings: floating [N, D] embeddings Z.
        eps: added to each normalised singular value; default 0.0.

    Returns:
        float32 scalar effective rank, in [1, min(N, D)] for eps = 0.
    """
    z = _embeddings(embeddings)
    s = jnp.linalg.svd(z, compute_uv=False)
    p = s / jnp.sum(s) + eps
    return jnp.exp(entropy_from_probs(p))


def rankme(embeddings: ArrayLike, eps: float = 1e-7) -> jax.Array:
    """RankMe (Garrido et al. 2023): effective rank of embeddings with the paper's eps = 1e-7.

    Args:
        embeddings: floating [N, D] embeddings Z.
        eps: added to each normalised singular value; default 1e-7 (the paper's).

    Returns:
        float32 scalar RankMe value (:func:`effective_rank` with ``eps``).
    """
    return effective_rank(embeddings, eps=eps)


def alpha_req(
    embeddings: ArrayLike, num_eigenvalues: int | None = None, eps: float = 1e-12
) -> tuple[jax.Array, jax.Array]:
    """Power-law decay exponent alpha of the covariance eigenspectrum and the fit's R^2.

    Fits log l_i = c - alpha log i over the top ``num_eigenvalues`` eigenvalues (default: all
    with l_i > eps * l_1, at least 2). Paper: "alpha-ReQ: Assessing Representation Quality in
    Self-Supervised Learning by measuring Eigenspectrum Decay" (Agrawal et al. 2022).

    Args:
        embeddings: floating [N, D] embeddings Z, D >= 2 (centred here).
        num_eigenvalues: how many of the largest covariance eigenvalues to fit; default all.
        eps: eigenvalues <= eps * l_1 are left out of the fit (the two largest never are);
            default 1e-12.

    Returns:
        ``(alpha, r2)``: float32 scalars, the decay exponent and the R^2 of the log-log fit.
    """
    z = _embeddings(embeddings)
    z = z - jnp.mean(z, axis=0, keepdims=True)
    cov = z.T @ z / z.shape[0]
    eig = jnp.flip(jnp.linalg.eigvalsh(cov))
    k = eig.shape[0] if num_eigenvalues is None else min(num_eigenvalues, eig.shape[0])
    if k < 2:
        raise ValueError("alpha_req needs at least 2 eigenvalues (embedding dimension >= 2)")
    eig = eig[:k]
    use = (eig > eps * eig[0]).at[:2].set(True).astype(jnp.float32)
    x = jnp.log(jnp.arange(1, k + 1, dtype=jnp.float32))
    y = jnp.log(jnp.maximum(eig, jnp.finfo(jnp.float32).tiny))
    n = jnp.sum(use)
    x_mean, y_mean = jnp.sum(use * x) / n, jnp.sum(use * y) / n
    sxy = jnp.sum(use * (x - x_mean) * (y - y_mean))
    sxx = jnp.sum(use * (x - x_mean) ** 2)
    syy = jnp.sum(use * (y - y_mean) ** 2)
    slope = sxy / sxx
    r2 = jnp.where(syy > 0, sxy**2 / (sxx * syy), 1.0)
    return -slope, r2


def diffusion_spectral_entropy(embeddings: ArrayLike, sigma: float = 10.0, t: int = 1) -> jax.Array:
    """Diffusion spectral entropy of embeddings [N, D] (Liao et al. 2023), trivial 1 dropped.

    Formula: K_ij = exp(-||z_i - z_j||^2 / (2 sigma^2)), M = D^-1/2 K D^-1/2,
    p_i = |l_i|^t / sum_j |l_j|^t over M's eigenvalues without the largest (1),
    DSE = -sum_i p_i log p_i. Defaults: sigma = 10, t = 1 (the paper's).

    Args:
        embeddings: floating [N, D] embeddings Z.
        sigma: Gaussian kernel width, > 0; default 10.0.
        t: diffusion time, > 0; default 1.

    Returns:
        float32 scalar entropy in nats, in [0, log(N - 1)].
    """
    check_positive(sigma, "sigma")
    check_positive(t, "t")
    z = _embeddings(embeddings)
    sq = jnp.sum(z**2, axis=1)
    dist2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * z @ z.T, 0.0)
    kernel = jnp.exp(-dist2 / (2.0 * sigma**2))
    inv_sqrt_degree = 1.0 / jnp.sqrt(jnp.sum(kernel, axis=1))
    sym = kernel * inv_sqrt_degree[:, None] * inv_sqrt_degree[None, :]
    eig = jnp.linalg.eigvalsh(0.5 * (sym + sym.T))  # ascending; the last is the trivial 1
    weights = jnp.abs(eig[:-1]) ** t
    return entropy_from_probs(weights / jnp.sum(weights))
