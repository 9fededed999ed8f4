"""Loss suite: value-and-gradient step time of every registered loss vs token-mean PPO clip.

One synthetic RL batch of B x T tokens (B = 64 responses, T = 512 tokens, a ragged mask, groups
of 8 responses per prompt, rewards, a reference policy) is derived from policy logits
[B, T, V] (V = 32, the top-k truncation ``PolicyBatch.logits`` allows), with the controller
values some terms read (``CONTROLS``). A step is the jitted ``value_and_grad`` w.r.t. those
logits of ``compose(term)(batch)``, where ``logp`` and ``entropy`` are computed from the logits
inside the step, as in training; every step also returns the masked mean entropy, the
diagnostic a train step always computes, so a ratio measures what the loss adds beyond it.

Every registry entry whose factory, called with its defaults, returns a
:class:`~entropix.losses.compose.Term` is measured. The baseline is the registry's
``ppo_clip`` with its defaults, aggregated token-mean. Figure per row:

* ``time/ppo_clip``  the loss step's seconds over the baseline's, timed side by side: the median
  over timing rounds of the per-round ratio (``timing.paired_ratio``: the two calls of a round
  see the same load from other processes; the ratio of the two medians is in ``values``).
  Target: <= 1.5.

Losses over other inputs are measured on inputs of the same [B, T] size built here (see
``OTHER_INPUTS``): test-time-adaptation losses on classifier logits [B, C = T] (B samples, T
classes) with their extra inputs (EATA's class-probability average, DeYO's shuffled-view
logits, ADTE's label bias), HL-Gauss on value logits [B, T, 51] with scalar targets [B, T], the
attention-entropy regulariser on per-head entropies [B, 8 heads, T]; their step is the
``value_and_grad`` w.r.t. the first input. Advantage shapers, selectors and rewards are not
losses and get a ``not available`` row, as does any entry this suite cannot construct.
"""

import importlib
import pkgutil

import jax
import jax.numpy as jnp

from entropix.bench import report
from entropix.bench.timing import compile_jit, paired_ratio, time_calls

NORMAL = {"batch": 64, "time": 512, "vocab": 32, "group": 8}
QUICK = {"batch": 8, "time": 32, "vocab": 16, "group": 4}
TIME_TARGET = 1.5
# PolicyBatch.controls: per-step controller values (see entropix/losses/batch.py)
CONTROLS = {
    "entropy_hist_mean": 1.0,
    "entropy_hist_count": 4.0,
    "entropy_anchor": 1.0,
    "entropy_coef": 1e-3,
    "step": 10.0,
}
NOT_LOSSES = {
    "advantage": "an advantage shaper (rewards -> advantages), not a loss",
    "selector": "a token selector (batch -> mask), not a loss",
    "reward": "a reward-shaping function, not a loss",
    "rollout": "a rollout strategy (prompts -> sampled rows), not a loss",
    "steering": "a model transform (an activation hook on the decoder), not a loss",
}


def _load_registry():
    """Import ``entropix.losses`` and each of its modules so every method registers itself;
    return (REGISTRY, compose, Term, make_policy_batch, {module: import error})."""
    import entropix.losses as losses

    failures = {}
    for info in pkgutil.iter_modules(losses.__path__):
        try:
            importlib.import_module(f"entropix.losses.{info.name}")
        except Exception as error:  # a module being written must not stop the suite
            failures[info.name] = f"{type(error).__name__}: {error}"
    return losses.REGISTRY, losses.compose, losses.Term, losses.make_policy_batch, failures


def _classifier(key, b, t):
    return (2.0 * jax.random.normal(key, (b, t)),)


OTHER_INPUTS = {
    # name -> (factory kwargs, key, B, T -> positional inputs; the first is differentiated)
    "tent": ({}, _classifier),
    "sar": ({}, _classifier),
    "tsallis_tta": ({}, _classifier),
    "eata": ({}, lambda k, b, t: (*_classifier(k, b, t), jnp.full((t,), 1.0 / t))),
    "deyo": ({}, lambda k, b, t: (*_classifier(k, b, t), *_classifier(k + 1, b, t))),
    "adte": ({}, lambda k, b, t: (*_classifier(k, b, t), jnp.full((t,), 1.0 / t))),
    "hl_gauss": (
        {"min_value": -1.0, "max_value": 1.0, "num_bins": 51},
        lambda k, b, t: (jax.random.normal(k, (b, t, 51)), jnp.tanh(jax.random.normal(k, (b, t)))),
    ),
    "attention_entropy_reg": (
        {},
        lambda k, b, t: (jnp.log(t) * jax.random.uniform(k, (b, 8, t)), jnp.full((8,), 0.5)),
    ),
}


def _other_step(loss_fn):
    """value_and_grad w.r.t. the first input of a loss over non-PolicyBatch inputs."""
    return jax.value_and_grad(lambda first, *rest: loss_fn(first, *rest)[0])


def _data(sizes):
    b, t, v = sizes["batch"], sizes["time"], sizes["vocab"]
    keys = jax.random.split(jax.random.PRNGKey(0), 7)
    logits = 2.0 * jax.random.normal(keys[0], (b, t, v))
    targets = jax.random.categorical(keys[1], logits)
    lengths = jax.random.randint(keys[2], (b,), t // 2, t + 1)
    fixed = {
        "targets": targets,
        "old_shift": 0.1 * jax.random.normal(keys[3], (b, t)),
        "ref_shift": 0.1 * jax.random.normal(keys[4], (b, t)),
        "advantages": jax.random.normal(keys[5], (b,)),
        "mask": (jnp.arange(t)[None, :] < lengths[:, None]).astype(jnp.float32),
        "group_ids": jnp.arange(b, dtype=jnp.int32) // sizes["group"],
        "rewards": jax.random.uniform(keys[6], (b,)),
        "key": jax.random.PRNGKey(1),
        "controls": {name: jnp.float32(value) for name, value in CONTROLS.items()},
    }
    return logits, fixed


def _step(loss_fn, make_policy_batch):
    """value_and_grad w.r.t. the policy logits of ``loss_fn`` on the batch they define, with the
    masked mean entropy as auxiliary output."""

    def objective(logits, fixed):
        logp_all = jax.nn.log_softmax(logits, axis=-1)
        logp = jnp.take_along_axis(logp_all, fixed["targets"][..., None], axis=-1)[..., 0]
        batch = make_policy_batch(
            logp,
            fixed["advantages"],
            fixed["mask"],
            old_logp=jax.lax.stop_gradient(logp) + fixed["old_shift"],
            ref_logp=jax.lax.stop_gradient(logp) + fixed["ref_shift"],
            logits=logits,
            group_ids=fixed["group_ids"],
            rewards=fixed["rewards"],
            key=fixed["key"],
            controls=fixed["controls"],
        )
        loss, _ = loss_fn(batch)
        mean_entropy = jnp.sum(batch.entropy * batch.mask) / jnp.sum(batch.mask)
        return loss, jax.lax.stop_gradient(mean_entropy)

    return jax.value_and_grad(objective, has_aux=True)


def run(quick: bool, repeats: int) -> list[dict]:
    """One row per registry entry (sorted by name), plus one per loss module that failed to
    import.

    Args:
        quick: measure the quick sizes (``QUICK``) instead of the normal ones (``NORMAL``).
        repeats: timed rounds per program (>= ``timing.MIN_REPEATS``).

    Returns:
        The rows: ``report.row`` or ``report.unavailable`` dicts.
    """
    try:
        registry, compose, term_cls, make_policy_batch, failures = _load_registry()
    except Exception as error:
        return [report.unavailable("all losses", f"entropix.losses not importable: {error}")]
    rows = [report.unavailable(f"module {m}", f"import failed: {e}") for m, e in failures.items()]
    sizes = QUICK if quick else NORMAL
    logits, fixed = _data(sizes)
    if "ppo_clip" not in registry:
        return [*rows, report.unavailable("all losses", "baseline ppo_clip is not registered")]
    baseline = compose(registry["ppo_clip"].factory(), aggregate="token-mean")
    c_base = compile_jit(_step(baseline, make_policy_batch), logits, fixed)
    for name in sorted(registry):
        info = registry[name]
        if info.kind in NOT_LOSSES:
            rows.append(report.unavailable(name, f"kind={info.kind}: {NOT_LOSSES[info.kind]}"))
            continue
        kwargs, build = OTHER_INPUTS.get(name, ({}, None))
        try:
            term = info.factory(**kwargs)
            if isinstance(term, term_cls):
                inputs = (logits, fixed)
                step = _step(compose(term), make_policy_batch)
            elif build is not None:
                inputs = build(jax.random.PRNGKey(2), sizes["batch"], sizes["time"])
                step = _other_step(term)
            else:
                what = type(term).__name__
                reason = f"kind={info.kind}: factory returns a {what} this suite has no inputs for"
                rows.append(report.unavailable(name, reason))
                continue
            c_loss = compile_jit(step, *inputs)
        except Exception as error:  # report the entry, keep measuring the others
            rows.append(report.unavailable(name, f"{type(error).__name__}: {error}"))
            continue
        t_loss, t_base = time_calls(
            [lambda c=c_loss, a=inputs: c(*a), lambda: c_base(logits, fixed)], repeats
        )
        ratio = paired_ratio(t_loss, t_base)
        values = {
            "ratio_of_medians": t_loss.median / t_base.median,
            "kind": info.kind,
            "batch": sizes["batch"],
            "time": sizes["time"],
            "vocab": sizes["vocab"],
            "inputs": "PolicyBatch" if build is None else "own inputs (OTHER_INPUTS)",
            "loss": t_loss.as_dict(),
            "ppo_clip": t_base.as_dict(),
        }
        targets = {f"<= {TIME_TARGET}x ppo_clip": ratio <= TIME_TARGET}
        rows.append(report.row(name, {"time/ppo_clip": ratio}, values, targets))
    return rows
