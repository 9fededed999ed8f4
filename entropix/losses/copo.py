"""COPO: consistency-aware advantages that keep a learning signal when a group agrees.

Paper: "COPO: Consistency-Aware Policy Optimization" (Han, Chen et al., 2025). When every
response to a prompt earns the same reward, the group-relative (local) advantage is zero and the
prompt teaches nothing. COPO adds a global advantage -- the group's mean reward standardised
across the prompts of the batch -- and blends the two by the entropy of the group's outcomes:
inconsistent groups keep the local advantage, consistent ones move to the global one.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from entropix.losses.advantages import _groups
from entropix.losses.registry import register
from entropix.validation import check_positive, check_rank, check_shape


def global_advantages(rewards: ArrayLike, group_ids: ArrayLike, eps: float = 1e-6) -> jax.Array:
    """Group mean reward standardised over the batch's groups (one vote per group), [B].

    Formula:
        R_g = mean_{i in g} r_i;  mu, sigma = mean and unbiased std of R_g over the G groups
        A_glob_i = (R_{g(i)} - mu) / (sigma + eps)      (0 when G = 1)

    Args:
        rewards: [B] float, the scalar reward of each response.
        group_ids: [B] integer, the prompt group of each response.
        eps: added to sigma before dividing.

    Returns:
        float32 [B], the global advantage of each response's group.
    """
    r, same, n = _groups(rewards, group_ids)
    group_mean = same @ r / n
    votes = 1.0 / n  # the n responses of a group share one vote
    groups = jnp.sum(votes)
    mu = jnp.sum(votes * group_mean) / groups
    var = jnp.sum(votes * (group_mean - mu) ** 2) / jnp.maximum(groups - 1.0, 1.0)
    return jnp.where(groups > 1.5, (group_mean - mu) / (jnp.sqrt(var) + eps), 0.0)


def outcome_entropy(rewards: ArrayLike, group_ids: ArrayLike) -> jax.Array:
    """Entropy in bits of the distribution of reward values within each response's group, [B].

    Formula:
        p_i = #{j in g(i) : r_j = r_i} / n_g;   H_g = -sum_v p_v log2 p_v = mean_{j in g} -log2 p_j

    Args:
        rewards: [B] float, the scalar reward of each response.
        group_ids: [B] integer, the prompt group of each response.

    Returns:
        float32 [B], H_g (bits) of each response's group.
    """
    r, same, n = _groups(rewards, group_ids)
    share = jnp.sum(same * (r[None, :] == r[:, None]), axis=1) / n
    return same @ -jnp.log2(share) / n


@register("copo", paper="COPO: Consistency-Aware Policy Optimization", kind="advantage")
def copo_advantages(
    advantages: ArrayLike, rewards: ArrayLike, group_ids: ArrayLike, k: float = 20.0, b: float = 0.5
) -> jax.Array:
    """COPO: blend the local (group) advantage with a global one by the outcome entropy.

    Formula:
        A_loc = the previous shaper's advantage (GRPO)
        A_glob_i = (R_g - mean_groups R) / (std_groups R + 1e-6),  R_g = mean reward of group g
        H_g = -sum_v p_v log2 p_v over the reward values v of group g
        w_i = sigmoid(k (H_g - b)) * [A_loc_i != 0]
        A_i = w_i A_loc_i + (1 - w_i) A_glob_i

    Paper: "COPO: Consistency-Aware Policy Optimization" (Han, Chen et al., 2025), the
    entropy-based soft blending with the forced global branch for zero-advantage groups.

    Defaults: k = 20, b = 0.5 bits (the authors' scripts), GRPO's eps 1e-6, global reward = the
    group's mean reward (the release's ``reward_coef_flg=false``). Our choices: the outcome
    entropy is over the group's distinct reward values (the release groups extracted answers,
    which the advantage stage does not see; with a 0/1 reward it is the entropy of
    correct / wrong); the paper mixes two clipped losses, w l(A_loc) + (1 - w) l(A_glob), and we
    mix the advantages -- the same gradient while the ratio lies inside the clip (always, with
    one on-policy update per batch). Pair with ``seq-mean-token-mean`` (the paper's).
    ``advantages`` [B] or [B, T]; returns the blended advantages of the same shape.

    Args:
        advantages: [B] or [B, T] float, the local advantages A_loc (no gradient).
        rewards: [B] float, the scalar reward of each response.
        group_ids: [B] integer, the prompt group of each response.
        k: > 0, the sigmoid's sharpness (per bit).
        b: the outcome entropy (bits) at which the blend is even.

    Returns:
        float32 array of ``advantages``' shape, the blended advantages.
    """
    check_positive(k, "k")
    check_rank(advantages, "advantages", (1, 2))
    check_shape(advantages, "advantages", (jnp.shape(rewards)[0], None)[: advantages.ndim])
    local = jax.lax.stop_gradient(jnp.asarray(advantages, jnp.float32))
    glob = global_advantages(rewards, group_ids)
    weight = jax.nn.sigmoid(k * (outcome_entropy(rewards, group_ids) - b))
    if local.ndim == 2:
        glob, weight = glob[:, None], weight[:, None]
    weight = jnp.where(local != 0, weight, 0.0)
    return weight * local + (1.0 - weight) * glob
