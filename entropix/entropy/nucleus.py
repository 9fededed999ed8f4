"""The top-p nucleus of a categorical distribution and the entropy inside it.

Nucleus ("The Curious Case of Neural Text Degeneration", Holtzman et al. 2020): order the
classes most probable first, ties by lower class index; class i is kept when the probability
mass of the classes before it is below top_p (and p_i > 0):

    keep_i  <=>  sum_{j before i} p_j < top_p

i.e. the m most probable classes for the smallest m whose mass reaches top_p. Used to sample
(``entropix.rollout.top_p``) and by SIREN's top-p entropy ("Rethinking Entropy Regularization
in Large Reasoning Models", 2025):

    H^p = entropy of softmax(z) restricted to the nucleus and renormalised
        = log Z - sum_{i in nucleus} p_i log p_i / Z,     Z = sum_{i in nucleus} p_i

"Most probable" compares the float32 probabilities p = exp(log_softmax(z)). The set is exact
(the tests compare it with numpy's stable sort, ties included) and found by one sort of the
rows' order keys, for every number of classes.
"""

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from entropix.entropy.distribution import entropy_tangent, log_softmax
from entropix.entropy.sort_keys import from_order_keys, order_keys
from entropix.validation import check_fraction


def nucleus_mask(logits: ArrayLike, top_p: float) -> jax.Array:
    """Bool [..., V]: the top-p nucleus of softmax(logits) over the last axis (no gradient).

    Formula: keep_i <=> sum_{j before i} p_j < top_p and p_i > 0, in the order most probable
    first, ties by lower class index (Holtzman et al. 2020). The arg-max class is always kept.

    Args:
        logits: floating [..., V] scores (e.g. [batch, time, vocab]); -inf excludes a class.
        top_p: the nucleus mass, in (0, 1].

    Returns:
        bool [..., V], True for the classes of the nucleus.
    """
    logp = log_softmax(logits)
    check_fraction(top_p, "top_p")
    return _nucleus_of_logp(logp, top_p)


def _nucleus_of_logp(logp: jax.Array, top_p: float) -> jax.Array:
    """Bool [..., V]: the classes of the top-p nucleus of p = exp(logp) (no gradient).

    In the order of a stable descending sort of p (most probable first, ties by lower class
    index), a class is kept while the mass before it is below ``top_p`` and its probability is
    > 0: the m most probable classes for the smallest m whose mass reaches ``top_p``. Only the
    sorted *values* are needed, so the rows are sorted as uint32 order keys (several times
    faster on CPU than a float sort, no gather or scatter); the kept classes are those above
    the m-th value plus the earliest ones equal to it (by class index). Every step is per row,
    so a batch sharded over devices is computed where it is.
    """
    p = jnp.exp(jax.lax.stop_gradient(logp))
    v = p.shape[-1]
    ordered = from_order_keys(~jnp.sort(~order_keys(p), axis=-1))  # descending probabilities
    mass_before = jnp.cumsum(ordered, axis=-1) - ordered
    count = jnp.sum((mass_before < top_p) & (ordered > 0), axis=-1, keepdims=True)
    boundary = jnp.min(jnp.where(jnp.arange(v) < count, ordered, jnp.inf), axis=-1, keepdims=True)
    above = p > boundary
    tied = p == boundary
    wanted = count - jnp.sum(above, axis=-1, keepdims=True)  # tied classes to keep, >= 1
    return above | (tied & (jnp.cumsum(tied, axis=-1) <= wanted))


def top_p_entropy(logits: ArrayLike, top_p: float = 0.8) -> jax.Array:
    """Entropy of the renormalised top-p nucleus of softmax(logits), per position (float32).

    The nucleus is the smallest set of most probable classes whose probability reaches
    ``top_p`` (a class is kept while the mass of the classes sorted before it, most probable
    first and ties by class index, is below ``top_p``). With Z the nucleus mass,
    H = log Z - sum_nucleus p log p / Z. Differentiable in the logits, in both modes: with
    q = p / Z on the nucleus, dH = -sum_nucleus q (log q + H) dz; the choice of the set is not
    differentiated. Finding the set costs a sort of the class axis per position: pass top-k
    logits to bound the cost on a large vocabulary, as the authors' implementation does.
    Paper: "Rethinking Entropy Regularization in Large Reasoning Models" (SIREN, 2025).
    Defaults: top_p = 0.8 (the authors' training script).

    Args:
        logits: floating [..., V] scores (e.g. [batch, time, top-k]); -inf excludes a class.
        top_p: the nucleus mass, in (0, 1]; default 0.8.

    Returns:
        float32 [...] entropies of the renormalised nucleus, in nats (the full entropy at
        top_p = 1).
    """
    logp = log_softmax(logits)
    check_fraction(top_p, "top_p")
    return _entropy_within(jnp.asarray(logits, jnp.float32), _nucleus_of_logp(logp, top_p))


@jax.custom_jvp
def _entropy_within(logits, keep):
    """Shannon entropy of q = softmax(logits) restricted to ``keep`` and renormalised:

        q_i = p_i / Z on keep (Z = sum_keep p),   H = -sum_keep q_i log q_i.

    q is the softmax of the kept logits alone, so the derivative is the entropy derivative of
    q, dH = -sum_keep q_i (log q_i + H) dz_i (:func:`entropy_tangent`), one pass in either mode
    (custom JVP; reverse mode transposes it). The same as ``shannon_entropy`` of the logits with
    the dropped ones set to -inf, without a second log-softmax over them.
    """
    return _entropy_and_q(logits, keep)[0]


def _entropy_and_q(logits, keep):
    logp = log_softmax(logits)
    p = jnp.where(keep, jnp.exp(logp), 0.0)
    mass = jnp.sum(p, axis=-1, keepdims=True)
    q = p / mass
    # dropped classes: q = 0 and log q set to 0, so a -inf log-prob never meets a 0 weight
    log_q = jnp.where(keep, logp - jnp.log(mass), 0.0)
    return -jnp.sum(q * log_q, axis=-1), q, log_q


@_entropy_within.defjvp
def _entropy_within_jvp(primals, tangents):
    logits, keep = primals
    entropy, q, log_q = _entropy_and_q(logits, keep)
    return entropy, entropy_tangent(q, log_q, entropy, tangents[0])
