"""The method registry: every entry documents itself and has a reference test.

Convention: registry key ``k`` -> a test function named ``test_ref_<k>`` in some
``tests/losses/*.py`` file (rollout strategies: ``tests/rl/test_strategies.py``) whose body
calls the registered factory (found by parsing the files, so nothing is imported twice).
"""

import ast
from pathlib import Path

import pytest

import entropix.losses as L
import entropix.rl  # noqa: F401  (registers the rollout strategies)
from entropix.losses.registry import KINDS, REGISTRY, get, methods_table, register

TESTS_DIR = Path(__file__).parent
STRATEGY_TESTS = TESTS_DIR.parent / "rl" / "test_strategies.py"


def _reference_tests() -> dict[str, tuple[str, set[str]]]:
    """test_ref_* function name -> (its file, every name and attribute its body refers to)."""
    tests = {}
    for path in [*TESTS_DIR.glob("*.py"), STRATEGY_TESTS]:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_ref_"):
                used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
                used |= {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
                tests[node.name] = (path.name, used)
    return tests


def test_registry_is_populated_by_importing_losses():
    assert L.REGISTRY is REGISTRY
    for key in ("ppo_clip", "kl_ref", "grpo", "kl_cov", "clip_cov", "entropy_bonus"):
        assert key in REGISTRY


@pytest.mark.parametrize("key", sorted(REGISTRY))
def test_every_method_has_a_reference_test_that_calls_it(key):
    tests = _reference_tests()
    assert f"test_ref_{key}" in tests, (
        f"registry key {key!r} has no test function test_ref_{key} in tests/losses/"
    )
    path, used = tests[f"test_ref_{key}"]
    factory = REGISTRY[key].factory.__name__
    assert factory in used, f"{path}::test_ref_{key} never calls the registered {factory}"


@pytest.mark.parametrize("key", sorted(REGISTRY))
def test_every_method_documents_formula_paper_defaults(key):
    info = REGISTRY[key]
    doc = info.doc
    assert doc.strip(), f"{key}: factory has no docstring"
    for section in ("Formula:", "Paper:", "Defaults:"):
        assert section in doc, f"{key}: docstring lacks a {section!r} section"
    assert info.paper.strip(), f"{key}: empty paper title"
    assert info.kind in KINDS


def test_methods_table_lists_every_entry():
    table = methods_table()
    lines = table.strip().splitlines()
    assert lines[0].startswith("| method | kind | paper | function | formula | defaults |")
    assert len(lines) == 2 + len(REGISTRY)
    for key in REGISTRY:
        assert f"| `{key}` |" in table


def test_docs_methods_md_is_current():
    doc = (TESTS_DIR.parent.parent / "docs" / "methods.md").read_text()
    assert methods_table() in doc, "docs/methods.md is stale: regenerate it with methods_table()"


def test_get_unknown_key_suggests_close_names():
    with pytest.raises(KeyError, match="did you mean kl_cov"):
        get("kl_covv")
    assert get("kl_cov").factory is L.kl_cov


def test_register_rejects_bad_kind_and_duplicates():
    with pytest.raises(ValueError, match="kind="):
        register("x_new_method", paper="p", kind="nonsense")
    with pytest.raises(ValueError, match="registered twice"):
        register("ppo_clip", paper="p", kind="objective")(lambda: None)
