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

The set is exact (the tests compare it with numpy's stable sort, ties included) however it is
found: by pairwise comparison for narrow class axes, by a sort of order keys otherwise.
"""

import jax
import jax.numpy as jnp

from entropix.entropy.distribution import entropy_tangent, log_softmax
from entropix.validation import check_fraction


def order_keys(values) -> jax.Array:
    """uint32 keys in the order of float32 ``values``: -0.0 and 0.0 get the same key and NaN
    the lowest key 0, below -inf (as a descending ``jnp.sort`` / ``jnp.argsort`` places it)."""
    x = jnp.asarray(values, jnp.float32)
    bits = jax.lax.bitcast_convert_type(jnp.where(x == 0, 0.0, x), jnp.uint32)
    keys = jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(1 << 31))
    return jnp.where(jnp.isnan(x), jnp.uint32(0), keys)


def from_order_keys(keys) -> jax.Array:
    """Inverse of :func:`order_keys` on the keys of non-NaN values (float32)."""
    bits = jnp.where(keys >> 31 == 1, keys & jnp.uint32((1 << 31) - 1), ~keys)
    return jax.lax.bitcast_convert_type(bits, jnp.float32)


def nucleus_mask(logits, top_p: float) -> jax.Array:
    """Bool [..., V]: the top-p nucleus of softmax(logits) over the last axis (no gradient).

    Formula: keep_i <=> sum_{j before i} p_j < top_p and p_i > 0, in the order most probable
    first, ties by lower class index (Holtzman et al. 2020). The arg-max class is always kept.
    """
    logp = log_softmax(logits)
    check_fraction(top_p, "top_p")
    return _nucleus_of_logp(logp, top_p)


# Widest class axis for which the nucleus is found by pairwise comparison (V^2 work in one fused
# pass) rather than by sorting; past it the sort's O(V log V) wins.
PAIRWISE_MAX_CLASSES = 64


def _nucleus_of_logp(logp, top_p: float):
    """Bool [..., V]: the classes of the top-p nucleus of exp(logp) (no gradient).

    In the order of a stable descending sort of logp (most probable first, ties by lower class
    index), a class is kept while the mass before it is below ``top_p`` and its probability is
    > 0: the m most probable classes for the smallest m whose mass reaches ``top_p``. Exact
    either way it is computed: :func:`_nucleus_pairwise` for V <= PAIRWISE_MAX_CLASSES (a top-k
    truncation, a small head), :func:`_nucleus_sorted` above.
    """
    x = jax.lax.stop_gradient(logp)
    if x.shape[-1] <= PAIRWISE_MAX_CLASSES:
        return _nucleus_pairwise(x, top_p)
    return _nucleus_sorted(x, top_p)


def _earliest_tied(tied, wanted):
    """The first ``wanted`` (int [..., 1]) of the ``tied`` classes of each row, by class index.
    The row cumsum this needs runs only when some row has more tied classes than it wants."""
    return jax.lax.cond(
        jnp.any(jnp.sum(tied, axis=-1, keepdims=True) > wanted),
        lambda: tied & (jnp.cumsum(tied, axis=-1) <= wanted),
        lambda: tied,
    )


def _nucleus_pairwise(x, top_p: float):
    """The nucleus without a sort: the mass ahead of class i in the stable order,

        A_i = sum_j p_j [x_j > x_i  or  (x_j == x_i and j < i)],

    takes V comparisons per class, all in one fused pass; keep A_i < top_p and p_i > 0. Exact
    with ties: the earlier-index member of a tied group is ahead of the later one.
    """
    p = jnp.exp(x)
    v = x.shape[-1]
    index = jnp.arange(v)
    ahead = jnp.zeros_like(p)
    for j in range(v):
        x_j = x[..., j : j + 1]
        before = (x_j > x) | ((x_j == x) & (index > j))
        ahead = ahead + jnp.where(before, p[..., j : j + 1], 0.0)
    return (ahead < top_p) & (p > 0)


def _nucleus_sorted(x, top_p: float):
    """The nucleus from the sorted values: only the *values* are needed, so the rows are sorted
    as uint32 order keys (several times faster on CPU than a float sort, no gather or scatter
    of the logits); the kept classes are those above the m-th value plus the earliest ones
    equal to it."""
    v = x.shape[-1]
    ordered = from_order_keys(~jnp.sort(~order_keys(x), axis=-1))  # descending values
    sorted_p = jnp.exp(ordered)
    mass_before = jnp.cumsum(sorted_p, axis=-1) - sorted_p
    count = jnp.sum((mass_before < top_p) & (sorted_p > 0), axis=-1, keepdims=True)
    boundary = jnp.min(jnp.where(jnp.arange(v) < count, ordered, jnp.inf), axis=-1, keepdims=True)
    above = x > boundary
    tied = x == boundary
    wanted = count - jnp.sum(above, axis=-1, keepdims=True)  # tied classes to keep, >= 1
    return above | _earliest_tied(tied, wanted)


def top_p_entropy(logits, top_p: float = 0.8):
    """Entropy of the renormalised top-p nucleus of softmax(logits), per position (float32).

    The nucleus is the smallest set of most probable classes whose probability reaches
    ``top_p`` (a class is kept while the mass of the classes sorted before it, most probable
    first and ties by class index, is below ``top_p``). With Z the nucleus mass,
    H = log Z - sum_nucleus p log p / Z. Differentiable in the logits, in both modes: with
    q = p / Z on the nucleus, dH = -sum_nucleus q (log q + H) dz; the choice of the set is not
    differentiated. Finding the set costs V^2 comparisons per position up to V = 64 classes
    and a sort of the class axis (O(V log V)) above: pass top-k logits to bound the cost on a
    large vocabulary, as the authors' implementation does.
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
