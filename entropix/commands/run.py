"""Run an experiment from a YAML config with dotted overrides (re-running a run dir resumes).

``entropix run configs/grpo_addition_tiny.yaml loss.terms.1.coef=0.003 seed=3`` resolves the
config against the experiment's typed schema, writes it to ``<run_dir>/config.yaml`` and calls
the experiment (``experiments.run``: a config the experiment refuses before running leaves no
run dir behind). The run dir (``runs/<name>`` unless ``run_dir=`` or ``--run-dir`` is given)
holds the resolved config, metrics.jsonl, TensorBoard events, checkpoints, plots and
``summary.json``. Running again into an existing run dir resumes from its checkpoints.
"""

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments to ``parser``.

    They are the config path, dotted overrides, ``--run-dir`` and ``--no-plot``.

    Args:
        parser: the sub-command's parser (``entropix.cli.main`` builds it).
    """
    parser.add_argument("config", help="experiment YAML, e.g. configs/grpo_addition_tiny.yaml")
    parser.add_argument("overrides", nargs="*", help="dotted.key=value overrides (YAML scalars)")
    parser.add_argument("--run-dir", default=None, help="run directory (default runs/<name>)")
    parser.add_argument("--no-plot", action="store_true", help="skip writing plots at the end")


def run(args: argparse.Namespace) -> int:
    """Resolve the config, run the experiment, write ``summary.json`` (and plots) into the run
    directory and print the summary as one JSON line.

    Args:
        args: the parsed ``entropix run`` arguments (``config``, ``overrides``, ``run_dir``:
            None for ``runs/<name>``, ``no_plot``).

    Returns:
        The exit code: 0.
    """
    import experiments

    directory, summary = experiments.run(args.config, args.overrides, args.run_dir)
    (Path(directory) / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    if not args.no_plot:
        from entropix.plots import plot_run

        plot_run(directory)
    print(json.dumps({"run_dir": str(directory), **summary}, default=float))
    return 0
