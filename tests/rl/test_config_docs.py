"""docs/rl.md holds the current config reference."""

from pathlib import Path

from entropix.rl.config import config_reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "rl.md"


def test_docs_rl_md_has_the_current_config_reference():
    assert config_reference() in DOC.read_text(), (
        "docs/rl.md is stale: regenerate its config reference with config_reference()"
    )
