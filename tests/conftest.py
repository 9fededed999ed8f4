"""Test-suite configuration: deterministic hypothesis runs and the `slow` marker docs.

Hypothesis is derandomised (examples come from a fixed seed), so every run of the suite checks
the same cases. Multi-device tests run in subprocesses that set ``jax_num_cpu_devices`` before
JAX starts; this process keeps the default single CPU device.
"""

from hypothesis import settings

settings.register_profile("entropix", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("entropix")
