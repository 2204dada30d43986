"""Rewrite the README's transfer-syntax matrix from what the codec round trips prove now.

    .venv/bin/python tools/codec_matrix.py           # rewrite README.md between the codec-matrix markers
    .venv/bin/python tools/codec_matrix.py --check   # exit 1 when the README differs (what the test checks)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "layers"))

from pacs.codecs import proof  # noqa: E402

BEGIN, END = "<!-- codec-matrix:begin -->", "<!-- codec-matrix:end -->"


def render(readme: str, table: str) -> str:
    """`readme` with `table` between the markers (ValueError when they are missing)."""
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    return readme[:start] + "\n" + table + "\n" + readme[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when the README differs")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = parser.parse_args(argv)
    proofs = proof.matrix()
    for p in proofs:
        for failure in p.failures:
            print(f"{p.name}: {failure}", file=sys.stderr)
    text = args.readme.read_text()
    new = render(text, proof.markdown(proofs))
    if args.check:
        if new != text:
            print("the README transfer-syntax matrix differs from the round trips: run tools/codec_matrix.py",
                  file=sys.stderr)
            return 1
        return 0
    args.readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
