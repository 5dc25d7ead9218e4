"""Configuration: TOML validated by pydantic, once, up front.

``daq.config.base`` holds the building blocks drivers extend; ``daq.config.load`` assembles
the whole file (with every driver's instrument model) and turns validation failures into
:class:`~daq.errors.ConfigError` naming the file, the key path and what was expected.
"""
