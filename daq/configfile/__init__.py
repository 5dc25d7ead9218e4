"""The whole configuration file: every feature's section assembled into one typed model
(:mod:`daq.configfile.model`), loaded and validated (:mod:`daq.configfile.load`), written back
(:mod:`daq.configfile.write`), and the config in force for a run (:mod:`daq.configfile.snapshot`).

This package sits above the features: each feature's section models and cross-checks live with
the feature and import only :mod:`daq.config` (the leaf of base types), and are registered here.
"""
