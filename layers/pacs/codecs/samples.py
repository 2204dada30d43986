"""Small synthetic images of every kind the codecs must handle, as Part 10 data sets in Explicit VR Little
Endian: monochrome 8/12/16-bit signed and unsigned, RGB colour-by-pixel and colour-by-plane, YBR_FULL, palette
colour, several frames. Deterministic (a fixed seed), smooth with some noise, spanning the whole range."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

#: Multi-frame samples: a multi-frame SOP class (gdcm refuses several frames in plain Secondary Capture).
MULTIFRAME_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.3.1"  # Ultrasound Multi-frame Image Storage


@dataclass(frozen=True, slots=True)
class Kind:
    name: str
    samples: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    photometric: str
    planar: int = 0


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("mono8", 1, 8, 8, False, "MONOCHROME2"),
    Kind("mono8s", 1, 8, 8, True, "MONOCHROME2"),
    Kind("mono12", 1, 16, 12, False, "MONOCHROME2"),
    Kind("mono12s", 1, 16, 12, True, "MONOCHROME2"),
    Kind("mono16", 1, 16, 16, False, "MONOCHROME1"),
    Kind("mono16s", 1, 16, 16, True, "MONOCHROME2"),
    Kind("rgb8", 3, 8, 8, False, "RGB"),
    Kind("rgb8planar", 3, 8, 8, False, "RGB", planar=1),
    Kind("ybr8", 3, 8, 8, False, "YBR_FULL"),
    Kind("palette8", 1, 8, 8, False, "PALETTE COLOR"),
)}


def pixels(kind: Kind, frames: int = 2, rows: int = 64, columns: int = 64, seed: int = 12) -> np.ndarray:
    """The frames (frames, rows, columns[, samples]) of a kind, colour-by-pixel."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:columns].astype(np.float64)
    lo = -(1 << (kind.bits_stored - 1)) if kind.signed else 0
    hi = (1 << (kind.bits_stored - 1)) - 1 if kind.signed else (1 << kind.bits_stored) - 1
    out = []
    for f in range(frames):
        planes = []
        for s in range(kind.samples):
            base = 0.5 + 0.45 * np.sin((x + 7 * f + 11 * s) / 9.0) * np.cos((y - 5 * s) / 13.0)
            base[rows // 4:rows // 2, columns // 4:columns // 2] = 0.95 - 0.1 * s  # a flat block
            noisy = base * (hi - lo) + lo + rng.normal(0, (hi - lo) / 200, (rows, columns))
            plane = np.clip(np.rint(noisy), lo, hi)
            plane[0, 0], plane[-1, -1] = lo, hi  # the extremes of the range
            planes.append(plane)
        out.append(np.stack(planes, -1) if kind.samples > 1 else planes[0])
    dtype = f"{'i' if kind.signed else 'u'}{kind.bits_allocated // 8}"
    return np.stack(out).astype(dtype)


def dataset(name: str, frames: int = 2, rows: int = 64, columns: int = 64) -> Dataset:
    """A data set (file meta included) holding `pixels()` of the kind `name`: Secondary Capture for one
    frame, Ultrasound Multi-frame for several."""
    kind = KINDS[name]
    arr = pixels(kind, frames, rows, columns)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = MULTIFRAME_SOP_CLASS if frames > 1 else SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.Modality = "CODECS", "Codec^Sample", "OT"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SamplesPerPixel = kind.samples
    ds.PhotometricInterpretation = kind.photometric
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = kind.bits_allocated, kind.bits_stored, kind.bits_stored - 1
    ds.PixelRepresentation = int(kind.signed)
    if frames > 1:
        ds.NumberOfFrames = frames
    if kind.samples > 1:
        ds.PlanarConfiguration = kind.planar
        if kind.planar:
            arr = np.moveaxis(arr, -1, 1)  # (frames, samples, rows, columns)
    if kind.photometric == "PALETTE COLOR":
        ramp = np.arange(256, dtype="<u2") * 257
        for colour, lut in (("Red", ramp), ("Green", ramp[::-1]), ("Blue", (ramp // 2))):
            setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
            setattr(ds, f"{colour}PaletteColorLookupTableData", lut.astype("<u2").tobytes())
    ds.PixelData = arr.tobytes()
    ds["PixelData"].VR = "OB" if kind.bits_allocated == 8 else "OW"
    ds.set_original_encoding(False, True, None)
    return ds
