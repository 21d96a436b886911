"""A user who installs the package, not the repository (issue: "pip install ., then from an empty folder").

``pip install --no-deps --no-build-isolation`` of a copy of the repository into a fresh venv, then,
from an empty folder, ``mtdense configs`` and a 2-step ``mtdense train synthetic/mtinet_hrnet18s``: the
configs (and their ``_base_`` recipes) must come from the installed package, the synthetic dataset is
rendered under the current folder (``data.root`` of a packaged config is relative to it).

Torch is not reinstalled: a venv made with ``--system-site-packages`` sees the *base* interpreter's
packages, not those of the venv it was made from, so the new venv gets a ``.pth`` line naming the
development venv's site-packages instead. Plain path lines of a ``.pth`` file do not run the ``.pth``
files found there, so the development venv's editable ``mtdense`` stays invisible; the test checks
that ``mtdense`` is imported from the new venv's own site-packages.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    tmp = tmp_path_factory.mktemp("install")
    copy = tmp / "mtdense-src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(REPO / "src", copy / "src", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, copy / name)

    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False, system_site_packages=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    (site / "_dev_site.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch, pip, setuptools, ...
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env['PATH']}"
    env["OMP_NUM_THREADS"] = "1"
    _run(
        [py, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", str(copy)],
        cwd=tmp,
        env=env,
    )
    shutil.rmtree(copy)  # nothing of the repository is left to find configs in
    return env_dir, env


def test_installed_package_lists_configs_and_trains_by_name(installed, tmp_path):
    env_dir, env = installed
    empty = tmp_path / "empty"
    empty.mkdir()
    where = _run([env_dir / "bin" / "python", "-c", "import mtdense; print(mtdense.__file__)"], cwd=empty, env=env)
    assert where.stdout.strip().startswith(str(env_dir)), where.stdout  # the installed copy, not the repository

    mtdense = str(env_dir / "bin" / "mtdense")
    listed = _run([mtdense, "configs"], cwd=empty, env=env).stdout
    names = [line.split()[0] for line in listed.splitlines()]
    assert "synthetic/mtinet_hrnet18s" in names and "demo" in names
    assert not any(n.rsplit("/", 1)[-1].startswith("_") for n in names)  # shared recipes are not listed

    tiny = [
        "data.synth.train=4",
        "data.synth.val=2",
        "data.synth.size=[32,32]",
        "data.crop_size=[32,32]",
        "data.cache=false",
        "train.batch_size=2",
        "train.bf16=false",
        "eval.batch_size=2",
        "eval.edge_exact=false",
    ]
    cmd = [mtdense, "train", "synthetic/mtinet_hrnet18s", "--out", "run", "--max-steps", "2", *tiny]
    _run(cmd, cwd=empty, env=env)
    assert sorted(p.name for p in (empty / "data").iterdir()) == ["synth_indoor_72x96"]  # relative to the CWD
    assert json.loads((empty / "data" / "synth_indoor_72x96" / "meta.json").read_text())["splits"]["train"] == 4
    results = json.loads((empty / "run" / "results.json").read_text())
    assert set(results) >= {"semseg", "depth"}
