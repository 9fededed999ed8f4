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
(the tests compare it with numpy's stable sort, ties included) however it is found: by a
sorting network for narrow class axes, by a sort of order keys otherwise.
"""

import jax
import jax.numpy as jnp

from entropix.entropy.distribution import entropy_tangent, log_softmax
from entropix.entropy.sort_keys import from_order_keys, order_keys
from entropix.validation import check_fraction


def nucleus_mask(logits, top_p: float) -> jax.Array:
    """Bool [..., V]: the top-p nucleus of softmax(logits) over the last axis (no gradient).

    Formula: keep_i <=> sum_{j before i} p_j < top_p and p_i > 0, in the order most probable
    first, ties by lower class index (Holtzman et al. 2020). The arg-max class is always kept.
    """
    logp = log_softmax(logits)
    check_fraction(top_p, "top_p")
    return _nucleus_of_logp(logp, top_p)


# Widest class axis for which the nucleus is found by a sorting network (Batcher: 191 compare-
# exchanges per row at V = 32, 543 at V = 64, fused into one pass) rather than by sorting the
# rows; past it the sort's O(V log V) work and the network's code size win.
NETWORK_MAX_CLASSES = 64


def merge_sort_network(n: int) -> list[tuple[int, int]]:
    """The comparators (i, j), i < j, of Batcher's odd-even merge sort of ``n`` values, in
    order: exchanging values[i] and values[j] whenever values[i] < values[j], one comparator
    after the other, sorts any ``n`` values in descending order (K. E. Batcher, "Sorting networks
    and their applications", 1968). For ``n`` not a power of two, the network of the next power
    of two without the comparators that touch a position >= n (padding there with the lowest
    value makes them no-ops)."""
    size = 1 << max(n - 1, 0).bit_length()
    pairs = []
    block = 1
    while block < size:
        gap = block
        while gap >= 1:
            for start in range(gap % block, size - gap, 2 * gap):
                for i in range(start, min(start + gap, size - gap)):
                    same_merge = i // (2 * block) == (i + gap) // (2 * block)
                    if same_merge and i + gap < n:
                        pairs.append((i, i + gap))
            gap //= 2
        block *= 2
    return pairs


def _nucleus_of_logp(logp, top_p: float):
    """Bool [..., V]: the classes of the top-p nucleus of p = exp(logp) (no gradient).

    In the order of a stable descending sort of p (most probable first, ties by lower class
    index), a class is kept while the mass before it is below ``top_p`` and its probability is
    > 0: the m most probable classes for the smallest m whose mass reaches ``top_p``. Exact
    either way it is computed: :func:`_nucleus_network` for V <= NETWORK_MAX_CLASSES (a top-k
    truncation, a small head), :func:`_nucleus_sorted` above.
    """
    p = jnp.exp(jax.lax.stop_gradient(logp))
    if p.shape[-1] <= NETWORK_MAX_CLASSES:
        return _nucleus_network(p, top_p)
    return _nucleus_sorted(p, top_p)


def _nucleus_network(p, top_p: float):
    """The nucleus from each row's last kept class: :func:`_last_kept` finds its index l, and
    class i is kept iff it comes no later in the stable order, (p_i, -i) >= (p_l, -l), so ties
    with p_l are kept up to class l.

    The rows go through :func:`_last_kept` in two blocks, the even rows and the odd ones. The
    loop over the blocks is a boundary XLA does not fuse across: without it, XLA on CPU fuses
    the network (cheap max/min only) into the comparisons below that read its per-row result,
    computing it several times per row (4-10 copies in the programs we measured). Interleaved
    blocks keep a batch sharded over devices where it is (halves of the rows would be gathered).
    """
    v = p.shape[-1]
    rows = p.reshape(-1, v)
    n = rows.shape[0]
    blocks = 2 if n > 1 else 1
    # the int32 bit patterns of float32 p >= 0 are in the same order as the values
    keys = jax.lax.bitcast_convert_type(rows, jnp.int32)
    keys = jnp.pad(keys, ((0, -n % blocks), (0, 0))).reshape(-1, blocks, v).swapaxes(0, 1)
    last = jax.lax.map(lambda block: _last_kept(block, top_p), keys)
    last = last.swapaxes(0, 1).reshape(-1, 1)[:n]
    p_last = jnp.take_along_axis(rows, last, axis=-1)
    keep = (rows > p_last) | ((rows == p_last) & (jnp.arange(v) <= last))
    return keep.reshape(p.shape)


def _last_kept(keys, top_p: float):
    """Int32 [rows, 1]: the class index of the last class of each row's nucleus, from the int32
    bit patterns ``keys`` [rows, V] of its probabilities.

    :func:`merge_sort_network` orders the V columns (integer max/min, one fused pass); the
    nucleus is the sorted prefix whose mass before each member is < top_p (p > 0), b its last
    value, and of the classes equal to b the first (|nucleus| - #{p > b}) by class index are
    kept: the last of those is returned. The columns are [rows, 1] slices, not reshaped to
    [rows] (on CPU the network ran ~1.5x faster that way).
    """
    columns = [keys[:, k : k + 1] for k in range(keys.shape[-1])]
    ordered = list(columns)
    for i, j in merge_sort_network(len(ordered)):
        high, low = ordered[i], ordered[j]
        ordered[i], ordered[j] = jnp.maximum(high, low), jnp.minimum(high, low)
    mass = jnp.zeros(ordered[0].shape, jnp.float32)
    size = jnp.zeros(ordered[0].shape, jnp.int32)
    boundary = ordered[0]
    for key in ordered:
        prob = jax.lax.bitcast_convert_type(key, jnp.float32)
        inside = (mass < top_p) & (prob > 0)
        boundary = jnp.where(inside, key, boundary)
        size = size + inside
        mass = mass + prob
    wanted = size - sum((key > boundary).astype(jnp.int32) for key in columns)
    seen = jnp.zeros_like(size)
    last = jnp.zeros_like(size)
    for k, key in enumerate(columns):
        tied = key == boundary
        seen = seen + tied
        last = jnp.where(tied & (seen <= wanted), k, last)
    return last


def _nucleus_sorted(p, top_p: float):
    """The nucleus from the sorted probabilities: only the *values* are needed, so the rows are
    sorted as uint32 order keys (several times faster on CPU than a float sort, no gather or
    scatter); the kept classes are those above the m-th value plus the earliest ones equal
    to it."""
    v = p.shape[-1]
    ordered = from_order_keys(~jnp.sort(~order_keys(p), axis=-1))  # descending probabilities
    mass_before = jnp.cumsum(ordered, axis=-1) - ordered
    count = jnp.sum((mass_before < top_p) & (ordered > 0), axis=-1, keepdims=True)
    boundary = jnp.min(jnp.where(jnp.arange(v) < count, ordered, jnp.inf), axis=-1, keepdims=True)
    above = p > boundary
    tied = p == boundary
    wanted = count - jnp.sum(above, axis=-1, keepdims=True)  # tied classes to keep, >= 1
    return above | _earliest_tied(tied, wanted)


def _earliest_tied(tied, wanted):
    """The first ``wanted`` (int [..., 1]) of the ``tied`` classes of each row, by class index.
    The row cumsum this needs runs only when some row has more tied classes than it wants."""
    return jax.lax.cond(
        jnp.any(jnp.sum(tied, axis=-1, keepdims=True) > wanted),
        lambda: tied & (jnp.cumsum(tied, axis=-1) <= wanted),
        lambda: tied,
    )


def top_p_entropy(logits, top_p: float = 0.8):
    """Entropy of the renormalised top-p nucleus of softmax(logits), per position (float32).

    The nucleus is the smallest set of most probable classes whose probability reaches
    ``top_p`` (a class is kept while the mass of the classes sorted before it, most probable
    first and ties by class index, is below ``top_p``). With Z the nucleus mass,
    H = log Z - sum_nucleus p log p / Z. Differentiable in the logits, in both modes: with
    q = p / Z on the nucleus, dH = -sum_nucleus q (log q + H) dz; the choice of the set is not
    differentiated. Finding the set costs a sorting network per position up to V = 64 classes
    (O(V log^2 V) compare-exchanges) and a sort of the class axis above: pass top-k logits to
    bound the cost on a large vocabulary, as the authors' implementation does.
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
