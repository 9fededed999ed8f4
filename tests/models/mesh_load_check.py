"""Load an HF checkpoint straight onto a 4-device CPU mesh by LLAMA_RULES (fresh process).

Usage: python mesh_load_check.py DIRECTORY. Checks that every parameter has the sharding the
rules give it, that no read of a sharded tensor is larger than one device's block (the tensor
is never assembled on the host), and that the logits equal the unsharded model's. Prints "ok".
"""

import sys

import jax

jax.config.update("jax_num_cpu_devices", 4)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from entropix.models import load_hf  # noqa: E402
from entropix.models.safetensors_io import SafetensorsDirectory  # noqa: E402
from entropix.train.mesh import LLAMA_RULES, make_mesh, spec_for  # noqa: E402

directory = sys.argv[1]
mesh = make_mesh(data=1, fsdp=2, tensor=2)
reads = []
original_read = SafetensorsDirectory.read


def recording_read(self, name, index=None):
    block = original_read(self, name, index)
    reads.append((name, block.size, int(np.prod(self.shape(name)))))
    return block


SafetensorsDirectory.read = recording_read
model = load_hf(
    directory,
    sharding=lambda name, shape: NamedSharding(mesh, spec_for(name, shape, mesh, LLAMA_RULES)),
)
SafetensorsDirectory.read = original_read
reference = load_hf(directory)

specs = {
    "layers/0/attn/q_proj/kernel": P("fsdp", "tensor"),
    "layers/0/attn/q_proj/bias": P("tensor"),
    "layers/0/attn/o_proj/kernel": P("tensor", "fsdp"),
    "layers/1/mlp/down_proj/kernel": P("tensor", "fsdp"),
    "embed/embedding": P("tensor", "fsdp"),
    "norm/weight": P(),
}
flat = {"/".join(map(str, p)): v.get_value() for p, v in nnx.to_flat_state(nnx.state(model))}
for name, spec in specs.items():
    assert flat[name].sharding.spec == spec, (name, flat[name].sharding)
    assert len(flat[name].sharding.device_set) == 4
sharded = [r for r in reads if "q_proj.weight" in r[0] or "down_proj.weight" in r[0]]
assert sharded and all(size * 4 == whole for _, size, whole in sharded), sharded
tokens = jnp.asarray(np.arange(24).reshape(2, 12) % 100)
np.testing.assert_allclose(model(tokens).logits, reference(tokens).logits, atol=1e-5, rtol=1e-5)
print("ok")
