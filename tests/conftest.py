"""Test-suite configuration: deterministic hypothesis runs and the `slow` marker docs.

Hypothesis is derandomised (examples come from a fixed seed), so every run of the suite checks
the same cases. Multi-device tests run in subprocesses that set ``jax_num_cpu_devices`` before
JAX starts; this process keeps the default single CPU device.

Matrix products run at full fp32 precision (``jax_default_matmul_precision="highest"``): the
tests compare against float64 numpy references, and on GPUs and TPUs JAX's default precision
rounds matmul inputs to TF32 / bf16 (errors ~1e-3), which would hide real mistakes at 1e-5.
On CPU the setting changes nothing.

XLA compiles with LLVM's optimisation level 0 (``XLA_FLAGS=--xla_backend_optimization_level=0``
unless XLA_FLAGS is set): the suite's time is mostly the compilation of many small programs,
and the LLVM passes (not XLA's own HLO passes, whose output some tests inspect) take about half
of it. Results are the same IEEE operations; speed is measured by ``entropix bench``, never in
a test. The subprocess scripts (``tests/train/scripts.py``) use the same setting.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import jax  # noqa: E402
from hypothesis import settings  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

settings.register_profile("entropix", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("entropix")
