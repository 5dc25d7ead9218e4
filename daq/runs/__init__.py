"""Runs and QC: batch context, audit trail, time integrity, sealing, exports, reports, retention.

- :mod:`daq.runs.settings`: the ``[runs]`` and ``[clock]`` config sections.
- :mod:`daq.runs.manager`: :class:`~daq.runs.manager.RunManager`, the ``"runs"`` service
  (life cycle, and the run operations of :class:`daq.context.RunControl`).
- :mod:`daq.runs.fields`: checks of a run's fields and run ids.
- :mod:`daq.runs.setup`: the config snapshot and diff, and the instruments a run records.
- :mod:`daq.runs.trigger`: the trigger channel's rising and falling edges.
- :mod:`daq.runs.clock`: clock sync state and clock-step detection (the ``"clock"`` service).
- :mod:`daq.runs.seal`: what a run's seal covers and how it is computed.
- :mod:`daq.runs.export`: writing and verifying a run's export.
- :mod:`daq.runs.report`: the PDF/PNG run report.
- :mod:`daq.runs.retention`: audited pruning of exported, verified, expired journal data.

Kept free of imports here so the config loader can import the settings without cycles.
"""
