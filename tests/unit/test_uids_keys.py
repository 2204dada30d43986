import pytest
from pacs.dicom.uids import check_uid, is_valid_uid
from pacs.errors import InvalidUID
from pacs.storage.keys import InstanceKey, check_partition, instance_key, parse_instance_key


@pytest.mark.parametrize("uid", ["1", "1.2.840.10008.1.2.1", "0.0", "1." + "2" * 62])
def test_valid_uids(uid: str) -> None:
    assert is_valid_uid(uid)
    assert check_uid(uid) == uid


@pytest.mark.parametrize(
    "uid",
    ["", "1.2.3.../../x", "1.2.a", "1..2", ".1", "1.", "1.2/3", "../etc", "1 2", "1." + "2" * 63,
     "１.２", None, 12],
)
def test_invalid_uids(uid: object) -> None:
    assert not is_valid_uid(uid)
    with pytest.raises(InvalidUID) as err:
        check_uid(uid, "StudyInstanceUID")
    assert "StudyInstanceUID" in err.value.reason


def test_check_uid_strips_dicom_padding() -> None:
    assert check_uid("1.2.3\x00") == "1.2.3"
    assert check_uid(b"1.2.3 ") == "1.2.3"


def test_instance_key_layout() -> None:
    assert instance_key("default", "1.2", "1.2.3", "1.2.3.4") == (
        "default/studies/1.2/series/1.2.3/instances/1.2.3.4.dcm"
    )


@pytest.mark.parametrize("bad", ["1.2.3.../../x", "a", "1" * 65])
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
        "default/studies/1.2/series/1.3/instances/a.dcm",
        "default/history/1.2/1.3/1.4/0001.dcm",
        "/default/studies/1.2/series/1.3/instances/1.4.dcm",
    ],
)
def test_parse_instance_key_rejects_others(key: str) -> None:
    assert parse_instance_key(key) is None
