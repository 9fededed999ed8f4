"""Run an experiment from a YAML config with dotted overrides (re-running a run dir resumes).

``entropix run configs/grpo_addition_tiny.yaml loss.terms.1.coef=0.003 seed=3`` resolves the
config against the experiment's typed schema, writes it to ``<run_dir>/config.yaml`` and calls
the experiment. The run dir (``runs/<name>`` unless ``run_dir=`` or ``--run-dir`` is given)
holds the resolved config, metrics.jsonl, TensorBoard events, checkpoints, plots and
``summary.json``. Running again into an existing run dir resumes from its checkpoints.
"""

import json
import sys
from pathlib import Path

from entropix import config as cfg


def add_arguments(parser):
    parser.add_argument("config", help="experiment YAML, e.g. configs/grpo_addition_tiny.yaml")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value overrides (YAML scalars)")
    parser.add_argument("--run-dir", default=None, help="run directory (default runs/<name>)")
    parser.add_argument("--no-plot", action="store_true", help="skip writing plots at the end")


def prepare(config_path, overrides=(), run_dir=None):
    """Resolve the config and its run dir, save ``config.yaml``; returns (module, config, dir)."""
    import experiments

    overrides = list(overrides) + ([f"run_dir={run_dir}"] if run_dir else [])
    config = cfg.load(config_path, overrides, experiments.schemas())
    directory = cfg.resolve_run_dir(config)
    previous = directory / cfg.CONFIG_FILENAME
    if previous.is_file():
        changed = cfg.diff(cfg.read_yaml(previous), cfg.to_dict(config))
        if changed:
            print(
                f"note: resuming {directory} with changed keys: {', '.join(changed)}",
                file=sys.stderr,
            )
    cfg.save(config, directory)
    return experiments.module(config.experiment), config, directory


def run(args) -> int:
    module, config, directory = prepare(args.config, args.overrides, args.run_dir)
    summary = module.run(config, directory)
    (Path(directory) / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    if not args.no_plot:
        from entropix.commands.plot import plot_run

        plot_run(directory)
    print(json.dumps({"run_dir": str(directory), **summary}, default=float))
    return 0
