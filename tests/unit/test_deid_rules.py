"""The anonymizer's rules: TOML or JSON, file or text; what they match; every refusal names the rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pacs.deid import Option
from pacs.services.deid_rules import InstanceFacts, RulesError, describe, load_rules

TOML = """
[[rule]]
name = "trial-7"
partitions = ["trial-7"]
calling_aes = ["RESEARCH_CT"]
modalities = ["ct", "MR"]
profile = "basic"
options = ["retain-longitudinal-modified-dates"]
destination = { partition = "trial-7-deid" }

[[rule]]
name = "to-exports"
partitions = "trial-8"
trigger = "StudyUpdated"
sop_classes = ["1.2.840.10008.5.1.4.1.1.2"]
profile = "research+retain-uids"
project = "p8"
destination = { exports = true }
"""


def rule(**overrides: object) -> str:
    base: dict[str, object] = {"name": "r", "partitions": ["a"], "destination": {"partition": "b"}}
    base.update(overrides)
    return json.dumps({"rule": [{k: v for k, v in base.items() if v is not None}]})


def test_toml_file_and_json_text_give_the_same_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(TOML)
    rules = load_rules(path)
    import tomllib

    assert load_rules(json.dumps(tomllib.loads(TOML))) == rules
    (json_file := tmp_path / "rules.json").write_text(json.dumps(tomllib.loads(TOML)))
    assert load_rules(str(json_file)) == rules
    first, second = rules.rules
    assert first.name == "trial-7" and first.project == "trial-7" and first.to_partition == "trial-7-deid"
    assert first.trigger == "InstanceStored" and first.modalities == {"CT", "MR"}
    assert Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in first.profile
    assert second.trigger == "StudyUpdated" and second.to_partition is None and second.project == "p8"
    assert Option.RETAIN_UIDS in second.profile and second.partitions == {"trial-8"}
    assert rules.partitions == {"trial-7", "trial-8"}
    assert [r.name for r in rules.for_trigger("InstanceStored", "trial-7")] == ["trial-7"]
    assert rules.for_trigger("StudyUpdated", "trial-7") == []
    lines = list(describe(rules))
    assert lines[0] == ("trial-7: on InstanceStored, partition trial-7, from RESEARCH_CT, modality CT|MR -> "
                        "basic+retain-longitudinal-modified-dates (project trial-7) into partition trial-7-deid")
    assert lines[1].endswith("into exports")
    assert not load_rules("") and not load_rules(None)


def test_matching_needs_every_condition() -> None:
    (r, _) = load_rules(json.dumps(__import__("tomllib").loads(TOML))).rules
    assert r.matches(InstanceFacts("trial-7", "RESEARCH_CT", "ct", "1.2"))
    assert r.matches(InstanceFacts("trial-7", "RESEARCH_CT  ", "MR", "1.2"))
    assert not r.matches(InstanceFacts("trial-7", "OTHER", "CT", "1.2"))
    assert not r.matches(InstanceFacts("trial-7", "", "CT", "1.2"))
    assert not r.matches(InstanceFacts("trial-7", "RESEARCH_CT", "US", "1.2"))
    assert not r.matches(InstanceFacts("trial-8", "RESEARCH_CT", "CT", "1.2"))


@pytest.mark.parametrize(("text", "message"), [
    (rule(colour="red"), "rule 'r': unknown key(s) colour"),
    (rule(partitions=None), "rule 'r': `partitions` is required"),
    (rule(partitions=["Not/Valid"]), "rule 'r': partition 'Not/Valid'"),
    (rule(name=None), "rule 1: `name` is required"),
    (rule(name="Bad Name"), "`name` is required: lower-case"),
    (rule(trigger="StudyStable"), "trigger 'StudyStable': use InstanceStored or StudyUpdated"),
    (rule(profile="strict"), "unknown profile 'strict'"),
    (rule(options=["retain-everything"]), "unknown option 'retain-everything'"),
    (rule(options=["retain-longitudinal-full-dates", "retain-longitudinal-modified-dates"]), "exclude each other"),
    (rule(destination=None), "`destination` is required"),
    (rule(destination="b"), "`destination` must be"),
    (rule(destination={"partition": "b", "exports": True}), "one partition or the exports, not both"),
    (rule(destination={}), "one partition or the exports, not both nor neither"),
    (rule(destination={"bucket": "x"}), "destination: unknown key(s) bucket"),
    (rule(destination={"partition": "a"}), "destination partition 'a' is one it takes instances from (a loop"),
    (rule(project=""), "`project` must be a non-empty string"),
    (rule(calling_aes=[""]), "calling_aes must be"),
    ('{"rules": 3}', "`rule` must be a list"),
    ('{"policy": []}', "unknown top-level key(s) policy"),
    ('{"rule": [', "not valid JSON"),
])
def test_refusals_name_the_rule_and_the_reason(text: str, message: str) -> None:
    with pytest.raises(RulesError) as info:
        load_rules(text)
    assert message in str(info.value)


def test_loops_through_several_rules_and_duplicate_names_are_refused(tmp_path: Path) -> None:
    chain = {"rule": [
        {"name": "ab", "partitions": ["a"], "destination": {"partition": "b"}},
        {"name": "bc", "partitions": ["b"], "destination": {"partition": "c"}},
        {"name": "ca", "partitions": ["c"], "destination": {"partition": "a"}},
    ]}
    with pytest.raises(RulesError, match="ab -> bc -> ca lead partition 'a' back into itself"):
        load_rules(json.dumps(chain))
    chain["rule"].pop()  # a -> b -> c: a chain, no loop
    assert len(load_rules(json.dumps(chain)).rules) == 2
    twice = {"rule": [chain["rule"][0], chain["rule"][0]]}
    with pytest.raises(RulesError, match="used twice: ab"):
        load_rules(json.dumps(twice))
    bad = tmp_path / "rules.toml"
    bad.write_text("[[rule]\n")
    with pytest.raises(RulesError, match=f"{bad}: not valid TOML"):
        load_rules(bad)
    with pytest.raises(RulesError, match="cannot read the de-identification rules"):
        load_rules(tmp_path / "missing.toml")


def test_cli_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pacs.cli.main import main

    path = tmp_path / "rules.toml"
    path.write_text(TOML)
    assert main(["anonymizer", "check", str(path)]) == 0
    out = capsys.readouterr()
    assert "trial-7: on InstanceStored" in out.out and "2 rules" in out.err
    assert main(["anonymizer", "check", rule(destination={"partition": "a"})]) == 1
    assert "a loop" in capsys.readouterr().err
