"""Analysis is library code: only the CLI imports ``entropix.commands``."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_only_the_cli_imports_the_commands():
    allowed = {ROOT / "entropix" / "cli.py", *(ROOT / "entropix" / "commands").glob("*.py")}
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("entropix", "experiments")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path not in allowed
        and any(name.startswith("entropix.commands") for name in _imports(path))
    ]
    assert not offenders, f"analysis belongs in the library, not entropix.commands: {offenders}"


def test_commands_only_parse_arguments_and_call_the_library():
    for path in sorted((ROOT / "entropix" / "commands").glob("*.py")):
        tree = ast.parse(path.read_text())
        functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
        extra = [f for f in functions if f not in ("add_arguments", "run")]
        assert not extra, f"{path.name} defines {extra}: move them into the library"


IMPORT_NAMES = {  # distribution name -> the module it is imported as, where they differ
    "pyyaml": "yaml",
    "orbax-checkpoint": "orbax",
    "scikit-learn": "sklearn",
    "math-verify": "math_verify",
}


def _declared() -> set[str]:
    import re
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~\[ ;]", dep, maxsplit=1)[0] for dep in deps}
    return {IMPORT_NAMES.get(name, name) for name in names}


def test_declared_dependencies_are_the_imported_ones():
    import sys

    imported = set()
    for folder in ("entropix", "experiments"):
        for path in (ROOT / folder).rglob("*.py"):
            imported |= {name.split(".")[0] for name in _imports(path)}
    third_party = imported - set(sys.stdlib_module_names) - {"entropix", "experiments"}
    declared = _declared()
    assert third_party <= declared, f"imported but not declared: {sorted(third_party - declared)}"
    assert declared <= third_party, f"declared but never imported: {sorted(declared - third_party)}"


def test_importing_the_packages_starts_no_jax_backend():
    """``jax_num_cpu_devices`` (and ``jax.distributed.initialize``) must be settable after
    ``import entropix...``: no module may run a JAX operation at import time."""
    import subprocess
    import sys

    packages = sorted(p.parent.name for p in (ROOT / "entropix").glob("*/__init__.py"))
    code = (
        "import importlib, jax\n"
        f"for name in {packages!r} + ['cli', 'config', 'report', 'results', 'plots']:\n"
        "    importlib.import_module('entropix.' + name)\n"
        "importlib.import_module('experiments')\n"
        "jax.config.update('jax_num_cpu_devices', 2)\n"
        "assert len(jax.devices()) == 2\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
