"""Radio-TLC: methods, chromatogram analysis (RCP), advisory peak finding, the daemon's scan
service and read helpers over the ``traces`` and ``analyses`` tables.

- :mod:`daq.tlc.methods`: ``[[tlc.methods]]`` config models.
- :mod:`daq.tlc.analysis`: background subtraction, ROI integration, RCP, pass or fail.
- :mod:`daq.tlc.peaks`: proposed ROIs (advisory).
- :mod:`daq.tlc.service`: the daemon side (scans started, watched and recorded).
- :mod:`daq.tlc.records`: the trace and analysis records a scan becomes.
- :mod:`daq.tlc.store`: read helpers.
"""
