"""Configured alarm limits on channels, evaluated as a stage of the reading pipeline, with an
ISA-18.2 life cycle (raised, acknowledged, cleared) journaled in ``alarm_events`` and audited.

:mod:`daq.alarms.settings` is the ``[alarms]`` config section, :mod:`daq.alarms.engine` the
stage, :mod:`daq.alarms.points` an alarm point and its states, :mod:`daq.alarms.store` reads
the alarm journal without the daemon (``daq alarms list --data-dir``).
"""
