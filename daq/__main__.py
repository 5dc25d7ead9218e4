"""``python -m daq`` is the same as the ``daq`` command."""

from daq.cli import main

raise SystemExit(main())
