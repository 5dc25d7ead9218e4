"""``daq validate``: the installation and operational qualification (IQ/OQ) pack.

:mod:`daq.validate.requirements` reads ``validation/requirements.toml`` (what the system must
do, for a QA reader); :mod:`daq.validate.iq` checks the machine it runs on;
:mod:`daq.validate.oq` runs acceptance scenarios against the simulators in a scratch data
directory; :mod:`daq.validate.pack` writes the JSON, the PDF report and the manifest, and
verifies a pack. Every check is a :class:`~daq.validate.results.Scenario` with its steps,
expected and actual results, verdict, times and evidence files.
"""
