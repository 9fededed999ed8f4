"""Export a finished (or checkpointed) RL run's policy as a Hugging Face checkpoint directory.

The newest intact checkpoint of ``<run_dir>/checkpoints`` is restored onto the mesh of the
run's config and written by ``entropix.models.save_pretrained``: ``config.json``, safetensors
and, for a pretrained policy, the tokenizer files it was loaded with (chat template included),
so transformers or vLLM can load the directory directly.
"""

from pathlib import Path

from entropix.models import save_pretrained
from entropix.models.tokenizer import Tokenizer
from entropix.rl.config import RLConfig
from entropix.rl.trainer import build
from entropix.train import Checkpointer, init_state


def export_policy(
    config: RLConfig, run_dir: str | Path, out_dir: str | Path, *, dtype: str | None = None
) -> Path:
    """Write the policy of the run in ``run_dir`` (trained with ``config``) to ``out_dir``;
    ``dtype`` is the safetensors storage dtype (default the parameters'). Returns ``out_dir``.

    Args:
        config: the run's config (e.g. read back from ``<run_dir>/config.yaml``).
        run_dir: the run directory holding ``checkpoints/``.
        out_dir: the Hugging Face checkpoint directory to write (created if needed).
        dtype: the safetensors storage dtype (e.g. ``"bfloat16"``); default the parameters'.

    Returns:
        The path of ``out_dir`` as ``entropix.models.save_pretrained`` returns it.

    Raises:
        FileNotFoundError: when the run has no checkpoints or no intact one.
    """
    plan = build(config)
    abstract, shardings, _ = init_state(
        plan.policy.model_fn,
        plan.optimizer,
        plan.mesh,
        seed=config.seed,
        controllers=plan.controllers,
        frozen_fn=(lambda params: {"reference": params}) if plan.reference else None,
    )
    directory = Path(run_dir) / "checkpoints"
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no checkpoints to export (has the run started?)")
    checkpointer = Checkpointer(directory)
    try:
        state = checkpointer.restore(abstract, shardings)
    finally:
        checkpointer.close()
    if state is None:
        raise FileNotFoundError(f"{directory}: no intact checkpoint to export")
    tokenizer = getattr(plan.policy.codec, "tokenizer", None)
    tokenizer = tokenizer if isinstance(tokenizer, Tokenizer) else None
    return save_pretrained(state.model(), out_dir, tokenizer=tokenizer, dtype=dtype)
