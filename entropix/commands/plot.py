"""Plot a run's curves to PNG under ``RUN_DIR/plots/`` (and each sub-run's): entropy, reward,
predicted vs measured entropy change, token-group shares, entropy by position and the
entropy-performance law. The figures are drawn by :func:`entropix.plots.plot_run`; its module
docstring says what each one shows.
"""

import argparse

from entropix.plots import plot_run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments to ``parser``.

    They are the run directory.

    Args:
        parser: the sub-command's parser (``entropix.cli.main`` builds it).
    """
    parser.add_argument("run_dir", help="a run directory written by `entropix run`")


def run(args: argparse.Namespace) -> int:
    """Write the run's plots under ``RUN_DIR/plots/`` and print each path written.

    Args:
        args: the parsed ``entropix plot`` arguments (``run_dir``).

    Returns:
        The exit code: 0.
    """
    for path in plot_run(args.run_dir):
        print(path)
    return 0
