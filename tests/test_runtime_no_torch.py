"""The robot side never imports torch (or the trainer): import every module of runtime and
firmware_bridge in a subprocess where those imports fail."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import importlib, importlib.abc, pkgutil, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "trainer"):
            raise ImportError(f"blocked import of {name} (the runtime must not import it)")
        return None

sys.meta_path.insert(0, Block())
failed, seen = [], []
for pkg_name in ("runtime", "firmware_bridge"):
    pkg = importlib.import_module(pkg_name)
    seen.append(pkg_name)
    for info in pkgutil.walk_packages(pkg.__path__, prefix=pkg_name + "."):
        try:
            importlib.import_module(info.name)
            seen.append(info.name)
        except ImportError as exc:
            if "blocked import" in str(exc) or getattr(exc, "name", "") in ("torch", "trainer"):
                failed.append(f"{info.name}: {exc}")
            # an optional robot dependency absent here (pyserial, picamera2, pylibfranka) is not our concern
for name in ("runtime.Policy", "runtime.load_package", "runtime.PackageError"):
    mod, attr = name.rsplit(".", 1)
    getattr(importlib.import_module(mod), attr)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "trainer"))
print("SEEN", len(seen), " ".join(seen))
if failed or leaked:
    print("FAILED", failed, leaked)
    sys.exit(1)
"""


def test_runtime_and_firmware_bridge_import_without_torch():
    r = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "runtime.policy" in r.stdout and "runtime.package" in r.stdout


def test_probe_catches_a_torch_import(tmp_path):
    """The blocker works: a module that imports torch is reported."""
    (tmp_path / "leaky").mkdir()
    (tmp_path / "leaky" / "__init__.py").write_text("")
    (tmp_path / "leaky" / "bad.py").write_text("import torch\n")
    probe = PROBE.replace('("runtime", "firmware_bridge")', '("leaky",)').replace(
        'for name in ("runtime.Policy", "runtime.load_package", "runtime.PackageError")', "for name in ()")
    r = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "leaky.bad" in r.stdout
