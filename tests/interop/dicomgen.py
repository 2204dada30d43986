"""A deterministic multi-patient, multi-study, multi-series set of small CT and MR instances.

Two patients, each with a CT study (two series of three instances) and an MR study (one series of
three instances): 4 studies, 6 series, 18 instances of 64×64 16-bit pixels. Every UID is derived
from a fixed prefix and fixed entropy, so each run writes the same files. Most are Explicit VR
Little Endian; one is Implicit VR Little Endian and two are compressed (JPEG-LS lossless and RLE
lossless), so a receiver has to store what it was sent, not one canonical encoding.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSLossless,
    MRImageStorage,
    RLELossless,
    generate_uid,
)

#: pydicom's registered root; with fixed entropy `generate_uid` is a deterministic hash.
UID_PREFIX = "1.2.826.0.1.3680043.8.498."
ROWS = COLUMNS = 64


def uid(*parts: object) -> str:
    return generate_uid(prefix=UID_PREFIX, entropy_srcs=["pacs-interop", *map(str, parts)])


@dataclass(frozen=True, slots=True)
class Instance:
    path: Path
    patient_id: str
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    modality: str
    transfer_syntax: str


@dataclass(frozen=True, slots=True)
class Series:
    uid: str
    modality: str
    number: int
    instances: list[Instance] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Study:
    uid: str
    patient_id: str
    patient_name: str
    date: str
    time: str
    accession: str
    description: str
    series: list[Series] = field(default_factory=list)

    @property
    def modalities(self) -> list[str]:
        return sorted({s.modality for s in self.series})

    @property
    def instances(self) -> list[Instance]:
        return [i for s in self.series for i in s.instances]


@dataclass(frozen=True, slots=True)
class DataSet:
    root: Path
    studies: list[Study]

    @property
    def instances(self) -> list[Instance]:
        return [i for st in self.studies for i in st.instances]

    @property
    def series(self) -> list[Series]:
        return [se for st in self.studies for se in st.series]

    def study(self, patient_id: str, modality: str) -> Study:
        return next(s for s in self.studies if s.patient_id == patient_id and modality in s.modalities)

    @property
    def native_dir(self) -> Path:
        return self.root / "native"

    @property
    def compressed_dir(self) -> Path:
        return self.root / "compressed"

    def by_syntax(self, transfer_syntax: str) -> list[Instance]:
        return [i for i in self.instances if i.transfer_syntax == transfer_syntax]


#: (PatientID, PatientName, BirthDate, Sex) of each patient.
PATIENTS = [
    ("PAT001", "Doe^John", "19600214", "M"),
    ("PAT002", "Smith^Jane^Q", "19750830", "F"),
]
#: (patient index, modality, StudyDate, StudyTime, description, series count) of each study.
STUDIES = [
    (0, "CT", "20240115", "083012", "CT CHEST W/O CONTRAST", 2),
    (0, "MR", "20240320", "141500", "MR BRAIN", 1),
    (1, "CT", "20240610", "101045", "CT ABDOMEN", 2),
    (1, "MR", "20241105", "163000", "MR KNEE LEFT", 1),
]
INSTANCES_PER_SERIES = 3
COMPRESSED = frozenset({JPEGLSLossless, RLELossless})
#: (study index, series number, instance number) → the transfer syntax it is written in.
SPECIAL_SYNTAXES = {
    (0, 2, 3): JPEGLSLossless,
    (2, 1, 1): ImplicitVRLittleEndian,
    (3, 1, 2): RLELossless,
}


def pixels(seed: int) -> np.ndarray:
    """A smooth 12-bit ramp plus deterministic noise: compressible, but not trivially."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:ROWS, 0:COLUMNS]
    base = (x * 31 + y * 17 + seed * 101) % 4096
    noise = rng.integers(0, 16, size=(ROWS, COLUMNS))
    return ((base + noise) % 4096).astype(np.uint16)


def build_instance(study: Study, series: Series, number: int, *, patient: tuple[str, str, str, str],
                   seed: int) -> Dataset:
    patient_id, patient_name, birth_date, sex = patient
    sop_class = CTImageStorage if series.modality == "CT" else MRImageStorage
    sop_uid = uid(study.uid, series.uid, number)
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study.date
    ds.StudyTime = study.time
    ds.SeriesTime = ds.ContentTime = f"{int(study.time) + series.number * 100 + number:06d}"
    ds.AccessionNumber = study.accession
    ds.Modality = series.modality
    ds.Manufacturer = "PACS-INTEROP"
    ds.InstitutionName = "Test Hospital"
    ds.ReferringPhysicianName = "Welby^Marcus"
    ds.StudyDescription = study.description
    ds.SeriesDescription = f"{study.description} series {series.number}"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = birth_date
    ds.PatientSex = sex
    ds.BodyPartExamined = "CHEST" if series.modality == "CT" else "HEAD"
    if series.modality == "CT":
        ds.SliceThickness = "2.5"
        ds.KVP = "120"
    else:
        ds.MagneticFieldStrength = "1.5"
        ds.EchoTime = "12"
        ds.RepetitionTime = "500"
    ds.StudyInstanceUID = study.uid
    ds.SeriesInstanceUID = series.uid
    ds.StudyID = study.accession[-4:]
    ds.SeriesNumber = series.number
    ds.InstanceNumber = number
    ds.ImagePositionPatient = [-160.0, -160.0, float(number) * 2.5]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.FrameOfReferenceUID = uid(study.uid, "frame")
    ds.SliceLocation = float(number) * 2.5
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ROWS
    ds.Columns = COLUMNS
    ds.PixelSpacing = [0.5, 0.5]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if series.modality == "CT":
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    ds.PixelData = pixels(seed).tobytes()
    return ds


def write_part10(ds: Dataset, path: Path, transfer_syntax: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "PACS_INTEROP"
    ds.file_meta = meta
    if transfer_syntax == JPEGLSLossless:
        ds.compress(JPEGLSLossless)
    elif transfer_syntax == RLELossless:
        ds.compress(RLELossless, encoding_plugin="pylibjpeg")
    else:
        meta.TransferSyntaxUID = UID(transfer_syntax)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def generate(root: Path) -> DataSet:
    """Write the set and describe it: uncompressed files under `root/native/`, compressed ones under
    `root/compressed/` (each `{PatientID}/study{i}/series{n}/{n}.dcm`)."""
    studies: list[Study] = []
    seed = 0
    for s_index, (p_index, modality, date, time, description, n_series) in enumerate(STUDIES):
        patient = PATIENTS[p_index]
        study = Study(
            uid=uid("study", s_index), patient_id=patient[0], patient_name=patient[1], date=date,
            time=time, accession=f"ACC{2024_000 + s_index * 7:07d}", description=description,
        )
        for number in range(1, n_series + 1):
            series = Series(uid=uid(study.uid, "series", number), modality=modality, number=number)
            for inst in range(1, INSTANCES_PER_SERIES + 1):
                seed += 1
                ds = build_instance(study, series, inst, patient=patient, seed=seed)
                ts = SPECIAL_SYNTAXES.get((s_index, number, inst), ExplicitVRLittleEndian)
                where = root / ("compressed" if ts in COMPRESSED else "native")
                path = where / patient[0] / f"study{s_index}" / f"series{number}" / f"{inst}.dcm"
                write_part10(ds, path, ts)
                series.instances.append(Instance(
                    path=path, patient_id=patient[0], study_uid=study.uid, series_uid=series.uid,
                    sop_uid=ds.SOPInstanceUID, sop_class_uid=ds.SOPClassUID, modality=modality,
                    transfer_syntax=ts,
                ))
            study.series.append(series)
        studies.append(study)
    return DataSet(root, studies)



def write_extra_instance(series: Series, study: Study, number: int, path: Path,
                         transfer_syntax: str = ExplicitVRLittleEndian, **changes: object) -> Instance:
    """One more instance of an existing series (`changes` are attributes to set), as a Part 10 file."""
    patient = next((p for p in PATIENTS if p[0] == study.patient_id),
                   (study.patient_id, study.patient_name, "19700101", "O"))
    ds = build_instance(study, series, number, patient=patient, seed=1000 + number)
    for keyword, val in changes.items():
        setattr(ds, keyword, val)
    write_part10(ds, path, transfer_syntax)
    return Instance(path=path, patient_id=study.patient_id, study_uid=study.uid, series_uid=series.uid,
                    sop_uid=ds.SOPInstanceUID, sop_class_uid=ds.SOPClassUID, modality=series.modality,
                    transfer_syntax=transfer_syntax)


def new_study(key: str, *, patient_index: int = 0, modality: str = "CT", date: str = "20240701",
              patient_id: str | None = None) -> tuple[Study, Series]:
    """A study with one (empty) series, not in the generated set: its UIDs derive from `key`."""
    pid, name, _birth, _sex = PATIENTS[patient_index]
    study = Study(uid=uid("extra-study", key), patient_id=patient_id or pid, patient_name=name, date=date,
                  time="120000", accession=f"X{zlib.crc32(key.encode()):010d}", description=f"EXTRA {key}")
    series = Series(uid=uid("extra-series", key), modality=modality, number=1)
    study.series.append(series)
    return study, series
