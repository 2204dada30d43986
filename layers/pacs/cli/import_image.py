"""`pacs import-image IMG… --patient-id ID (-o OUT | --send NODE)`: PNG, JPEG or TIFF images as DICOM
Secondary Capture objects, like img2dcm.

Which SOP class: one image → Secondary Capture Image Storage, or VL Photographic Image Storage when it
is a colour JPEG (a photograph; `-vlp` / `-sc` force one or the other); several images → one
multi-frame object: Multi-frame True Color SC when any image is in colour, else Multi-frame Grayscale
Byte SC (Word SC for 16-bit images); `--each` makes one single-frame object per image instead, all in
one series. Each page of a multi-page TIFF is one image. A baseline JPEG is kept as it is (JPEG
Baseline transfer syntax, Lossy Image Compression 01, never re-encoded) when its samples allow it;
other images go native (Explicit VR Little Endian), alpha dropped, palettes expanded. A new study,
or `--study UID` to add a series to an existing one (the UID kept; when the local archive holds that
study, its patient and study attributes fill those not given, and another patient ID is refused).
Written to OUT (a file; a directory with `--each`), or sent to a node (`--send AE@HOST:PORT` or a
registered AE title) through `pacs store`'s machinery.
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pacs.cli import files

SC = "1.2.840.10008.5.1.4.1.1.7"
VL_PHOTO = "1.2.840.10008.5.1.4.1.1.77.1.4"
MF_BYTE = "1.2.840.10008.5.1.4.1.1.7.2"
MF_WORD = "1.2.840.10008.5.1.4.1.1.7.3"
MF_COLOUR = "1.2.840.10008.5.1.4.1.1.7.4"
PAGE_NUMBER_VECTOR = 0x00182001


def register(sub: Any) -> None:
    p = sub.add_parser("import-image", prefix_chars="-+", help="PNG/JPEG/TIFF images as DICOM Secondary "
                       "Capture",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", type=Path, metavar="IMG", help="PNG, JPEG or TIFF files")
    p.add_argument("--patient-id", required=True, help="Patient ID (0010,0020)")
    p.add_argument("--patient-name", default="", help="Patient's Name, DICOM PN (Family^Given)")
    p.add_argument("--patient-birth-date", default="", metavar="YYYYMMDD", help="Patient's Birth Date")
    p.add_argument("--patient-sex", default="", choices=["", "M", "F", "O"], help="Patient's Sex")
    p.add_argument("--study", dest="study_uid", default=None, metavar="UID",
                   help="add a series to this study (default: a new study); its patient and study "
                   "attributes are taken from the local archive when it holds the study")
    p.add_argument("--study-description", default=None)
    p.add_argument("--accession", default="", help="Accession Number")
    p.add_argument("--series-description", default=None)
    p.add_argument("--series-number", type=int, default=1)
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("-sc", "--sec-capture", dest="kind", action="store_const", const="sc",
                      help="single images as Secondary Capture Image Storage")
    kind.add_argument("-vlp", "--vl-photo", dest="kind", action="store_const", const="vlp",
                      help="single images as VL Photographic Image Storage")
    p.add_argument("--each", action="store_true", help="one object per image (else one multi-frame object)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("-o", "--output", dest="out", type=Path, help="output file (a directory with --each)")
    where.add_argument("--send", dest="node", metavar="NODE", help="AE@HOST:PORT or a registered AE title")
    p.add_argument("-aet", "--aetitle", dest="calling_ae", default=None, help="our calling AE title (--send)")
    p.add_argument("-aec", "--call", dest="called_ae", default=None, help="the called AE title (--send)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="the local archive (--study) and node registry (--send): PACS_DATA_DIR, ./pacs-data")
    p.set_defaults(fn=cmd_import_image)


@dataclass
class Picture:
    """One input image: its samples (rows, columns[, 3]) and, when kept as is, its JPEG bytes."""

    path: Path
    pixels: Any
    jpeg: bytes | None
    photometric_jpeg: str | None  # YBR_FULL_422, YBR_FULL or MONOCHROME2 for a kept JPEG
    from_jpeg: bool
    page: int = 0

    @property
    def name(self) -> str:
        """The output file name of this image alone (`--each`)."""
        return f"{self.path.stem}.dcm" if not self.page else f"{self.path.stem}-{self.page + 1}.dcm"

    @property
    def colour(self) -> bool:
        return bool(self.pixels.ndim == 3)

    @property
    def bits(self) -> int:
        return 16 if self.pixels.dtype.itemsize == 2 else 8


def _samples(im: Any) -> Any:
    """A Pillow image's samples: 16-bit grey kept, other grey as 8 bits, anything else as RGB."""
    import numpy as np

    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        return np.clip(np.asarray(im), 0, 65535).astype(np.uint16)
    if im.mode in ("L", "1", "LA", "La"):
        return np.asarray(im.convert("L"))
    return np.asarray(im.convert("RGB"))


def load(path: Path) -> list[Picture]:
    """An image file read with Pillow (each page of a multi-page TIFF); InputError when it cannot be."""
    from PIL import Image, ImageSequence, JpegImagePlugin, UnidentifiedImageError

    if not path.is_file():
        raise files.InputError("no such file" if not path.exists() else "not a file")
    try:
        with Image.open(path) as im:
            im.load()
            fmt, mode, info = im.format, im.mode, dict(im.info)
            sampling = JpegImagePlugin.get_sampling(im) if fmt == "JPEG" else -1
            if fmt == "TIFF" and getattr(im, "n_frames", 1) > 1:
                pages = [_samples(page) for page in ImageSequence.Iterator(im)]
                return [Picture(path, pixels, None, None, False, n) for n, pixels in enumerate(pages)]
            pixels = _samples(im)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise files.InputError(f"not an image Pillow can read ({exc})") from None
    jpeg, photometric = None, None
    if fmt == "JPEG" and not info.get("progressive") and not info.get("progression"):
        adobe_rgb = "adobe" in info and info.get("adobe_transform") == 0
        if mode == "L":
            jpeg, photometric = path.read_bytes(), "MONOCHROME2"
        elif mode == "RGB" and not adobe_rgb and sampling in (0, 1, 2):
            jpeg, photometric = path.read_bytes(), "YBR_FULL" if sampling == 0 else "YBR_FULL_422"
    return [Picture(path, pixels, jpeg, photometric, fmt == "JPEG")]


def cmd_import_image(args: argparse.Namespace) -> int:
    from pydicom.uid import generate_uid

    from pacs.dicom.uids import is_valid_uid

    if args.study_uid is not None and not is_valid_uid(args.study_uid):
        return files.usage("import-image", f"--study {args.study_uid!r} is not a UID")
    files.quiet()
    pictures: list[Picture] = []
    failed = 0
    for path in args.images:
        try:
            pictures += load(path)
        except files.InputError as exc:
            files.error("import-image", path, exc)
            failed += 1
    if not pictures:
        return files.FAILED
    if not args.each and args.kind and len(pictures) > 1:
        return files.usage("import-image", "-sc/-vlp are for single images (or --each)")
    args.archived = {}
    if args.study_uid is not None:
        archived = archived_study(args)
        if archived is not None and archived.get("PatientID", args.patient_id) != args.patient_id:
            return files.usage("import-image", f"study {args.study_uid} belongs to patient ID "
                               f"{archived['PatientID']!r} in the local archive, not {args.patient_id!r}")
        args.archived = archived or {}
    study = args.study_uid or generate_uid()
    series = generate_uid()
    groups = [[p] for p in pictures] if args.each or len(pictures) == 1 else [pictures]
    objects: list[tuple[str, Any]] = []
    for number, group in enumerate(groups, 1):
        try:
            objects.append((group[0].name, build(group, args, study, series, number)))
        except files.InputError as exc:
            files.error("import-image", group[0].path if len(group) == 1 else "images", exc)
            failed += 1
    if args.node:
        failed += send(objects, args)
    else:
        failed += write(objects, args)
    return files.FAILED if failed else files.OK


def sop_class(group: list[Picture], kind: str | None) -> str:
    """The rule: several images → multi-frame (true colour if any is colour, else byte or word grey);
    one image → VL Photographic if it is a colour JPEG (or -vlp), else Secondary Capture (or -sc)."""
    if len(group) > 1:
        if any(p.colour for p in group):
            return MF_COLOUR
        return MF_WORD if any(p.bits == 16 for p in group) else MF_BYTE
    picture = group[0]
    if kind == "vlp" or (kind is None and picture.colour and picture.from_jpeg):
        return VL_PHOTO
    return SC


#: Patient and study attributes taken from the local archive for `--study UID` (DICOM JSON keys).
ARCHIVED = {"PatientName": "00100010", "PatientID": "00100020", "PatientBirthDate": "00100030",
            "PatientSex": "00100040", "StudyDate": "00080020", "StudyTime": "00080030",
            "AccessionNumber": "00080050", "ReferringPhysicianName": "00080090", "StudyID": "00200010",
            "StudyDescription": "00081030"}


def archived_study(args: argparse.Namespace) -> dict[str, str] | None:
    """The patient and study attributes of `--study` in the local archive — the embedded catalog of
    `--data-dir`, PACS_DATA_DIR or ./pacs-data — or None when there is none or it lacks the study."""
    import sqlite3

    from pacs.backends import open_backend
    from pacs.config import Settings

    settings = Settings.from_env(data_dir=args.data_dir)
    if settings.backend != "embedded" or not (settings.data_dir / "catalog.db").is_file():
        return None
    try:
        backend = open_backend(settings)
        try:
            row = backend.catalog.get_study(settings.partition, args.study_uid)
        finally:
            backend.close()
    except (OSError, sqlite3.Error, ValueError) as exc:
        files.error("import-image", settings.data_dir, f"the local archive is not readable ({exc}); "
                    "the study's attributes are those given")
        return None
    if row is None:
        return None
    found: dict[str, str] = {}
    for keyword, key in ARCHIVED.items():
        values = row.attrs.get(key, {}).get("Value") or []
        value = values[0] if values else None
        if isinstance(value, dict):
            value = value.get("Alphabetic")
        if value not in (None, ""):
            found[keyword] = str(value)
    return found


def build(group: list[Picture], args: argparse.Namespace, study: str, series: str, number: int) -> Any:
    """The Secondary Capture data set (with file meta) of one image, or of several as frames."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.sequence import Sequence
    from pydicom.uid import UID, ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

    cls = sop_class(group, args.kind)
    colour = any(p.colour for p in group)
    bits = max(p.bits for p in group)
    if cls == VL_PHOTO and bits != 8:
        raise files.InputError("VL Photographic Image Storage needs 8-bit samples (use -sc)")
    shapes = {p.pixels.shape[:2] for p in group}
    if len(shapes) > 1:
        sizes = ", ".join(f"{p.path.name} {p.pixels.shape[1]}×{p.pixels.shape[0]}" for p in group)
        raise files.InputError(f"the images of one multi-frame object must be one size (or --each): {sizes}")
    rows, columns = shapes.pop()
    kept = {p.photometric_jpeg for p in group}
    keep_jpeg = all(p.jpeg is not None for p in group) and len(kept) == 1 and bits == 8 \
        and (colour or kept == {"MONOCHROME2"}) and not (cls == VL_PHOTO and kept == {"YBR_FULL"})
    now = datetime.datetime.now()
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.SOPClassUID, ds.SOPInstanceUID = cls, generate_uid()
    ds.StudyDate = now.strftime("%Y%m%d") if args.study_uid is None else ""
    ds.StudyTime = now.strftime("%H%M%S") if args.study_uid is None else ""
    ds.StudyID = ""
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.AccessionNumber = args.accession
    ds.Modality = "XC" if cls == VL_PHOTO else "OT"
    if cls != VL_PHOTO:  # the SC Equipment module
        ds.ConversionType = "WSD"
        ds.SecondaryCaptureDeviceManufacturer = "pacs"
    ds.Manufacturer = ""
    ds.ReferringPhysicianName = ""
    if args.study_description:
        ds.StudyDescription = args.study_description
    if args.series_description:
        ds.SeriesDescription = args.series_description
    ds.PatientName, ds.PatientID = args.patient_name, args.patient_id
    ds.PatientBirthDate, ds.PatientSex = args.patient_birth_date, args.patient_sex
    for keyword, value in args.archived.items():  # the study's own, when the local archive holds it
        if not ds.get(keyword):
            setattr(ds, keyword, value)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.SeriesNumber, ds.InstanceNumber = args.series_number, number
    ds.Laterality = ""  # 2C: a paired body part's side, not known
    ds.PatientOrientation = ""
    ds.BurnedInAnnotation = "YES"  # not known: an imported picture may carry text
    if cls == VL_PHOTO:
        ds.AcquisitionContextSequence = Sequence()
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = kept.pop() if keep_jpeg else "RGB" if colour else "MONOCHROME2"
    if colour:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    if len(group) > 1:
        ds.NumberOfFrames = len(group)
        ds.FrameIncrementPointer = PAGE_NUMBER_VECTOR
        ds.PageNumberVector = list(range(1, len(group) + 1))
        if not colour:
            ds.PresentationLUTShape = "IDENTITY"
            ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    lossy = any(p.from_jpeg for p in group)
    ds.LossyImageCompression = "01" if lossy else "00"
    if lossy:
        ds.LossyImageCompressionMethod = "ISO_10918_1"
    if keep_jpeg:
        ds.PixelData = encapsulate([p.jpeg for p in group if p.jpeg is not None], has_bot=len(group) > 1)
        ds["PixelData"].VR = "OB"
        syntax = JPEGBaseline8Bit
    else:
        frames = [p.pixels if p.colour or not colour else np.stack([p.pixels] * 3, axis=-1) for p in group]
        ds.PixelData = np.stack(frames).astype(np.uint16 if bits == 16 else np.uint8).tobytes()
        ds["PixelData"].VR = "OW" if bits == 16 else "OB"
        syntax = ExplicitVRLittleEndian
    if keep_jpeg:
        ds["PixelData"].is_undefined_length = True
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(cls)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(ds.SOPInstanceUID)
    ds.file_meta.TransferSyntaxUID = syntax
    return ds


def write(objects: list[tuple[str, Any]], args: argparse.Namespace) -> int:
    """Each object to OUT (a file for one object, else a directory of IMG-name.dcm); the failures."""
    failed = 0
    many = len(objects) > 1 or args.each
    if many and args.out.exists() and not args.out.is_dir():
        files.error("import-image", args.out, "is a file: --each writes a directory")
        return len(objects)
    for name, ds in objects:
        out = args.out / name if many or args.out.is_dir() else args.out
        try:
            files.write_part10(ds, out)
        except OSError as exc:
            files.error("import-image", out, f"cannot write it: {exc.strerror or exc}")
            failed += 1
            continue
        print(f"{out}: {ds.file_meta.MediaStorageSOPClassUID.name}, {ds.get('NumberOfFrames', 1)} frame(s), "
              f"{ds.file_meta.TransferSyntaxUID.name}")
    return failed


def send(objects: list[tuple[str, Any]], args: argparse.Namespace) -> int:
    """Each object sent to `args.node` with the store machinery of `pacs store`; the failures."""
    from pacs.cli.scu import _setup, _status_text
    from pacs.dimse.scu import ScuError
    from pacs.dimse.sender import SendError, StoreSender

    options = argparse.Namespace(node=args.node, called_ae=args.called_ae, calling_ae=args.calling_ae,
                                 data_dir=args.data_dir, tls=False, tls_key_cert=None, tls_ca=None,
                                 tls_no_verify=False, max_pdu=1 << 20, timeout=60.0)
    failed = 0
    with tempfile.TemporaryDirectory(prefix="pacs-import-") as tmp:
        paths = []
        for n, (_, ds) in enumerate(objects):
            files.write_part10(ds, Path(tmp) / f"{n}.dcm")
            paths.append((Path(tmp) / f"{n}.dcm", ds))
        try:
            node, scu = _setup(options)
            pairs = [(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for _, ds in paths]
            with StoreSender(node, scu.calling_ae, pairs, max_pdu=scu.max_pdu, timeout=scu.timeout,
                             tls=scu.tls) as sender:
                for path, ds in paths:
                    status = sender.send(path)
                    print(f"{_status_text(status, sender.response)} {ds.SOPInstanceUID} -> {node.ae_title}")
                    failed += status != 0
        except (ScuError, SendError, OSError) as exc:
            files.error("import-image", args.node, exc)
            return len(objects)
    return failed
