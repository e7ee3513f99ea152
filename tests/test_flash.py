"""imle-flash: versioned store, atomic switch, rollback, pruning, kill at every stage, hostile streams, ssh."""
from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from flash_fixtures import make_key, make_package
from runtime import flash
from runtime.flash import FlashError, Store, _tar_files, parse_target
from runtime.package import PackageError, load_package
from runtime.signing import ENV_ALLOW_UNSIGNED, ENV_TRUSTED_KEYS
from runtime.verify import verify_package

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(tmp_path, monkeypatch):
    """Two signed packages (v1, v2), the trusted keys installed, and an empty store path."""
    monkeypatch.delenv(ENV_ALLOW_UNSIGNED, raising=False)
    key, trusted = make_key(tmp_path)
    monkeypatch.setenv(ENV_TRUSTED_KEYS, str(trusted))
    v1 = make_package(tmp_path / "v1", gain=1.0, key=key)
    v2 = make_package(tmp_path / "v2", gain=2.0, key=key)
    return {"v1": v1, "v2": v2, "key": key, "trusted": trusted, "store": tmp_path / "robot" / "models",
            "tmp": tmp_path}


def run_flash(*args: str, kill_at: str | None = None, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ, PYTHONPATH=str(REPO))
    e.pop(flash.KILL_ENV, None)
    if kill_at:
        e[flash.KILL_ENV] = kill_at
    e.update(extra_env or {})
    return subprocess.run([sys.executable, "-m", "runtime.flash", *args], capture_output=True, text=True, env=e,
                          timeout=120, cwd=REPO)


def active_gain(store: Path) -> float:
    """Which package is active (v1: gain 1, v2: gain 2), after checking that it loads and verifies."""
    pkg = load_package(store / "active")
    assert verify_package(store / "active").ok
    import numpy as np
    from runtime.golden import decode_array

    case = pkg.manifest.golden["cases"][0]
    return float(np.round(decode_array(case["outputs"]["actions"], "o")[0, 0, 0]
                          / decode_array(case["inputs"]["z"], "z")[0, 0, 0], 3))


def test_flash_list_rollback_and_keep(env, capsys):
    store = env["store"]
    assert flash.main([str(env["v1"]), str(store)]) == 0
    assert active_gain(store) == 1.0
    assert flash.main([str(env["v2"]), str(store)]) == 0
    assert active_gain(store) == 2.0
    capsys.readouterr()
    assert flash.main(["--list", str(store)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert len(listing) == 2 and sum(ln.startswith("*") for ln in listing) == 1
    assert flash.main(["--rollback", str(store)]) == 0
    assert active_gain(store) == 1.0
    assert flash.main(["--rollback", str(store)]) == 1  # nothing before v1
    assert "no earlier version" in capsys.readouterr().err
    assert active_gain(store) == 1.0
    v2_id = next(v.id for v in Store(store).list() if not v.active)
    assert flash.main(["--rollback", "--to", v2_id, str(store)]) == 0
    assert active_gain(store) == 2.0
    # keep 1: flashing v1 again keeps only it (re-activating its stored copy)
    assert flash.main([str(env["v1"]), str(store), "--keep", "1"]) == 0
    assert [v.active for v in Store(store).list()] == [True]
    assert active_gain(store) == 1.0
    assert not [n for n in os.listdir(store / "versions") if n.startswith(".")]


def test_refused_package_leaves_the_active_version_alone(env, capsys, monkeypatch):
    store = env["store"]
    assert flash.main([str(env["v1"]), str(store)]) == 0
    (env["v2"] / "manifest.sig").unlink()
    assert flash.main([str(env["v2"]), str(store)]) == 1
    err = capsys.readouterr().err
    assert "verification on the target refused the package" in err and "not signed" in err and err.count("\n") == 1
    assert active_gain(store) == 1.0 and len(Store(store).versions()) == 1
    assert not [n for n in os.listdir(store / "versions") if n.startswith(".")]
    # the development override is explicit
    assert flash.main([str(env["v2"]), str(store), "--allow-unsigned"]) == 0
    with pytest.raises(PackageError, match="is not signed"):
        load_package(store / "active")  # ... and so is running it
    monkeypatch.setenv(ENV_ALLOW_UNSIGNED, "1")
    assert active_gain(store) == 2.0


STAGES = ["copied-0", "copied-1", "copied-2", "copied", "verified", "stored", "linked", "activated", "recorded",
          "pruning"]


@pytest.mark.parametrize("stage", STAGES)
def test_killed_at_any_stage_leaves_a_loadable_verified_active_version(env, stage):
    store = env["store"]
    assert flash.main([str(env["v1"]), str(store)]) == 0
    p = run_flash(str(env["v2"]), str(store), "--keep", "1", kill_at=stage)
    assert p.returncode == -9, (p.returncode, p.stderr)
    gain = active_gain(store)  # loads and verifies, whichever it is
    assert gain == (2.0 if STAGES.index(stage) >= STAGES.index("activated") else 1.0)
    # the next flash cleans up and works; rollback reaches the other version when it survived
    assert flash.main([str(env["v2"]), str(store), "--keep", "2"]) == 0
    assert active_gain(store) == 2.0
    assert not [n for n in os.listdir(store / "versions") if n.startswith(".")]
    assert not [n for n in os.listdir(store) if n.startswith((".active.tmp", ".history.tmp"))]


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]], cut: int | None = None) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    raw = buf.getvalue()
    return io.BytesIO(raw[:cut] if cut else raw)


def _info(name: str, size: int = 0, kind=tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    i = tarfile.TarInfo(name)
    i.size, i.type, i.linkname = size, kind, link
    return i


def _package_members(pkg: Path) -> list:
    return [(_info(n, (pkg / n).stat().st_size), (pkg / n).read_bytes()) for n in sorted(os.listdir(pkg))]


@pytest.mark.parametrize("hostile, message", [
    ([(_info("../evil", 1), b"x")], "not a plain file name"),
    ([(_info("/etc/evil", 1), b"x")], "not a plain file name"),
    ([(_info("sub/evil", 1), b"x")], "not a plain file name"),
    ([(_info("link", kind=tarfile.SYMTYPE, link="/etc/passwd"), None)], "not a regular file"),
    ([(_info("hard", kind=tarfile.LNKTYPE, link="manifest.json"), None)], "not a regular file"),
    ([(_info("dev", kind=tarfile.CHRTYPE), None)], "not a regular file"),
    ([(_info("manifest.json", 2), b"{}"), (_info("manifest.json", 2), b"{}")], "unique"),
])
def test_hostile_tar_streams_are_refused_and_nothing_changes(env, hostile, message):
    store = env["store"]
    assert flash.main([str(env["v1"]), str(store)]) == 0
    with Store(store) as st, pytest.raises(FlashError, match=message):
        st.receive(_tar_files(_tar(hostile)), {}, 3)
    assert active_gain(store) == 1.0
    assert not [n for n in os.listdir(store / "versions") if n.startswith(".")]
    assert not (store.parent / "evil").exists()


def test_truncated_and_oversized_streams_are_refused(env, monkeypatch):
    store = env["store"]
    assert flash.main([str(env["v1"]), str(store)]) == 0
    members = _package_members(env["v2"])
    full = _tar(members).getvalue()
    with tarfile.open(fileobj=io.BytesIO(full)) as tf:
        last = tf.getmembers()[-1]
    for cut in (100, 700, len(full) // 3, last.offset_data + last.size - 10):  # inside headers and data
        with Store(store) as st, pytest.raises(FlashError):
            st.receive(_tar_files(io.BytesIO(full[:cut])), {}, 3)
    monkeypatch.setattr(flash, "MAX_FILE_BYTES", 100)
    with Store(store) as st, pytest.raises(FlashError, match="at most 100"):
        st.receive(_tar_files(_tar(members)), {}, 3)
    assert active_gain(store) == 1.0


def test_a_concurrent_flash_is_refused(env):
    store = env["store"]
    assert flash.main([str(env["v1"]), str(store)]) == 0
    with Store(store):
        with pytest.raises(FlashError, match="another imle-flash"):
            Store(store).__enter__()


def test_active_link_pointing_outside_the_store_is_refused(env, capsys):
    store = env["store"]
    assert flash.main([str(env["v1"]), str(store)]) == 0
    (store / "active").unlink()
    (store / "active").symlink_to("/etc")
    assert flash.main(["--list", str(store)]) == 1
    assert "not at a version of this store" in capsys.readouterr().err


@pytest.mark.parametrize("target", ["-oProxyCommand=touch /tmp/x:path", "user@-evil:path", "us er@host:path"])
def test_targets_that_could_inject_ssh_options_are_refused(target):
    with pytest.raises(FlashError, match="neither a local path"):
        parse_target(target)


def test_target_parsing():
    assert parse_target("/media/sd/opt/imle") == (None, "/media/sd/opt/imle")
    assert parse_target("./a:b") == (None, "./a:b")
    assert parse_target("pi@robot.local:/opt/imle/models") == ("pi@robot.local", "/opt/imle/models")


def test_package_with_a_symlinked_file_is_not_sent(env, capsys):
    (env["v1"] / "g.onnx").rename(env["tmp"] / "g.onnx")
    (env["v1"] / "g.onnx").symlink_to(env["tmp"] / "g.onnx")
    assert flash.main([str(env["v1"]), str(env["store"])]) == 1
    assert "symbolic link" in capsys.readouterr().err


# ---------------------------------------------------------------------------- over ssh, against a local sshd
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sshd(tmp_path):
    sshd_bin = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
    if sshd_bin is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("ssh flash test needs sshd, ssh and ssh-keygen (apt-get install openssh-server openssh-client)")
    d = tmp_path / "sshd"
    d.mkdir()
    for name in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    shutil.copy(d / "client.pub", d / "authorized_keys")
    os.chmod(d / "authorized_keys", 0o600)
    port = _free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        f"PidFile {d / 'sshd.pid'}\nUsePAM no\nStrictModes no\nPasswordAuthentication no\n"
        "PermitRootLogin prohibit-password\nPubkeyAuthentication yes\nLogLevel ERROR\n")
    os.makedirs("/run/sshd", exist_ok=True) if os.geteuid() == 0 else None
    proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(d / "sshd_config")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    ssh = (f"ssh -p {port} -i {d / 'client'} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
           "-o LogLevel=ERROR")
    user = os.environ.get("USER") or __import__("getpass").getuser()
    for _ in range(50):  # wait for the port (not a timed assertion: startup only)
        if proc.poll() is not None:
            pytest.skip(f"sshd could not start here: {proc.stderr.read().decode(errors='replace')[:200]}")
        p = subprocess.run([*ssh.split(), "-o", "BatchMode=yes", f"{user}@127.0.0.1", "true"], capture_output=True)
        if p.returncode == 0:
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.skip("sshd did not accept the test key (unprivileged sshd cannot switch users here)")
    yield ssh, user
    proc.kill()
    proc.wait()


def test_flash_over_ssh_list_and_rollback(env, sshd, capsys):
    ssh, user = sshd
    store = env["store"]
    remote = f"env PYTHONPATH={REPO} {sys.executable} -m runtime.flash"
    common = ["--ssh", ssh, "--remote-flash", remote, "--trusted-keys", str(env["trusted"])]
    target = f"{user}@127.0.0.1:{store}"
    assert flash.main([str(env["v1"]), target, *common]) == 0, capsys.readouterr().err
    assert flash.main([str(env["v2"]), target, *common]) == 0, capsys.readouterr().err
    assert "signed by" in capsys.readouterr().out
    assert active_gain(store) == 2.0
    assert flash.main(["--list", target, *common[:4]]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert flash.main(["--rollback", target, *common[:4]]) == 0
    assert active_gain(store) == 1.0
    # the robot refuses an unsigned package; the error comes back as one line
    (env["v2"] / "manifest.sig").unlink()
    assert flash.main([str(env["v2"]), target, *common]) == 1
    err = capsys.readouterr().err
    assert "not signed" in err and err.count("\n") == 1
    assert active_gain(store) == 1.0
