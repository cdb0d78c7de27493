"""Native-memory reliability: no decoded frame outlives its clip, no PyAV object is used after its
container closes, and the inputs that used to pass silently (rotation, several video streams, a file
cut mid-GOP) are reported or handled."""

from __future__ import annotations

import gc
import os
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest

from gpudecode._av import motion_vectors, open_video, pick_video_stream
from gpudecode.cpu import CpuBackend
from gpudecode.encode import CanonicalWriter
from gpudecode.engine import VideoSampler
from gpudecode.errors import OrientationWarning
from gpudecode.gopreader import GopReader
from gpudecode.index import build_index, index_video
from gpudecode.prepare import prepare_one
from gpudecode.sampling import sample_gops

from .media import synthetic_video


def _live_video_frames() -> int:
    """av.VideoFrame objects the garbage collector tracks, counted without collecting anything."""
    # type(), not isinstance(): the latter goes through dead weak proxies and module proxies in the heap
    return sum(1 for o in gc.get_objects() if type(o) is av.VideoFrame)


def _encode(path: Path, frames: np.ndarray, *, encoder: str = "mpeg4", fmt: str | None = None,
            rotation: int | None = None, streams: int = 1, options: dict[str, str] | None = None) -> Path:
    """PyAV encode with the knobs these tests need (display rotation, several streams, raw h264)."""
    with av.open(os.fspath(path), "w", format=fmt) as out:
        outs = []
        for _ in range(streams):
            s = out.add_stream(encoder, rate=25)
            s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
            s.codec_context.gop_size, s.codec_context.max_b_frames = 12, 0
            s.codec_context.options = dict(options or {})
            if rotation is not None:
                s.set_display_rotation(rotation)
            outs.append(s)
        for image in frames:
            for s in outs:
                for packet in s.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                    out.mux(packet)
        for s in outs:
            for packet in s.encode(None):
                out.mux(packet)
    return path


def _blocks(num_frames: int, size=(64, 48), seed: int = 0) -> np.ndarray:
    """Frames of flat 16x16 blocks moving right by 2 px per frame: easy to compare after a re-encode."""
    w, h = size
    rng = np.random.default_rng(seed)
    tile = np.kron(rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8), np.ones((16, 16, 1), np.uint8))
    return np.stack([np.roll(tile, 2 * t, axis=1) for t in range(num_frames)])


# -- memory: frames die with their clip ----------------------------------------------------------------
def test_decoded_frames_do_not_outlive_their_clip(tmp_path):
    """With the collector off, a reference cycle would keep every decoded frame of every clip alive
    (PyAV's cached ``frame.side_data`` makes one); reading MVs must leave none behind."""
    path = synthetic_video(tmp_path / "clip.mp4", "mpeg4", size=(64, 48), num_frames=36)
    index = index_video(path, cache=False)
    backend = CpuBackend()
    backend.decode(index, sample_gops(index.gop_lengths, 3, mode="train", rng=0))  # warm-up
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        before = _live_video_frames()
        for seed in range(10):
            backend.decode(index, sample_gops(index.gop_lengths, 3, mode="train", rng=seed))
        after = _live_video_frames()
    finally:
        if was_enabled:
            gc.enable()
    assert after - before == 0, f"{after - before} decoded frames outlived 10 clips"


def _native_heap_in_use() -> int | None:
    """Bytes glibc's malloc has handed out (mallinfo2), or None off glibc."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
    except (OSError, AttributeError):
        return None
    return libc.mallinfo2().uordblks


def test_native_memory_does_not_grow_per_clip(tmp_path):
    """PyAV's demux generator frees its packet only when closed: dropping it suspended (at every seek
    and early stop) leaked ~150 bytes of native memory each time, ~1.2 KB per 8-segment clip."""
    if _native_heap_in_use() is None:
        pytest.skip("needs glibc's mallinfo2")
    path = synthetic_video(tmp_path / "clip.mp4", "mpeg4", size=(64, 48), num_frames=96)
    index = index_video(path, cache=False)
    backend = CpuBackend()
    picks = [sample_gops(index.gop_lengths, 8, mode="train", rng=seed) for seed in range(300)]
    for p in picks[:50]:  # warm-up: pools, caches, scratch buffers
        backend.decode(index, p)
    before = _native_heap_in_use()
    for p in picks[50:]:
        backend.decode(index, p)
    per_clip = (_native_heap_in_use() - before) / 250
    assert per_clip < 100, f"native heap grew by {per_clip:.0f} bytes per clip"


def test_motion_vectors_equal_pyav_side_data(tmp_path):
    """The cycle-free reader returns the same records as PyAV's own ``frame.side_data``."""
    path = synthetic_video(tmp_path / "clip.mp4", "h264", size=(64, 48), num_frames=14)
    container, stream = open_video(path, export_mvs=True)
    with container:
        compared = 0
        for frame in container.decode(stream):
            ours = motion_vectors(frame)
            sd = frame.side_data.get("MOTION_VECTORS")
            theirs = sd.to_ndarray() if sd is not None else None
            if theirs is None:
                assert len(ours) == 0
            else:
                assert ours.dtype == theirs.dtype  # the cached layout is PyAV's (caught on a PyAV upgrade)
                assert ours.tobytes() == theirs.tobytes()
                compared += len(theirs)
    assert compared > 0


# -- use after close -------------------------------------------------------------------------------------
def test_closed_reader_and_writer_refuse_instead_of_reading_freed_memory(tmp_path):
    path = synthetic_video(tmp_path / "clip.mp4", "mpeg4", size=(64, 48), num_frames=14)
    index = index_video(path, cache=False)
    reader = GopReader(index, export_mvs=False)
    reader.close()
    reader.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        next(reader.frames(0, 0))
    writer = CanonicalWriter(tmp_path / "out.mp4", width=64, height=48)
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.write(np.zeros((48, 64, 3), np.uint8))


def test_index_fields_are_read_while_the_container_is_open(tmp_path):
    """Codec, size and rate come out right on every call (they were read from freed memory)."""
    path = synthetic_video(tmp_path / "clip.avi", "mpeg4", size=(64, 48), num_frames=14, fps=30)
    for _ in range(20):
        ix = build_index(path)
        assert (ix.codec, ix.width, ix.height, round(ix.fps)) == ("mpeg4", 64, 48, 30)


# -- inputs that used to pass silently ---------------------------------------------------------------------
def test_rotation_is_reported_and_warned(tmp_path):
    path = _encode(tmp_path / "phone.mp4", _blocks(14), rotation=90)
    ix = index_video(path, cache=False)
    assert (ix.rotation, ix.mirrored) == (90, False)
    assert any("rotated 90 degrees" in w for w in ix.warnings())
    sampler = VideoSampler(num_segments=2, cache=False)
    with pytest.warns(OrientationWarning, match="phone.mp4"):
        sample = sampler(path, mode="test")
    assert sample.iframe.shape[1:3] == (48, 64)  # coded orientation, as the warning says
    plain = _encode(tmp_path / "plain.mp4", _blocks(14))
    assert index_video(plain, cache=False).rotation == 0


@pytest.mark.parametrize("rotation,turns", [(90, 1), (-90, -1), (180, 2)])
def test_prepare_bakes_the_rotation_in(tmp_path, rotation, turns):
    frames = _blocks(14)
    src = _encode(tmp_path / "phone.mp4", frames, rotation=rotation)
    dst = prepare_one(src, tmp_path / "out" / "phone.mp4", quality=2)
    ix = index_video(dst, cache=False)
    upright = np.rot90(frames[0], k=turns)
    assert (ix.height, ix.width, ix.rotation) == (*upright.shape[:2], 0)
    with av.open(os.fspath(dst)) as c:
        first = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert np.abs(first.astype(int) - upright.astype(int)).mean() < 6  # two lossy encodes apart


def test_second_video_stream_is_reported(tmp_path):
    path = _encode(tmp_path / "two.mp4", _blocks(6), streams=2)
    ix = index_video(path, cache=False)
    assert (ix.video_streams, ix.stream_index) == (2, 0)
    assert any("2 video streams: reading stream #0" in w for w in ix.warnings())


def test_cover_art_is_not_taken_for_the_video():
    flags = av.stream.Disposition
    cover = SimpleNamespace(index=0, disposition=flags.attached_pic)
    video = SimpleNamespace(index=1, disposition=flags.default)
    assert pick_video_stream([cover, video]) is video
    assert pick_video_stream([video, cover]) is video
    assert pick_video_stream([cover]) is cover  # nothing better: read what there is


def test_h264_cut_mid_gop_indexes_and_samples(tmp_path):
    """A raw H.264 stream that starts on a P-frame: the frames without a reference are dropped or
    counted as leading frames, never a crash, and sampling reads the GOPs that follow."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    frames = np.stack([np.roll(base, 2 * t, axis=1) for t in range(30)])
    full = _encode(tmp_path / "full.h264", frames, encoder="libx264", fmt="h264",
                   options={"x264-params": "repeat-headers=1:scenecut=0:keyint=12:min-keyint=12", "bf": "0"})
    with av.open(os.fspath(full)) as c:
        starts = [p.pos for p in c.demux(video=0) if p.size]
    cut = tmp_path / "cut.h264"
    cut.write_bytes(full.read_bytes()[starts[5]:])
    for _ in range(3):
        ix = build_index(cut)
        assert ix.num_gops >= 1 and sum(ix.gop_lengths) == ix.num_frames - ix.leading_frames
        sample = VideoSampler(num_segments=3, cache=False)(cut, mode="train", rng=1)
        assert sample.mv.shape == (3, 48, 64, 2)
