"""The synthetic renderer: hand-derived geometry, consistency of the ground truth, determinism, writer."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mtdense.data.synthetic import (
    FAMILIES,
    VAL_INDEX_OFFSET,
    Light,
    Scene,
    render_sample,
    render_scene,
    write_synthetic_dataset,
)
from mtdense.data.synthetic.materials import Material
from mtdense.data.synthetic.primitives import Box, Cylinder, RoomShell, Sphere, Surface
from mtdense.data.synthetic.renderer import camera_rotation
from mtdense.errors import ConfigError, DataError

FAMS = ("indoor", "street")
_PLAIN = Surface(label=0, instance=1, material=Material(color=(0.5, 0.5, 0.5)))


def _one(x: float) -> np.ndarray:
    return np.array([x], np.float32)


# ----------------------------------------------------------------------------- hand-derived geometry
def test_box_intersection_and_normal_by_hand():
    """Ray from the origin along +z; unit box (half 1) centred at z = 5.

    Axis-aligned: it enters the face z = 4, so t = 4 and the outward normal is (0, 0, −1).
    Rotated by 45° about y: the nearest point on the z axis is a vertical edge at z = 5 − √2.
    A ray along +x (parallel to the z slabs, outside them) misses.
    """
    o = (0.0, 0.0, 0.0)
    d = (_one(0.0), _one(0.0), _one(1.0))
    box = Box(surface=_PLAIN, center=(0, 0, 5), half=(1, 1, 1))
    assert box.intersect(o, d)[0] == pytest.approx(4.0)
    n, face, _, _ = box.geometry(np.array([[0.0], [0.0], [4.0]], np.float32))
    np.testing.assert_allclose(n[:, 0], [0, 0, -1])
    assert face[0] == 4  # 2·axis(z) + negative side
    rot = Box(surface=_PLAIN, center=(0, 0, 5), half=(1, 1, 1), yaw=math.pi / 4)
    assert rot.intersect(o, d)[0] == pytest.approx(5 - math.sqrt(2), rel=1e-5)
    assert np.isinf(box.intersect(o, (_one(1.0), _one(0.0), _one(0.0)))[0])


def test_sphere_cylinder_room_intersections_by_hand():
    """Sphere r = 2 at z = 10: t = 8 on axis; a ray 3 m to the side misses (3 > 2).
    Cylinder r = 1 around x = 0, z = 5, y ∈ [−1, 1]: t = 4 from the origin along +z (side, normal
    −z); from (0, 5, 5) straight down it hits the top cap at y = 1, t = 4, normal +y.
    Room [−2, 2] × [0, 3] × [−3, 3] seen from (0, 1.5, 0): +x exits at t = 2, −y at t = 1.5 (floor,
    inward normal +y), direction (1, 0, 1) at min(2, 3) = 2.
    """
    o = (0.0, 0.0, 0.0)
    ahead = (_one(0.0), _one(0.0), _one(1.0))
    sph = Sphere(surface=_PLAIN, center=(0, 0, 10), radius=2)
    assert sph.intersect(o, ahead)[0] == pytest.approx(8.0)
    assert np.isinf(sph.intersect((3.0, 0.0, 0.0), ahead)[0])

    cyl = Cylinder(surface=_PLAIN, x=0, z=5, radius=1, y0=-1, y1=1)
    assert cyl.intersect(o, ahead)[0] == pytest.approx(4.0)
    n, face, _, _ = cyl.geometry(np.array([[0.0], [0.0], [4.0]], np.float32))
    np.testing.assert_allclose(n[:, 0], [0, 0, -1], atol=1e-6)
    down = (_one(0.0), _one(-1.0), _one(0.0))
    assert cyl.intersect((0.0, 5.0, 5.0), down)[0] == pytest.approx(4.0)
    n, face, _, _ = cyl.geometry(np.array([[0.0], [1.0], [5.0]], np.float32))
    np.testing.assert_allclose(n[:, 0], [0, 1, 0])
    assert face[0] == 3

    room = RoomShell(surface=_PLAIN, lo=(-2, 0, -3), hi=(2, 3, 3))
    eye = (0.0, 1.5, 0.0)
    assert room.intersect(eye, (_one(1.0), _one(0.0), _one(0.0)))[0] == pytest.approx(2.0)
    assert room.intersect(eye, down)[0] == pytest.approx(1.5)
    assert room.intersect(eye, (_one(1.0), _one(0.0), _one(1.0)))[0] == pytest.approx(2.0)
    n, face, _, _ = room.geometry(np.array([[0.0], [0.0], [0.0]], np.float32))
    np.testing.assert_allclose(n[:, 0], [0, 1, 0])
    assert face[0] == 2


def _floor_scene(height: float, *, box: bool = False, z: float = 0.0, pitch: float = 0.0) -> Scene:
    """A huge room (its floor is all we see below the horizon), a light at (0, 6, 6), optionally a
    2 m cube at (0, 1, 6) right below the light; the camera at (0, height, z) looks along +z."""
    floor = Surface(label=1, instance=2, material=Material(color=(0.4, 0.4, 0.4), contrast=0.0))
    room = RoomShell(surface=_PLAIN, face_surfaces={2: floor}, lo=(-50, 0, -50), hi=(50, 10, 50))
    prims = [room]
    if box:
        prims.append(Box(surface=Surface(3, 3, Material(color=(0.8, 0.2, 0.2))), center=(0, 1, 6), half=(1, 1, 1)))
    return Scene(
        primitives=prims,
        lights=[Light(intensity=2.0, position=(0.0, 6.0, 6.0), r0=5.0)],
        camera_position=(0.0, height, z),
        yaw=0.0,
        pitch=pitch,
        roll=0.0,
        hfov_deg=60.0,
        noise=0.0,
    )


def test_floor_depth_and_normals_follow_the_pinhole_model():
    """Level camera at height h above the floor: the ray of row v has camera direction
    (x, (v − cy)/fy, 1) with y down, so it falls by (v − cy)/fy per metre of depth and meets the floor
    at z = h · fy / (v − cy), independent of the column. The floor's normal (world up) is (0, −1, 0)
    in the camera frame (y down). fx = (W/2)/tan(30°), cx = (W − 1)/2, cy = (H − 1)/2.
    """
    h, w, height = 48, 64, 1.5
    out = render_scene(_floor_scene(height), (h, w), np.random.default_rng(0))
    fx, fy, cx, cy = out["intrinsics"]
    assert fx == pytest.approx(32 / math.tan(math.radians(30)))
    assert (fy, cx, cy) == pytest.approx((fx, 31.5, 23.5))
    rows = np.arange(h)
    floor_rows = rows[rows > cy + 2]
    expected = height * fy / (floor_rows - cy)
    depth = out["depth"][floor_rows]
    assert (out["semseg"][floor_rows] == 1).all()
    np.testing.assert_allclose(depth, np.broadcast_to(expected[:, None], depth.shape), rtol=1e-5)
    normals = out["normals"][floor_rows].reshape(-1, 3)
    np.testing.assert_allclose(normals, np.broadcast_to([0.0, -1.0, 0.0], normals.shape), atol=1e-6)


def test_cast_shadow_of_a_box_under_a_point_light():
    """The cube's top face [−1, 1]² at y = 2, seen from the light at height 6, shadows the floor square
    |x|, |z − 6| ≤ 1 · 6 / (6 − 2) = 1.5 (similar triangles). Floor irradiance depends only on the
    distance r from the light's foot (0, 0, 6) (both the 1/d² falloff and the incidence angle), so
    floor points at r ∈ [1.55, 2.05] inside that square (the diagonals) must be much darker than
    those outside it (along the axes) at the same r."""
    h, w = 96, 128
    scene = _floor_scene(4.0, box=True, z=1.0, pitch=-0.7)
    out = render_scene(scene, (h, w), np.random.default_rng(0), aa=False)
    fx, fy, cx, cy = out["intrinsics"]
    v, u = np.mgrid[:h, :w]
    cam = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones((h, w))], -1) * out["depth"][..., None]
    world = cam @ camera_rotation(scene.yaw, scene.pitch, scene.roll).T + np.array(scene.camera_position)
    x, z = world[..., 0], world[..., 2]
    floor = out["semseg"] == 1
    r = np.hypot(x, z - 6.0)
    ring = floor & (r > 1.55) & (r < 2.05)
    cheb = np.maximum(np.abs(x), np.abs(z - 6.0))
    dark, bright = ring & (cheb < 1.45), ring & (cheb > 1.55)
    assert dark.sum() > 10 and bright.sum() > 10
    lum = out["image"].astype(float).mean(-1)
    assert lum[dark].mean() < 0.6 * lum[bright].mean()


# ------------------------------------------------------------------------------ ground-truth checks
@pytest.fixture(scope="module")
def samples():
    return {(fam, i): render_sample(fam, 5, i, size=(96, 128)) for fam in FAMS for i in range(2)}


def test_determinism_and_variation():
    a = render_sample("indoor", 7, 3, size=(32, 48))
    b = render_sample("indoor", 7, 3, size=(32, 48))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    c = render_sample("indoor", 7, 4, size=(32, 48))
    assert not np.array_equal(a["image"], c["image"])
    assert not np.array_equal(a["depth"], c["depth"])
    d = render_sample("indoor", 8, 3, size=(32, 48))
    assert not np.array_equal(a["depth"], d["depth"])


def test_scene_is_independent_of_resolution():
    """The same (seed, index) at 48×64 and 96×128: pixel (u, v) of the small image looks almost
    along the ray of pixel (2u, 2v) of the big one, so their labels agree almost everywhere."""
    small = render_sample("street", 1, 2, size=(48, 64))
    big = render_sample("street", 1, 2, size=(96, 128))
    agree = (small["semseg"] == big["semseg"][::2, ::2]).mean()
    assert agree > 0.85


@pytest.mark.parametrize("fam", FAMS)
def test_shapes_dtypes_and_value_ranges(samples, fam):
    s = samples[(fam, 0)]
    h, w = 96, 128
    assert s["image"].shape == (h, w, 3) and s["image"].dtype == np.uint8
    assert s["semseg"].shape == (h, w) and s["semseg"].dtype == np.uint8
    assert s["depth"].shape == (h, w) and s["depth"].dtype == np.float32
    assert s["normals"].shape == (h, w, 3) and s["normals"].dtype == np.float32
    assert s["edge"].shape == (h, w) and set(np.unique(s["edge"])) <= {0, 1}
    assert s["semseg"].max() < FAMILIES[fam].num_classes
    assert FAMILIES[fam].num_classes >= (10 if fam == "indoor" else 8)


@pytest.mark.parametrize("fam", FAMS)
def test_depth_valid_except_sky_and_normals_unit_facing_camera(samples, fam):
    for i in range(2):
        s = samples[(fam, i)]
        depth, normals = s["depth"], s["normals"]
        assert np.isfinite(depth).all()
        if fam == "street":
            sky = s["semseg"] == FAMILIES[fam].class_names.index("sky")
            assert sky.any()
            assert (depth[sky] == 0).all()
            assert (normals[sky] == 0).all()
            valid = ~sky
        else:
            valid = np.ones(depth.shape, bool)
        assert (depth[valid] > 0).all()
        np.testing.assert_allclose(np.linalg.norm(normals[valid], axis=-1), 1.0, atol=1e-4)
        # n · ray < 0 with the camera ray of each pixel
        fx, fy, cx, cy = s["intrinsics"]
        v, u = np.mgrid[: depth.shape[0], : depth.shape[1]]
        ray = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(depth)], -1)
        assert ((normals * ray).sum(-1)[valid] < 0).all()


def _normals_from_depth(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Normals of the back-projected point cloud P(u, v) = Z·((u − cx)/fx, (v − cy)/fy, 1) by central
    differences, n ∝ ∂P/∂u × ∂P/∂v, oriented towards the camera (n · P < 0); zero on the border."""
    fx, fy, cx, cy = K
    h, w = depth.shape
    v, u = np.mgrid[:h, :w]
    p = np.stack([(u - cx) / fx * depth, (v - cy) / fy * depth, depth], -1)
    n = np.zeros_like(p)
    du = p[1:-1, 2:] - p[1:-1, :-2]
    dv = p[2:, 1:-1] - p[:-2, 1:-1]
    c = np.cross(du, dv)
    c /= np.maximum(np.linalg.norm(c, axis=-1, keepdims=True), 1e-12)
    flip = (c * p[1:-1, 1:-1]).sum(-1) > 0
    c[flip] *= -1
    n[1:-1, 1:-1] = c
    return n


@pytest.mark.parametrize("fam", FAMS)
def test_normals_agree_with_depth_on_smooth_surfaces(samples, fam):
    """Away from boundaries the stored normals equal those of the back-projected depth.

    Smooth pixels: the 3×3 neighbourhood is one instance with valid depth, and inverse depth has
    (almost) zero second differences in both directions (1/Z is affine in (u, v) on a plane, so this
    rejects creases and hidden depth steps within an instance, e.g. a chair's seat in front of its
    leg). On those pixels the median angle must be < 2° (a wrong frame or sign gives ~90°–180°).
    """
    errs = []
    for i in range(2):
        s = samples[(fam, i)]
        depth, inst = s["depth"], s["instance"]
        est = _normals_from_depth(depth.astype(np.float64), s["intrinsics"])
        inv = np.where(depth > 0, 1.0 / np.maximum(depth, 1e-9), 0.0)
        smooth = np.zeros(depth.shape, bool)
        c = (slice(1, -1), slice(1, -1))
        ok = depth[c] > 0
        for dv in (-1, 0, 1):
            for du in (-1, 0, 1):
                nb = (slice(1 + dv, depth.shape[0] - 1 + dv), slice(1 + du, depth.shape[1] - 1 + du))
                ok &= (inst[nb] == inst[c]) & (depth[nb] > 0)
        d2u = np.abs(inv[1:-1, 2:] - 2 * inv[1:-1, 1:-1] + inv[1:-1, :-2])
        d2v = np.abs(inv[2:, 1:-1] - 2 * inv[1:-1, 1:-1] + inv[:-2, 1:-1])
        ok &= (d2u < 1e-3 * inv[c]) & (d2v < 1e-3 * inv[c])
        smooth[c] = ok
        cos = np.clip((est[smooth] * s["normals"][smooth]).sum(-1), -1.0, 1.0)
        errs.append(np.degrees(np.arccos(cos)))
    errs = np.concatenate(errs)
    assert errs.size > 0.3 * 2 * 94 * 126  # the test covers most of the image
    assert np.median(errs) < 2.0
    assert np.percentile(errs, 90) < 5.0


@pytest.mark.parametrize("fam", FAMS)
def test_edges_cover_every_boundary_and_are_thin(samples, fam):
    """Every 4-neighbour pair with different labels or instances has an edge pixel at one of them;
    every edge pixel lies on such a boundary (so edges are 1 px on one side, at most 2 px wide)."""
    for i in range(2):
        s = samples[(fam, i)]
        e, lab, inst = s["edge"].astype(bool), s["semseg"], s["instance"]
        for a, b in (((slice(None), slice(None, -1)), (slice(None), slice(1, None))),
                     ((slice(None, -1), slice(None)), (slice(1, None), slice(None)))):  # fmt: skip
            boundary = (lab[a] != lab[b]) | (inst[a] != inst[b])
            assert (e[a] | e[b])[boundary].all()
        touches = np.zeros_like(e)
        dh = inst[:, 1:] != inst[:, :-1]
        dv = inst[1:] != inst[:-1]
        touches[:, 1:] |= dh
        touches[:, :-1] |= dh
        touches[1:] |= dv
        touches[:-1] |= dv
        assert e.any()
        assert not (e & ~touches).any()


def test_colour_alone_does_not_identify_classes():
    """A nearest-class-mean classifier on pixel RGB, fitted on 12 images and tested on 8 others, has a
    low mean per-class recall (< 0.35; every class being identifiable from colour would give ~1):
    instance colours are randomised so that class colour distributions overlap."""
    for fam in FAMS:
        train = [render_sample(fam, 0, i, size=(24, 32)) for i in range(12)]
        test = [render_sample(fam, 0, 100 + i, size=(24, 32)) for i in range(8)]
        x = np.concatenate([s["image"].reshape(-1, 3) for s in train]).astype(float)
        y = np.concatenate([s["semseg"].ravel() for s in train])
        classes = np.unique(y)
        means = np.stack([x[y == k].mean(0) for k in classes])
        xt = np.concatenate([s["image"].reshape(-1, 3) for s in test]).astype(float)
        yt = np.concatenate([s["semseg"].ravel() for s in test])
        pred = classes[np.argmin(((xt[:, None] - means[None]) ** 2).sum(-1), 1)]
        recall = [np.mean(pred[yt == k] == k) for k in np.unique(yt)]
        assert np.mean(recall) < 0.35, fam


def test_bad_arguments():
    with pytest.raises(ConfigError, match="unknown synthetic family"):
        render_sample("forest", 0, 0)
    with pytest.raises(ConfigError, match="size"):
        render_sample("indoor", 0, 0, size=(0, 10))
    with pytest.raises(ConfigError, match=">= 0"):
        render_sample("indoor", -1, 0)


# ------------------------------------------------------------------------------------------- writer
def test_writer_layout_meta_and_round_trip(tmp_path):
    """3 train + 2 val images at 32×48: the NYUD-MT files, disjoint split lists, meta.json, and every
    file decodes back to exactly what render_sample returns (labels stored as k + 1)."""
    from mtdense.data._io import read_image, read_label_png

    root = write_synthetic_dataset(
        tmp_path / "ds", train=3, val=2, size=(32, 48), seed=4, family="street", progress=False, workers=1
    )
    train = (root / "gt_sets" / "train.txt").read_text().split()
    val = (root / "gt_sets" / "val.txt").read_text().split()
    assert train == ["train_000000", "train_000001", "train_000002"]
    assert val == ["val_000000", "val_000001"]
    meta = json.loads((root / "meta.json").read_text())
    fam = FAMILIES["street"]
    assert meta["family"] == "street" and meta["num_classes"] == fam.num_classes
    assert meta["class_names"] == list(fam.class_names) and len(meta["palette"]) == fam.num_classes
    assert meta["size"] == [32, 48] and meta["seed"] == 4
    expected_k = dict(zip(("fx", "fy", "cx", "cy"), fam.intrinsics((32, 48)), strict=True))
    assert meta["intrinsics"] == pytest.approx(expected_k)
    for sid, index in (("train_000001", 1), ("val_000001", VAL_INDEX_OFFSET + 1)):
        ref = render_sample("street", 4, index, size=(32, 48))
        np.testing.assert_array_equal(read_image(root / "images" / f"{sid}.png"), ref["image"])
        np.testing.assert_array_equal(read_label_png(root / "segmentation" / f"{sid}.png"), ref["semseg"] + 1)
        np.testing.assert_array_equal(np.load(root / "depth" / f"{sid}.npy"), ref["depth"])
        np.testing.assert_array_equal(np.load(root / "normals" / f"{sid}.npy"), ref["normals"])
        edge = np.load(root / "edge" / f"{sid}.npy")
        assert edge.dtype == np.float32
        np.testing.assert_array_equal(edge, ref["edge"])


def test_writer_parallel_equals_serial(tmp_path):
    kw = dict(train=3, val=1, size=(24, 32), seed=2, family="indoor", progress=False)
    a = write_synthetic_dataset(tmp_path / "a", workers=1, **kw)
    b = write_synthetic_dataset(tmp_path / "b", workers=2, **kw)
    for rel in ("images/train_000002.png", "depth/val_000000.npy", "gt_sets/train.txt", "meta.json"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_writer_rejects_bad_output_and_counts(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        write_synthetic_dataset(f, train=1, val=0, progress=False, workers=1)
    with pytest.raises(ConfigError, match="train"):
        write_synthetic_dataset(tmp_path / "x", train=-1, val=0, progress=False, workers=1)


@pytest.mark.parametrize("fam", FAMS)
def test_shadow_culling_is_conservative(fam):
    """The culled shadow test (bins + bounding volumes, then exact tests) gives the same visibility as
    testing every shadow ray against every occluder, on real scenes."""
    from mtdense.data.synthetic import make_scene
    from mtdense.data.synthetic import renderer as R

    for index in range(2):
        scene = make_scene(fam, 11, index)
        comp = R._Compiled(scene)
        size = (24, 32)
        K = R.intrinsics(size, scene.hfov_deg)
        rot = R.camera_rotation(scene.yaw, scene.pitch, scene.roll)
        origin = tuple(float(v) for v in scene.camera_position)
        rects = R.screen_rects(comp.corners, rotation=rot, position=origin, K=K)
        xc = ((np.arange(size[1]) - K[2]) / K[0]).astype(np.float32)[None, :]
        yc = ((np.arange(size[0]) - K[3]) / K[1]).astype(np.float32)[:, None]
        d = R._directions(rot, xc, yc)
        t, pid = R._trace(comp.prims, rects, origin, d)
        hit = pid.ravel() >= 0
        p = np.stack([origin[i] + t.ravel()[hit] * d[i].ravel()[hit] for i in range(3)]).astype(np.float32)
        own = pid.ravel()[hit]
        for light in scene.lights:
            fast = R._visibility(comp, light, p, own)
            slow = np.ones_like(fast)
            for k in comp.occ.prims:
                if light.direction is None:
                    dirs, tmax = tuple(np.float32(light.position[i]) - p[i] for i in range(3)), 1.0
                else:
                    dirs, tmax = tuple(float(v) for v in light.direction), np.inf
                tk = comp.prims[k].intersect((p[0], p[1], p[2]), dirs)
                slow[(tk < tmax) & (own != k)] = 0.0
            assert (slow == 0).any() and (slow == 1).any()
            np.testing.assert_array_equal(fast, slow)


def test_sensor_noise_table_is_built_on_first_use_not_at_import():
    """Importing the package (every CLI command does) must not build the 4 MiB noise table; the first
    render builds it once, and later renders reuse it."""
    import subprocess
    import sys

    code = (
        "import numpy as np\n"
        "from mtdense.data.synthetic import renderer as R, render_sample\n"
        "assert R.noise_table.cache_info().currsize == 0, 'built at import'\n"
        "render_sample('indoor', 0, 0, (24, 32))\n"
        "render_sample('indoor', 0, 1, (24, 32))\n"
        "info = R.noise_table.cache_info()\n"
        "assert (info.currsize, info.misses) == (1, 1), info\n"
        "t = R.noise_table()\n"
        "assert t.shape == (R.NOISE_TABLE_SIZE,) and t.dtype == np.float32 and t.nbytes == 4 << 20\n"
        "assert not t.flags.writeable\n"
        "assert abs(float(t.mean())) < 0.01 and abs(float(t.std()) - 1) < 0.01\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_texture_noise_is_the_2d_table_lookup():
    """``noise`` (one flat gather) equals its definition: the texel ``_NOISE[ib, ia]`` at the wrapped
    texture coordinates ``(a·64 + 7919·seed, b·64 + 104729·seed) mod 256``, for scalar and per-ray seeds."""
    from mtdense.data.synthetic import materials as M

    rng = np.random.default_rng(0)
    a = rng.uniform(-50, 50, 1000).astype(np.float32)
    b = rng.uniform(-50, 50, 1000).astype(np.float32)
    seeds = rng.integers(0, 1 << 20, 1000)
    for seed in (12345, seeds):
        ia = ((a * 64).astype(np.int64) + seed * 7919 % 256) % 256
        ib = ((b * 64).astype(np.int64) + seed * 104729 % 256) % 256
        np.testing.assert_array_equal(M.noise(a, b, seed), M._NOISE[ib, ia])


def test_data_synth_command_imports_neither_torch_nor_the_readers(tmp_path):
    """`mtdense data synth` needs NumPy and Pillow only: importing torch (seconds) would dominate a short render, so
    neither the CLI nor `mtdense.data` may import it (or the dataset readers) on that path; the package's public
    names still resolve, lazily, and the registry still knows every dataset."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from mtdense.cli.main import main\n"
        f"assert main(['data', 'synth', {str(tmp_path / 'ds')!r}, '--train', '1', '--val', '1', '--size', '16x16',"
        " '--workers', '2']) == 0\n"
        "heavy = sorted(m for m in ('torch', 'scipy', 'matplotlib', 'pydantic', 'mtdense.data.registry',"
        " 'mtdense.data.nyud') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    assert (tmp_path / "ds" / "meta.json").is_file()

    import mtdense.data as D
    from mtdense.data import synthetic

    assert callable(D.open_dataset) and callable(D.register_dataset) and D.NYUDMT.__name__ == "NYUDMT"
    assert {"nyud_mt", "synthetic", "cityscapes"} <= set(D.DATASETS) and D.list_datasets() == sorted(D.DATASETS)
    assert D.FAMILIES is synthetic.FAMILIES and D.render_sample is synthetic.render_sample
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        D.nope  # noqa: B018
