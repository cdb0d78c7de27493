"""Sidecar MVs in the engines: outputs bit-exact with decoded MVs (CPU engine, and the CPU stage + GPU stage
on the host executor, NVDEC's layout stood in for by PyAV), no decoder opened by the CPU stage with
``pixels="nvdec"``, and a clip whose sidecar cannot be used falls back to decoding, reported once."""

from __future__ import annotations

import os
import shutil
import warnings

import numpy as np
import pytest

from gpudecode import index_video, sample_gops
from gpudecode.cpu import CpuBackend
from gpudecode.errors import SidecarWarning
from gpudecode.executor import HostExecutor
from gpudecode.packet import CpuStage
from gpudecode.sidecar import write_sidecar
from gpudecode.stage import GpuStage
from tests import media
from tests.test_batch import PyAvNv12
from tests.test_bframes import encode_mpeg4
from tests.test_engine import textured_translation

MODALITY_SETS = [("iframe", "mv", "residual"), ("mv",), ("residual",)]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """mpeg4 and h264 (one not a multiple of 16, one with a short last GOP), mpeg4 with B-frames (AVI, MP4
    with quarter-pel), each with its sidecar."""
    d = tmp_path_factory.mktemp("sidecar_engines")
    frames = textured_translation(128, 96, 30, 3, -2)
    paths = [media.synthetic_video(d / "m.mp4", "mpeg4", size=(96, 64), num_frames=30, dx=3, dy=-2),
             media.synthetic_video(d / "h.mp4", "h264", size=(96, 64), num_frames=29, gop=8, dx=-2, dy=1),
             media.unaligned_size_video(d),
             encode_mpeg4(d / "b.avi", frames, b_frames=2),
             encode_mpeg4(d / "bq.mp4", frames, b_frames=2, flags="+qpel")]
    for p in paths:
        write_sidecar(p)
    return [index_video(p, cache=False) for p in paths]


def picks_for(ix, seed):
    return sample_gops(ix.gop_lengths, 6, mode="train", rng=seed, positions=ix.p_positions)


def no_decoding(monkeypatch):
    """Any GopReader opened from here on fails the test."""
    import gpudecode.packet

    def refuse(*a, **k):
        raise AssertionError("a decoder was opened")

    monkeypatch.setattr(gpudecode.packet, "GopReader", refuse)


@pytest.mark.parametrize("modalities", MODALITY_SETS)
def test_cpu_engine_with_sidecar_mvs_is_bit_exact(clips, modalities):
    decoded, side = CpuBackend(), CpuBackend(mvs="sidecar")
    for ix in clips:
        for seed in range(3):
            picks = picks_for(ix, seed)
            want = decoded.decode(ix, picks, modalities=modalities)
            got = side.decode(ix, picks, modalities=modalities)
            for m in modalities:
                np.testing.assert_array_equal(getattr(got, m), getattr(want, m), err_msg=f"{ix.path} {m}")
    assert side.stats["sidecar_clips"] == 3 * len(clips) and not side.stats["sidecar_fallbacks"]


@pytest.mark.parametrize("pixels", ["upload", "nvdec"])
def test_gpu_stage_on_the_host_with_sidecar_mvs_is_bit_exact(clips, pixels, monkeypatch):
    picks = [picks_for(ix, 7) for ix in clips]
    nvdec = PyAvNv12() if pixels == "nvdec" else None
    want = GpuStage(HostExecutor())([CpuStage()(ix, p) for ix, p in zip(clips, picks)])
    stage = CpuStage(mvs="sidecar", pixels=pixels)
    if pixels == "nvdec":
        no_decoding(monkeypatch)
    packets = [stage(ix, p) for ix, p in zip(clips, picks)]
    assert all(p.mvs == "sidecar" and not p.sidecar_error for p in packets)
    if pixels == "nvdec":  # the frames NVDEC must decode: every sampled GOP's I-frame and sampled P-frames
        for ix, p, pk in zip(clips, picks, packets):
            want_frames = {ix.gop_starts[g] for g, _ in p} | {ix.gop_starts[g] + k for g, k in p}
            assert set(pk.frame_indices.tolist()) == want_frames and pk.stats["frames"] == 0
    got = GpuStage(HostExecutor(), pixels=pixels, nvdec=nvdec)(packets)
    for m in ("iframe", "mv", "residual"):
        np.testing.assert_array_equal(getattr(got, m), getattr(want, m), err_msg=m)


def test_mv_only_packets_from_sidecars_need_no_pixels(clips, monkeypatch):
    no_decoding(monkeypatch)
    ix = clips[1]
    packet = CpuStage(mvs="sidecar", pixels="upload")(ix, picks_for(ix, 1), modalities=("mv",))
    assert packet.yuv.nbytes == 0 and packet.mvs == "sidecar"
    want = CpuBackend().decode(ix, picks_for(ix, 1), modalities=("mv",))
    got = GpuStage(HostExecutor())([packet])
    np.testing.assert_array_equal(got.sample(0).mv, want.mv)


@pytest.mark.parametrize("damage", ["missing", "stale", "corrupt"])
def test_a_bad_sidecar_falls_back_to_decoding_and_is_reported_once(clips, tmp_path, damage):
    src = clips[0].path
    video = tmp_path / "clip.mp4"
    shutil.copyfile(src, video)
    write_sidecar(video)
    side = str(video) + ".mvs"
    if damage == "missing":
        os.unlink(side)
    elif damage == "stale":
        st = os.stat(video)
        os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    else:
        data = bytearray(open(side, "rb").read())
        data[-5] ^= 1
        open(side, "wb").write(bytes(data))
    ix = index_video(video, cache=False)
    stage, engine = CpuStage(mvs="sidecar", pixels="upload"), CpuBackend(mvs="sidecar")
    want_gpu = GpuStage(HostExecutor())([CpuStage()(ix, picks_for(ix, 0))])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        packets = [stage(ix, picks_for(ix, s)) for s in range(3)]
        samples = [engine.decode(ix, picks_for(ix, s)) for s in range(3)]
    assert all(p.mvs == "decode" and side in p.sidecar_error for p in packets)
    assert list(stage.sidecar_errors) == [side] and list(engine.sidecar_errors) == [side]
    assert stage.stats["sidecar_fallbacks"] == 3 and engine.stats["sidecar_fallbacks"] == 3
    named = [w for w in caught if issubclass(w.category, SidecarWarning)]
    assert len(named) == (0 if damage == "missing" else 2)  # once per file and reader; none for a missing one
    assert all(side in str(w.message) for w in named)
    got = GpuStage(HostExecutor())(packets[:1])
    for m in ("iframe", "mv", "residual"):
        np.testing.assert_array_equal(getattr(got, m), getattr(want_gpu, m))
        np.testing.assert_array_equal(getattr(samples[0], m), getattr(CpuBackend().decode(ix, picks_for(ix, 0)), m))
