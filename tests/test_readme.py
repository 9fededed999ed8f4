"""The README's Python example runs as written and its comment names real metrics."""

import math
import re
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def test_readme_python_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 1
    namespace: dict = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)  # noqa: S102
    promised = re.search(r"# metrics: \{(.*?), \.\.\.\}", blocks[0]).group(1)
    for name in re.findall(r"'([^']+)'", promised):
        assert name in namespace["metrics"], name
    assert math.isfinite(float(namespace["loss"]))
