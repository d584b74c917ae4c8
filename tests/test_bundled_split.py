"""Every bundled training config keeps the benchmark's held-out crops out of training (bench/split.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.scenes import SCENES
from core.training.data import extra_hsi_source
from tools.train_bundled import load_case

ROOT = Path(__file__).resolve().parents[1]
CASES = sorted(p.stem for p in (ROOT / "configs" / "bundled").glob("*.yaml") if not p.stem.startswith("_"))


def _squares(data: dict) -> list[tuple[int, int, int]]:
    return [tuple(int(v) for v in sq) for sq in [data.get("val_region"), *(data.get("exclude") or [])] if sq]


@pytest.mark.parametrize("case", CASES)
def test_bundled_config_holds_out_every_benchmark_crop_of_its_files(case):
    cfg = load_case(case, [])
    data = cfg["data"]
    files = [Path(p).name for p in (data["hsi"] if isinstance(data["hsi"], list) else [data["hsi"]])]
    held = [s for s in SCENES if s.held_out and s.file in files and (s.scales is None or data["scale"] in s.scales)]
    assert held, f"{case}: no held-out benchmark crop for its files at scale {data['scale']}"
    for s in held:
        # held-out squares refer to the first file's grid; a crop in another file would not be covered
        assert s.file == files[0], f"{case}: held-out crop {s.name} lies in {s.file}, not the first file"
        (r0, r1), (c0, c1) = s.rows, s.cols
        inside = [sq for sq in _squares(data) if sq[0] <= r0 and r1 <= sq[0] + sq[2] and sq[1] <= c0 and c1 <= sq[1] + sq[2]]
        assert inside, f"{case}: benchmark crop {s.name} rows {s.rows} cols {s.cols} is not held out by {_squares(data)}"
    # cubes of other sensors are whole files: none may hold a benchmark crop
    held_files = {s.file for s in SCENES if s.held_out}
    assert not {Path(extra_hsi_source(p)[0]).name for p in data.get("extra_hsi") or []} & held_files

