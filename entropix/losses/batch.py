"""``PolicyBatch``: the per-token pytree every RL loss term reads.

One batch holds B sampled responses padded to T tokens. Every field is a JAX array (or
``None`` when absent), so a ``PolicyBatch`` passes through ``jax.jit`` / ``jax.grad`` like any
pytree. Build one with :func:`make_policy_batch`, which checks shapes and dtypes, broadcasts
per-sequence advantages to tokens and fills ``old_logp`` when the update is on-policy.

Fields (B = batch of responses, T = response tokens, V = vocabulary or top-k width):

* ``logp``       [B, T] float. log pi_theta(y_t | y_<t) of the sampled token under the policy
  being optimised. The only field gradients flow through (together with ``entropy`` and
  ``logits`` when the caller computed them from the same parameters).
* ``old_logp``   [B, T] float. log pi_old(y_t | y_<t) under the behaviour policy that sampled
  the batch (constant). Importance ratio r_t = exp(logp - old_logp).
* ``advantages`` [B, T] float. Advantage of each token (per-sequence advantages [B] are
  broadcast over T by :func:`make_policy_batch`). Constant.
* ``mask``       [B, T] float32. 1 for response tokens that count, 0 for prompt/padding.
* ``entropy``    [B, T] float or None. Entropy H_t of pi_theta(. | y_<t) at each position
  (differentiable when computed from the policy's logits). Filled from ``logits`` when absent.
* ``ref_logp``   [B, T] float or None. log pi_ref(y_t | y_<t) under the frozen reference policy,
  for KL-to-reference terms.
* ``logits``     [B, T, V] float or None. The policy's logits, for methods that need the whole
  next-token distribution (SIREN top-p entropy, Lp-Reg, AEPO). V may also be the top-k logits
  of each position (a truncated distribution renormalised over those k) when the full
  vocabulary is too large to keep; methods then work on that truncation.
* ``group_ids``  [B] int32 or None. Prompt group of each response (responses sampled from the
  same prompt share an id); group-relative methods read it.
* ``rewards``    [B] float or None. Scalar reward of each response (reward-shaping methods).
* ``key``        PRNG key or None. Per-step randomness for stochastic terms (Clip-Cov's random
  token subset); pass a fresh key each step.
* ``controls``   dict of scalar arrays, or None. Per-step values owned by stateful controllers
  (``entropix.optim``) that pure terms read: ``"entropy_hist_mean"`` (EPO smoothing),
  ``"entropy_anchor"`` (SIREN), ``"step"`` (EPO phase weighting). Passing them as data, not
  as factory arguments, keeps one compiled step for every value.
"""

import flax.struct
import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from entropix.entropy import shannon_entropy
from entropix.validation import check_floating, check_mask, check_rank, check_shape

# Fields a trainer fills only when a term declares it needs them (``Term.needs``).
OPTIONAL_FIELDS = ("logits", "ref_logp")


@flax.struct.dataclass
class PolicyBatch:
    """Per-token log-probs, advantages and masks of one RL batch (see the module docstring)."""

    logp: jax.Array
    old_logp: jax.Array
    advantages: jax.Array
    mask: jax.Array
    entropy: jax.Array | None = None
    ref_logp: jax.Array | None = None
    logits: jax.Array | None = None
    group_ids: jax.Array | None = None
    rewards: jax.Array | None = None
    key: jax.Array | None = None
    controls: dict | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(B, T)."""
        return tuple(self.logp.shape)

    def control(self, name: str, method: str) -> jax.Array:
        """Return ``self.controls[name]`` as float32; raise ``ValueError`` naming ``method``.

        Args:
            name: key of the controller value in ``self.controls`` (e.g. ``"step"``).
            method: name of the method asking, quoted in the error when the value is absent.

        Returns:
            The control value as a float32 array (a scalar for the library's controllers).
        """
        if self.controls is None or name not in self.controls:
            have = sorted(self.controls) if self.controls else []
            raise ValueError(
                f"{method} needs PolicyBatch.controls[{name!r}] (set each step by its controller "
                f"in entropix.optim); controls has {have}"
            )
        return jnp.asarray(self.controls[name], jnp.float32)

    def require(self, field: str, method: str) -> jax.Array:
        """Return ``self.<field>``; raise ``ValueError`` naming ``method`` when it is None.

        Args:
            field: name of an optional PolicyBatch field (e.g. ``"logits"``, ``"ref_logp"``).
            method: name of the method asking, quoted in the error when the field is None.

        Returns:
            The field's value, unchanged (e.g. ``logits`` [B, T, V], ``group_ids`` [B]).
        """
        value = getattr(self, field)
        if value is None:
            raise ValueError(
                f"{method} needs PolicyBatch.{field}, which is None; "
                f"pass {field}=... to make_policy_batch"
            )
        return value


def validate_batch(batch: PolicyBatch) -> None:
    """Check every present field's rank, shape and dtype against ``batch.logp`` [B, T].

    Args:
        batch: the batch to check; raises ``ValueError`` / ``TypeError`` on the first field
            whose rank, shape or dtype is wrong.
    """
    check_rank(batch.logp, "logp", 2)
    check_floating(batch.logp, "logp")
    b, t = batch.shape
    for name in ("old_logp", "advantages", "entropy", "ref_logp"):
        value = getattr(batch, name)
        if value is not None:
            check_floating(value, name)
            check_shape(value, name, (b, t))
    check_mask(batch.mask, "mask", (b, t))
    if batch.logits is not None:
        check_floating(batch.logits, "logits")
        check_shape(batch.logits, "logits", (b, t, None))
    if batch.rewards is not None:
        check_floating(batch.rewards, "rewards")
        check_shape(batch.rewards, "rewards", (b,))
    if batch.group_ids is not None:
        check_shape(batch.group_ids, "group_ids", (b,))
        if not jnp.issubdtype(jnp.result_type(batch.group_ids), jnp.integer):
            raise TypeError(f"group_ids must be integer (got {jnp.result_type(batch.group_ids)})")


def make_policy_batch(
    logp: ArrayLike,
    advantages: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    old_logp: ArrayLike | None = None,
    entropy: ArrayLike | None = None,
    ref_logp: ArrayLike | None = None,
    logits: ArrayLike | None = None,
    group_ids: ArrayLike | None = None,
    rewards: ArrayLike | None = None,
    key: jax.Array | None = None,
    controls: dict | None = None,
) -> PolicyBatch:
    """Build and validate a :class:`PolicyBatch`.

    ``advantages`` may be [B] (one per response, broadcast over T) or [B, T]. ``mask`` defaults
    to all ones and is stored as float32. ``old_logp`` defaults to ``stop_gradient(logp)`` (the
    on-policy case, ratio 1 with the PPO gradient). ``entropy`` defaults to the Shannon entropy
    of ``logits`` (computed in fp32) when logits are given.

    Args:
        logp: [B, T] float, log-prob of each sampled token under the policy being optimised.
        advantages: [B] or [B, T] float, advantage per response (broadcast over T) or per token.
        mask: [B, T] 0/1 (bool or numeric), 1 for response tokens that count; None for all ones.
        old_logp: [B, T] float, log-probs under the behaviour policy; None for
            ``stop_gradient(logp)`` (on-policy).
        entropy: [B, T] float, per-position policy entropy (nats); None to compute it from
            ``logits`` when those are given (else it stays None).
        ref_logp: [B, T] float, log-probs under the frozen reference policy, or None.
        logits: [B, T, V] float, the policy's full (or top-k) logits, or None.
        group_ids: [B] integer, prompt group of each response, or None.
        rewards: [B] float, scalar reward of each response, or None.
        key: PRNG key for stochastic terms (fresh each step), or None.
        controls: dict of scalar controller values (e.g. ``"step"``), or None.

    Returns:
        The validated :class:`PolicyBatch` (``advantages`` [B, T], ``mask`` float32 [B, T]).
    """
    check_rank(logp, "logp", 2)
    check_floating(logp, "logp")
    b, t = logp.shape
    check_floating(advantages, "advantages")
    check_rank(advantages, "advantages", (1, 2))
    if advantages.ndim == 1:
        check_shape(advantages, "advantages", (b,))
        advantages = jnp.broadcast_to(advantages[:, None], (b, t))
    mask = jnp.ones((b, t), jnp.float32) if mask is None else mask
    check_mask(mask, "mask", (b, t))
    if old_logp is None:
        old_logp = jax.lax.stop_gradient(logp)
    if logits is not None:
        check_rank(logits, "logits", 3)
        check_shape(logits, "logits", (b, t, None))
        if entropy is None:
            entropy = shannon_entropy(logits)
    batch = PolicyBatch(
        logp=logp,
        old_logp=old_logp,
        advantages=advantages,
        mask=jnp.asarray(mask, jnp.float32),
        entropy=entropy,
        ref_logp=ref_logp,
        logits=logits,
        group_ids=None if group_ids is None else jnp.asarray(group_ids),
        rewards=rewards,
        key=key,
        controls=controls,
    )
    validate_batch(batch)
    return batch
