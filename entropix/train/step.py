"""The train step: one ``jax.jit`` over (state, batch) -> (new state, metrics).

Loss function contract::

    loss_fn(model, batch, key, controls) -> (loss, metrics)

``model`` is the nnx module (merged from the state), ``batch`` one micro-batch (any pytree
whose leaves have the batch on axis 0), ``key`` a PRNG key for this micro-batch, ``controls``
a dict of scalars: ``"step"`` plus every controller's values (e.g. ``"entropy_coef"``,
``"entropy_hist_mean"``, ``"aepo_temperature"``). ``metrics`` is a flat dict of scalars; the
entropy statistics, predicted entropy change and attention entropy the loss computes from its
forward pass belong here, so they are part of the same compiled program. With ``compose``
losses a term's loss is ``"<term>/loss"``. Variables the forward mutates (BatchNorm stats,
power iterations) are carried into the next step.

What the compiled step does:

1. ``rng, key = split(state.rng)``; micro-batch m gets ``fold_in(key, m)``.
2. Gradient accumulation: with ``micro_batches = M`` the batch [B, ...] is split into M
   strided micro-batches (micro-batch m = rows m, m+M, m+2M, ...; each stays sharded over
   ``data``/``fsdp``) and a ``lax.scan`` sums their gradients; grads and metrics are the mean
   over micro-batches (equal to the full-batch value for a mean loss over equal-size parts).
3. ``tx.update(grads, opt_state, params, value=loss, value_and_grad_fn=..., logits_fn=...)``:
   ``value_and_grad_fn(params)`` recomputes (loss, grads) on the same batch (SAM / SAR);
   ``logits_fn(params)`` is passed when the step was given ``logits_fn(model, batch)`` (the
   safe step). Plain optax transforms ignore the extra arguments.
4. Non-finite guard: if the loss, the gradient norm or the update norm is not finite, params,
   model state, optimizer state and controllers stay as they were; ``step``,
   ``data_position``, ``rng`` and the counters advance. ``guard/nonfinite_streak`` counts
   skipped steps in a row (the loop stops the run after a limit, see :func:`check_guard`).
5. Controllers observe ``metrics[controller.metric]`` (finite steps only).

Metrics returned (all float32 scalars): the loss function's metrics (``"loss"`` is always
present), ``optim/grad_norm``, ``optim/update_norm``, ``optim/param_norm``, every
``diagnostics`` entry of the optimizer state as ``optim/<name>`` (e.g. ``optim/safe_rho``),
``controls/<name>`` for each control used this step, ``guard/skipped`` (1 if the update was
skipped), ``guard/nonfinite_total`` and ``guard/nonfinite_streak``.
"""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from entropix.train.mesh import batch_spec, replicated
from entropix.train.state import TrainState

LossFn = Callable[..., tuple[jax.Array, dict]]
RESERVED_PREFIXES = ("optim/", "guard/", "controls/")


class NonFiniteError(RuntimeError):
    """Raised by :func:`check_guard` when too many steps in a row were non-finite."""


def _scalar_metrics(metrics: dict, loss) -> dict:
    out = {}
    for key, value in dict(metrics).items():
        value = jnp.asarray(value)
        if value.shape != ():
            raise ValueError(f"loss metric {key!r} must be a scalar; got shape {value.shape}")
        if key.startswith(RESERVED_PREFIXES):
            raise ValueError(f"loss metric {key!r} uses a prefix reserved for the train step")
        out[key] = value.astype(jnp.float32)
    out["loss"] = jnp.asarray(loss, jnp.float32)
    return out


def _split_micro(batch, micro_batches: int):
    def one(x):
        if x.ndim == 0:
            return jnp.broadcast_to(x, (micro_batches,))
        if x.shape[0] % micro_batches:
            raise ValueError(
                f"batch of {x.shape[0]} rows does not split into {micro_batches} micro-batches"
            )
        x = x.reshape(x.shape[0] // micro_batches, micro_batches, *x.shape[1:])
        return jnp.swapaxes(x, 0, 1)

    return jax.tree.map(one, batch)


def _finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def make_train_step(
    loss_fn: LossFn,
    *,
    micro_batches: int = 1,
    logits_fn: Callable | None = None,
    mesh: Mesh | None = None,
    state_sharding=None,
    donate: bool = True,
):
    """Compile ``(state, batch) -> (state, metrics)`` (see the module docstring).

    With a ``mesh``, ``state_sharding`` (from ``entropix.train.mesh.state_shardings``) fixes
    the layout of the state in and out, batches come sharded over (data, fsdp), metrics come
    back replicated. ``donate`` donates the old state's buffers to the new one.
    """
    if micro_batches < 1:
        raise ValueError(f"micro_batches must be >= 1; got {micro_batches}")
    if (mesh is None) != (state_sharding is None):
        raise ValueError("give both mesh and state_sharding, or neither")

    def constrain(mb):
        if mesh is None:
            return mb
        return jax.tree.map(
            lambda x: jax.lax.with_sharding_constraint(x, NamedSharding(mesh, batch_spec(x.ndim))),
            mb,
        )

    def step(state: TrainState, batch):
        graphdef = state.graphdef
        controls = {"step": state.step, **state.control_values()}
        rng, key = jax.random.split(state.rng)

        def micro_loss(params, model_state, mb, mb_key):
            model = nnx.merge(graphdef, params, model_state, copy=True)
            loss, metrics = loss_fn(model, mb, mb_key, controls)
            _, _, new_model_state = nnx.split(model, nnx.Param, ...)
            return jnp.asarray(loss, jnp.float32), (_scalar_metrics(metrics, loss), new_model_state)

        grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

        def loss_and_grads(params, model_state):
            if micro_batches == 1:
                (loss, (metrics, model_state)), grads = grad_fn(
                    params, model_state, constrain(batch), jax.random.fold_in(key, 0)
                )
                return loss, metrics, model_state, grads

            def body(carry, xs):
                grad_sum, ms = carry
                index, mb = xs
                (loss, (metrics, ms)), grads = grad_fn(
                    params, ms, constrain(mb), jax.random.fold_in(key, index)
                )
                grad_sum = jax.tree.map(lambda a, g: a + g.astype(jnp.float32), grad_sum, grads)
                return (grad_sum, ms), metrics

            zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
            xs = (jnp.arange(micro_batches), _split_micro(batch, micro_batches))
            (grad_sum, model_state), stacked = jax.lax.scan(body, (zeros, model_state), xs)
            grads = jax.tree.map(lambda g, p: (g / micro_batches).astype(p.dtype), grad_sum, params)
            metrics = jax.tree.map(lambda m: jnp.mean(m, axis=0), stacked)
            return metrics["loss"], metrics, model_state, grads

        loss, metrics, model_state, grads = loss_and_grads(state.params, state.model_state)

        extra = {
            "value": loss,
            "value_and_grad_fn": lambda p: (lambda out: (out[0], out[3]))(
                loss_and_grads(p, state.model_state)
            ),
        }
        if logits_fn is not None:
            extra["logits_fn"] = lambda p: logits_fn(
                nnx.merge(graphdef, p, state.model_state, copy=True), batch
            )
        tx = optax.with_extra_args_support(state.tx)
        updates, opt_state = tx.update(grads, state.opt_state, state.params, **extra)
        params = optax.apply_updates(state.params, updates)

        grad_norm = optax.global_norm(grads)
        update_norm = optax.global_norm(updates)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(update_norm)

        controller_states = {}
        for name, controller in state.controllers:
            if controller.metric not in metrics:
                raise KeyError(
                    f"controller {name!r} observes metric {controller.metric!r}, which the loss "
                    f"does not report; loss metrics: {sorted(metrics)}"
                )
            observed = metrics[controller.metric]
            old = state.controls[name]
            new = controller.update(old, observed)
            ok = finite & jnp.isfinite(observed)
            controller_states[name] = jax.tree.map(
                lambda a, b, ok=ok: jnp.where(ok, a, b), new, old
            )

        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
        skipped = (~finite).astype(jnp.int32)
        new_state = state.replace(
            params=keep(params, state.params),
            model_state=keep(model_state, state.model_state),
            opt_state=keep(opt_state, state.opt_state),
            controls=controller_states,
            rng=rng,
            step=state.step + 1,
            data_position=state.data_position + 1,
            nonfinite_total=state.nonfinite_total + skipped,
            nonfinite_streak=jnp.where(finite, 0, state.nonfinite_streak + 1),
        )

        out = dict(metrics)
        out["optim/grad_norm"] = grad_norm
        out["optim/update_norm"] = update_norm
        out["optim/param_norm"] = optax.global_norm(new_state.params)
        for _, diagnostics in optax.tree_utils.tree_get_all_with_path(opt_state, "diagnostics"):
            for name, value in diagnostics.items():
                out[f"optim/{name}"] = value
        for name, value in controls.items():
            if name != "step":
                out[f"controls/{name}"] = value
        out["guard/skipped"] = skipped
        out["guard/nonfinite_total"] = new_state.nonfinite_total
        out["guard/nonfinite_streak"] = new_state.nonfinite_streak
        out = {k: jnp.asarray(v, jnp.float32) for k, v in out.items()}
        return new_state, out

    donate_argnums = (0,) if donate else ()
    if mesh is None:
        return jax.jit(step, donate_argnums=donate_argnums)
    # batches arrive placed by ``shard_batch``; their layout is taken from the arrays
    return jax.jit(
        step,
        in_shardings=(state_sharding, None),
        out_shardings=(state_sharding, replicated(mesh)),
        donate_argnums=donate_argnums,
    )


def nonfinite_terms(metrics: dict) -> list[str]:
    """Loss metrics (not the step's own ``optim/``/``guard/``/``controls/``) that are not finite."""
    return sorted(
        key
        for key, value in metrics.items()
        if not key.startswith(RESERVED_PREFIXES) and not math.isfinite(float(value))
    )


def check_guard(metrics: dict, step: int, max_nonfinite: int) -> None:
    """Raise :class:`NonFiniteError` once ``max_nonfinite`` steps in a row were skipped.

    The message names the step and the loss terms that were not finite (``"<term>/loss"``
    metrics of ``compose``; any non-finite loss metric otherwise), or says that only the
    gradient / update was non-finite.
    """
    streak = int(metrics["guard/nonfinite_streak"])
    if streak < max_nonfinite:
        return
    bad = nonfinite_terms(metrics)
    terms = [key[: -len("/loss")] for key in bad if key.endswith("/loss")]
    if terms:
        what = f"non-finite loss term(s): {', '.join(terms)}"
    elif bad:
        what = "non-finite loss metric(s): " + ", ".join(f"{k}={metrics[k]}" for k in bad)
    else:
        what = (
            f"the loss was finite but the gradient or update was not "
            f"(grad_norm={metrics['optim/grad_norm']}, update_norm={metrics['optim/update_norm']})"
        )
    raise NonFiniteError(
        f"stopping at step {step}: {streak} non-finite steps in a row "
        f"(limit max_nonfinite={max_nonfinite}); {what}"
    )
