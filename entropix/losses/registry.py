"""The method registry: every loss, selector, advantage shaper and reward the library holds.

Configs name methods by their registry key; ``entropix list`` prints the table; a test walks
the registry and checks that every entry documents its formula and has a reference test.

Register a factory (a function returning the configured term) with::

    @register("kl_cov", paper="The Entropy Mechanism of Reinforcement Learning for Reasoning "
              "Language Models", kind="intervention")
    def kl_cov(ratio=2e-3, coef=1.0): ...

Kinds: ``objective`` (RL surrogate / KL), ``advantage`` (advantage shapers), ``selector``
(token masks), ``intervention`` (entropy-control terms), ``reward`` (reward shaping),
``tta`` (test-time adaptation), ``auxiliary`` (value / attention / distillation losses),
``rollout`` (the RL trainer's rollout strategies, ``entropix.rl.strategies``: they register on
``import entropix.rl``, so import it too before listing the registry).
"""

from collections.abc import Callable
from dataclasses import dataclass

from entropix.validation import lookup

KINDS = (
    "objective",
    "advantage",
    "selector",
    "intervention",
    "reward",
    "rollout",
    "tta",
    "auxiliary",
    "steering",
)


@dataclass(frozen=True)
class MethodInfo:
    """One registry entry: the key configs use, the factory, its paper and its kind."""

    name: str
    factory: Callable
    paper: str
    kind: str

    @property
    def doc(self) -> str:
        return self.factory.__doc__ or ""


REGISTRY: dict[str, MethodInfo] = {}


def register(name: str, *, paper: str, kind: str) -> Callable[[Callable], Callable]:
    """Decorator adding ``factory`` to :data:`REGISTRY` under ``name``; returns it unchanged.

    Args:
        name: the registry key configs use; registering a key twice raises ``ValueError``.
        paper: title of the paper the method comes from.
        kind: one of :data:`KINDS` (e.g. ``"objective"``, ``"selector"``).

    Returns:
        The decorator, which registers a factory and returns it unchanged.
    """
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not one of {KINDS}")

    def decorator(factory: Callable) -> Callable:
        if name in REGISTRY:
            raise ValueError(f"method {name!r} is registered twice")
        REGISTRY[name] = MethodInfo(name=name, factory=factory, paper=paper, kind=kind)
        return factory

    return decorator


def get(name: str) -> MethodInfo:
    """Look up a method by key; unknown keys raise ``KeyError`` naming the closest keys.

    Args:
        name: the registry key (e.g. ``"kl_cov"``).

    Returns:
        The method's :class:`MethodInfo` (name, factory, paper, kind).
    """
    return lookup(REGISTRY, name, "method")


def _section(doc: str, title: str, joiner: str = " ") -> str:
    """The text of ``title:`` in a docstring up to the next blank line, lines joined."""
    lines = doc.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith(f"{title}:"):
            body = [stripped[len(title) + 1 :].strip()]
            for nxt in lines[i + 1 :]:
                if not nxt.strip():
                    break
                body.append(nxt.strip())
            return joiner.join(part for part in body if part)
    return ""


def methods_table() -> str:
    """Markdown table of every registered method: key, kind, paper, function, formula, defaults.

    Import ``entropix.losses`` and ``entropix.rl`` first so every module has registered its
    methods.

    Returns:
        The table as markdown text, one row per method sorted by kind then key, ending in a
        newline (``docs/methods.md`` holds it verbatim).
    """

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    rows = [
        "| method | kind | paper | function | formula | defaults |",
        "|---|---|---|---|---|---|",
    ]
    for info in sorted(REGISTRY.values(), key=lambda i: (KINDS.index(i.kind), i.name)):
        factory = info.factory
        function = f"`{factory.__module__}.{factory.__qualname__}`"
        formula = _section(info.doc, "Formula", joiner="; ")
        defaults = _section(info.doc, "Defaults")
        rows.append(
            f"| `{info.name}` | {info.kind} | {cell(info.paper)} | {function} | "
            f"`{cell(formula)}` | {cell(defaults)} |"
        )
    return "\n".join(rows) + "\n"
