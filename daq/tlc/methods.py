"""TLC methods in config: ``[[tlc.methods]]``.

A method is named and versioned, per product: where the origin and the solvent front sit on
the scanned strip (mm), the regions of interest by Rf (labelled product, free nuclide, colloid
or another impurity), how the background is taken, and the release limit. The version is
stored with every analysis, so a result always names the exact integration it used.

Rf of a position x is ``(x - origin_mm) / (front_mm - origin_mm)``. An ROI covers
``rf_from <= Rf < rf_to``; ROIs may not overlap, and exactly one is the product.

Background modes: ``none``; ``region`` (the mean counts per position in ``rf_from``..
``rf_to``, a part of the strip with no activity); ``outside_rois`` (the mean counts per
position outside every ROI). The mean per position times the positions in an ROI is that
ROI's background.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Any, Literal, Protocol

from pydantic import Field, model_validator

from daq.config.base import InstrumentsConfig, Name, StrictModel
from daq.errors import ConfigError

RoiKind = Literal["product", "free", "colloid", "impurity"]
Rf = Annotated[float, Field(ge=-1.0, le=2.0)]


class Roi(StrictModel):
    label: Annotated[str, Field(min_length=1, max_length=40)]
    kind: RoiKind
    rf_from: Rf
    rf_to: Rf

    @model_validator(mode="after")
    def _order(self) -> Roi:
        if self.rf_to <= self.rf_from:
            raise ValueError(
                f"ROI {self.label!r}: rf_to ({self.rf_to:g}) must exceed rf_from ({self.rf_from:g})"
            )
        return self


class Background(StrictModel):
    mode: Literal["none", "region", "outside_rois"] = "outside_rois"
    rf_from: Rf | None = None
    rf_to: Rf | None = None

    @model_validator(mode="after")
    def _region(self) -> Background:
        if self.mode == "region":
            if self.rf_from is None or self.rf_to is None:
                raise ValueError("background mode 'region' needs rf_from and rf_to")
            if self.rf_to <= self.rf_from:
                raise ValueError("background rf_to must exceed rf_from")
        elif self.rf_from is not None or self.rf_to is not None:
            raise ValueError(f"background mode {self.mode!r} takes no rf_from/rf_to")
        return self


class TlcMethod(StrictModel):
    name: Name
    version: Annotated[str, Field(min_length=1, max_length=40)]
    product: str = ""
    description: str = ""
    origin_mm: Annotated[float, Field(ge=0, le=1000)]
    front_mm: Annotated[float, Field(gt=0, le=1000)]
    rois: Annotated[list[Roi], Field(min_length=1)]
    background: Background = Background()
    #: Release limit: the batch passes when RCP >= limit_percent.
    limit_percent: Annotated[float, Field(gt=0, le=100)]

    @model_validator(mode="after")
    def _check(self) -> TlcMethod:
        if self.front_mm <= self.origin_mm:
            raise ValueError(f"front_mm ({self.front_mm:g}) must be beyond origin_mm ({self.origin_mm:g})")
        products = [r.label for r in self.rois if r.kind == "product"]
        if len(products) != 1:
            raise ValueError(f"exactly one ROI must have kind 'product' (found {len(products)})")
        labels = [r.label for r in self.rois]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"duplicate ROI label(s): {', '.join(dupes)}")
        ordered = sorted(self.rois, key=lambda r: r.rf_from)
        for a, b in itertools.pairwise(ordered):
            if b.rf_from < a.rf_to:
                raise ValueError(f"ROIs {a.label!r} and {b.label!r} overlap")
        bg = self.background
        if bg.mode == "region":
            assert bg.rf_from is not None
            assert bg.rf_to is not None
            for r in self.rois:
                if bg.rf_from < r.rf_to and r.rf_from < bg.rf_to:
                    raise ValueError(f"background region overlaps ROI {r.label!r}")
        return self

    def mm(self, rf: float) -> float:
        return self.origin_mm + rf * (self.front_mm - self.origin_mm)

    def definition(self) -> dict[str, Any]:
        """The method as stored with an analysis (JSON-able)."""
        return self.model_dump(mode="json")


class TlcSection(StrictModel):
    """The ``[tlc]`` section: the methods scanners and re-integration may name."""

    methods: list[TlcMethod] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> TlcSection:
        seen: set[str] = set()
        for m in self.methods:
            if m.name in seen:
                raise ValueError(f"duplicate TLC method name {m.name!r}")
            seen.add(m.name)
        return self

    def get(self, name: str) -> TlcMethod:
        for m in self.methods:
            if m.name == name:
                return m
        known = ", ".join(m.name for m in self.methods) or "none configured"
        raise KeyError(f"no TLC method {name!r} (known: {known})")


class TlcConfig(InstrumentsConfig, Protocol):
    """What :func:`check_config` reads of the whole config."""

    @property
    def tlc(self) -> TlcSection: ...


def check_config(model: TlcConfig, file: str) -> None:
    """Cross-check: every scanner's ``method`` names a configured method."""
    names = {m.name for m in model.tlc.methods}
    for i, inst in enumerate(model.instruments):
        method = getattr(inst, "method", None)
        if inst.kind == "rtlc-scanner" and method is not None and method not in names:
            raise ConfigError(
                f"no [[tlc.methods]] entry named {method!r} (known: {', '.join(sorted(names)) or 'none'})",
                file=file,
                key_path=f"instruments[{i}].method",
            )
