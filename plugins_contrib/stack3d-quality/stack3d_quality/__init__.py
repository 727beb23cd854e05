"""stack3d-quality: registration and image quality metrics for stack3d.

* :mod:`stack3d_quality.metrics`: the metrics as functions on numpy arrays (NSAD, NCC and
  the two-image SNR, NMI, FRC with 1/7 and half-bit thresholds, single-image SNR by
  autocorrelation, noise statistics).
* the step ``quality`` (:mod:`stack3d_quality.step`): per-slice and consecutive-pair
  metrics of a stack, as CSV and figures; it modifies no data.
* the observer (:mod:`stack3d_quality.observer`): evaluates the output of the steps listed
  in ``[quality] follow``.

Registered through the entry point ``quality = "stack3d_quality.plugin"``.
"""

from __future__ import annotations

__version__ = "0.1.0"
