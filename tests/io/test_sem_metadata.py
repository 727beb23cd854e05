"""Instrument metadata (Zeiss SmartSEM, Atlas/Fibics, FEI) in the TIFF readers' StackMeta
(stack3d_io.sem_metadata)."""

from __future__ import annotations

import math
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from stack3d_core import PluginHost, parse_config, run
from stack3d_core.testing import check_reader
from stack3d_io.multipage_tiff import MultipageTiffReader
from stack3d_io.sem_metadata import SemMetadataWarning
from stack3d_io.tiff_folder import TiffFolderReader

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata" / "zeiss-fei-sem-tiff"
needs_realdata = pytest.mark.skipif(
    not REALDATA.is_dir(), reason=f"real Zeiss/FEI TIFFs not found at {REALDATA} (../shared is absent)"
)

# -- synthetic Atlas / Fibics fixtures (element names from the spec; our own values) -----

ZPOS = [2.0, 2.013, 2.019, 2.041, 2.049, 2.062]  # µm, irregular like real milling


def slice_xml(z: float | None, index: int = 0, *, scan: bool = True, detector: str = "SE2") -> str:
    """The per-slice Fibics XML of tag 51023 (declaration on its own first line)."""
    scan_xml = (
        "<Scan><Ux>0.005</Ux><Uy>0</Uy><Vx>0</Vx><Vy>0.005</Vy><Dwell>1.5</Dwell></Scan>" if scan else ""
    )
    slice_part = (
        f"<ATLAS3D><Slice><ZIndex>{100 + index}</ZIndex><ZPos>{z}</ZPos>"
        "<SEMCorrectionX>0.25</SEMCorrectionX><SEMCorrectionY>-0.5</SEMCorrectionY></Slice></ATLAS3D>"
        if z is not None else ""
    )
    return (
        '<?xml version="1.0" encoding="iso-8859-1"?>\n'
        '<Fibics version="9.9">\n'
        "  <Application><Name>stack3d test fixture</Name></Application>\n"
        f"  <Image><Width>24</Width><Height>16</Height><Detector>{detector}</Detector>"
        "<Machine>Test CrossBeam</Machine><BoundingBox.Left>2</BoundingBox.Left>"
        "<BoundingBox.Right>20</BoundingBox.Right><BoundingBox.Top>1</BoundingBox.Top>"
        "<BoundingBox.Bottom>15</BoundingBox.Bottom></Image>\n"
        f"  {scan_xml}{slice_part}\n"
        '  <BeamInfo><item name="Ext I">2.5 nA</item><item name="Stage">ok</item></BeamInfo>\n'
        "</Fibics>\n"
    )


NEW_SETUP = """<?xml version="1.0" encoding="iso-8859-1"?>
<ATLAS3D-Setup version="5.3" build="test">
  <JobName>fixture-new</JobName>
  <Settings>
    <Imaging>
      <Detector>SE2</Detector>
      <DetectorB>ESB</DetectorB>
      <DefaultAcquisition>
        <PixelSize>0.005</PixelSize>
        <FOV>0.12</FOV>
        <Interval><Distance><Interval>0.02</Interval></Distance><Slice><Interval>3</Interval></Slice></Interval>
      </DefaultAcquisition>
    </Imaging>
    <KeyFrame><Interval>0.5</Interval></KeyFrame>
  </Settings>
</ATLAS3D-Setup>
"""

OLD_SETUP = """<?xml version="1.0" encoding="iso-8859-1"?>
<ATLAS3D-Setup>
  <JobName>fixture-old \xe9</JobName>
  <Settings>
    <Imaging>
      <FOV>0.24</FOV>
      <Interval>0.015</Interval>
      <Detector>SE2</Detector>
      <DetectorB>ESB</DetectorB>
      <FibicsRasterInfo>
        <Width>24</Width><Height>16</Height>
        <PixelSizeX>0.01</PixelSizeX><PixelSizeY>0.01</PixelSizeY>
        <Dwell>0.7</Dwell><LineAveraging>8</LineAveraging>
      </FibicsRasterInfo>
    </Imaging>
  </Settings>
</ATLAS3D-Setup>
"""


def write_fibics(folder: Path, n: int = 6, *, names: list[str] | None = None, xml=None,
                 setup: str | None = None, setup_dir: Path | None = None) -> list[str]:
    """n slices of 16 x 24 uint8, each with its tag 51023 (``xml(i)``, default ZPOS)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = names or [f"slice_{i:04d}_z={0.01 * i:.4f}um.tif" for i in range(n)]
    make = xml or (lambda i: slice_xml(ZPOS[i], i))
    rng = np.random.default_rng(n)
    for i, name in enumerate(names):
        image = rng.integers(0, 255, size=(16, 24), endpoint=True).astype("uint8")
        tifffile.imwrite(folder / name, image, photometric="minisblack", metadata=None,
                         extratags=[(51023, "s", 0, make(i), True)])
    if setup is not None:
        (setup_dir or folder).joinpath("Atlas3D.a3d-setup").write_bytes(setup.encode("latin-1"))
    return names


# -- real files ----------------------------------------------------------------------------


def _real_folder(tmp_path: Path, name: str) -> Path:
    """A folder holding only a link to the real file (read in place, never copied)."""
    folder = tmp_path / name.replace(".", "_")
    folder.mkdir()
    (folder / name).symlink_to(REALDATA / name)
    return folder


@needs_realdata
@pytest.mark.parametrize(
    ("name", "pixel_um", "source", "microscope", "detector", "eht_kv", "wd_mm", "dwell_us"),
    [
        ("test_tiff_Zeiss_SEM_1k.tif", 2.615, "CZ_SEM:ap_image_pixel_size", "Merlin-61-08", "HE-SE2",
         25.0, 14.808, 0.05),
        # no ap_image_pixel_size; ap_pixel_size (5.825 nm) is a 1024-wide display pixel
        ("test_tiff_Zeiss_SEM_512pix.tif", 0.01165, "CZ_SEM:[''][3]*1024/width", "ULTRA 55-36-06", "InLens",
         5.0, 3.9, None),
    ],
)
def test_zeiss_single_page(tmp_path: Path, name: str, pixel_um: float, source: str, microscope: str,
                           detector: str, eht_kv: float, wd_mm: float, dwell_us: float | None) -> None:
    meta = TiffFolderReader(_real_folder(tmp_path, name)).meta(".")
    x, y, z = meta.pixel_size
    assert x == pytest.approx(pixel_um, rel=1e-3) and y == x and math.isnan(z)
    ins = meta.instrument
    assert ins["pixel_size_source"] == source
    assert (ins["vendor"], ins["microscope"], ins["detector"]) == ("Zeiss", microscope, detector)
    assert ins["eht_kv"] == pytest.approx(eht_kv) and ins["wd_mm"] == pytest.approx(wd_mm)
    assert ins.get("dwell_us") == (pytest.approx(dwell_us) if dwell_us else None)
    assert ins["metadata_formats"] == ["CZ_SEM"] and "ap_wd" in ins["raw"]["CZ_SEM"]
    others = {k: v for k, v in ins["pixel_size_candidates_um"].items() if k != "ap_pixel_size"}
    assert len(others) >= 2 and all(v == pytest.approx(x, rel=1e-3) for v in others.values())
    assert meta.z_positions is None and "z_source" not in ins


@needs_realdata
def test_zeiss_multipage_auriga_stored_pixel_not_display_pixel() -> None:
    reader = MultipageTiffReader(REALDATA / "ZEISS_SEM_multipage.tif")
    meta = reader.meta("images")
    assert meta.n == 2 and meta.shape == (1536, 2048)
    assert meta.pixel_size[0] == pytest.approx(0.01233, rel=1e-4)  # 12.33 nm, not 24.65 nm
    assert meta.pixel_size[1] == meta.pixel_size[0]
    ins = meta.instrument
    assert ins["pixel_size_source"] == "CZ_SEM:ap_image_pixel_size"
    assert ins["pixel_size_candidates_um"]["ap_pixel_size"] == pytest.approx(0.02465)
    assert ins["pixel_size_candidates_um"]["ap_width/width"] == pytest.approx(0.01233, rel=1e-3)
    assert (ins["microscope"], ins["detector"]) == ("Auriga 60-46-17", "InLens")
    assert ins["eht_kv"] == pytest.approx(1.8) and ins["wd_mm"] == pytest.approx(4.5)
    assert ins["dwell_us"] == pytest.approx(0.1) and ins["tilt_correction"] is True
    assert ins["stage_tilt_deg"] == pytest.approx(52.6)
    assert meta.z_positions is None
    opts = MultipageTiffReader.Options(pixel_size=(0.02, 0.02, 0.05))
    assert MultipageTiffReader(reader.path, opts).meta("images").pixel_size == (0.02, 0.02, 0.05)


@needs_realdata
def test_fei_helios(tmp_path: Path) -> None:
    meta = TiffFolderReader(_real_folder(tmp_path, "FEI-Helios-Ebeam-16bits.tif")).meta(".")
    assert meta.shape == (471, 512) and meta.dtype == "uint16"
    assert meta.pixel_size[:2] == pytest.approx((3.3724, 3.3724))  # Scan.PixelWidth 3.3724e-06 m
    ins = meta.instrument
    assert ins["pixel_size_source"] == "FEI:Scan.PixelWidth/PixelHeight"
    assert (ins["vendor"], ins["microscope"], ins["detector"]) == ("FEI", "Helios NanoLab 660", "ETD")
    assert ins["eht_kv"] == pytest.approx(5.0) and ins["wd_mm"] == pytest.approx(4.03466)
    assert ins["dwell_us"] == pytest.approx(10.0) and ins["probe_current_na"] == pytest.approx(0.00625)
    assert ins["databar_rows"] == 29 and ins["raw"]["FEI"]["EBeam"]["HV"] == 5000


# -- synthetic Atlas / Fibics --------------------------------------------------------------


def test_fibics_new_layout_per_slice_z(tmp_path: Path) -> None:
    project = tmp_path / "run"
    for channel in ("SE2", "ESB"):
        write_fibics(project / channel, xml=lambda i, c=channel: slice_xml(ZPOS[i], i, detector=c))
    (project / "Atlas3D.a3d-setup").write_text(NEW_SETUP, encoding="latin-1")
    reader = TiffFolderReader(project)
    assert reader.channels() == ("ESB", "SE2")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        meta = reader.meta("SE2")
    assert meta.z_positions == pytest.approx(ZPOS)  # not the names' 0.00, 0.01, ...
    assert meta.pixel_size == pytest.approx((0.005, 0.005, 0.02))
    ins = meta.instrument
    assert ins["z_source"] == "instrument"
    assert ins["pixel_size_source"] == "FibicsXML:Scan/Ux,Uy,Vx,Vy"
    assert ins["metadata_formats"] == ["FibicsXML", "Atlas3D.a3d-setup"]
    assert (ins["atlas_setup_layout"], ins["job_name"], ins["detectors"]) == ("new", "fixture-new", ["SE2", "ESB"])
    assert ins["slice_interval_um"] == 0.02 and ins["field_of_view_um"] == pytest.approx([0.12, 0.08])
    assert (ins["vendor"], ins["detector"], ins["microscope"]) == ("Zeiss", "SE2", "Test CrossBeam")
    assert ins["dwell_us"] == 1.5 and ins["probe_current_na"] == 2.5
    assert ins["bounding_box_px"] == {"left": 2, "right": 20, "top": 1, "bottom": 15}
    assert ins["z_spacing_median_um"] == pytest.approx(0.013)
    assert ins["raw"]["FibicsXML"]["ATLAS3D/Slice/ZPos"] == "2.0"
    assert ins["raw"]["FibicsXML"]["BeamInfo/item[Ext I]"] == "2.5 nA"
    assert reader.meta("ESB").instrument["detector"] == "ESB"
    again = pickle.loads(pickle.dumps(reader))
    assert again.meta("SE2").z_positions == meta.z_positions


def test_fibics_old_layout_pixel_size_from_setup(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    write_fibics(folder, 4, xml=lambda i: slice_xml(ZPOS[i], i, scan=False), setup=OLD_SETUP)
    meta = TiffFolderReader(folder).meta(".")
    assert meta.pixel_size == pytest.approx((0.01, 0.01, 0.015))
    ins = meta.instrument
    assert ins["pixel_size_source"] == "Atlas3D.a3d-setup:FibicsRasterInfo/PixelSizeX"
    assert ins["atlas_setup_layout"] == "old" and ins["job_name"] == "fixture-old \xe9"
    assert ins["dwell_us"] == 0.7 and ins["line_averaging"] == 8
    assert meta.z_positions == pytest.approx(ZPOS[:4]) and ins["z_source"] == "instrument"


def test_partial_scan_vectors_are_not_a_pixel_size(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    xml = '<?xml version="1.0"?>\n<Fibics><Scan><Ux>0.01</Ux><Vy>0.01</Vy></Scan></Fibics>'
    write_fibics(folder, 2, xml=lambda i: xml)
    meta = TiffFolderReader(folder).meta(".")
    assert meta.pixel_size is None and meta.instrument["z_source"] == "names"


def test_setup_and_slice_pixel_sizes_disagree(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    write_fibics(folder, 2, setup=OLD_SETUP)  # slices say 5 nm, the setup 10 nm
    with pytest.warns(SemMetadataWarning, match=r"slice_0000.*differs from Atlas3D.a3d-setup"):
        meta = TiffFolderReader(folder).meta(".")
    assert meta.pixel_size == pytest.approx((0.005, 0.005, 0.015))


def test_malformed_first_slice_xml_warns_and_falls_back(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    names = write_fibics(folder, 3, xml=lambda i: slice_xml(ZPOS[i], i) if i else "<Fibics><Scan><Ux>0.0")
    with pytest.warns(SemMetadataWarning, match=rf"{names[0]}.*tag 51023.*not well-formed"):
        meta = TiffFolderReader(folder).meta(".")
    assert meta.pixel_size is None
    assert meta.z_positions == pytest.approx([0.0, 0.01, 0.02]) and meta.instrument["z_source"] == "names"
    assert names[0] in meta.instrument["metadata_warnings"][0]


def test_slice_without_zpos_falls_back_to_names(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    broken = {2: "<Fibics><ATLAS3D><Slice><ZPos>", 4: slice_xml(None)}
    names = write_fibics(folder, 5, xml=lambda i: broken.get(i) or slice_xml(ZPOS[i], i))
    with pytest.warns(SemMetadataWarning, match=rf"{names[2]}.*ZPos.*slice 2 of 5"):
        meta = TiffFolderReader(folder).meta(".")
    assert meta.instrument["z_source"] == "names" and meta.z_positions[1] == pytest.approx(0.01)
    assert meta.pixel_size[:2] == pytest.approx((0.005, 0.005))  # the first slice is fine
    assert math.isnan(meta.pixel_size[2])  # no setup file: no slice interval
    off = TiffFolderReader(folder, TiffFolderReader.Options(instrument_z=False)).meta(".")
    assert off.instrument["z_source"] == "names"


def test_malformed_setup_file_warns(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    write_fibics(folder, 2, setup="<ATLAS3D-Setup><Settings>")
    with pytest.warns(SemMetadataWarning, match=r"Atlas3D.a3d-setup.*cannot be read"):
        meta = TiffFolderReader(folder).meta(".")
    assert meta.instrument["z_source"] == "instrument" and "slice_interval_um" not in meta.instrument


def test_plain_folder_has_no_pixel_size(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    folder.mkdir()
    for i in range(3):
        tifffile.imwrite(folder / f"slice_{i:04d}_z={0.02 * i:.4f}um.tif", np.zeros((8, 9), "uint8"))
    meta = TiffFolderReader(folder).meta(".")
    assert meta.pixel_size is None and meta.instrument == {"z_source": "names"}
    assert meta.z_positions == pytest.approx([0.0, 0.02, 0.04])


def test_option_overrides_and_switch_off(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    write_fibics(folder, 3, setup=NEW_SETUP)
    opts = TiffFolderReader.Options(pixel_size=(1, 2, 3))
    meta = TiffFolderReader(folder, opts).meta(".")
    assert meta.pixel_size == (1.0, 2.0, 3.0) and meta.instrument["pixel_size_source"] == "option pixel_size"
    assert meta.instrument["z_source"] == "instrument"
    off = TiffFolderReader(folder, TiffFolderReader.Options(instrument_metadata=False)).meta(".")
    assert off.pixel_size is None and off.instrument == {"z_source": "names"}
    check_reader(TiffFolderReader)
    check_reader(MultipageTiffReader)


def test_multipage_fibics_pages(tmp_path: Path) -> None:
    path = tmp_path / "stack.tif"
    with tifffile.TiffWriter(path) as tw:
        for i in range(4):
            tw.write(np.full((16, 24), i, "uint16"), photometric="minisblack", metadata=None,
                     extratags=[(51023, "s", 0, slice_xml(ZPOS[i], i), True)])
    (tmp_path / "Atlas3D.a3d-setup").write_text(NEW_SETUP, encoding="latin-1")
    meta = MultipageTiffReader(path).meta("images")
    assert meta.z_positions == pytest.approx(ZPOS[:4]) and meta.instrument["z_source"] == "instrument"
    assert meta.pixel_size == pytest.approx((0.005, 0.005, 0.02))


# -- resampling uses the instrument z ------------------------------------------------------


@pytest.fixture(scope="module")
def host() -> PluginHost:
    return PluginHost()


def _resample(folder: Path, host: PluginHost, **params) -> tuple[np.ndarray, dict]:
    import json

    data = {"process_steps": ["resampling"], "resampling": {"dz": 0.02, **params}}
    run(parse_config(data, host, project_dir=folder), host=host)
    out = folder / "process" / "resampling" / "outputs"
    return np.load(out / "zpos_in.npy"), json.loads((out / "stack_meta.json").read_text())


def test_resampling_auto_uses_instrument_z_when_names_do_not_match(tmp_path: Path, host: PluginHost) -> None:
    folder = tmp_path / "p"
    write_fibics(folder, names=[f"img_{i:03d}.tif" for i in range(6)], setup=NEW_SETUP)
    z_in, saved = _resample(folder, host)
    assert z_in == pytest.approx(ZPOS)
    assert saved["z_positions"] == pytest.approx([2.0, 2.02, 2.04, 2.06])
    assert saved["instrument"]["z_source"] == "instrument"
    assert saved["pixel_size"] == pytest.approx([0.005, 0.005, 0.02])


def test_resampling_metadata_source_with_matching_names(tmp_path: Path, host: PluginHost) -> None:
    folder = tmp_path / "p"
    write_fibics(folder)  # names say 0.00 .. 0.05 um, the tags ZPOS
    z_in, _ = _resample(folder, host, z_source="metadata")
    assert z_in == pytest.approx(ZPOS)


def test_resampling_auto_prefers_the_instrument_z(tmp_path: Path, host: PluginHost) -> None:
    """resampling's z_source = "auto" uses the instrument's per-slice z (Fibics ZPos) when the
    reader measured it, even where the names match the policy; "names" keeps PyStack3D's."""
    folder = tmp_path / "p"
    write_fibics(folder)  # names say 0.00 .. 0.05 um, the tags ZPOS
    z_in, _ = _resample(folder, host)
    assert z_in == pytest.approx(ZPOS)
    z_names, _ = _resample(folder, host, z_source="names")
    assert z_names == pytest.approx([0.01 * i for i in range(6)])

def test_pixel_size_from_centimetre_resolution_tags(tmp_path: Path) -> None:
    """What stack3d's writers store comes back; inch-based DPI is ignored."""
    import tifffile

    from stack3d_io.tiff_folder import TiffFolderReader

    folder = tmp_path / "cm"
    folder.mkdir()
    image = np.zeros((8, 8), np.uint8)
    tifffile.imwrite(folder / "a.tif", image, resolution=(1e4 / 0.005, 1e4 / 0.004), resolutionunit="CENTIMETER")
    meta = TiffFolderReader(folder).meta(".")
    assert meta.pixel_size[:2] == pytest.approx((0.005, 0.004))
    assert meta.instrument["pixel_size_source"].startswith("TIFF resolution")
    inch = tmp_path / "inch"
    inch.mkdir()
    tifffile.imwrite(inch / "a.tif", image, resolution=(72, 72), resolutionunit="INCH")
    assert TiffFolderReader(inch).meta(".").pixel_size is None
