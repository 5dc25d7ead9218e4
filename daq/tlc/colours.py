"""The colour of each ROI kind, shared by ``daq tlc show --png`` and the run report so a
chromatogram reads the same in both."""

from __future__ import annotations

KIND_COLOURS = {"product": "tab:green", "free": "tab:red", "colloid": "tab:orange", "impurity": "tab:purple"}
OTHER_COLOUR = "tab:grey"
