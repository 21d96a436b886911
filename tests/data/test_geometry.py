"""Depth-derived normals (mtdense.data._geometry): exact on planes, facing the camera, invalid pixels zero."""

from __future__ import annotations

import numpy as np
import pytest

from mtdense.data._geometry import normals_from_depth

K = {"fx": 50.0, "fy": 55.0, "cx": 15.5, "cy": 11.5}


def _plane_depth(normal: np.ndarray, offset: float, k: dict[str, float], h: int = 24, w: int = 32) -> np.ndarray:
    """Depth of the plane ``n · P = offset`` through the pinhole ``k``: ``z = offset / (n · r)``, ``P = z·r``."""
    u = (np.arange(w) - k["cx"]) / k["fx"]
    v = (np.arange(h) - k["cy"]) / k["fy"]
    ray_dot_n = normal[0] * u[None, :] + normal[1] * v[:, None] + normal[2]
    return offset / ray_dot_n


@pytest.mark.parametrize("mirror", [1.0, -1.0], ids=["camera", "mirrored-columns"])
def test_tilted_plane_gives_its_normal_facing_the_camera(mirror):
    # mirrored columns (fx < 0) reverse Pv x Pu; the result must still face the camera (n · P < 0)
    k = {**K, "fx": mirror * K["fx"]}
    n = np.array([0.3, -0.2, -1.0])
    n /= np.linalg.norm(n)
    out = normals_from_depth(_plane_depth(n, -2.0, k), **k)
    assert out.shape == (24, 32, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[1:-1, 1:-1], np.broadcast_to(n, (22, 30, 3)), atol=1e-5)
    assert not out[0].any() and not out[-1].any() and not out[:, 0].any() and not out[:, -1].any()


def test_invalid_depth_zeroes_the_pixel_and_its_neighbours():
    depth = np.full((8, 9), 3.0)
    depth[4, 4] = 0.0
    depth[2, 6] = np.nan
    out = normals_from_depth(depth, **K)
    zero = ~out.any(axis=-1)
    for y, x in ((4, 4), (2, 6)):
        assert zero[y, x] and zero[y - 1, x] and zero[y + 1, x] and zero[y, x - 1] and zero[y, x + 1]
    np.testing.assert_allclose(out[6, 2], [0.0, 0.0, -1.0], atol=1e-6)  # fronto-parallel: -z
    assert np.isfinite(out).all()


def test_rejects_a_depth_map_that_is_not_2d():
    with pytest.raises(ValueError, match=r"expected a \(H, W\) depth map, got shape \(2, 3, 4\)"):
        normals_from_depth(np.ones((2, 3, 4)), **K)
