"""``python -m gtgm.cli``: the same as the ``gtgm`` command."""

from gtgm.cli import main

raise SystemExit(main())
