"""The ``entropix`` command line: one sub-command per module in ``entropix/commands``.

Each command module has a docstring (its first line is the help text), an
``add_arguments(parser)`` function and a ``run(args) -> int`` function returning the exit code.
Command modules are imported only when their command runs, so ``entropix --help`` stays fast.
Flags and positional arguments may come in any order (``entropix run CONFIG seed=1 --run-dir x
lr=3``).
A ``ValueError``/``TypeError``/``KeyError``/``FileNotFoundError`` raised by a command becomes
a one-line ``entropix CMD: error: ...`` message and exit code 2.
"""

import argparse
import ast
import importlib
import importlib.util
import os
import sys

# command name -> module under entropix.commands
COMMANDS: dict[str, str] = {
    "measure": "measure",
    "run": "run",
    "plot": "plot",
    "compare": "compare",
    "dynamics": "dynamics",
    "list": "list_cmd",
    "bench": "bench",
    "export": "export",
    "report": "report",
}

USER_ERRORS = (ValueError, TypeError, KeyError, FileNotFoundError)


def _help_line(module_name: str) -> str:
    """First docstring line of a command module, read without importing it."""
    spec = importlib.util.find_spec(f"entropix.commands.{module_name}")
    doc = ast.get_docstring(ast.parse(spec.loader.get_source(spec.name))) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: lists the commands; each command parses its own arguments.

    Returns:
        An ``argparse`` parser with one sub-parser (help only) per command of ``COMMANDS``.
    """
    parser = argparse.ArgumentParser(
        prog="entropix", description="Entropy dynamics in training: run, measure, compare."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        sub.add_parser(name, help=_help_line(module_name), add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``entropix`` command.

    Args:
        argv: the arguments after the program name (``["run", "CONFIG", "seed=1"]``); None
            for ``sys.argv[1:]``.

    Returns:
        The exit code: the command's (0 when it returns None), 2 for a user error (a one-line
        message on stderr), 1 when stdout was closed early. A missing or unknown command, or
        bad flags, make ``argparse`` print the usage and raise ``SystemExit``.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    # a missing or unknown command, or -h, makes argparse print usage or help and exit here
    name, rest = build_parser().parse_args(argv[:1]).command, argv[1:]
    module = importlib.import_module(f"entropix.commands.{COMMANDS[name]}")
    parser = argparse.ArgumentParser(
        prog=f"entropix {name}",
        description=module.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    module.add_arguments(parser)
    args = parser.parse_intermixed_args(rest)  # flags and positionals (overrides) in any order
    try:
        return int(module.run(args) or 0)
    except USER_ERRORS as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"entropix {name}: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`entropix list | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
