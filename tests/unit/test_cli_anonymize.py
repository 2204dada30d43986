"""`pacs anonymize` and `pacs deid secret|reidentify`: what the commands do with files and trees (outputs
written where they belong, counts, reasons, exit statuses, originals untouched), not the Annex E actions
(the engine's tests)."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import stat
from pathlib import Path

import boto3
import pydicom
import pydicom.data
import pytest
from moto import mock_aws
from pacs.cli.main import main
from pacs.deid.crosswalk import Crosswalk
from pacs.deid.secrets import FileSecret, clear_cache, project_key
from pacs.storage.filesystem import FilesystemBlobStore
from pacs.storage.s3 import S3BlobStore

from tests.unit.aws import fake_aws_credentials

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
#: Files the de-identifier takes whatever its state: CT, MR (native, RLE, JPEG 2000), and US / SC images.
PLAIN = ["CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"]
BURN_IN = ["examples_ybr_color.dcm", "SC_rgb_rle.dcm"]  # US (JPEG, 30 frames), OT secondary capture


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("PACS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def pacs(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def tree(root: Path) -> Path:
    """IN/: the plain files at the top, the burn-in ones and a text file in sub/, a hidden file."""
    src = root / "in"
    (src / "sub" / "deeper").mkdir(parents=True)
    for name in PLAIN:
        shutil.copy(TEST_FILES / name, src / name)
    for name in BURN_IN:
        shutil.copy(TEST_FILES / name, src / "sub" / name)
    (src / "sub" / "deeper" / "notes.txt").write_text("not DICOM\n")
    (src / ".hidden.dcm").write_bytes(b"ignored")
    return src


def digests(root: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_tree_with_clean_pixel_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tree(tmp_path)
    before = digests(src)
    out = tmp_path / "out"
    code, stdout, stderr = pacs(capsys, "anonymize", src, "-o", out, "--option", "clean-pixel-data",
                                "--data-dir", tmp_path / "data", "--progress")
    assert code == 1  # held back
    assert f"de-identified {len(PLAIN)}, held back 2, failed 0, skipped 1 (not DICOM, DICOMDIR)" in stdout
    assert f"held back  {src / 'sub' / 'examples_ybr_color.dcm'}: modality US may carry burned-in" in stdout
    assert f"held back  {src / 'sub' / 'SC_rgb_rle.dcm'}:" in stdout
    assert f"{len(PLAIN) + len(BURN_IN) + 1}/{len(PLAIN) + len(BURN_IN) + 1}" in stderr  # the bar ran to the end
    assert digests(src) == before  # originals byte-identical, not even touched
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == sorted(PLAIN)  # the tree mirrored; nothing of the held back, the skipped or hidden
    for name in PLAIN:
        original = pydicom.dcmread(src / name)
        copy = (out / name).read_bytes()
        assert copy[:128] == bytes(128) and copy[128:132] == b"DICM"
        assert str(original.PatientName).encode() not in copy
        assert pydicom.dcmread(out / name).SOPClassUID == original.SOPClassUID
    secret = tmp_path / "data" / "deid" / "secret.key"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600  # made on first use


def test_every_pydicom_test_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """pydicom's whole test set (DICOM and not, odd and broken files) as one tree: every file accounted
    for, nothing written for what was held back, failed or skipped, the originals untouched."""
    src = tmp_path / "in"
    names: dict[str, Path] = {}
    for path in map(Path, pydicom.data.get_testdata_files()):
        if not path.is_file():
            continue
        rel = Path(path.parent.name) / path.name  # some names repeat in two folders
        names[str(rel)] = path
        (src / rel.parent).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, src / rel)
    before = digests(src)
    out = tmp_path / "out"
    code, stdout, stderr = pacs(capsys, "anonymize", src, "-o", out, "--option", "clean-pixel-data",
                                "--data-dir", tmp_path / "data", "--progress")
    counts = re.match(r"de-identified (\d+), held back (\d+), failed (\d+), skipped (\d+) ", stdout)
    assert counts, stdout
    done, held, failed, skipped = map(int, counts.groups())
    assert done + held + failed + skipped == len(names)
    dicomdirs = {rel for rel, p in names.items() if p.name.startswith("DICOMDIR")
                 and p.read_bytes()[128:132] == b"DICM"}
    assert dicomdirs and skipped == len(dicomdirs) + sum(
        1 for p in names.values() if p.read_bytes()[128:132] != b"DICM")
    assert code == (1 if held or failed else 0)
    assert f"{len(names)}/{len(names)}" in stderr
    held_lines = [line for line in stdout.splitlines() if line.startswith("held back ")]
    failed_lines = [line for line in stdout.splitlines() if line.startswith("failed ")]
    assert len(held_lines) == held and len(failed_lines) == failed
    assert any("examples_ybr_color.dcm: modality US may carry burned-in annotation" in line
               for line in held_lines)
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert len(written) == done
    not_written = {line.split(": ", 1)[0].split(str(src) + os.sep, 1)[1] for line in held_lines + failed_lines}
    assert not written & not_written and not written & dicomdirs
    assert digests(src) == before


def test_basic_profile_does_not_hold_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tree(tmp_path)
    (src / "sub" / "deeper" / "notes.txt").unlink()
    code, stdout, _ = pacs(capsys, "anonymize", src, "-o", tmp_path / "out", "--data-dir", tmp_path / "data",
                           "--no-progress")
    assert code == 0, stdout
    assert f"de-identified {len(PLAIN) + len(BURN_IN)}, held back 0, failed 0, skipped 0" in stdout
    assert (tmp_path / "out" / "sub" / "examples_ybr_color.dcm").is_file()


def test_pixel_rules_cover_the_burn_in_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tree(tmp_path)
    rules = tmp_path / "pixels.toml"
    rules.write_text('[[rule]]\nmodality = "US"\nmanufacturer = "sonosite*"\nregions = [[0, 0, 320, 30]]\n'
                     '[[rule]]\nmodality = "OT"\nrows = 100\ncolumns = 100\nregions = []\n')
    code, stdout, _ = pacs(capsys, "anonymize", src / "sub", "-o", tmp_path / "out", "--pixel-rules", rules,
                           "--data-dir", tmp_path / "data")
    assert code == 0, stdout
    assert "de-identified 2, held back 0, failed 0, skipped 1" in stdout
    code, stdout, stderr = pacs(capsys, "anonymize", src / "sub", "-o", tmp_path / "out2", "--pixel-rules",
                                tmp_path / "absent.toml", "--data-dir", tmp_path / "data")
    assert code == 2 and "absent.toml" in stderr


def test_same_secret_same_pseudonyms(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "ct.dcm"
    shutil.copy(TEST_FILES / "CT_small.dcm", src)
    data = tmp_path / "data"

    def study(out: str, *extra: str) -> str:
        code, stdout, _ = pacs(capsys, "anonymize", src, "-o", tmp_path / out, "--data-dir", data, *extra)
        assert code == 0, stdout
        return str(pydicom.dcmread(tmp_path / out).StudyInstanceUID)

    first = study("a.dcm", "--project", "trial-7")
    assert study("b.dcm", "--project", "trial-7") == first
    assert study("c.dcm", "--project", "trial-8") != first
    assert first != str(pydicom.dcmread(src).StudyInstanceUID)
    other = tmp_path / "other.key"
    other.write_bytes(bytes(range(40)))
    other.chmod(0o600)
    assert study("d.dcm", "--project", "trial-7", "--secret-file", str(other)) != first


def test_layout_by_uids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tree(tmp_path)
    out = tmp_path / "out"
    code, stdout, _ = pacs(capsys, "anonymize", src, "-o", out, "--layout", "uids", "--data-dir",
                           tmp_path / "data")
    # the three MR_small files are one instance (one SOP Instance UID) in three syntaxes: written once
    assert code == 1 and "de-identified 4, held back 0, failed 2" in stdout
    assert stdout.count("was already written for another input of this run") == 2
    written = list(out.rglob("*.dcm"))
    assert len(written) == 4
    for path in written:
        ds = pydicom.dcmread(path)
        assert path.relative_to(out).parts == (ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                               f"{ds.SOPInstanceUID}.dcm")


def test_existing_outputs_and_single_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tree(tmp_path)
    out, data = tmp_path / "out", tmp_path / "data"
    assert pacs(capsys, "anonymize", src, "-o", out, "--data-dir", data)[0] == 0
    code, stdout, _ = pacs(capsys, "anonymize", src, "-o", out, "--data-dir", data)
    assert code == 1 and f"failed {len(PLAIN) + len(BURN_IN)}," in stdout and "--overwrite replaces it" in stdout
    assert pacs(capsys, "anonymize", src, "-o", out, "--data-dir", data, "--overwrite")[0] == 0
    # a file named directly that is not DICOM fails (one found in a tree is skipped)
    code, stdout, _ = pacs(capsys, "anonymize", src / "sub" / "deeper" / "notes.txt", "-o", tmp_path / "x",
                           "--data-dir", data)
    assert code == 1 and "not a DICOM file" in stdout and not (tmp_path / "x").exists()
    code, stdout, _ = pacs(capsys, "anonymize", TEST_FILES / "dicomdirtests" / "DICOMDIR", "-o", tmp_path / "x",
                           "--data-dir", data)
    assert code == 1 and "a DICOMDIR, not an instance" in stdout and not (tmp_path / "x").exists()
    code, stdout, _ = pacs(capsys, "anonymize", tmp_path / "absent.dcm", "-o", tmp_path / "y", "--data-dir", data)
    assert code == 1 and "failed 1" in stdout
    # two inputs written to the same place: the second fails rather than replacing the first
    code, stdout, _ = pacs(capsys, "anonymize", src / "CT_small.dcm", src / "CT_small.dcm", "-o", tmp_path / "z",
                           "--data-dir", data)
    assert code == 1 and "already written for another input" in stdout


@pytest.mark.parametrize("case", ["no-out", "out-in-in", "out-is-in", "out-is-file", "profile", "option",
                                  "project", "secret-file", "no-data-dir", "weak-secret"])
def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    src = tree(tmp_path)
    before = digests(src)
    data = ["--data-dir", str(tmp_path / "data")]
    weak = tmp_path / "weak.key"
    weak.write_bytes(b"\x01" * 40)
    weak.chmod(0o600)
    (tmp_path / "file").write_bytes(b"x")
    argv = {
        "no-out": ["anonymize", src, *data],
        "out-in-in": ["anonymize", src, "-o", src / "sub" / "out", *data],
        "out-is-in": ["anonymize", src / "CT_small.dcm", "-o", src / "CT_small.dcm", *data],
        "out-is-file": ["anonymize", src, "-o", tmp_path / "file", *data],
        "profile": ["anonymize", src, "-o", tmp_path / "out", "--profile", "strict", *data],
        "option": ["anonymize", src, "-o", tmp_path / "out", "--option", "retain-everything", *data],
        "project": ["anonymize", src, "-o", tmp_path / "out", "--project", "../up", *data],
        "secret-file": ["anonymize", src, "-o", tmp_path / "out", "--secret-file", tmp_path / "absent"],
        "no-data-dir": ["anonymize", src, "-o", tmp_path / "out"],  # ./pacs-data absent, none named
        "weak-secret": ["anonymize", src, "-o", tmp_path / "out", "--secret-file", weak],
    }[case]
    code, _, stderr = pacs(capsys, *argv)
    assert code == 2 and stderr.startswith("pacs anonymize: "), stderr
    assert not (tmp_path / "out").exists() and not (src / "sub" / "out").exists()
    assert digests(src) == before


def test_secret_from_the_environment(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    src = tree(tmp_path)
    key = tmp_path / "env.key"
    key.write_text(base64.b64encode(bytes(range(50, 90))).decode())
    key.chmod(0o600)
    monkeypatch.setenv("PACS_DEID_SECRET", str(key))
    code, stdout, _ = pacs(capsys, "anonymize", src / "CT_small.dcm", "-o", tmp_path / "a.dcm")
    assert code == 0, stdout
    assert not (tmp_path / "pacs-data").exists()  # no data dir made
    code, stdout, _ = pacs(capsys, "anonymize", src / "CT_small.dcm", "-o", tmp_path / "b.dcm",
                           "--secret-file", key)
    assert code == 0
    assert pydicom.dcmread(tmp_path / "a.dcm").SOPInstanceUID == pydicom.dcmread(tmp_path / "b.dcm").SOPInstanceUID
    monkeypatch.setenv("PACS_DEID_SECRET", str(tmp_path / "absent.key"))
    code, _, stderr = pacs(capsys, "anonymize", src / "CT_small.dcm", "-o", tmp_path / "c.dcm")
    assert code == 2 and "absent.key" in stderr


def test_deid_secret_made_once_never_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    code, stdout, _ = pacs(capsys, "deid", "secret", "--data-dir", data)
    path = data / "deid" / "secret.key"
    assert code == 0 and str(path.resolve()) in stdout and "(made now)" in stdout
    value = path.read_bytes()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    code, again, _ = pacs(capsys, "deid", "secret", "--data-dir", data)
    assert code == 0 and "(made now)" not in again and path.read_bytes() == value
    for shown in (value.hex(), base64.b64encode(value).decode(), repr(value)):
        assert shown not in stdout + again
    code, _, stderr = pacs(capsys, "deid", "secret")  # no ./pacs-data, none named
    assert code == 2 and "--data-dir" in stderr and not (tmp_path / "pacs-data").exists()


def test_deid_reidentify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    assert pacs(capsys, "deid", "reidentify", "PID-1", "--project", "trial-7", "--data-dir", data)[0] == 2
    assert pacs(capsys, "deid", "secret", "--data-dir", data)[0] == 0
    key = project_key(FileSecret(data / "deid" / "secret.key").master(), "trial-7")
    crosswalk = Crosswalk(FilesystemBlobStore(data / "objects"), "default", "trial-7", key)
    crosswalk.record("PatientID", "HOSP-0012345", "PID-1")
    crosswalk.record("PatientName", "Doe^John", "PID-1")
    code, stdout, _ = pacs(capsys, "deid", "reidentify", "PID-1", "--project", "trial-7", "--data-dir", data)
    assert code == 0 and stdout == "PatientID\tHOSP-0012345\nPatientName\tDoe^John\n"
    code, _, stderr = pacs(capsys, "deid", "reidentify", "PID-2", "--project", "trial-7", "--data-dir", data)
    assert code == 1 and "not in the crosswalk" in stderr
    code, stdout, _ = pacs(capsys, "deid", "reidentify", "PID-1", "--project", "trial-8", "--data-dir", data)
    assert code == 1 and stdout == ""  # another project's crosswalk


def test_crosswalk_flag_opens_the_data_dir_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tree(tmp_path)
    data = tmp_path / "data"
    code, stdout, _ = pacs(capsys, "anonymize", src / "CT_small.dcm", "-o", tmp_path / "a.dcm", "--crosswalk",
                           "--data-dir", data)
    assert code == 0 and "crosswalk" in stdout
    assert (data / "objects").is_dir()


def test_deid_commands_on_aws(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The aws backend: the secret from Secrets Manager, the crosswalk in the exports bucket (moto)."""
    fake_aws_credentials(monkeypatch)
    clear_cache()
    master = bytes(range(100, 140))
    with mock_aws():
        arn = boto3.client("secretsmanager", region_name="us-east-1").create_secret(
            Name="pacs-deid", SecretBinary=master)["ARN"]
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="exports")
        monkeypatch.setenv("PACS_BACKEND", "aws")
        monkeypatch.setenv("PACS_DEID_SECRET", arn)
        monkeypatch.setenv("PACS_EXPORTS_BUCKET", "exports")
        code, stdout, _ = pacs(capsys, "deid", "secret")
        assert code == 0 and arn in stdout and master.hex() not in stdout
        store = S3BlobStore("exports", region="us-east-1")
        Crosswalk(store, "default", "trial-7", project_key(master, "trial-7")).record(
            "patient_id", "HOSP-77", "PID-77")
        code, stdout, _ = pacs(capsys, "deid", "reidentify", "PID-77", "--project", "trial-7")
        assert code == 0 and stdout == "patient_id\tHOSP-77\n"
        src = tmp_path / "ct.dcm"
        shutil.copy(TEST_FILES / "CT_small.dcm", src)
        code, stdout, _ = pacs(capsys, "anonymize", src, "-o", tmp_path / "out.dcm", "--crosswalk")
        assert code == 0, stdout
        assert not (tmp_path / "pacs-data").exists()  # nothing local on the aws backend
    clear_cache()
