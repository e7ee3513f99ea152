"""exported_models/index.json stays true: every shipped package, its version, hashes and signing key."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from runtime.index import build_index, main, render
from runtime.signing import shipped_keys

MODELS = Path(__file__).resolve().parents[1] / "exported_models"


def test_index_matches_the_shipped_packages():
    assert (MODELS / "index.json").read_text() == render(build_index(MODELS)), \
        "exported_models/index.json is out of date: python -m runtime.index exported_models"


def test_index_entries_name_the_project_key_and_the_manifest_hash():
    idx = json.loads((MODELS / "index.json").read_text())
    dirs = sorted(p.name for p in MODELS.iterdir() if (p / "manifest.json").is_file())
    assert sorted(e["path"] for e in idx["packages"]) == dirs
    for e in idx["packages"]:
        assert e["signed_by"] == shipped_keys()[0].key_id
        assert e["manifest_sha256"] == hashlib.sha256((MODELS / e["path"] / "manifest.json").read_bytes()).hexdigest()


def test_check_mode_reports_a_stale_index(tmp_path, capsys):
    import shutil

    shutil.copytree(MODELS, tmp_path / "m")
    assert main([str(tmp_path / "m"), "--check"]) == 0
    (tmp_path / "m" / "index.json").write_text("{}\n")
    assert main([str(tmp_path / "m"), "--check"]) == 1
    assert "out of date" in capsys.readouterr().err
