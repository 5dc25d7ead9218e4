"""``python -m daq`` is the same as the ``daq`` command."""

try:
    from daq.cli import main
except KeyboardInterrupt:  # Ctrl-C while the command line itself loads: quiet, as later
    raise SystemExit(130) from None

raise SystemExit(main())
