"""The run report: a controlled document for the batch record (PDF, or PNG pages), drawn with
matplotlib's Agg backend.

Every page carries a header (product, batch, run id, seal prefix) and a footer ("page x of y",
when and by whom it was generated, in the site's time zone with its offset, and the
hotcell-daq version). Until the run is sealed *and* approved by a signature covering its
current analysis versions, every page is watermarked DRAFT (REJECTED after a rejection).

Sections, in order:

- ``header``: the title page: batch, product, times, instruments, config hash, seal, the
  clock's sync state and clock steps, results (yield, RCP), annotations, t0, and the signature
  block (each signature's printed name, date and time, meaning; a signature that covers an
  analysis version superseded by a re-integration says so);
- ``activity``: the activity table at the reference time (measured, decay-corrected, half-life
  and its source, a flag when a calibrator's nuclide differs from the run's), the
  radiochemical yield as ``[report]`` defines it, and activity against clock time;
- ``process``: the channels ``[report] process`` names, grouped and ordered as configured
  (else every process channel, on as many pages as needed), with the synthesis steps named
  from the map's enum, on clock-time axes;
- ``tlc``: one page per chromatogram, drawn as ``daq tlc show`` draws it, with the per-ROI
  table, the method and version, the verdict and the analysis history;
- ``alarms``: alarm readings, the limit alarms of the alarm journal raised during the run
  (with who acknowledged them), gaps (non-GOOD spans) and clock steps, all of them;
- ``audit``: the run's audit trail, every entry in full (wrapped, never cut).

Nothing is dropped silently: where a list is limited the page says "n of m shown" and where
the rest is. Times are in the site's time zone (``daemon.timezone``, default the system's)
with the offset. The figures of :func:`daq.runs.figures.summarize` (the export's
``summary.json``) travel with each PNG page as text chunks (``Sections``, ``Figures``, ``QC``,
``Text``) so a test can read them back.
"""

from __future__ import annotations

import matplotlib

# Before pyplot is imported by any page: no display is needed (or wanted) to draw a report.
matplotlib.use("Agg")

from daq.runs.report.document import SECTIONS, context, render

__all__ = ["SECTIONS", "context", "render"]
