import pytest
from pacs.dicom.uids import (
    check_uid,
    is_key_safe,
    is_storage_sop_class,
    is_unknown_sop_class,
    is_valid_uid,
)
from pacs.errors import InvalidUID
from pacs.storage.keys import InstanceKey, check_partition, instance_key, parse_instance_key


@pytest.mark.parametrize("uid", ["1", "1.2.840.10008.1.2.1", "0.0", "1." + "2" * 62])
def test_valid_uids(uid: str) -> None:
    assert is_valid_uid(uid)
    assert check_uid(uid) == uid


@pytest.mark.parametrize(
    "uid",
    ["", "1.2.3.../../x", ".1", "1.2/3", "../etc", "..", ".", "1 2", "1." + "2" * 63, "1.2\x003",
     "1.2\\3", "-1", "１.２", None, 12],
)
def test_unsafe_values_are_refused(uid: object) -> None:
    assert not is_valid_uid(uid)
    assert not is_key_safe(uid)
    for strict in (False, True):
        with pytest.raises(InvalidUID) as err:
            check_uid(uid, "StudyInstanceUID", strict=strict)
        assert "StudyInstanceUID" in err.value.reason


@pytest.mark.parametrize("uid", ["1.2.a", "1..2", "1.", "6f1c2a9e-3b4d-4c5e-8f70-1a2b3c4d5e6f", "ABCDEF0123", "a" * 64])
def test_key_safe_non_uids(uid: str) -> None:
    """Letters, digits, dots and dashes (a GUID, a hash): key-safe, not conformant."""
    assert not is_valid_uid(uid)
    assert is_key_safe(uid)
    assert check_uid(uid) == uid
    with pytest.raises(InvalidUID, match="not a valid UID"):
        check_uid(uid, strict=True)


@pytest.mark.parametrize(("value", "reason"), [
    ("1.2/3", "path separator"), ("1.2\x003", "NUL"), ("1" * 65, "65 characters"), ("", "empty"),
    (".1", "start with a letter or digit"),
])
def test_refusals_say_why(value: str, reason: str) -> None:
    with pytest.raises(InvalidUID, match=reason):
        check_uid(value)


def test_storage_sop_classes_include_retired_ones() -> None:
    assert is_storage_sop_class("1.2.840.10008.5.1.4.1.1.6")  # Ultrasound Image Storage (Retired)
    assert is_storage_sop_class("1.2.840.10008.5.1.4.1.1.5")  # Nuclear Medicine Image Storage (Retired)
    assert is_storage_sop_class("1.2.840.10008.5.1.4.1.1.2")
    assert not is_storage_sop_class("1.2.840.10008.1.20.1")  # Storage Commitment Push Model
    assert not is_storage_sop_class("1.2.840.10008.5.1.4.31")  # Modality Worklist FIND


def test_unknown_sop_classes() -> None:
    assert is_unknown_sop_class("1.3.6.1.4.1.9590.100.1.2.999")  # a private class
    assert is_unknown_sop_class("1.2.840.10008.5.1.4.1.1.999")  # newer than the dictionary
    assert not is_unknown_sop_class("1.2.840.10008.5.1.4.1.1.6")  # a standard storage class
    assert not is_unknown_sop_class("1.2.840.10008.5.1.4.31")  # a known non-storage class
    assert not is_unknown_sop_class("1.2/../x")


def test_check_uid_strips_dicom_padding() -> None:
    assert check_uid("1.2.3\x00") == "1.2.3"
    assert check_uid(b"1.2.3 ") == "1.2.3"


def test_instance_key_layout() -> None:
    assert instance_key("default", "1.2", "1.2.3", "1.2.3.4") == (
        "default/studies/1.2/series/1.2.3/instances/1.2.3.4.dcm"
    )


@pytest.mark.parametrize("bad", ["1.2.3.../../x", "..", "a\x00", "1" * 65])
def test_instance_key_rejects_bad_uids(bad: str) -> None:
    for args in ((bad, "1", "1"), ("1", bad, "1"), ("1", "1", bad)):
        with pytest.raises(InvalidUID):
            instance_key("default", *args)


@pytest.mark.parametrize("partition", ["", "Default", "a/b", "..", "-x", "a" * 64])
def test_partition_names(partition: str) -> None:
    with pytest.raises(ValueError):
        check_partition(partition)


def test_parse_instance_key_round_trip() -> None:
    key = instance_key("tenant-1", "1.2", "1.2.3", "1.2.3.4")
    assert parse_instance_key(key) == InstanceKey("tenant-1", "1.2", "1.2.3", "1.2.3.4")


@pytest.mark.parametrize(
    "key",
    [
        "default/derived/1.2/x.dcm",
        "default/studies/1.2/series/1.3/instances/1.4.json",
        "default/studies/1.2/series/1.3/instances/../1.4.dcm",
        "default/studies/1.2/series/1.3/instances/.a.dcm",
        "default/studies/1.2/series/../instances/1.4.dcm",
        "default/history/1.2/1.3/1.4/0001.dcm",
        "/default/studies/1.2/series/1.3/instances/1.4.dcm",
    ],
)
def test_parse_instance_key_rejects_others(key: str) -> None:
    assert parse_instance_key(key) is None
