"""Export a run's trained policy as a Hugging Face checkpoint directory (weights, tokenizer).

``entropix export runs/grpo_math_qwen out/policy`` restores the newest checkpoint of the run
(its resolved ``config.yaml`` says how to build the policy) and writes a directory that
transformers (``AutoModelForCausalLM.from_pretrained``) and vLLM load as they are.
"""

from pathlib import Path

from entropix import config as cfg


def add_arguments(parser):
    parser.add_argument("run_dir", help="an RL run directory (holds config.yaml, checkpoints/)")
    parser.add_argument("out_dir", help="where to write the Hugging Face checkpoint")
    parser.add_argument("--dtype", default=None, help="storage dtype (default: the params')")


def run(args) -> int:
    import experiments
    from entropix import rl

    config = cfg.load(Path(args.run_dir) / cfg.CONFIG_FILENAME, schemas=experiments.schemas())
    if not isinstance(config, rl.RLConfig):
        raise ValueError(f"{args.run_dir}: a {config.experiment} run has no RL policy to export")
    print(rl.export_policy(config, args.run_dir, args.out_dir, dtype=args.dtype))
    return 0
