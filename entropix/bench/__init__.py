"""Benchmarks: speed, memory and scaling of entropix, each figure a ratio measured in one process.

``timing`` (compile, then median/min/max of timed runs), ``memory`` (XLA temporary memory of a
compiled program), ``report`` (``results.json`` + ``results.md``) and one module per suite.
The package re-exports nothing: import the module you need (``entropix.bench.suites`` for
``run_suite``).
"""

__all__: list[str] = []
