"""List experiments, registered methods and the configs under configs/."""

import argparse

from entropix.catalog import WHAT, catalog_lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the command's arguments to ``parser``.

    They are ``--configs-dir`` and the optional ``what`` (one of ``WHAT``, default all).

    Args:
        parser: the sub-command's parser (``entropix.cli.main`` builds it).
    """
    parser.add_argument("--configs-dir", default="configs", help="where to look for YAML configs")
    parser.add_argument("what", nargs="?", default="all", choices=WHAT)


def run(args: argparse.Namespace) -> int:
    """Print the catalogue lines (experiments, methods, configs) asked for.

    Args:
        args: the parsed ``entropix list`` arguments (``what``, ``configs_dir``).

    Returns:
        The exit code: 0.
    """
    print("\n".join(catalog_lines(args.what, args.configs_dir)))
    return 0
