"""runtime.record.buffer: the crash-safe replay-buffer writer, read back by trainer.data.load_replay_buffer."""
import json

import numpy as np
import pytest

pytest.importorskip("zarr")

from runtime.record import buffer as buf  # noqa: E402
from runtime.record.buffer import ArraySpec, BufferError, ReplayBufferWriter  # noqa: E402
from trainer.data import load_replay_buffer  # noqa: E402

SPECS = [ArraySpec("state", (3,)), ArraySpec("action", (2,)), ArraySpec("img", (4, 5, 3), "uint8")]


def episode(n, seed):
    rng = np.random.default_rng(seed)
    return {"state": rng.normal(size=(n, 3)).astype(np.float32), "action": rng.normal(size=(n, 2)).astype(np.float32),
            "img": rng.integers(0, 256, size=(n, 4, 5, 3), dtype=np.uint8)}


def concat(eps):
    return {k: np.concatenate([e[k] for e in eps]) for k in eps[0]}


def check_loads(path, eps):
    rb = load_replay_buffer(path, keys=("state", "action", "img"))
    want = concat(eps)
    np.testing.assert_array_equal(rb.episode_ends, np.cumsum([len(e["state"]) for e in eps]))
    for k in want:
        np.testing.assert_array_equal(rb.data[k], want[k])


def test_append_episodes_reads_back_exactly_with_seeds(tmp_path, monkeypatch):
    monkeypatch.setattr(buf, "CHUNK_BYTES", 100)  # several chunks per array: appends cross chunk boundaries
    path = tmp_path / "b.zarr"
    eps = [episode(n, i) for i, n in enumerate((7, 1, 13))]
    with ReplayBufferWriter(path, SPECS, {"imle_record": {"x": 1}}) as w:
        for i, e in enumerate(eps):
            assert w.append_episode(e, seed=100 + i) == i
        assert w.n_frames == 21
    check_loads(path, eps)
    with ReplayBufferWriter(path, SPECS) as w:  # reopen and go on
        w.append_episode(eps[0], seed=7)
        assert w.seeds().tolist() == [100, 101, 102, 7]
    check_loads(path, eps + eps[:1])
    assert buf.read_attrs(path) == {"imle_record": {"x": 1}}


def count_writes(path, eps):
    calls = []
    real = buf._write_atomic
    with ReplayBufferWriter(path, SPECS) as w:
        def spy(p, payload):
            calls.append(p)
            real(p, payload)
        buf._write_atomic = spy
        try:
            w.append_episode(eps[-1])
        finally:
            buf._write_atomic = real
    return len(calls)


@pytest.mark.parametrize("rows_per_chunk_bytes", [100, 1 << 20])
def test_a_crash_at_any_write_of_an_append_leaves_the_stored_episodes_intact(tmp_path, monkeypatch,
                                                                             rows_per_chunk_bytes):
    monkeypatch.setattr(buf, "CHUNK_BYTES", rows_per_chunk_bytes)
    eps = [episode(5, 0), episode(9, 1)]
    new = episode(6, 2)
    probe = tmp_path / "probe.zarr"
    with ReplayBufferWriter(probe, SPECS) as w:
        for e in eps:
            w.append_episode(e)
    writes = count_writes(probe, eps + [new])
    assert writes >= 5  # chunks and shapes of 3 arrays + seeds + ends

    class Crash(Exception):
        pass

    for k in range(writes):  # die before write k of the append (all earlier writes happened)
        path = tmp_path / f"b{k}.zarr"
        with ReplayBufferWriter(path, SPECS) as w:
            for e in eps:
                w.append_episode(e)
        real, done = buf._write_atomic, []

        def dying(p, payload):
            if len(done) == k:
                p.with_name(p.name + ".tmp").write_bytes(payload[: len(payload) // 2])  # a half-written temp file
                raise Crash()
            done.append(p)
            real(p, payload)
        w = ReplayBufferWriter(path, SPECS)
        monkeypatch.setattr(buf, "_write_atomic", dying)
        with pytest.raises(Crash):
            w.append_episode(new)
        monkeypatch.setattr(buf, "_write_atomic", real)
        w.close()
        check_loads(path, eps)  # readers see exactly the committed episodes
        with ReplayBufferWriter(path, SPECS) as w2:  # the next recorder trims and appends cleanly
            assert w2.n_episodes == 2 and all(a.shape[0] == 14 for a in w2.arrays.values())
            assert not list(path.rglob("*.tmp"))
            w2.append_episode(new)
        check_loads(path, eps + [new])


def test_discard_last_then_append(tmp_path):
    path = tmp_path / "b.zarr"
    eps = [episode(4, 0), episode(6, 1), episode(3, 2)]
    with ReplayBufferWriter(path, SPECS) as w:
        for i, e in enumerate(eps):
            w.append_episode(e, seed=i)
        assert w.discard_last() == 3
        assert w.discard_last() == 6
    check_loads(path, eps[:1])
    with ReplayBufferWriter(path, SPECS) as w:
        assert w.seeds().tolist() == [0]
        w.append_episode(eps[2], seed=9)
        assert w.seeds().tolist() == [0, 9]
        assert w.discard_last() == 3 and w.discard_last() == 4
        with pytest.raises(BufferError, match="no episode to discard"):
            w.discard_last()


@pytest.mark.parametrize("bad, match", [
    (lambda e: {**e, "state": e["state"][:-1]}, "same number of rows"),
    (lambda e: {k: v[:0] for k, v in e.items()}, "same number of rows >= 1"),
    (lambda e: {"state": e["state"], "action": e["action"]}, "episode has arrays action, state"),
    (lambda e: {**e, "extra": e["state"]}, "episode has arrays"),
    (lambda e: {**e, "state": e["state"][:, :2]}, r"rows of \[2\], the buffer \[3\]"),
    (lambda e: {**e, "action": np.where(np.arange(2) == 1, np.inf, e["action"])}, "non-finite"),
    (lambda e: {**e, "state": np.full_like(e["state"], np.nan)}, "non-finite"),
    (lambda e: {**e, "img": e["img"].astype(np.int64) + 300}, "outside 0..255"),
])
def test_hostile_episodes_are_refused_and_leave_the_buffer_unchanged(tmp_path, bad, match):
    path = tmp_path / "b.zarr"
    good = episode(5, 0)
    with ReplayBufferWriter(path, SPECS) as w:
        w.append_episode(good)
        with pytest.raises(BufferError, match=match) as ei:
            w.append_episode(bad(episode(4, 1)))
        assert "\n" not in str(ei.value)
        assert w.n_episodes == 1
    check_loads(path, [good])


def test_layout_mismatch_foreign_and_damaged_buffers_are_one_line_errors(tmp_path):
    path = tmp_path / "b.zarr"
    with ReplayBufferWriter(path, SPECS) as w:
        w.append_episode(episode(5, 0))
        with pytest.raises(BufferError, match="another recorder"):  # a second writer while the first holds it
            ReplayBufferWriter(path, SPECS)
    with pytest.raises(BufferError, match=r"data/state has rows of \[3\] float32 but this recording writes \[4\]"):
        ReplayBufferWriter(path, [ArraySpec("state", (4,)), *SPECS[1:]])
    with pytest.raises(BufferError, match="holds data/action, data/img, data/state but this recording writes"):
        ReplayBufferWriter(path, SPECS[:2])
    other = tmp_path / "notes"
    other.mkdir()
    (other / "a.txt").write_text("x")
    with pytest.raises(BufferError, match="not a zarr replay buffer"):
        ReplayBufferWriter(other, SPECS)
    # a buffer written by the zarr package (compressed): readable, but not appended to
    import zarr
    from trainer.data import write_replay_buffer
    dp = tmp_path / "dp.zarr"
    write_replay_buffer(dp, {"state": np.zeros((4, 3), np.float32), "action": np.zeros((4, 2), np.float32),
                             "img": np.zeros((4, 4, 5, 3), np.uint8)}, np.array([4]))
    assert zarr.open_group(str(dp), mode="r")["data/state"].shape == (4, 3)
    with pytest.raises(BufferError, match="compressed"):
        ReplayBufferWriter(dp, SPECS)
    # damage: data shorter than episode_ends; garbage metadata; a truncated chunk
    meta = path / "data/state/.zarray"
    good_meta = meta.read_text()
    m = json.loads(good_meta)
    m["shape"][0] = 2
    meta.write_text(json.dumps(m))
    with pytest.raises(BufferError, match="data/state has 2 frames but meta/episode_ends says 5: the buffer is dam"):
        ReplayBufferWriter(path, SPECS)
    for text in ("{not json", "[]", json.dumps({**m, "shape": [-1, 3]}), json.dumps({**m, "dtype": "<c16"}),
                 "x" * (buf.MAX_META_BYTES + 1)):
        meta.write_text(text)
        with pytest.raises(BufferError) as ei:
            ReplayBufferWriter(path, SPECS)
        assert "\n" not in str(ei.value)
    meta.write_text(good_meta)
    chunk = path / "meta/episode_ends/0"
    chunk.write_bytes(chunk.read_bytes()[:5])
    with pytest.raises(BufferError, match="chunk 0 has 0 values"):
        ReplayBufferWriter(path, SPECS)
    with pytest.raises(BufferError, match="needs its array layout"):
        ReplayBufferWriter(tmp_path / "new.zarr")
    with pytest.raises(BufferError, match="not found"):
        ReplayBufferWriter(tmp_path / "missing.zarr", create=False)
    assert not (tmp_path / "missing.zarr").exists()


def test_decreasing_episode_ends_are_refused(tmp_path):
    path = tmp_path / "b.zarr"
    with ReplayBufferWriter(path, SPECS) as w:
        w.append_episode(episode(5, 0))
        w.append_episode(episode(5, 1))
    chunk = path / "meta/episode_ends/0"
    ends = np.fromfile(chunk, "<i8")
    ends[1] = 3
    ends.tofile(chunk)
    with pytest.raises(BufferError, match="not strictly increasing"):
        ReplayBufferWriter(path, SPECS)
