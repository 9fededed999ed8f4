"""Typed experiment configs: a YAML file plus dotted overrides -> a tree of dataclasses.

A config file names its experiment (``experiment: grpo``); the experiment module declares the
schema as a dataclass whose every field has a default. Loading goes

    schema defaults  <-  YAML file (deep merge; lists replace)  <-  overrides ``a.b.1.c=value``

and then every value is checked against the field's type. Override values are parsed as YAML
scalars (``seed=3``, ``lr=1e-3``, ``use_bonus=true``, ``note=null``); list indices are allowed
(``loss.terms.1.coef=0.003``; the index one past the end appends an entry). Any problem is a
one-line :class:`ConfigError` (a ``ValueError``) or ``FileNotFoundError`` that names the file
and the dotted key, and suggests the nearest valid key (``difflib``).

Loss terms are :class:`MethodSpec` entries written flat, ``{name: kl_cov, ratio: 0.002}``: the
name must be in the method registry and each argument must be a parameter of the registered
factory, with the type of its default. Controllers are :class:`ControllerSpec` entries written
the same way, checked against the controller registry (``entropix.optim.CONTROLLERS``) and the
controller's fields. Where a field is a list of specs a single mapping is read as a list of one.
"""

import dataclasses
import difflib
import inspect
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml

if TYPE_CHECKING:
    from entropix.optim import Controller

CONFIG_FILENAME = "config.yaml"
Schema = TypeVar("Schema")


class ConfigError(ValueError):
    """A config problem, reported on one line that names the file and the dotted key."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``)."""


_Loader.yaml_implicit_resolvers = {
    key: list(value) for key, value in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_scalar(text: str) -> Any:
    """Parse an override value the way YAML reads a scalar (``3`` -> 3, ``1e-3`` -> 0.001).

    Args:
        text: the text after ``=`` in an override.

    Returns:
        The YAML scalar (int, float, bool, None or str); ``""`` for blank text.
    """
    return yaml.load(text, Loader=_Loader) if text.strip() else ""


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """A registered method and its keyword arguments, written flat in YAML."""

    name: str
    args: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def build(self) -> Any:
        """Call the registered factory with the arguments: ``get(name).factory(**args)``.

        Returns:
            What the factory returns (a loss ``Term``, a shaper, a selector, ...).
        """
        from entropix import losses

        return losses.get(self.name).factory(**self.args)


@dataclasses.dataclass(frozen=True)
class ControllerSpec:
    """A registered controller and its settings, written flat in YAML."""

    name: str
    args: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def build(self) -> "Controller":
        """The controller: ``entropix.optim.build_controller(name, **args)``.

        Returns:
            The controller instance.
        """
        from entropix import optim

        return optim.build_controller(self.name, **self.args)


def _methods():
    from entropix import losses

    return {name: info.factory for name, info in losses.REGISTRY.items()}


def _controllers():
    from entropix import optim

    return {name: info.cls for name, info in optim.CONTROLLERS.items()}


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Fields every experiment config has; experiment schemas subclass this."""

    experiment: str = ""
    name: str = ""
    seed: int = 0
    run_dir: str = ""  # empty: runs/<name>
    description: str = ""


def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def _join(prefix: str, key) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _check_spec(value, key: str, spec_type: type, registry: Mapping[str, Any], what: str):
    """A ``spec_type`` (MethodSpec / ControllerSpec) from a flat mapping: ``name`` must be a
    registry key, every other key a parameter of the registered callable, of its type."""
    if isinstance(value, spec_type):
        value = to_dict(value)
    if not isinstance(value, Mapping) or "name" not in value:
        raise ConfigError(f"{key} must be a mapping with a 'name' (a {what} key); got {value!r}")
    name = value["name"]
    if name not in registry:
        raise ConfigError(f"{key}.name: unknown {what} {name!r}{_suggest(name, registry)}")
    factory = registry[name]
    params = inspect.signature(factory).parameters
    try:
        hints = typing.get_type_hints(factory)
    except (NameError, TypeError):
        hints = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    args = {}
    for arg, arg_value in value.items():
        if arg == "name":
            continue
        if arg not in params and not takes_any:
            raise ConfigError(
                f"unknown key {_join(key, arg)!r} (not an argument of {name})"
                f"{_suggest(arg, params)}"
            )
        default = params[arg].default if arg in params else None
        if arg in hints:
            arg_value = _convert(hints[arg], arg_value, _join(key, arg))
        elif isinstance(default, bool | int | float | str):
            arg_value = _convert(type(default), arg_value, _join(key, arg))
        args[arg] = arg_value
    return spec_type(name=name, args=args)


def _convert(tp, value, key: str):
    """Check ``value`` against the type hint ``tp`` and return it converted (int -> float)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if tp is MethodSpec:
        return _check_spec(value, key, MethodSpec, _methods(), "method")
    if tp is ControllerSpec:
        return _check_spec(value, key, ControllerSpec, _controllers(), "controller")
    if dataclasses.is_dataclass(tp):
        return _to_dataclass(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            raise ConfigError(f"{key} must not be null")
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(option, value, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} fits no type")
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(
                f"{key}={value!r} is not one of {', '.join(map(repr, choices))}"
                f"{_suggest(value, choices)}"
            )
        return value
    if origin in (list, tuple, Sequence):
        args = typing.get_args(tp)
        item = args[0] if args else Any
        if item in (MethodSpec, ControllerSpec) and isinstance(value, Mapping):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list; got {value!r}")
        return tuple(_convert(item, v, _join(key, i)) for i, v in enumerate(value))
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping; got {value!r}")
        item = typing.get_args(tp)[1] if typing.get_args(tp) else Any
        return {k: _convert(item, v, _join(key, k)) for k, v in value.items()}
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp in (bool, str) and isinstance(value, tp):
        return value
    raise ConfigError(f"{key} must be {_type_name(tp)}; got {value!r} ({type(value).__name__})")


def _to_dataclass(cls, value, key: str):
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key or 'config'} must be a mapping; got {value!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    for name in value:
        if name not in names:
            raise ConfigError(f"unknown key {_join(key, name)!r}{_suggest(name, names)}")
    return cls(**{name: _convert(hints[name], value[name], _join(key, name)) for name in value})


def to_dict(config: Any) -> Any:
    """A dataclass tree as plain dicts/lists/scalars (``MethodSpec`` written flat).

    Args:
        config: a config dataclass, or any value inside one.

    Returns:
        Plain dicts, lists and scalars (specs as ``{"name": ..., **args}``).
    """
    if isinstance(config, MethodSpec | ControllerSpec):
        return {"name": config.name, **{k: to_dict(v) for k, v in config.args.items()}}
    if dataclasses.is_dataclass(config):
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, Mapping):
        return {k: to_dict(v) for k, v in config.items()}
    if isinstance(config, list | tuple):
        return [to_dict(v) for v in config]
    return config


def _merge(base, update):
    if isinstance(base, Mapping) and isinstance(update, Mapping):
        merged = dict(base)
        for key, value in update.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    return update


def apply_override(data: dict, override: str) -> dict:
    """Set ``a.b.1.c=value`` in the nested dict ``data`` (in place) and return it.

    Args:
        data: nested plain dicts and lists (a config as read from YAML).
        override: ``dotted.key=value``; a list index one past the end appends an entry.

    Returns:
        ``data`` itself, changed.
    """
    if "=" not in override:
        raise ConfigError(f"override {override!r} must look like dotted.key=value")
    dotted, text = override.split("=", 1)
    parts = dotted.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {override!r} has an empty key")
    node = data
    for depth, part in enumerate(parts):
        key = ".".join(parts[: depth + 1])
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.lstrip("-").isdigit() or not -len(node) <= int(part) <= len(node):
                raise ConfigError(
                    f"{key}: index {part!r} is out of range for a list of length {len(node)}"
                )
            index = int(part)
            if index == len(node):  # one past the end appends a new entry
                node.append({})
            if last:
                node[index] = parse_scalar(text)
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = parse_scalar(text)
            else:
                if not isinstance(node.get(part), dict | list):
                    node[part] = {}
                node = node[part]
        else:
            raise ConfigError(f"{key}: cannot index into {node!r}")
    return data


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; a missing file names the nearest existing ``.yaml`` beside it.

    Args:
        path: the YAML file.

    Returns:
        The top-level mapping (``{}`` for an empty file).
    """
    path = Path(path)
    if not path.is_file():
        folder = path.parent if path.parent.is_dir() else None
        siblings = [str(p) for p in sorted(folder.glob("*.y*ml"))] if folder else []
        raise FileNotFoundError(f"config file {str(path)!r} not found{_suggest(path, siblings)}")
    try:
        data = yaml.load(path.read_text(), Loader=_Loader)
    except yaml.YAMLError as error:
        line = getattr(getattr(error, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from error
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return data


def from_data(
    schema: type[Schema],
    data: Mapping[str, Any],
    overrides: Sequence[str] = (),
    source: str = "config",
) -> Schema:
    """Schema defaults <- ``data`` <- ``overrides``, checked against ``schema``'s types.

    Args:
        schema: the config dataclass (every field with a default).
        data: plain nested values (deep-merged over the defaults; lists replace).
        overrides: ``dotted.key=value`` strings applied after ``data``; default none.
        source: what the data came from, prefixed to error messages; default ``"config"``.

    Returns:
        The ``schema`` instance.
    """
    raw = _merge(to_dict(schema()), dict(data))
    try:
        for override in overrides:
            apply_override(raw, override)
        return _to_dataclass(schema, raw, "")
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


def load(
    path: str | Path, overrides: Sequence[str] = (), schemas: Mapping[str, type] | None = None
) -> ExperimentConfig:
    """Load ``path`` + ``overrides`` into the schema its ``experiment`` key names in ``schemas``.

    Args:
        path: the YAML config file.
        overrides: ``dotted.key=value`` strings (an ``experiment=`` override picks the schema);
            default none.
        schemas: experiment name -> config dataclass; without it the file is checked against
            :class:`ExperimentConfig` alone.

    Returns:
        The config dataclass (an :class:`ExperimentConfig` subclass instance).
    """
    data = read_yaml(path)
    experiment_overrides = [o for o in overrides if o.split("=", 1)[0].strip() == "experiment"]
    for override in experiment_overrides:
        apply_override(data, override)
    if schemas is None:
        return from_data(ExperimentConfig, data, overrides, source=str(path))
    experiment = data.get("experiment")
    if experiment not in schemas:
        raise ConfigError(
            f"{path}: experiment={experiment!r} is not one of "
            f"{', '.join(map(repr, schemas))}{_suggest(experiment, schemas)}"
        )
    return from_data(schemas[experiment], data, overrides, source=str(path))


def resolve_run_dir(config: ExperimentConfig, root: str | Path = "runs") -> Path:
    """The run directory: ``config.run_dir`` if set, else ``root/<name or experiment>``.

    Args:
        config: the experiment config.
        root: the parent of default run directories; default ``"runs"``.

    Returns:
        The run directory (not created).
    """
    return (
        Path(config.run_dir) if config.run_dir else Path(root) / (config.name or config.experiment)
    )


def dump(config: Any) -> str:
    """The resolved config as YAML text (what :func:`save` writes).

    Args:
        config: a config dataclass.

    Returns:
        YAML text, keys in field order.
    """
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def save(config: Any, run_dir: str | Path) -> Path:
    """Write the resolved config to ``run_dir/config.yaml``.

    Args:
        config: a config dataclass.
        run_dir: the run directory (created if missing).

    Returns:
        The path written.
    """
    path = Path(run_dir) / CONFIG_FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump(config))
    return path


def diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two plain config dicts.

    Args:
        old: a plain config dict (:func:`to_dict`).
        new: another one.
        prefix: prepended to every key; default none.

    Returns:
        The dotted keys that differ, in the order of ``old`` then ``new``.
    """
    keys = list(dict.fromkeys([*old, *new]))
    changed = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            changed += diff(a, b, _join(prefix, key))
        elif a != b:
            changed.append(_join(prefix, key))
    return changed
