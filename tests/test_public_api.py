"""The public API documents itself: every public function and method of the checked modules has
full type annotations and Google-style ``Args:`` / ``Returns:`` sections, and every checked
package declares an ``__all__`` that matches what it re-exports.

A public function is one whose name has no leading underscore, defined in the module walked
(re-exports are checked where they are defined); a public method is a function of a public
class of that module whose name has no leading underscore. ``Args:`` is required when the
function takes a parameter other than ``self`` / ``cls`` and must name each of them;
``Returns:`` (or ``Yields:``) is required unless the return annotation is ``None``.

``CHECKED`` lists the packages checked, each with all its submodules: the whole library and the
experiments.
"""

import importlib
import inspect
import pkgutil
import re
import types

import pytest

CHECKED = ["entropix", "experiments"]  # every package, with all its submodules


def _modules(name: str) -> list[types.ModuleType]:
    """The module ``name`` and, for a package, every module under it."""
    module = importlib.import_module(name)
    found = [module]
    if hasattr(module, "__path__"):
        for info in pkgutil.walk_packages(module.__path__, prefix=f"{name}."):
            found.append(importlib.import_module(info.name))
    return found


def _public_callables(module: types.ModuleType) -> list[tuple[str, object, bool]]:
    """(qualified name, function, is_method) for the public functions and methods defined in
    ``module`` (not those a decorator adds, e.g. flax's ``replace``); decorated functions
    (``functools.wraps``) are checked through ``__wrapped__``."""
    found = []
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if isinstance(member, staticmethod | classmethod):
                    member = member.__func__
                own = getattr(member, "__module__", None) == module.__name__
                if not attr.startswith("_") and inspect.isfunction(member) and own:
                    found.append((f"{name}.{attr}", member, True))
        elif callable(obj) and inspect.isfunction(inspect.unwrap(obj)):
            found.append((name, inspect.unwrap(obj), False))
    return found


def _section(doc: str, title: str) -> str | None:
    """The indented body of the ``title:`` section of a Google-style docstring, or None."""
    lines = inspect.cleandoc(doc).splitlines()
    for i, line in enumerate(lines):
        if line.strip() == f"{title}:":
            body = []
            for following in lines[i + 1 :]:
                if following.strip() and not following.startswith(" "):
                    break
                body.append(following)
            return "\n".join(body)
    return None


def _described(args: str) -> set[str]:
    """The parameter names an ``Args:`` body describes: each entry line (the least indented
    lines) starts ``name:``, ``name (type):`` or ``a, b, c:`` for several alike."""
    lines = [line for line in args.splitlines() if line.strip()]
    if not lines:
        return set()
    indent = min(len(line) - len(line.lstrip()) for line in lines)
    names = set()
    for line in lines:
        entry = re.match(r"([\w*, ]+?)\s*(\([^)]*\))?:", line[indent:])
        if len(line) - len(line.lstrip()) == indent and entry:
            names.update(n.strip().lstrip("*") for n in entry.group(1).split(","))
    return names


def _problems(qualname: str, fn, is_method: bool) -> list[str]:
    """What ``fn`` lacks of annotations, docstring, ``Args:`` and ``Returns:``, one line each."""
    signature = inspect.signature(fn)
    params = list(signature.parameters.values())
    if is_method and params and params[0].name in ("self", "cls"):
        params = params[1:]
    problems = []
    unannotated = [p.name for p in params if p.annotation is inspect.Parameter.empty]
    if unannotated:
        problems.append(f"{qualname}: parameters without annotation {unannotated}")
    returns = signature.return_annotation
    if returns is inspect.Signature.empty:
        problems.append(f"{qualname}: no return annotation")
    doc = inspect.getdoc(fn) or ""
    if not doc.strip():
        return [*problems, f"{qualname}: no docstring"]
    if params:
        args = _section(doc, "Args")
        if args is None:
            problems.append(f"{qualname}: no Args: section")
        else:
            described = _described(args)
            for p in params:
                if p.name not in described:
                    problems.append(f"{qualname}: Args: does not describe {p.name!r}")
    if returns not in (None, "None", inspect.Signature.empty):
        if _section(doc, "Returns") is None and _section(doc, "Yields") is None:
            problems.append(f"{qualname}: no Returns: section")
    return problems


@pytest.mark.parametrize("name", CHECKED)
def test_public_functions_document_args_and_returns_and_are_annotated(name):
    problems = [
        problem
        for module in _modules(name)
        for qualname, fn, is_method in _public_callables(module)
        for problem in _problems(f"{module.__name__}.{qualname}", fn, is_method)
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", CHECKED)
def test_every_package_declares_a_complete_all(name):
    """``__all__`` exists, names only what the package holds, and lists every public object
    the package imports from its own submodules (submodules themselves are not listed)."""
    for package in [m for m in _modules(name) if hasattr(m, "__path__")]:
        assert hasattr(package, "__all__"), f"{package.__name__} has no __all__"
        declared = set(package.__all__)
        missing = sorted(n for n in declared if not hasattr(package, n))
        assert not missing, f"{package.__name__}.__all__ names what it lacks: {missing}"
        prefix = f"{package.__name__}."
        exported = {
            n
            for n, obj in vars(package).items()
            if not n.startswith("_")
            and not isinstance(obj, types.ModuleType)
            and (getattr(obj, "__module__", None) or "").startswith(prefix)
        }
        unlisted = sorted(exported - declared)
        assert not unlisted, f"{package.__name__} re-exports names not in __all__: {unlisted}"


def test_the_checker_finds_what_it_should():
    """The checks fail on a function that lacks each piece and pass on a complete one."""

    def bare(x, y=1):
        """Do a thing."""
        return x

    def complete(x: int, *rest: int, flag: bool = False) -> int:
        """Do a thing.

        Args:
            x: the value.
            *rest: more values.
            flag: whether to.

        Returns:
            The value.
        """
        return x

    def no_result(x: int, y: int, z: int = 0) -> None:
        """Do a thing.

        Args:
            x, y: the values.
            z (int): one more.
        """

    def no_returns(x: int) -> int:
        """Do a thing.

        Args:
            x: the value.
        """
        return x

    def continued(x: int, y: int) -> None:
        """Do a thing.

        Args:
            x: the value, and
                y: is only named in a continuation line.
        """

    found = _problems("bare", bare, False)
    assert any("without annotation ['x', 'y']" in p for p in found)
    assert any("no return annotation" in p for p in found)
    assert any("no Args:" in p for p in found)
    assert _problems("complete", complete, False) == []
    assert _problems("no_result", no_result, False) == []
    assert _problems("no_returns", no_returns, False) == ["no_returns: no Returns: section"]
    assert _problems("continued", continued, False) == ["continued: Args: does not describe 'y'"]
    wrong_args = complete.__doc__.replace("flag:", "other:")
    complete.__doc__ = wrong_args
    assert _problems("complete", complete, False) == ["complete: Args: does not describe 'flag'"]
