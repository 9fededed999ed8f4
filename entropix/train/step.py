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

Optional hooks (all inside the same compiled program):

* ``prepare_fn(model, frozen, batch, key, controls) -> (batch, metrics)`` runs once per call,
  before any update, with the pre-update model and no gradient: e.g. advantages from rewards,
  the old policy's log-probs for several PPO epochs, a frozen reference policy's log-probs
  (``frozen`` is ``TrainState.frozen``). Its metrics are logged as they are.
* ``weight_fn(micro_batch) -> scalar``: the weight of a micro-batch in gradient accumulation
  (default 1: a plain mean). A token-mean loss passes its valid-token count, which makes the
  accumulated gradient the exact gradient of the token mean over the whole batch.
* ``probe_fn(before, after, batch, key, controls) -> metrics`` runs only when the step is
  called with ``probe=True`` (a separate compilation; steps without it pay nothing): ``before``
  / ``after`` are the models before the first and after the last update and ``batch`` is the
  prepared batch. Entropy-dynamics measurements live here.

What the compiled step does:

1. ``rng, key = split(state.rng)``. Update u gets ``fold_in(key, u)``, its micro-batch m
   ``fold_in(fold_in(key, u), m)``; ``prepare_fn`` gets ``fold_in(key, U)`` and ``probe_fn``
   ``fold_in(key, U + 1)`` (U = number of updates).
2. ``prepare_fn`` (if any) on the whole batch.
3. ``U = epochs * mini_batches`` optimiser updates (a ``lax.scan``): the batch is split into
   ``mini_batches`` strided mini-batches (mini-batch k = rows k, k+K, k+2K, ...), visited in
   order, ``epochs`` times. Each update:
   a. gradient accumulation: the mini-batch is split into ``micro_batches = M`` strided
      micro-batches (each stays sharded over ``data``/``fsdp``); a ``lax.scan`` sums their
      ``weight_fn``-weighted gradients; grads and metrics are the weighted means.
   b. ``tx.update(grads, opt_state, params, value=loss, value_and_grad_fn=..., logits_fn=...)``:
      ``value_and_grad_fn(params)`` recomputes (loss, grads) on the same mini-batch (SAM /
      SAR); ``logits_fn(params)`` is passed when the step was given ``logits_fn(model,
      batch)`` (the safe step). Plain optax transforms ignore the extra arguments.
   c. non-finite guard: if the loss, the gradient norm or the update norm is not finite, the
      update is skipped (params, model state and optimizer state stay as they were).
4. Controllers observe ``metrics[controller.metric]`` (``prepare_fn``'s metrics or the mean of
   the loss metrics over the step's updates; a step with a skipped update leaves them
   unchanged).
5. ``probe_fn`` when asked.
``step``, ``data_position`` and ``rng`` advance once per call whatever happened.

Metrics returned (all float32 scalars): ``prepare_fn``'s metrics; the loss function's metrics
(``"loss"`` is always present), ``optim/grad_norm`` and ``optim/update_norm`` -- with several
updates, all of these are the mean over the step's updates; ``optim/param_norm`` (after the
step), every ``diagnostics`` entry of the optimizer state as ``optim/<name>`` (e.g.
``optim/safe_rho``), ``controls/<name>`` for each control used this step, ``guard/skipped``
(updates skipped this step), ``guard/nonfinite_total`` (skipped updates so far) and
``guard/nonfinite_streak`` (steps in a row with a skipped update); ``probe_fn``'s metrics on
probed steps.
"""

import math
from collections.abc import Callable, Mapping
from typing import Any

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


def split_rows(batch: Any, parts: int, what: str = "parts") -> Any:
    """Stack ``parts`` strided slices of ``batch`` on a new leading axis: slice k holds rows
    k, k + parts, k + 2 parts, ... (so each slice of a batch sharded over devices stays spread
    over them); scalar leaves are broadcast. Raises ``ValueError`` if the rows do not split.

    Args:
        batch: a pytree of arrays ``[B, ...]`` (B divisible by ``parts``) or scalars.
        parts: the number of slices.
        what: what the slices are called in the error message; default ``"parts"``.

    Returns:
        The pytree with leaves ``[parts, B / parts, ...]`` (scalars as ``[parts]``).
    """

    def one(x):
        if x.ndim == 0:
            return jnp.broadcast_to(x, (parts,))
        if x.shape[0] % parts:
            raise ValueError(f"batch of {x.shape[0]} rows does not split into {parts} {what}")
        x = x.reshape(x.shape[0] // parts, parts, *x.shape[1:])
        return jnp.swapaxes(x, 0, 1)

    return jax.tree.map(one, batch)


def merge_rows(stacked: Any) -> Any:
    """The inverse of :func:`split_rows`: ``[parts, B / parts, ...]`` back to ``[B, ...]``.

    Args:
        stacked: a pytree of arrays ``[parts, B / parts, ...]``.

    Returns:
        The pytree with leaves ``[B, ...]`` in the original row order.
    """

    def one(x):
        return jnp.swapaxes(x, 0, 1).reshape(x.shape[0] * x.shape[1], *x.shape[2:])

    return jax.tree.map(one, stacked)


def _weighted_mean(stacked, weights):
    """Mean over the leading axis of every leaf, weighted by ``weights`` (0 if they sum to 0)."""
    total = jnp.sum(weights)
    scale = jnp.where(total > 0, weights / jnp.where(total > 0, total, 1.0), 0.0)
    return jax.tree.map(lambda x: jnp.tensordot(scale, x.astype(jnp.float32), axes=1), stacked)


def make_train_step(
    loss_fn: LossFn,
    *,
    micro_batches: int = 1,
    mini_batches: int = 1,
    epochs: int = 1,
    weight_fn: Callable | None = None,
    prepare_fn: Callable | None = None,
    probe_fn: Callable | None = None,
    logits_fn: Callable | None = None,
    mesh: Mesh | None = None,
    state_sharding: Any | None = None,
    donate: bool = True,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """Compile ``(state, batch, probe=False) -> (state, metrics)`` (see the module docstring).

    ``probe`` is a static argument: a probed step is its own compilation.

    Args:
        loss_fn: ``loss_fn(model, batch, key, controls) -> (loss, metrics)``.
        micro_batches: gradient-accumulation slices per update, >= 1; default 1.
        mini_batches: optimiser updates per pass over the batch, >= 1; default 1.
        epochs: passes over the batch, >= 1; default 1.
        weight_fn: ``weight_fn(micro_batch) -> scalar`` weight in the accumulation; default 1.
        prepare_fn: ``prepare_fn(model, frozen, batch, key, controls) -> (batch, metrics)``,
            run once before the updates; default none.
        probe_fn: ``probe_fn(before, after, batch, key, controls) -> metrics`` on probed
            steps; default none.
        logits_fn: ``logits_fn(model, batch) -> logits`` or ``(logits, mask)``, handed to the
            optimiser (the safe step); default none.
        mesh: the device mesh; give it with ``state_sharding`` or neither.
        state_sharding: shardings of the state (``entropix.train.mesh.state_shardings``),
            fixing its layout in and out; batches come sharded over (data, fsdp), metrics
            back replicated.
        donate: donate the old state's buffers to the new one; default True.

    Returns:
        ``train_step(state, batch, probe=False) -> (new_state, metrics)`` (metrics: dict of
        float32 scalars, module docstring), with ``train_step.lower`` for inspection.
    """
    for name, value in (
        ("micro_batches", micro_batches),
        ("mini_batches", mini_batches),
        ("epochs", epochs),
    ):
        if value < 1:
            raise ValueError(f"{name} must be >= 1; got {value}")
    if (mesh is None) != (state_sharding is None):
        raise ValueError("give both mesh and state_sharding, or neither")
    updates_per_step = epochs * mini_batches

    def constrain(mb):
        if mesh is None:
            return mb
        return jax.tree.map(
            lambda x: jax.lax.with_sharding_constraint(x, NamedSharding(mesh, batch_spec(x.ndim))),
            mb,
        )

    def step(state: TrainState, batch, probe: bool = False):
        graphdef = state.graphdef
        controls = {"step": state.step, **state.control_values()}
        rng, key = jax.random.split(state.rng)

        def merged(params, model_state):
            return nnx.merge(graphdef, params, model_state, copy=True)

        prepare_metrics = {}
        if prepare_fn is not None:
            batch, prepare_metrics = prepare_fn(
                merged(state.params, state.model_state),
                state.frozen,
                batch,
                jax.random.fold_in(key, updates_per_step),
                controls,
            )
            batch = jax.lax.stop_gradient(batch)
            prepare_metrics = {k: jnp.asarray(v, jnp.float32) for k, v in prepare_metrics.items()}

        def micro_loss(params, model_state, mb, mb_key):
            model = merged(params, model_state)
            loss, metrics = loss_fn(model, mb, mb_key, controls)
            _, _, new_model_state = nnx.split(model, state.wrt, ...)
            return jnp.asarray(loss, jnp.float32), (_scalar_metrics(metrics, loss), new_model_state)

        grad_fn = jax.value_and_grad(micro_loss, has_aux=True)

        def loss_and_grads(params, model_state, mini, update_key):
            if micro_batches == 1:
                (loss, (metrics, model_state)), grads = grad_fn(
                    params, model_state, constrain(mini), jax.random.fold_in(update_key, 0)
                )
                return loss, metrics, model_state, grads

            def body(model_state, xs):
                index, mb = xs
                mb = constrain(mb)
                (_, (metrics, model_state)), grads = grad_fn(
                    params, model_state, mb, jax.random.fold_in(update_key, index)
                )
                weight = jnp.float32(1.0) if weight_fn is None else weight_fn(mb)
                grads = jax.tree.map(lambda g: g.astype(jnp.float32), grads)
                return model_state, (grads, metrics, jnp.asarray(weight, jnp.float32))

            xs = (jnp.arange(micro_batches), split_rows(mini, micro_batches, "micro-batches"))
            model_state, (grads, stacked, weights) = jax.lax.scan(body, model_state, xs)
            grads = jax.tree.map(
                lambda g, p: g.astype(p.dtype), _weighted_mean(grads, weights), params
            )
            metrics = _weighted_mean(stacked, weights)
            return metrics["loss"], metrics, model_state, grads

        minis = split_rows(batch, mini_batches, "mini-batches") if mini_batches > 1 else None

        def update(carry, index):
            params, model_state, opt_state = carry
            if minis is None:
                mini = batch
            else:
                position = index % mini_batches
                mini = jax.tree.map(
                    lambda x: jax.lax.dynamic_index_in_dim(x, position, 0, keepdims=False), minis
                )
            update_key = jax.random.fold_in(key, index)
            loss, metrics, new_model_state, grads = loss_and_grads(
                params, model_state, mini, update_key
            )
            extra = {
                "value": loss,
                "value_and_grad_fn": lambda p: (lambda out: (out[0], out[3]))(
                    loss_and_grads(p, model_state, mini, update_key)
                ),
            }
            if logits_fn is not None:
                extra["logits_fn"] = lambda p: logits_fn(merged(p, model_state), mini)
            tx = optax.with_extra_args_support(state.tx)
            updates, new_opt_state = tx.update(grads, opt_state, params, **extra)
            new_params = optax.apply_updates(params, updates)
            grad_norm = optax.global_norm(grads)
            update_norm = optax.global_norm(updates)
            finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(update_norm)
            keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
            carry = (
                keep(new_params, params),
                keep(new_model_state, model_state),
                keep(new_opt_state, opt_state),
            )
            metrics = {**metrics, "optim/grad_norm": grad_norm, "optim/update_norm": update_norm}
            return carry, (metrics, finite)

        carry = (state.params, state.model_state, state.opt_state)
        if updates_per_step == 1:  # no loop: a smaller program that compiles faster
            (params, model_state, opt_state), out = update(carry, jnp.int32(0))
            stacked, finite = jax.tree.map(lambda x: x[None], out)
        else:
            (params, model_state, opt_state), (stacked, finite) = jax.lax.scan(
                update, carry, jnp.arange(updates_per_step)
            )
        metrics = jax.tree.map(lambda m: jnp.mean(m, axis=0), stacked)
        skipped = jnp.sum(~finite).astype(jnp.int32)
        all_finite = skipped == 0

        observable = {**prepare_metrics, **metrics}
        controller_states = {}
        for name, controller in state.controllers:
            if controller.metric not in observable:
                raise KeyError(
                    f"controller {name!r} observes metric {controller.metric!r}, which the loss "
                    f"does not report; loss metrics: {sorted(observable)}"
                )
            observed = observable[controller.metric]
            old = state.controls[name]
            new = controller.update(old, observed)
            ok = all_finite & jnp.isfinite(observed)
            controller_states[name] = jax.tree.map(
                lambda a, b, ok=ok: jnp.where(ok, a, b), new, old
            )

        new_state = state.replace(
            params=params,
            model_state=model_state,
            opt_state=opt_state,
            controls=controller_states,
            rng=rng,
            step=state.step + 1,
            data_position=state.data_position + 1,
            nonfinite_total=state.nonfinite_total + skipped,
            nonfinite_streak=jnp.where(all_finite, 0, state.nonfinite_streak + 1),
        )

        out = {**prepare_metrics, **metrics}
        if probe and probe_fn is not None:
            out.update(
                probe_fn(
                    merged(state.params, state.model_state),
                    merged(params, model_state),
                    batch,
                    jax.random.fold_in(key, updates_per_step + 1),
                    controls,
                )
            )
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
        compiled = jax.jit(step, donate_argnums=donate_argnums, static_argnums=(2,))
    else:  # batches arrive placed by ``shard_batch``; their layout is taken from the arrays
        compiled = jax.jit(
            step,
            in_shardings=(state_sharding, None),
            out_shardings=(state_sharding, replicated(mesh)),
            donate_argnums=donate_argnums,
            static_argnums=(2,),
        )

    def train_step(state: TrainState, batch, probe: bool = False):
        return compiled(state, batch, bool(probe))

    train_step.lower = lambda state, batch, probe=False: compiled.lower(state, batch, bool(probe))
    return train_step


def nonfinite_terms(metrics: Mapping[str, Any]) -> list[str]:
    """Loss metrics (not the step's own ``optim/``/``guard/``/``controls/``) that are not finite.

    Args:
        metrics: a step's metrics, scalars keyed by name.

    Returns:
        The sorted names of the non-finite loss metrics.
    """
    return sorted(
        key
        for key, value in metrics.items()
        if not key.startswith(RESERVED_PREFIXES) and not math.isfinite(float(value))
    )


def check_guard(metrics: Mapping[str, Any], step: int, max_nonfinite: int) -> None:
    """Raise :class:`NonFiniteError` once ``max_nonfinite`` steps in a row were skipped.

    The message names the step and the loss terms that were not finite (``"<term>/loss"``
    metrics of ``compose``; any non-finite loss metric otherwise), or says that only the
    gradient / update was non-finite.

    Args:
        metrics: the step's metrics (with ``guard/nonfinite_streak``, ``optim/grad_norm`` and
            ``optim/update_norm``).
        step: the step number, for the message.
        max_nonfinite: how many skipped steps in a row are tolerated.
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
