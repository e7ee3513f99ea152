"""imle-bundle: an offline install for the robot. The slow test builds one for this machine, installs it
with the network-free install.sh into a fresh venv, and runs the installed imle-verify on the model."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from runtime.bundle import BundleError, build_bundle, main, platform_tags

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "exported_models" / "pusht-state-imle"


def test_platform_tags_include_older_manylinux_for_the_same_arch():
    tags = platform_tags("manylinux_2_28_aarch64")
    assert tags[0] == "manylinux_2_28_aarch64" and "manylinux_2_17_aarch64" in tags
    assert tags[-1] == "manylinux2014_aarch64"
    assert platform_tags("win_amd64") == ["win_amd64"]


@pytest.mark.parametrize("args, message", [
    (["--platform", "manylinux; rm -rf /", "--python", "3.11"], "not a wheel platform tag"),
    (["--platform", "manylinux_2_28_aarch64", "--python", "three"], "not a version"),
    (["--platform", "manylinux_2_28_aarch64"], "together"),
])
def test_bad_arguments_are_one_line(tmp_path, capsys, args, message):
    assert main(["--out", str(tmp_path / "b"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "b").exists()


def test_a_refused_package_is_never_bundled(tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(SHIPPED, bad)
    (bad / "generator.onnx").write_bytes(b"x")
    with pytest.raises(BundleError, match="is refused"):
        build_bundle(tmp_path / "out", None, None, [bad], None)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_host_bundle_installs_offline_and_verifies(tmp_path):
    import shutil

    free = shutil.disk_usage(tmp_path).free
    if free < 1 << 30:  # the bundle's wheels plus the venv it installs take ~270 MB; leave room for the rest
        pytest.skip(f"only {free / 2**20:.0f} MiB free under {tmp_path.parent}: the offline install needs ~1 GiB")
    out = tmp_path / "bundle"
    try:
        build_bundle(out, None, None, [SHIPPED], None)
    except BundleError as exc:
        if "pip download" in str(exc) and any(w in str(exc).lower() for w in ("connection", "resolve", "network",
                                                                              "no matching distribution")):
            pytest.skip(f"no package index reachable to build the bundle: {exc}")
        raise
    wheel = next((out / "wheels").glob("imle_policy-*.whl"))
    assert "runtime/keys/imle-policy-release.pub" in zipfile.ZipFile(wheel).namelist()
    prefix, keys = tmp_path / "opt-imle", tmp_path / "etc-keys"
    env = dict(os.environ, IMLE_PREFIX=str(prefix), IMLE_TRUSTED_KEYS=str(keys),
               PYTHON=getattr(sys, "_base_executable", sys.executable), PIP_NO_INDEX="1", PIP_CONFIG_FILE=os.devnull)
    env.pop("PYTHONPATH", None)
    p = subprocess.run(["sh", str(out / "install.sh")], capture_output=True, text=True, env=env, timeout=600,
                       cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert (keys / "imle-policy-release.pub").is_file()
    v = subprocess.run([str(prefix / "venv" / "bin" / "imle-verify"), str(prefix / "models" / "active")],
                       capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert v.returncode == 0, v.stderr
    assert "a trusted key" in v.stdout
