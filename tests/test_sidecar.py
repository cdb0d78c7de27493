"""MV sidecars (gpudecode.sidecar): the round trip is exact, and every way a sidecar can be wrong for its
video (stale, truncated, corrupt, another format version, missing) is a typed error naming the file."""

from __future__ import annotations

import dataclasses
import os
import struct

import numpy as np
import pytest

from gpudecode._av import MV_DTYPE, PICT_P, motion_vectors, open_video
from gpudecode.errors import (
    CorruptSidecarError,
    MissingSidecarError,
    SidecarError,
    SidecarVersionError,
    StaleSidecarError,
    TruncatedSidecarError,
)
from gpudecode.index import index_video
from gpudecode.sidecar import (
    CACHE_ENV,
    SidecarReader,
    _chain_frames,
    sidecar_path,
    write_sidecar,
)

from .media import synthetic_video
from .test_bframes import encode_mpeg4
from .test_engine import textured_translation


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("sidecar_clips")
    frames = textured_translation(96, 64, 27, 3, -2)
    return {
        "mpeg4": synthetic_video(d / "m.mp4", "mpeg4", size=(96, 64), num_frames=30, gop=12),
        "h264": synthetic_video(d / "h.mp4", "h264", size=(96, 64), num_frames=30, gop=12, dx=-3, dy=2),
        "mpeg4_bframes": encode_mpeg4(d / "b.avi", frames, b_frames=2),
        "h264_unaligned": synthetic_video(d / "u.mp4", "h264", size=(90, 62), num_frames=14, gop=6),
    }


def decoded_records(path) -> dict[int, np.ndarray]:
    """Every P-frame's FFmpeg records by frame number, straight from the decoder."""
    out = {}
    container, stream = open_video(path, export_mvs=True)
    with container:
        for i, frame in enumerate(container.decode(stream)):
            if int(frame.pict_type) == PICT_P:
                out[i] = motion_vectors(frame).copy()
    return out


@pytest.mark.parametrize("name", ["mpeg4", "h264", "mpeg4_bframes", "h264_unaligned"])
def test_round_trip_gives_the_decoders_records(clips, name, tmp_path):
    video = tmp_path / os.path.basename(clips[name])
    video.write_bytes(clips[name].read_bytes())
    written = write_sidecar(video)
    assert written.path == str(sidecar_path(video)) == str(video) + ".mvs"
    index = written.index
    assert index == dataclasses.replace(index_video(video, cache=False), extra=index.extra)
    want = decoded_records(video)
    chains = [_chain_frames(index, g) for g in range(index.num_gops)]
    # All of every GOP, and prefixes (a sample inflates only up to its deepest position).
    for wanted in ([(g, len(c)) for g, c in enumerate(chains)], [(g, len(c) // 2) for g, c in enumerate(chains)]):
        got = SidecarReader().read(index, wanted)
        records = got.records.view(MV_DTYPE)
        row = 0
        for gop, n in wanted:
            assert got.first_row[gop] == row
            for frame in chains[gop][:n]:
                a = want[frame][want[frame]["source"] < 0]
                b = records[got.offsets[row]:got.offsets[row + 1]]
                for field in ("w", "h", "src_x", "src_y", "dst_x", "dst_y"):
                    np.testing.assert_array_equal(b[field], a[field], err_msg=f"frame {frame} {field}")
                assert np.all(b["source"] == -1)
                row += 1
        assert len(got.cell_shifts) == row == len(got.offsets) - 1


def test_cell_shift_follows_the_kernels_rule(clips):
    """The shift the GPU stage rasterises with is the one the CPU stage derives from decoded records."""
    from gpudecode._host import host_kernels
    from gpudecode.kernels import CELL_SHIFT

    k = host_kernels()
    for name in ("h264", "h264_unaligned"):
        written = write_sidecar(clips[name])
        index = written.index
        wanted = [(g, len(_chain_frames(index, g))) for g in range(index.num_gops)]
        got = SidecarReader().read(index, wanted)
        want = decoded_records(clips[name])
        frames = [f for g, _ in wanted for f in _chain_frames(index, g)]
        scratch = np.empty(40 * max(len(r) for r in want.values()) + 40, np.uint8)
        expected = [k.raw.gd_host_append_mvs(want[f].ctypes.data if len(want[f]) else None, len(want[f]),
                                             scratch.ctypes.data, CELL_SHIFT) for f in frames]
        assert got.cell_shifts.tolist() == expected


def test_sidecar_bytes_are_deterministic_and_small(clips):
    a = write_sidecar(clips["mpeg4"])
    first = open(a.path, "rb").read()
    b = write_sidecar(clips["mpeg4"])
    assert open(b.path, "rb").read() == first
    assert a.nbytes < 0.2 * a.video_bytes


def test_cache_dir_mirrors_the_videos_path(clips, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    written = write_sidecar(clips["mpeg4"], cache_dir=cache)
    assert written.path == str(cache / os.path.abspath(clips["mpeg4"]).lstrip("/")) + ".mvs"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    reader = SidecarReader()
    assert reader.path(clips["mpeg4"]) == sidecar_path(clips["mpeg4"], cache)
    reader.check(clips["mpeg4"], written.index, gops=True)


# -- what goes wrong ------------------------------------------------------------------------------------------
@pytest.fixture
def fresh(clips, tmp_path):
    """A private copy of the mpeg4 clip with its sidecar: (video, sidecar, index)."""
    video = tmp_path / "clip.mp4"
    video.write_bytes(clips["mpeg4"].read_bytes())
    written = write_sidecar(video)
    return video, written.path, written.index


def read_all(index, reader=None):
    reader = reader or SidecarReader()
    return reader.read(index, [(g, len(_chain_frames(index, g))) for g in range(index.num_gops)])


def expect(error, index, match, reader=None):
    with pytest.raises(error, match=match) as info:
        read_all(index, reader)
    assert info.value.path and info.value.path.endswith(".mvs")
    assert info.value.path in str(info.value)
    return info.value


def test_missing(fresh):
    video, side, index = fresh
    os.unlink(side)
    e = expect(MissingSidecarError, index, "no MV sidecar")
    assert e.kind == "missing" and "gpudecode mvs" in str(e)


def test_stale_when_the_video_is_touched(fresh):
    video, side, index = fresh
    st = os.stat(video)
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert expect(StaleSidecarError, index, "stale").kind == "stale"


def test_stale_when_the_content_changes_behind_size_and_time(fresh):
    """Same size, same mtime, other bytes: the head/tail hash catches it."""
    video, side, index = fresh
    st = os.stat(video)
    data = bytearray(video.read_bytes())
    data[-100] ^= 0xFF
    video.write_bytes(bytes(data))
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns))
    expect(StaleSidecarError, index, "content differs")


def test_stale_when_the_index_lists_other_gops(fresh):
    video, side, index = fresh
    other = dataclasses.replace(index, gop_starts=(0, 11, 24), gop_lengths=(11, 13, 6))
    expect(StaleSidecarError, other, "GOPs")


def test_wrong_version(fresh):
    video, side, index = fresh
    data = bytearray(open(side, "rb").read())
    data[8:12] = struct.pack("<I", 99)
    open(side, "wb").write(bytes(data))
    assert expect(SidecarVersionError, index, "version 99").kind == "version"


@pytest.mark.parametrize("keep", [0, 5, 20, "table", "last_gop"])
def test_truncated(fresh, keep):
    video, side, index = fresh
    data = open(side, "rb").read()
    if keep == "table":
        keep = 40  # inside the metadata: the table would end past the end of the file
    elif keep == "last_gop":
        keep = len(data) - 3
    open(side, "wb").write(data[:keep])
    err = (CorruptSidecarError, TruncatedSidecarError) if keep == 0 else TruncatedSidecarError
    with pytest.raises(err) as info:
        read_all(index)
    assert info.value.path == side


@pytest.mark.parametrize("where", ["magic", "meta", "table", "gop"])
def test_corrupt(fresh, where):
    video, side, index = fresh
    data = bytearray(open(side, "rb").read())
    meta_len = struct.unpack_from("<I", data, 12)[0]
    at = {"magic": 1, "meta": 40, "table": 32 + meta_len + 3, "gop": len(data) - 10}[where]
    data[at] ^= 0x10
    open(side, "wb").write(bytes(data))
    match = {"magic": "magic", "meta": "metadata", "table": "GOP table", "gop": "GOP 2 fails its checksum"}[where]
    expect(CorruptSidecarError, index, match)


def test_a_bad_sidecar_is_not_retried_until_it_changes(fresh):
    video, side, index = fresh
    good = open(side, "rb").read()
    data = bytearray(good)
    data[-10] ^= 0x10
    open(side, "wb").write(bytes(data))
    reader = SidecarReader()
    first = expect(CorruptSidecarError, index, "checksum", reader)
    assert expect(CorruptSidecarError, index, "checksum", reader) is first  # remembered, not re-read
    write_sidecar(video)  # rewritten (a new file): read afresh
    read_all(index, reader)


def test_errors_pickle_with_their_fields(fresh):
    import pickle

    video, side, index = fresh
    os.unlink(side)
    with pytest.raises(SidecarError) as info:
        read_all(index)
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is MissingSidecarError and again.path == side and again.reason == info.value.reason
