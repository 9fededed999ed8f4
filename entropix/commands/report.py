"""Render finished runs' results.json as Markdown tables and figure links (the docs' tables).

``entropix report RUN_DIR...`` prints each run's report. With ``--out DIR`` (e.g.
``docs/results``) it copies each run's results.json and figures into ``DIR/<name>/`` and writes
``DIR/<name>/results.md`` beside them: the committed tables are regenerated this way, never
edited (a test checks each against what its committed results.json renders to). ``--embed
PAGE`` (with ``--out``) then refills PAGE's ``<!-- table: NAME/ID -->`` blocks (e.g. in
docs/experiments.md) of the runs just published.
"""

import argparse
from pathlib import Path

from entropix.report import embed, publish, render
from entropix.results import read_results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments to ``parser``.

    They are the run directories, ``--out`` and ``--embed`` (repeatable).

    Args:
        parser: the sub-command's parser (``entropix.cli.main`` builds it).
    """
    parser.add_argument("run_dirs", nargs="+", help="run directories holding a results.json")
    parser.add_argument("--out", default=None, help="publish into OUT/<name>/ (docs/results)")
    parser.add_argument(
        "--embed", action="append", default=[], metavar="PAGE", help="refill PAGE's table blocks"
    )


def run(args: argparse.Namespace) -> int:
    """Print the runs' reports, or publish them into ``--out`` and refill the ``--embed``
    pages; print each path written.

    Args:
        args: the parsed ``entropix report`` arguments (``run_dirs``, ``out``: publish
            directory or None to print, ``embed``: list of page paths).

    Returns:
        The exit code: 0.

    Raises:
        ValueError: ``--embed`` is given without ``--out``.
    """
    if args.out is None:
        if args.embed:
            raise ValueError("--embed refills pages from the published results: give --out")
        print("\n".join(render(read_results(run_dir)) for run_dir in args.run_dirs), end="")
        return 0
    written = publish(args.run_dirs, args.out)
    for path in written:
        print(path)
    names = {path.parent.name for path in written}
    for page in map(Path, args.embed):
        page.write_text(embed(page.read_text(), args.out, names))
        print(page)
    return 0
