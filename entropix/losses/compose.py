"""Compose loss terms into one pure ``batch -> (loss, metrics)`` function.

Term protocol (every loss factory in ``entropix.losses`` returns a :class:`Term`):

* ``Term(name, fn, coef=1.0, per_token=True, selector=None, detach=None, aggregate=None)``.
* ``fn(batch, mask) -> (values, metrics)``. ``mask`` is the float32 [B, T] set of tokens the
  term acts on: ``batch.mask`` intersected with the term's ``selector``. With
  ``per_token=True`` ``values`` is [B, T] (the per-token loss; :func:`compose` reduces it under
  ``mask`` with the aggregation mode); with ``per_token=False`` ``values`` is already a scalar.
  ``metrics`` is a dict of scalars (compute them under ``mask``); they come back prefixed
  ``"<name>/<key>"``. Losses are minimised: a bonus is a negative value.
* ``selector`` (a :class:`~entropix.losses.selectors.Selector`) restricts the tokens the term
  is aggregated over: the mean is taken over the selected tokens only. A term that acts on a
  subset but keeps the full normaliser (KL-Cov, Lp-Reg) instead returns 0 outside its subset.
* ``detach`` (a Selector) keeps the selected tokens' values in the loss but stops their
  gradient (``stop_gradient`` per token); the normaliser is unchanged. Clip-Cov uses this.
* ``aggregate`` overrides the mode given to :func:`compose` for this term (per-token terms).
* Per-step inputs that are not model outputs come in the batch, never as factory arguments:
  randomness in ``batch.key``, controller state in ``batch.controls`` (so one compiled step
  serves every value).
* Declarations, read by trainers before anything is compiled: ``needs`` names the optional
  PolicyBatch fields the term reads (``"logits"``: full next-token logits, which a trainer
  otherwise does not build; ``"ref_logp"``: a frozen reference policy), ``controls`` the
  controller values it reads from ``batch.controls`` (``"step"`` is always there), and
  ``sampled_at`` names a control holding a sampling temperature: the term is then evaluated on
  its own batch of responses sampled at that temperature (AEPO), not on the policy batch.
  Selectors declare ``needs`` too; a term's ``all_needs`` include its selectors'.
* Builders return new terms: ``term.where(sel)``, ``term.detach_where(sel)``,
  ``term.with_coef(c)``, ``term.named(n)``; selectors compose with ``&``, ``|``, ``~``.

``compose(*terms, aggregate="token-mean", norm=None)`` returns a :class:`Composed` loss,
called as ``loss_fn(batch)``, with ``loss = sum_i coef_i * L_i`` and metrics
``{"loss": loss, "<name>/loss": L_i, "<name>/...": ...}`` (``L_i`` before the coefficient).
Term names must be unique; rename with ``.named``. The call validates the batch once at trace
time and is pure, so it jits and differentiates; ``loss_fn.needs`` / ``.controls`` are the
union of its terms' declarations.
"""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from entropix.entropy import AGGREGATION_MODES
from entropix.entropy import aggregate as aggregate_tokens
from entropix.losses.batch import OPTIONAL_FIELDS, PolicyBatch, validate_batch
from entropix.losses.selectors import Selector
from entropix.validation import check_choice

TermFn = Callable[[PolicyBatch, jax.Array], tuple[jax.Array, dict]]


@dataclass(frozen=True)
class Term:
    """One weighted loss term (see the module docstring for the protocol)."""

    name: str
    fn: TermFn
    coef: float = 1.0
    per_token: bool = True
    selector: Selector | None = None
    detach: Selector | None = None
    aggregate: str | None = None
    needs: tuple[str, ...] = ()
    controls: tuple[str, ...] = ()
    sampled_at: str | None = None

    def __post_init__(self):
        if self.aggregate is not None:
            check_choice(self.aggregate, f"{self.name}: aggregate", AGGREGATION_MODES)
        unknown = sorted(set(self.needs) - set(OPTIONAL_FIELDS))
        if unknown:
            raise ValueError(
                f"term {self.name!r} declares unknown needs {unknown}; "
                f"optional PolicyBatch fields are {list(OPTIONAL_FIELDS)}"
            )
        if self.sampled_at is not None and self.sampled_at not in self.controls:
            object.__setattr__(self, "controls", (*self.controls, self.sampled_at))

    @property
    def all_needs(self) -> frozenset[str]:
        """``needs`` of the term and of its selector / detach selections."""
        needs = set(self.needs)
        for selection in (self.selector, self.detach):
            if selection is not None:
                needs |= selection.needs
        return frozenset(needs)

    def where(self, selector: Selector) -> "Term":
        """This term restricted to ``selector`` (intersected with any existing selector).

        Args:
            selector: the tokens the term is aggregated over (within ``batch.mask``).

        Returns:
            A new :class:`Term`, otherwise identical, with the intersected selector.
        """
        new = selector if self.selector is None else self.selector & selector
        return dataclasses.replace(self, selector=new)

    def detach_where(self, selector: Selector) -> "Term":
        """This term with the gradient of the ``selector`` tokens stopped.

        Args:
            selector: the tokens whose values stay in the loss without gradient (united with
                any existing detach selection).

        Returns:
            A new :class:`Term`, otherwise identical, with the widened detach selection.
        """
        new = selector if self.detach is None else self.detach | selector
        return dataclasses.replace(self, detach=new)

    def with_coef(self, coef: float) -> "Term":
        """This term with another coefficient.

        Args:
            coef: the new weight of the term in the composed loss (replaces the old one).

        Returns:
            A new :class:`Term`, otherwise identical.
        """
        return dataclasses.replace(self, coef=coef)

    def named(self, name: str) -> "Term":
        """This term under another name (metric prefix; names must be unique in a compose).

        Args:
            name: the new name, used as the ``"<name>/..."`` metrics prefix.

        Returns:
            A new :class:`Term`, otherwise identical.
        """
        return dataclasses.replace(self, name=name)

    def evaluate(
        self, batch: PolicyBatch, aggregate: str = "token-mean", norm: float | None = None
    ) -> tuple[jax.Array, dict]:
        """The term's unweighted scalar value and its (unprefixed) metrics on ``batch``.

        Args:
            batch: the policy batch to evaluate on.
            aggregate: aggregation mode for per-token values (one of ``AGGREGATION_MODES``);
                the term's own ``aggregate`` overrides it.
            norm: the constant of ``seq-mean-token-sum-norm`` (None for T).

        Returns:
            ``(value, metrics)``: the float32 scalar loss before the coefficient and the
            term's dict of scalar metrics (keys without the name prefix).
        """
        mask = batch.mask > 0
        if self.selector is not None:
            mask = mask & self.selector(batch)
        mask = mask.astype(jnp.float32)
        values, metrics = self.fn(batch, mask)
        if self.detach is not None:
            if not self.per_token:
                raise ValueError(f"term {self.name!r}: detach_where needs a per-token term")
            values = jnp.where(self.detach(batch), jax.lax.stop_gradient(values), values)
        if self.per_token:
            value = aggregate_tokens(values, mask, self.aggregate or aggregate, norm)
        else:
            if jnp.ndim(values) != 0:
                raise ValueError(
                    f"term {self.name!r} has per_token=False but returned shape {values.shape}"
                )
            value = jnp.asarray(values, jnp.float32)
        return value, metrics


@dataclass(frozen=True)
class Composed:
    """``batch -> (sum_i coef_i * L_i, metrics)`` over ``terms`` (see :func:`compose`)."""

    terms: tuple[Term, ...]
    aggregate: str = "token-mean"
    norm: float | None = None

    @property
    def needs(self) -> frozenset[str]:
        """Optional PolicyBatch fields some term or selector reads."""
        return frozenset().union(*(t.all_needs for t in self.terms))

    @property
    def controls(self) -> frozenset[str]:
        """Controller values some term reads from ``batch.controls``."""
        return frozenset(c for t in self.terms for c in t.controls)

    def __call__(self, batch: PolicyBatch) -> tuple[jax.Array, dict]:
        validate_batch(batch)
        total = jnp.zeros((), jnp.float32)
        metrics = {}
        for term in self.terms:
            value, term_metrics = term.evaluate(batch, self.aggregate, self.norm)
            total = total + term.coef * value
            metrics[f"{term.name}/loss"] = value
            for key, metric in term_metrics.items():
                metrics[f"{term.name}/{key}"] = metric
        metrics["loss"] = total
        return total, metrics


def compose(*terms: Term, aggregate: str = "token-mean", norm: float | None = None) -> Composed:
    """``batch -> (sum_i coef_i * L_i, metrics)`` over ``terms`` (protocol in module docstring).

    ``aggregate`` is the default mode for per-token terms (one of ``AGGREGATION_MODES``);
    ``norm`` is the constant of ``seq-mean-token-sum-norm`` (default T).

    Args:
        *terms: the terms to sum, at least one, with unique names.
        aggregate: default aggregation mode of the per-token terms.
        norm: the constant of ``seq-mean-token-sum-norm`` (None for T).

    Returns:
        The :class:`Composed` loss: ``loss_fn(batch) -> (loss, metrics)``, with ``metrics``
        holding ``"loss"`` and ``"<name>/loss"``, ``"<name>/<key>"`` per term.
    """
    check_choice(aggregate, "aggregate", AGGREGATION_MODES)
    if not terms:
        raise ValueError("compose needs at least one term")
    for term in terms:
        if not isinstance(term, Term):
            raise TypeError(f"compose takes Term objects; got {type(term).__name__}")
    names = [t.name for t in terms]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"duplicate term names {dupes}; rename one with term.named('...')")
    return Composed(tuple(terms), aggregate, norm)
