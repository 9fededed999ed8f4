"""Sub-commands of the ``entropix`` CLI (see ``entropix/cli.py``): each module parses its
arguments and calls the library; nothing is exported (the CLI imports them by name)."""

__all__: list[str] = []
