"""Sub-commands of the ``entropix`` CLI (see ``entropix/cli.py``)."""
