"""``daq validate``: the installation and operational qualification (IQ/OQ) pack.

:mod:`daq.cli.validation.requirements` reads ``validation/requirements.toml`` (what the system must
do, for a QA reader); :mod:`daq.cli.validation.iq` checks the machine it runs on;
:mod:`daq.cli.validation.oq` runs acceptance scenarios against the simulators in a scratch data
directory; :mod:`daq.cli.validation.pack` writes the JSON, the PDF report and the manifest, and
verifies a pack. Every check is a :class:`~daq.cli.validation.results.Scenario` with its steps,
expected and actual results, verdict, times and evidence files.
"""
