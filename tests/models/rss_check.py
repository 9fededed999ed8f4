"""Load an HF checkpoint in a fresh process and print its peak host memory as JSON.

Usage: python rss_check.py DIRECTORY PARAM_DTYPE. Prints {"baseline_rss", "peak_rss",
"params", "seconds"}: VmRSS after importing entropix/JAX, VmHWM (peak resident set) after the
load, the parameter count and the load time. With JAX_PLATFORMS=cpu the loaded model itself
lives in host memory.
"""

import json
import sys
import time


def _status(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


import jax  # noqa: E402
from flax import nnx  # noqa: E402

from entropix.models import load_hf  # noqa: E402

baseline = _status("VmRSS")
start = time.perf_counter()
model = load_hf(sys.argv[1], param_dtype=sys.argv[2])
params = jax.block_until_ready(nnx.state(model, nnx.Param))
seconds = time.perf_counter() - start
count = sum(x.size for x in jax.tree.leaves(params))
peak = _status("VmHWM")
print(json.dumps({"baseline_rss": baseline, "peak_rss": peak, "params": count, "seconds": seconds}))
