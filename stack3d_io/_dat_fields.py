"""The header fields of Janelia FIB-SEM ``.dat`` files, FileVersion 1 to 9, as one table.

Each row of :data:`FIELDS` says where a field lives in the 1024-byte header:

* ``name``: the field name used by the MATLAB reference reader and jeiss-specs;
* ``offset``: absolute byte offset in the header;
* ``dtype``: numpy dtype, **big-endian** for multi-byte numbers; ``S<n>`` is an ASCII
  (Latin-1) string of ``n`` bytes padded with NULs;
* ``shape``: ``()`` for a scalar, else the array shape; an entry ``"ChanNum"`` stands for
  the value of the ``ChanNum`` field of the same header (the Scaling block of v1–6);
* ``first`` / ``last``: the FileVersions where the field exists (inclusive);
* ``doc``: meaning and unit.

The table merges the jeiss-specs tables with the MATLAB reference reader (``readfibsem.m``)
and Shtengel's ``SaveOversamples`` byte (see ``docs/formats/dat.md``). Within one version no
two fields overlap (``tests/io/test_janelia_dat.py`` checks it). Bytes that no field covers are
zero in every real header examined; a writer given the original header bytes keeps them.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

__all__ = ["CHAN_NUM", "FIELDS", "HeaderField", "field_count", "fields_for", "known_names"]

CHAN_NUM = "ChanNum"
"""Placeholder in a field shape for the value of the ``ChanNum`` field."""


class HeaderField(NamedTuple):
    """One row of the header table (see the module doc)."""

    name: str
    offset: int
    dtype: str
    shape: tuple[int | str, ...]
    first: int
    last: int
    doc: str = ""

    def resolved_shape(self, chan_num: int) -> tuple[int, ...]:
        """The shape with ``"ChanNum"`` replaced by ``chan_num``."""
        return tuple(chan_num if s == CHAN_NUM else int(s) for s in self.shape)

    def nbytes(self, chan_num: int) -> int:
        """Size in bytes of the field in a header whose ``ChanNum`` is ``chan_num``."""
        return np.dtype(self.dtype).itemsize * field_count(self, chan_num)


def field_count(field: HeaderField, chan_num: int) -> int:
    """Number of elements of ``field`` (1 for a scalar)."""
    count = 1
    for s in field.resolved_shape(chan_num):
        count *= s
    return count


_ = ()
_F = HeaderField

# fmt: off
FIELDS: tuple[HeaderField, ...] = (
    # name                    offset dtype   shape           first last doc
    _F("FileMagicNum",             0, ">u4",  _,                1, 9, "magic number, 3555587570 (0xD3EDF5F2)"),
    _F("FileVersion",              4, ">u2",  _,                1, 9, "header layout version"),
    _F("FileType",                 6, ">u2",  _,                1, 9, "1 = Zeiss Neon detectors"),
    _F("SWdate",                   8, "S10",  _,                1, 9, "acquisition software build date (not the acquisition date; DD/MM or MM/DD)"),
    _F("TimeStep",                24, ">f8",  _,                1, 9, "AI sampling time including oversampling, s"),
    _F("ChanNum",                 32, "u1",   _,                1, 9, "number of channels stored in the payload"),
    _F("EightBit",                33, "u1",   _,                1, 9, "1: payload uint8, 0: payload big-endian int16"),
    _F("Scaling",                 36, ">f8",  (CHAN_NUM, 4),    1, 1, "4 coefficients per stored channel (offset, gain, 2nd, 3rd order)"),
    _F("Scaling",                 36, ">f4",  (CHAN_NUM, 4),    2, 6, "4 coefficients per stored channel (offset, gain, 2nd, 3rd order)"),
    _F("Scaling",                 36, ">f4",  (2, 4),           7, 9, "4 coefficients of detector A then of detector B"),
    _F("Restart",                 68, "u1",   _,                9, 9, "restart flag"),
    _F("StageMove",               69, "u1",   _,                9, 9, "stage-move flag"),
    _F("FirstX",                  70, ">i4",  _,                9, 9, "column of the first pixel (image centre = 0), px"),
    _F("FirstY",                  74, ">i4",  _,                9, 9, "row of the first pixel (image centre = 0), px"),
    _F("XResolution",            100, ">u4",  _,                1, 9, "columns, px"),
    _F("YResolution",            104, ">u4",  _,                1, 9, "rows, px"),
    _F("Oversampling",           108, "u1",   _,                1, 3, "AI oversampling"),
    _F("AIDelay",                109, ">i2",  _,                1, 3, "AI delay, samples"),
    _F("Oversampling",           108, ">u2",  _,                4, 9, "AI oversampling"),
    _F("ZeissScanSpeed",         111, "u1",   _,                1, 9, "Zeiss scan speed number"),
    _F("ScanRate",               112, ">f8",  _,                1, 3, "actual AO (scanning) rate, Hz"),
    _F("FramelineRampdownRatio", 120, ">f8",  _,                1, 3, "frame-line ramp-down ratio"),
    _F("Xmin",                   128, ">f8",  _,                1, 3, "X coil minimum voltage, V"),
    _F("Xmax",                   136, ">f8",  _,                1, 3, "X coil maximum voltage, V"),
    _F("ScanRate",               112, ">f4",  _,                4, 9, "actual AO (scanning) rate, Hz"),
    _F("FramelineRampdownRatio", 116, ">f4",  _,                4, 9, "frame-line ramp-down ratio"),
    _F("Xmin",                   120, ">f4",  _,                4, 9, "X coil minimum voltage, V"),
    _F("Xmax",                   124, ">f4",  _,                4, 9, "X coil maximum voltage, V"),
    _F("Detmin",                 128, ">f4",  _,                4, 9, "detector minimum voltage, V"),
    _F("Detmax",                 132, ">f4",  _,                4, 9, "detector maximum voltage, V"),
    _F("DecimatingFactor",       136, ">u2",  _,                4, 9, "decimating factor"),
    _F("SaveOversamples",        138, "u1",   _,                4, 9, "1: every oversample stored (read by Shtengel's code only)"),
    _F("AI1",                    151, "u1",   _,                1, 9, "analogue input 1 (detector A) enabled"),
    _F("AI2",                    152, "u1",   _,                1, 9, "analogue input 2 (detector B) enabled"),
    _F("AI3",                    153, "u1",   _,                1, 9, "analogue input 3 (detector C) enabled"),
    _F("AI4",                    154, "u1",   _,                1, 9, "analogue input 4 (detector D) enabled"),
    _F("SampleID",               155, "S25",  _,                9, 9, "sample identifier"),
    _F("Notes",                  180, "S200", _,                1, 9, "free text"),
    _F("DetA",                   380, "S10",  _,                1, 9, "name of detector A"),
    _F("DetB",                   390, "S18",  _,                1, 9, "name of detector B"),
    # SEM / FIB block, versions 1-2 (doubles)
    _F("Mag",                    408, ">f8",  _,                1, 2, "magnification"),
    _F("PixelSize",              416, ">f8",  _,                1, 2, "pixel size, nm"),
    _F("WD",                     424, ">f8",  _,                1, 2, "working distance, mm"),
    _F("EHT",                    432, ">f8",  _,                1, 2, "electron high tension, kV"),
    _F("SEMApr",                 440, "u1",   _,                1, 2, "SEM aperture number"),
    _F("HighCurrent",            441, "u1",   _,                1, 2, "high-current mode (1 on)"),
    _F("SEMCurr",                448, ">f8",  _,                1, 2, "SEM probe current, A"),
    _F("SEMRot",                 456, ">f8",  _,                1, 2, "SEM scan rotation, deg"),
    _F("ChamVac",                464, ">f8",  _,                1, 2, "chamber vacuum"),
    _F("GunVac",                 472, ">f8",  _,                1, 2, "gun vacuum"),
    _F("SEMStiX",                480, ">f8",  _,                1, 2, "SEM stigmation X"),
    _F("SEMStiY",                488, ">f8",  _,                1, 2, "SEM stigmation Y"),
    _F("SEMAlnX",                496, ">f8",  _,                1, 2, "SEM aperture alignment X"),
    _F("SEMAlnY",                504, ">f8",  _,                1, 2, "SEM aperture alignment Y"),
    _F("StageX",                 512, ">f8",  _,                1, 2, "stage X, mm"),
    _F("StageY",                 520, ">f8",  _,                1, 2, "stage Y, mm"),
    _F("StageZ",                 528, ">f8",  _,                1, 2, "stage Z, mm"),
    _F("StageT",                 536, ">f8",  _,                1, 2, "stage tilt, deg"),
    _F("StageR",                 544, ">f8",  _,                1, 2, "stage rotation, deg"),
    _F("StageM",                 552, ">f8",  _,                1, 2, "stage M, mm"),
    _F("BrightnessA",            560, ">f8",  _,                1, 2, "detector A brightness, %"),
    _F("ContrastA",              568, ">f8",  _,                1, 2, "detector A contrast, %"),
    _F("BrightnessB",            576, ">f8",  _,                1, 2, "detector B brightness, %"),
    _F("ContrastB",              584, ">f8",  _,                1, 2, "detector B contrast, %"),
    _F("Mode",                   600, "u1",   _,                1, 9, "0 SEM, 1 FIB, 2 Milling, 3 SEM+FIB, 4 Mill+SEM, 5 SEM drift corr., 6 FIB drift corr., 7 no beam, 8 external, 9 external+SEM"),
    _F("FIBFocus",               608, ">f8",  _,                1, 2, "FIB focus, kV"),
    _F("FIBProb",                616, "u1",   _,                1, 2, "FIB probe number"),
    _F("FIBCurr",                624, ">f8",  _,                1, 2, "FIB emission current"),
    _F("FIBRot",                 632, ">f8",  _,                1, 2, "FIB scan rotation, deg"),
    _F("FIBAlnX",                640, ">f8",  _,                1, 2, "FIB aperture alignment X"),
    _F("FIBAlnY",                648, ">f8",  _,                1, 2, "FIB aperture alignment Y"),
    _F("FIBStiX",                656, ">f8",  _,                1, 2, "FIB stigmation X"),
    _F("FIBStiY",                664, ">f8",  _,                1, 2, "FIB stigmation Y"),
    _F("FIBShiftX",              672, ">f8",  _,                1, 2, "FIB beam shift X, um"),
    _F("FIBShiftY",              680, ">f8",  _,                1, 2, "FIB beam shift Y, um"),
    _F("DetC",                   700, "S20",  _,                1, 2, "name of detector C"),
    _F("DetD",                   720, "S20",  _,                1, 2, "name of detector D"),
    # SEM / FIB block, versions 3-9 (floats)
    _F("DetC",                   410, "S20",  _,                3, 9, "name of detector C"),
    _F("DetD",                   430, "S20",  _,                3, 9, "name of detector D"),
    _F("Mag",                    460, ">f4",  _,                3, 9, "magnification"),
    _F("PixelSize",              464, ">f4",  _,                3, 9, "pixel size, nm"),
    _F("WD",                     468, ">f4",  _,                3, 9, "working distance, mm"),
    _F("EHT",                    472, ">f4",  _,                3, 9, "electron high tension, kV"),
    _F("SEMApr",                 480, "u1",   _,                3, 9, "SEM aperture number"),
    _F("HighCurrent",            481, "u1",   _,                3, 9, "high-current mode (1 on)"),
    _F("SEMCurr",                490, ">f4",  _,                3, 9, "SEM probe current, A"),
    _F("SEMRot",                 494, ">f4",  _,                3, 9, "SEM scan rotation, deg"),
    _F("ChamVac",                498, ">f4",  _,                3, 9, "chamber vacuum"),
    _F("GunVac",                 502, ">f4",  _,                3, 9, "gun vacuum"),
    _F("SEMShiftX",              510, ">f4",  _,                3, 9, "SEM beam shift X"),
    _F("SEMShiftY",              514, ">f4",  _,                3, 9, "SEM beam shift Y"),
    _F("SEMStiX",                518, ">f4",  _,                3, 9, "SEM stigmation X"),
    _F("SEMStiY",                522, ">f4",  _,                3, 9, "SEM stigmation Y"),
    _F("SEMAlnX",                526, ">f4",  _,                3, 9, "SEM aperture alignment X"),
    _F("SEMAlnY",                530, ">f4",  _,                3, 9, "SEM aperture alignment Y"),
    _F("StageX",                 534, ">f4",  _,                3, 9, "stage X, mm"),
    _F("StageY",                 538, ">f4",  _,                3, 9, "stage Y, mm"),
    _F("StageZ",                 542, ">f4",  _,                3, 9, "stage Z, mm"),
    _F("StageT",                 546, ">f4",  _,                3, 9, "stage tilt, deg"),
    _F("StageR",                 550, ">f4",  _,                3, 9, "stage rotation, deg"),
    _F("StageM",                 554, ">f4",  _,                3, 9, "stage M, mm"),
    _F("BrightnessA",            560, ">f4",  _,                3, 9, "detector A brightness, %"),
    _F("ContrastA",              564, ">f4",  _,                3, 9, "detector A contrast, %"),
    _F("BrightnessB",            568, ">f4",  _,                3, 9, "detector B brightness, %"),
    _F("ContrastB",              572, ">f4",  _,                3, 9, "detector B contrast, %"),
    _F("FIBFocus",               604, ">f4",  _,                3, 9, "FIB focus, kV"),
    _F("FIBProb",                608, "u1",   _,                3, 9, "FIB probe number"),
    _F("FIBCurr",                620, ">f4",  _,                3, 9, "FIB emission current"),
    _F("FIBRot",                 624, ">f4",  _,                3, 9, "FIB scan rotation, deg"),
    _F("FIBAlnX",                628, ">f4",  _,                3, 9, "FIB aperture alignment X"),
    _F("FIBAlnY",                632, ">f4",  _,                3, 9, "FIB aperture alignment Y"),
    _F("FIBStiX",                636, ">f4",  _,                3, 9, "FIB stigmation X"),
    _F("FIBStiY",                640, ">f4",  _,                3, 9, "FIB stigmation Y"),
    _F("FIBShiftX",              644, ">f4",  _,                3, 9, "FIB beam shift X, um"),
    _F("FIBShiftY",              648, ">f4",  _,                3, 9, "FIB beam shift Y, um"),
    # milling block, versions >= 5
    _F("MillingXResolution",     652, ">u4",  _,                5, 9, "FIB milling X resolution, px"),
    _F("MillingYResolution",     656, ">u4",  _,                5, 9, "FIB milling Y resolution, px"),
    _F("MillingXSize",           660, ">f4",  _,                5, 9, "FIB milling X size, um"),
    _F("MillingYSize",           664, ">f4",  _,                5, 9, "FIB milling Y size, um"),
    _F("MillingULAng",           668, ">f4",  _,                5, 9, "milling upper-left inner angle, deg"),
    _F("MillingURAng",           672, ">f4",  _,                5, 9, "milling upper-right inner angle, deg"),
    _F("MillingLineTime",        676, ">f4",  _,                5, 9, "FIB line milling time, s"),
    _F("FIBFOV",                 680, ">f4",  _,                5, 9, "FIB field of view, um"),
    _F("MillingLinesPerImage",   684, ">u2",  _,                5, 9, "FIB milling lines per image"),
    _F("MillingPIDOn",           686, "u1",   _,                5, 9, "milling PID on"),
    _F("MillingPIDMeasured",     689, "u1",   _,                5, 9, "0 specimen, 1 beam dump 1, 2 beam dump 2, 3 mill, 4 specimen+"),
    _F("MillingPIDTarget",       690, ">f4",  _,                5, 9, "milling PID target"),
    _F("MillingPIDTargetSlope",  694, ">f4",  _,                5, 9, "milling PID target slope"),
    _F("MillingPIDP",            698, ">f4",  _,                5, 9, "milling PID P"),
    _F("MillingPIDI",            702, ">f4",  _,                5, 9, "milling PID I"),
    _F("MillingPIDD",            706, ">f4",  _,                5, 9, "milling PID D"),
    _F("MachineID",              800, "S30",  _,                5, 9, "machine identifier, e.g. 'Jeiss7/Merlin-6282'"),
    _F("Temperature",            850, ">f4",  _,                6, 9, "temperature, degF"),
    _F("FaradayCupI",            854, ">f4",  _,                6, 9, "Faraday cup current, nA"),
    _F("FIBSpecimenI",           858, ">f4",  _,                6, 9, "FIB specimen current, nA"),
    _F("BeamDump1I",             862, ">f4",  _,                6, 9, "beam dump 1 current, nA"),
    _F("SEMSpecimenICurrent",    866, ">f4",  _,                6, 9, "SEM specimen current, nA"),
    _F("MillingYVoltage",        870, ">f4",  _,                6, 9, "milling Y voltage, V (not a z position)"),
    _F("FocusIndex",             874, ">f4",  _,                6, 9, "focus index"),
    _F("FIBSliceNum",            878, ">u4",  _,                6, 9, "FIB slice counter"),
    _F("BeamDump2I",             882, ">f4",  _,                8, 9, "beam dump 2 current, nA"),
    _F("MillingI",               886, ">f4",  _,                8, 9, "milling current, nA"),
    _F("SEMSpecimenI",           980, ">f4",  _,                5, 9, "SEM specimen current, nA (v5; 0 in the v8/v9 files examined)"),
    _F("FileLength",            1000, ">i8",  _,                1, 9, "offset of the trailing recipe blob (NOT trusted: compute from the header)"),
)
# fmt: on


@functools.cache
def fields_for(version: int) -> tuple[HeaderField, ...]:
    """The fields of FileVersion ``version`` in table order (empty for unknown versions)."""
    return tuple(f for f in FIELDS if f.first <= version <= f.last)


@functools.cache
def known_names() -> frozenset[str]:
    """Every field name of any version."""
    return frozenset(f.name for f in FIELDS)
