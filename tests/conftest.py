"""Test-suite configuration: deterministic hypothesis runs and the `slow` marker docs.

Hypothesis is derandomised (examples come from a fixed seed), so every run of the suite checks
the same cases. Multi-device tests run in subprocesses that set ``jax_num_cpu_devices`` before
JAX starts; this process keeps the default single CPU device.

Matrix products run at full fp32 precision (``jax_default_matmul_precision="highest"``): the
tests compare against float64 numpy references, and on GPUs and TPUs JAX's default precision
rounds matmul inputs to TF32 / bf16 (errors ~1e-3), which would hide real mistakes at 1e-5.
On CPU the setting changes nothing.
"""

import jax
from hypothesis import settings

jax.config.update("jax_default_matmul_precision", "highest")

settings.register_profile("entropix", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("entropix")
