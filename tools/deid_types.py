"""Generate `layers/pacs/deid/data/iod-types.json` from highdicom's bundled standard tables.

For every SOP class highdicom knows, the Type (1, 1C, 2, 2C, 3) that the class's IOD gives each
attribute of PS3.15 Table E.1-1 whose action is a compound code (Z/D, X/Z, X/D, X/Z/D, X/Z/U*):
the engine resolves those codes with it at run time without importing highdicom (too big for the
Lambda layer). Run: `.venv/bin/python tools/deid_types.py [--check]`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent.parent / "layers" / "pacs" / "deid" / "data"
ANNEX = DATA / "ps315-annex-e.json"
OUT = DATA / "iod-types.json"
STRICT = {"1": 0, "1C": 1, "2": 2, "2C": 3, "3": 4}


def _stricter(a: str | None, b: str) -> str:
    return b if a is None or STRICT[b] < STRICT[a] else a


def generate() -> dict[str, Any]:
    import highdicom
    from highdicom._standard_utils import (
        get_iod_module_map,
        get_module_attribute_map,
        get_sop_class_iod_map,
    )
    from pydicom.datadict import tag_for_keyword

    rows = json.loads(ANNEX.read_text())
    wanted = {int(r["id"], 16) for r in rows if "/" in r["basicProfile"] and "x" not in r["id"]}
    modules = get_module_attribute_map()
    iods: dict[str, dict[str, str]] = {}
    for iod, mods in sorted(get_iod_module_map().items()):
        types: dict[str, str] = {}
        for mod in mods:
            for attr in modules.get(mod["key"], []):
                tag = tag_for_keyword(attr["keyword"])
                if tag is None or tag not in wanted or attr["type"] not in STRICT:
                    continue
                path = attr["path"]
                key = f"{tag:08x}"
                if path:
                    parent = tag_for_keyword(path[-1])
                    if parent is None:
                        continue
                    key = f"{parent:08x}>{key}"
                types[key] = _stricter(types.get(key), attr["type"])
        if types:
            iods[iod] = dict(sorted(types.items()))
    sop = {uid: iod for uid, iod in sorted(get_sop_class_iod_map().items()) if iod in iods}
    return {
        "source": f"highdicom {highdicom.__version__} (highdicom/_standard: IOD, module, attribute maps)",
        "attributes": sorted(f"{t:08x}" for t in wanted),
        "sop_classes": sop,
        "iods": iods,
    }


def render(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the shipped file differs")
    args = parser.parse_args()
    text = render(generate())
    if args.check:
        same = OUT.read_text() == text
        print("up to date" if same else f"{OUT} differs from a fresh generation")
        return 0 if same else 1
    OUT.write_text(text)
    print(f"wrote {OUT} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
