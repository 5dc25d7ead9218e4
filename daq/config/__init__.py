"""Configuration building blocks: the base types every section is made of.

``daq.config.base`` holds the strict model, the typed ranges (seconds, ports...) and the
instrument base drivers extend; ``daq.config.sections`` the daemon's own section;
``daq.config.loaded`` what features read of the loaded file, as a protocol. Nothing here
imports a feature: each feature's section lives with the feature and is assembled, with every
other, by :mod:`daq.configfile` (the model of the whole file and its loader, above the features).
"""
