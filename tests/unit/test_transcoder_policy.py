"""The transcoder's policy: parsing (TOML, JSON, inline JSON), validation errors, rule matching."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pacs.codecs import EncodeOptions
from pacs.services.transcode_policy import InstanceFacts, PolicyError, Target, load_policy, parse_policy

JLS, JLS_NEAR, RLE, J2K = "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.5", \
    "1.2.840.10008.1.2.4.90"
EXPLICIT = "1.2.840.10008.1.2.1"
CT_CLASS, MR_CLASS = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"

TOML = """
[[rule]]
name = "archive"
modalities = ["ct", "MR"]
copies = [{ syntax = "JPEGLSLossless" }, "1.2.840.10008.1.2.5"]

[[rule]]
name = "preview"
partitions = ["default"]
stored_syntaxes = ["ExplicitVRLittleEndian"]
min_bytes = 100
max_bytes = 1000
copies = [{ syntax = "JPEGLSNearLossless", near_lossless = 3 }, { syntax = "JPEGLSLossless" }]
"""


def facts(**kw: object) -> InstanceFacts:
    base: dict[str, object] = dict(partition="default", modality="CT", sop_class_uid=CT_CLASS,
                                   transfer_syntax_uid=EXPLICIT, size=500)
    base.update(kw)
    return InstanceFacts(**base)  # type: ignore[arg-type]


def test_no_policy_derives_nothing() -> None:
    for source in (None, "", "  "):
        policy = load_policy(source)
        assert not policy and policy.targets(facts()) == []


def test_toml_file_rules_match_and_deduplicate(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(TOML)
    policy = load_policy(str(path))
    assert [r.name for r in policy.rules] == ["archive", "preview"]
    assert policy.targets(facts()) == [Target(JLS), Target(RLE), Target(JLS_NEAR, EncodeOptions(near_lossless=3))]
    # another modality: only the size/syntax rule; too large: nothing
    assert policy.targets(facts(modality="US")) == [Target(JLS_NEAR, EncodeOptions(near_lossless=3)), Target(JLS)]
    assert policy.targets(facts(modality="US", size=5000)) == []
    assert policy.targets(facts(modality="US", partition="other")) == []
    # an instance already stored in JPEG-LS lossless gets no lossless JPEG-LS copy of itself
    assert policy.targets(facts(transfer_syntax_uid=JLS)) == [Target(RLE)]


def test_json_file_and_inline_json(tmp_path: Path) -> None:
    doc = json.dumps({"rule": [{"sop_classes": [MR_CLASS], "copies": [{"syntax": RLE}]}]})
    path = tmp_path / "policy.json"
    path.write_text(doc)
    for source in (str(path), doc):
        policy = load_policy(source)
        assert policy.targets(facts(sop_class_uid=MR_CLASS)) == [Target(RLE)]
        assert policy.targets(facts()) == []


@pytest.mark.parametrize(("doc", "message"), [
    ('{"rule": [{"copies": [{"syntax": "NoSuchSyntax"}]}]}', "unknown transfer syntax 'NoSuchSyntax'"),
    ('{"rule": [{"copies": [{"syntax": "1.2.3.4"}]}]}', "unknown transfer syntax"),
    ('{"rule": [{"name": "x", "copies": []}]}', "rule 'x': `copies` must list"),
    ('{"rule": [{"copies": ["JPEGLSLossless"], "modality": "CT"}]}', "unknown key(s) modality"),
    ('{"rule": [{"copies": [{"syntax": "JPEGLSLossless", "quality": 80}]}]}', "lossless only"),
    ('{"rule": [{"copies": [{"syntax": "JPEGLSNearLossless", "ratio": 10}]}]}', "takes `near_lossless`"),
    ('{"rule": [{"copies": ["RLELossless"], "min_bytes": 10, "max_bytes": 1}]}', "min_bytes is above"),
    ('{"rule": [{"copies": ["RLELossless"], "max_bytes": "big"}]}', "whole number"),
    ('{"rules": 3}', "must be a list"),
    ('{"other": []}', "unknown top-level"),
    ("{not json", "not valid JSON"),
])
def test_invalid_policies_are_refused_with_a_clear_reason(doc: str, message: str) -> None:
    with pytest.raises(PolicyError, match=None) as err:
        load_policy(doc)
    assert message in str(err.value)


def test_a_syntax_no_codec_here_encodes_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from pacs.services import transcode_policy

    monkeypatch.setattr(transcode_policy, "can_encode", lambda syntax: syntax != RLE)
    with pytest.raises(PolicyError, match="no codec installed here can encode RLE Lossless"):
        parse_policy({"rule": [{"copies": [{"syntax": "RLELossless"}]}]})


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read the transcode policy"):
        load_policy(str(tmp_path / "absent.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[[rule]\n")
    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy(str(bad))
