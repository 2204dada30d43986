"""The transfer-syntax matrix: every round trip of pacs.codecs.proof passes, and the README shows what they
prove (the table is generated, never typed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from pacs.codecs import SYNTAXES, proof

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def proofs() -> list[proof.Proof]:
    return proof.matrix()


def test_every_round_trip_passes(proofs: list[proof.Proof]) -> None:
    failures = [f"{p.name}: {f}" for p in proofs for f in p.failures]
    assert failures == []


def test_every_syntax_is_decoded_and_encoded_here(proofs: list[proof.Proof]) -> None:
    assert {p.uid for p in proofs} == set(SYNTAXES)
    for p in proofs:
        assert p.decodes and p.encoder, p.name
        info = SYNTAXES[p.uid]
        assert bool(p.lossless) == info.lossless, p.name
        assert bool(p.lossy) == info.lossy, p.name


def test_lossless_rows_cover_every_kind_the_syntax_may_carry(proofs: list[proof.Proof]) -> None:
    for p in proofs:
        assert p.lossless == proof.LOSSLESS_KINDS.get(p.uid, ()), p.name


def test_readme_matrix_is_what_the_round_trips_give(proofs: list[proof.Proof]) -> None:
    spec = importlib.util.spec_from_file_location("codec_matrix", ROOT / "tools" / "codec_matrix.py")
    assert spec and spec.loader
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    readme = (ROOT / "README.md").read_text()
    assert tool.render(readme, proof.markdown(proofs)) == readme, "run tools/codec_matrix.py"


def test_a_failed_round_trip_changes_the_table(proofs: list[proof.Proof]) -> None:
    broken = [proof.Proof(p.uid, p.name, p.decoder, p.encoder, p.lossless[:-1], None) for p in proofs]
    assert proof.markdown(broken) != proof.markdown(proofs)
