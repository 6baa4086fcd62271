"""``python -m gtgm.cli``: the same as the ``gtgm`` command."""

from gtgm.cli import entry

entry()
