"""hotcell-daq: journal-first data acquisition for radiopharmaceutical hot cells.

Packages, by folder:

- ``daq``: the core (reading model, config, journal, supervisor, daemon, CLI).
- ``drivers``: one module per instrument protocol; they parse frames into readings.
- ``simulators``: instruments that speak the real wire protocols, for demos and tests.
"""

__version__ = "0.1.0"
