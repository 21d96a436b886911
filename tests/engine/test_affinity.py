"""MTI-Net Fig. 2b label-affinity analysis: values derived by hand on tiny label maps, the vectorised counts
against a pixel-by-pixel reference, and ``mtdense analyze affinity`` on a tiny synthetic dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mtdense.cli.main import main
from mtdense.data.synthetic import write_synthetic_dataset
from mtdense.engine.affinity import DIRECTIONS, AffinityCounter, edge_affinity


def _summary(maps: dict[str, np.ndarray], dilations: list[int], **kw: float) -> dict:
    counter = AffinityCounter(list(maps), dilations, **kw)
    counter.add(maps)
    return counter.summary()


def test_semseg_depth_by_hand() -> None:
    """2×3 maps, dilation 1: 11 pairs (row 4, column 3, each diagonal 2). Semseg [[0,0,1],[0,0,1]] has 4
    dissimilar pairs (the ones crossing into column 2: 2 horizontal, 1 per diagonal), 7 similar."""
    sem = np.array([[0, 0, 1], [0, 0, 1]])
    aligned = np.array([[1.0, 1.0, 2.0], [1.0, 1.0, 2.0]])  # the same step in depth: 50 % > 10 %
    s = _summary({"semseg": sem, "depth": aligned}, [1])
    assert s["pairs"]["semseg-depth"] == {"agreement": [1.0], "dissimilar_iou": [1.0], "pairs": [11]}
    assert s["similar_fraction"]["semseg"] == [pytest.approx(7 / 11)]
    flat = np.array([[1.0, 1.0, 1.05], [1.0, 1.0, 1.05]])  # 0.05 / 1.05 < 0.1: every pair similar in depth
    s = _summary({"semseg": sem, "depth": flat}, [1])
    assert s["pairs"]["semseg-depth"]["agreement"] == [pytest.approx(7 / 11)]
    assert s["pairs"]["semseg-depth"]["dissimilar_iou"] == [0.0]
    # a tighter threshold makes the 5 % step dissimilar again
    s = _summary({"semseg": sem, "depth": flat}, [1], depth_threshold=0.01)
    assert s["pairs"]["semseg-depth"]["agreement"] == [1.0]


def test_ignore_and_invalid_pairs_are_not_counted() -> None:
    sem = np.array([[0, 255, 1], [0, 0, 1]])
    depth = np.array([[1.0, 1.0, 2.0], [0.0, 1.0, 2.0]])  # (1, 0) invalid
    s = _summary({"semseg": sem, "depth": depth}, [1])
    # pairs touching (0, 1) [semseg ignore]: 2 horizontal, 1 vertical, 2 diagonal = 5 of 11;
    # pairs touching (1, 0) [invalid depth] and not (0, 1): 1 horizontal, 1 vertical -> 4 pairs left
    assert s["pairs"]["semseg-depth"]["pairs"] == [4]
    assert s["pairs"]["semseg-depth"]["agreement"] == [1.0]


def test_edge_same_side_by_hand() -> None:
    """One row, edge pixel at column 2, semseg boundary between columns 2 and 3.
    d=1: semseg sim,sim,dis,sim; edge sim,dis,dis,sim -> agreement 3/4, dissimilar IoU 1/2.
    d=2: semseg (0,2) sim, (1,3) dis, (2,4) dis; edge: every segment holds column 2 -> 2/3 and 2/3."""
    edge = np.array([[0.0, 0.0, 1.0, 0.0, 0.0]])
    sem = np.array([[0, 0, 0, 1, 1]])
    s = _summary({"semseg": sem, "edge": edge}, [1, 2, 4, 5])
    pair = s["pairs"]["semseg-edge"]
    assert pair["pairs"] == [4, 3, 1, 0]
    assert pair["agreement"][:2] == [pytest.approx(3 / 4), pytest.approx(2 / 3)]
    assert pair["dissimilar_iou"][:2] == [pytest.approx(1 / 2), pytest.approx(2 / 3)]
    assert pair["agreement"][3] is None  # no pair fits at dilation 5 in a row of 5
    # an ignore pixel on the segment removes the pair; off the segment it does not
    ignored = np.array([[0.0, 255.0, 0.0, 0.0, 0.0]])
    _, valid = edge_affinity(ignored, 0, 2)
    assert valid.tolist() == [[False, False, True]]


def _pair_by_hand(task: str, m: np.ndarray, y: int, x: int, vy: int, vx: int, d: int) -> tuple[bool, bool]:
    """(similar, valid) of the pair (y, x)–(y + d·vy, x + d·vx), written pixel by pixel from the definitions."""
    y2, x2 = y + d * vy, x + d * vx
    if task == "semseg":
        return m[y, x] == m[y2, x2], m[y, x] != 255 and m[y2, x2] != 255
    if task == "depth":
        a, b = m[y, x], m[y2, x2]
        return a > 0 and b > 0 and abs(a - b) / max(a, b) < 0.1, a > 0 and b > 0
    seg = [m[y + k * vy, x + k * vx] for k in range(d + 1)]
    return not any(v == 1 for v in seg), 255 not in seg


def test_vectorised_counts_equal_pixel_loop() -> None:
    """Every count of every task pair, vectorised, against a plain loop over pixels, on random maps."""
    rng = np.random.default_rng(0)
    maps = {
        "semseg": rng.choice([0, 1, 2, 255], size=(9, 11), p=[0.4, 0.3, 0.2, 0.1]),
        "depth": rng.choice([0.0, 1.0, 1.05, 2.0], size=(9, 11), p=[0.1, 0.4, 0.3, 0.2]),
        "edge": rng.choice([0.0, 1.0, 255.0], size=(9, 11), p=[0.75, 0.2, 0.05]),
    }
    dilations = [1, 2, 3, 8]
    counter = AffinityCounter(list(maps), dilations)
    counter.add(maps)
    summary = counter.summary()
    h, w = maps["semseg"].shape
    for j, d in enumerate(dilations):
        for a, b in counter.pairs:
            valid = agree = dis_and = dis_or = 0
            for y in range(h):
                for x in range(w):
                    for vy, vx in DIRECTIONS:
                        if not (0 <= y + d * vy < h and 0 <= x + d * vx < w):
                            continue
                        sa, va = _pair_by_hand(a, maps[a], y, x, vy, vx, d)
                        sb, vb = _pair_by_hand(b, maps[b], y, x, vy, vx, d)
                        if va and vb:
                            valid += 1
                            agree += int(sa == sb)
                            dis_and += int(not sa and not sb)
                            dis_or += int(not sa or not sb)
            got = summary["pairs"][f"{a}-{b}"]
            assert got["pairs"][j] == valid > 0
            assert got["agreement"][j] == pytest.approx(agree / valid)
            assert got["dissimilar_iou"][j] == pytest.approx(dis_and / dis_or)


def test_cli_on_synthetic_dataset(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = write_synthetic_dataset(tmp_path / "synth", train=2, val=3, size=(32, 32), progress=False, workers=0)
    out = tmp_path / "aff"
    assert main(["analyze", "affinity", str(root), "--dilations", "1", "4", "--out", str(out)]) == 0
    result = json.loads((out / "affinity.json").read_text())
    assert (out / "affinity.png").stat().st_size > 10_000
    assert result["dataset"] == "synthetic" and result["images"] == 3 and result["dilations"] == [1, 4]
    assert set(result["pairs"]) == {"semseg-depth", "semseg-edge", "depth-edge"}
    # every pair of a 32×32 image at dilation d: 32·(32−d) per axis + 2·(32−d)² diagonal, at most
    for d, n in zip([1, 4], result["pairs"]["semseg-depth"]["pairs"], strict=True):
        assert 0 < n <= 3 * (2 * 32 * (32 - d) + 2 * (32 - d) ** 2)
    for values in result["pairs"].values():
        assert all(0.0 <= v <= 1.0 for v in values["agreement"] + values["dissimilar_iou"])
    assert "semseg-depth" in capsys.readouterr().out
    # bad input: one task, a task without a label affinity, a dilation of 0
    assert main(["analyze", "affinity", str(root), "--tasks", "semseg", "--out", str(out)]) == 2
    assert "at least two distinct tasks" in capsys.readouterr().err
    assert main(["analyze", "affinity", str(root), "--tasks", "semseg", "normals"]) == 2
    assert "no label affinity defined for ['normals']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["analyze", "affinity", str(root), "--dilations", "0"])


def test_help_has_example(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["analyze", "affinity", "--help"])
    assert "Example" in capsys.readouterr().out
