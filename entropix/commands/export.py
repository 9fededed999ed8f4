"""Export a run's trained policy as a Hugging Face checkpoint directory (weights, tokenizer).

``entropix export runs/grpo_math_qwen out/policy`` restores the newest checkpoint of the run
(its resolved ``config.yaml`` says how to build the policy) and writes a directory that
transformers (``AutoModelForCausalLM.from_pretrained``) and vLLM load as they are.
"""

import argparse
from pathlib import Path

from entropix import config as cfg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments to ``parser``.

    They are the run directory, the output directory and ``--dtype``.

    Args:
        parser: the sub-command's parser (``entropix.cli.main`` builds it).
    """
    parser.add_argument("run_dir", help="an RL run directory (holds config.yaml, checkpoints/)")
    parser.add_argument("out_dir", help="where to write the Hugging Face checkpoint")
    parser.add_argument("--dtype", default=None, help="storage dtype (default: the params')")


def run(args: argparse.Namespace) -> int:
    """Restore the run's newest checkpoint and write it as a Hugging Face checkpoint; print the
    directory written.

    Args:
        args: the parsed ``entropix export`` arguments (``run_dir``, ``out_dir``, ``dtype``:
            storage dtype name, None keeps the params' dtype).

    Returns:
        The exit code: 0.

    Raises:
        ValueError: the run is not an RL run (it has no policy to export).
    """
    import experiments
    from entropix import rl

    config = cfg.load(Path(args.run_dir) / cfg.CONFIG_FILENAME, schemas=experiments.schemas())
    if not isinstance(config, rl.RLConfig):
        raise ValueError(f"{args.run_dir}: a {config.experiment} run has no RL policy to export")
    print(rl.export_policy(config, args.run_dir, args.out_dir, dtype=args.dtype))
    return 0
