"""stack3d-sift: the step ``sift_registration`` (Shtengel's SIFT registration of FIB-SEM
stacks) as a third-party stack3d plugin. OpenCV is imported only where key points are
detected and matched (in the workers)."""

from __future__ import annotations

from .outputs import export_to_registration_calculation
from .step import SiftRegistration, SiftRegistrationParams

__all__ = ["SiftRegistration", "SiftRegistrationParams", "export_to_registration_calculation"]
