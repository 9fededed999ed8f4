"""The method registry: every entry documents itself and has a reference test.

Convention: registry key ``k`` -> a test function named ``test_ref_<k>`` in some
``tests/losses/*.py`` file (found by parsing the files, so nothing is imported twice).
"""

import ast
from pathlib import Path

import pytest

import entropix.losses as L
from entropix.losses.registry import KINDS, REGISTRY, get, methods_table, register

TESTS_DIR = Path(__file__).parent


def _test_function_names() -> set[str]:
    names = set()
    for path in TESTS_DIR.glob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        names |= {
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_ref_")
        }
    return names


def test_registry_is_populated_by_importing_losses():
    assert L.REGISTRY is REGISTRY
    for key in ("ppo_clip", "kl_ref", "grpo", "kl_cov", "clip_cov", "entropy_bonus"):
        assert key in REGISTRY


@pytest.mark.parametrize("key", sorted(REGISTRY))
def test_every_method_has_a_reference_test(key):
    assert f"test_ref_{key}" in _test_function_names(), (
        f"registry key {key!r} has no test function test_ref_{key} in tests/losses/"
    )


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
