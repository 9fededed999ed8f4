"""Compare runs in one table: final reward, final entropy, collapse step.

Final values are the mean of the last ``--last`` logged values. The collapse step is the first
step after which entropy stays below ``--fraction`` of its initial value (the mean of the first
``--window`` logged values; :func:`entropix.dynamics.collapse_step`); "-" when it never
collapsed. A run dir holding
sub-runs (a sweep) contributes one row per sub-run.
"""

import argparse

from entropix.runs import comparison_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments to ``parser``.

    They are the run directories and ``--last``, ``--fraction``, ``--window``.

    Args:
        parser: the sub-command's parser (``entropix.cli.main`` builds it).
    """
    parser.add_argument("run_dirs", nargs="+", help="run directories written by `entropix run`")
    parser.add_argument("--last", type=int, default=5, help="average the last N logged values")
    parser.add_argument("--fraction", type=float, default=0.5, help="collapse threshold")
    parser.add_argument("--window", type=int, default=5, help="steps averaged for H_0")


def run(args: argparse.Namespace) -> int:
    """Print the comparison table of the given run directories (Markdown) on stdout.

    Args:
        args: the parsed ``entropix compare`` arguments (``run_dirs``, ``last``,
            ``fraction``, ``window``).

    Returns:
        The exit code: 0.
    """
    print(comparison_table(args.run_dirs, args.last, args.fraction, args.window))
    return 0
