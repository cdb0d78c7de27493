"""The batched GPU engine without a GPU: the CPU stage's packets, the kernels of batch.cu against their
NumPy twins, the trace form against the forward recurrence, and the complete GPU stage on the host
executor bit-exact with the CPU backend (synthetic and real clips, mixed sizes, NVDEC's NV12 layout)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from gpudecode import index_video, sample_gops
from gpudecode._av import motion_vectors
from gpudecode.cpu import CpuBackend
from gpudecode.executor import HostExecutor
from gpudecode.gpu import GpuBackend
from gpudecode.kernels import reference as ref
from gpudecode.kernels import reference_batch as twin
from gpudecode.kernels.reference_batch import cell_shift_for, grid_cell_shifts
from gpudecode.packet import ClipPacket, CpuStage, i420_layout
from gpudecode.stage import GpuStage
from tests import media
from tests.test_kernels_host import random_blocks

REAL = ["v_SoccerJuggling_g23_c01.avi", "v_GGSY1Qvo990.mp4"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Canonical synthetic clips of three sizes (one odd, one not a multiple of 16), both codecs."""
    d = tmp_path_factory.mktemp("batch")
    paths = [media.synthetic_video(d / "a.mp4", "mpeg4", size=(64, 48), num_frames=30, dx=3, dy=-2),
             media.synthetic_video(d / "b.mp4", "h264", size=(96, 64), num_frames=26, gop=8, dx=-2, dy=1),
             media.odd_size_video(d), media.one_frame_video(d)]
    return [index_video(p, cache=False) for p in paths]


def assert_batch_equals_cpu(batch, indexes, picks_list, modalities=("iframe", "mv", "residual"), to_host=np.asarray):
    cpu = CpuBackend()
    for i, (ix, picks) in enumerate(zip(indexes, picks_list)):
        want = cpu.decode(ix, picks, modalities=modalities)
        got = batch.sample(i)
        for m in ("iframe", "mv", "residual"):
            if m not in modalities:
                assert getattr(batch, m) is None
                continue
            np.testing.assert_array_equal(to_host(getattr(got, m)), getattr(want, m), err_msg=f"{ix.path} {m}")
            pad = np.array(to_host(getattr(batch, m)[i]))
            pad[:, :ix.height, :ix.width] = 0
            assert not pad.any(), f"{ix.path} {m}: padding not zero"
        np.testing.assert_array_equal(got.gops, want.gops)
        np.testing.assert_array_equal(got.positions, want.positions)


# ------------------------------------------------------------------------------------------------
# The complete GPU stage on the host executor equals the CPU backend


def test_gpu_stage_equals_cpu_backend_on_a_mixed_batch(clips):
    """Clips of different sizes and codecs in one batch; train picks include position 0 (one-frame GOP)."""
    stage = CpuStage()
    stage._records_capacity = 100  # the MV records buffer grows several times within a clip
    picks = [sample_gops(ix.gop_lengths, 8, mode="train", rng=i) for i, ix in enumerate(clips)]
    ex = HostExecutor()
    batch = GpuStage(ex)([stage(ix, p) for ix, p in zip(clips, picks)])
    assert batch.mv.shape == (4, 8, 121, 161, 2)  # the batch's largest frame
    assert_batch_equals_cpu(batch, clips, picks)
    assert ex.launches == ["batch_zero", "batch_rasterize_mv", "batch_trace_gather", "batch_iframe_rgb"]


@pytest.mark.parametrize("name", REAL)
def test_gpu_stage_equals_cpu_backend_on_real_clips(real_dir, name):
    ix = index_video(real_dir / name, cache=False)
    picks = [sample_gops(ix.gop_lengths, 8, mode=mode, rng=3) for mode in ("train", "test")]
    stage = CpuStage()
    packets = [stage(ix, p) for p in picks]
    for packet in packets:  # decided per frame in C as the records are copied: as a pass over them decides
        np.testing.assert_array_equal(packet.cell_shifts, grid_cell_shifts(packet.mv_records, packet.mv_offsets))
    batch = GpuStage(HostExecutor())(packets)
    assert_batch_equals_cpu(batch, [ix, ix], picks)


def test_gpu_stage_equals_cpu_backend_with_skipped_b_frames(real_dir, tmp_path):
    """MPEG-4 Part 2 with B-frames: the packet carries only the P-frames of each chain, and the chain
    lengths count P-frames, not positions (a synthetic clip and an HMDB-51 AVI in one batch)."""
    from tests.test_bframes import encode_mpeg4
    from tests.test_engine import textured_translation

    synthetic = encode_mpeg4(tmp_path / "b2.mp4", textured_translation(96, 64, 30, 3, -2), b_frames=2)
    indexes = [index_video(synthetic, cache=False),
               index_video(real_dir / "TrumanShow_wave_f_nm_np1_fr_med_26.avi", cache=False)]
    assert all(ix.skips_b_frames for ix in indexes)
    picks = [sample_gops(ix.gop_lengths, 6, mode="train", rng=5, positions=ix.p_positions) for ix in indexes]
    stage = CpuStage()
    packets = [stage(ix, p) for ix, p in zip(indexes, picks)]
    assert list(packets[0].chain_len) == [sum(q <= pos for q in indexes[0].p_positions[g]) for g, pos in picks[0]]
    assert_batch_equals_cpu(GpuStage(HostExecutor())(packets), indexes, picks)


@pytest.mark.parametrize("modalities", [("iframe",), ("mv",), ("residual",), ("iframe", "mv")])
def test_modality_subsets(clips, modalities):
    picks = [sample_gops(ix.gop_lengths, 5, mode="train", rng=7) for ix in clips[:2]]
    stage = CpuStage()
    ex = HostExecutor()
    batch = GpuStage(ex)([stage(ix, p, modalities=modalities) for ix, p in zip(clips[:2], picks)])
    assert_batch_equals_cpu(batch, clips[:2], picks, modalities)
    chain = "mv" in modalities or "residual" in modalities
    assert len(ex.launches) == 3 * chain + ("iframe" in modalities)


def test_launches_per_batch_do_not_grow_with_clips_or_segments(clips):
    """Four launches per batch whether it holds 1 clip of 2 segments or 12 clips of 8."""
    stage, ex = CpuStage(), HostExecutor()
    gpu = GpuStage(ex)
    counts = []
    for n, t in ((1, 2), (12, 8)):
        packets = [stage(clips[i % 2], sample_gops(clips[i % 2].gop_lengths, t, mode="train", rng=i)) for i in range(n)]
        before = len(ex.launches)
        batch = gpu(packets)
        counts.append(len(ex.launches) - before)
        assert batch.mv.shape[:2] == (n, t)
    assert counts == [4, 4]


def test_consecutive_batches_reuse_and_grow_the_double_buffer(clips):
    stage, gpu = CpuStage(), GpuStage(HostExecutor())
    for n in (1, 3, 2, 4):  # the staging buffers alternate and grow
        ixs = [clips[(n + i) % 3] for i in range(n)]
        picks = [sample_gops(ix.gop_lengths, 4, mode="train", rng=n + i) for i, ix in enumerate(ixs)]
        assert_batch_equals_cpu(gpu([stage(ix, p) for ix, p in zip(ixs, picks)]), ixs, picks)


def test_gpu_backend_is_a_batch_of_one_on_any_executor(clips):
    ix = clips[1]
    picks = sample_gops(ix.gop_lengths, 8, mode="test")
    backend = GpuBackend(executor=HostExecutor())
    got, want = backend.decode(ix, picks), CpuBackend().decode(ix, picks)
    for m in ("iframe", "mv", "residual"):
        np.testing.assert_array_equal(getattr(got, m), getattr(want, m))
    assert got.backend == "gpu" and backend.stats["clips"] == 1 and backend.stats["decode"] > 0


class PyAvNv12:
    """Stands in for NVDEC in this test only: frames decoded by PyAV, laid out as NVDEC's NV12 (pitched
    Y rows, then interleaved UV rows), so the GPU stage's NV12 addressing runs bit-exact here."""

    def __init__(self, pitch_pad: int = 32):
        self.pad = pitch_pad

    def nv12(self, path, indices):
        from gpudecode._av import open_video, yuv420_planes

        want, out = set(indices), {}
        container, stream = open_video(path)
        with container:
            for i, frame in enumerate(container.decode(stream)):
                if i in want:
                    y, u, v = yuv420_planes(frame)
                    h, w = frame.height, frame.width
                    ch, cw = u.shape[0], (w + 1) // 2
                    pitch = 2 * cw + self.pad
                    buf = np.zeros((h + ch, pitch), np.uint8)
                    buf[:h, :w] = y[:, :w]
                    buf[h:, 0:2 * cw:2], buf[h:, 1:2 * cw:2] = u[:, :cw], v[:, :cw]
                    out[i] = (buf, h)
                if len(out) == len(want):
                    break
        # (y_ptr, y_pitch, uv_ptr, uv_pitch, keepalive), as gpudecode.gpu.NvdecFrames gives them
        return [(buf.ctypes.data, buf.shape[1], buf.ctypes.data + h * buf.shape[1], buf.shape[1], buf)
                for buf, h in (out[i] for i in indices)]


def test_nvdec_layout_on_the_host_equals_cpu_backend(clips):
    """pixels='nvdec': the CPU stage ships no pixels and skips the loop filter; MVs stay identical."""
    ixs = clips[:3]
    picks = [sample_gops(ix.gop_lengths, 6, mode="train", rng=5) for ix in ixs]
    stage = CpuStage(pixels="nvdec")
    packets = [stage(ix, p) for ix, p in zip(ixs, picks)]
    assert all(p.yuv.nbytes == 0 and len(p.frame_indices) for p in packets)
    batch = GpuStage(HostExecutor(), pixels="nvdec", nvdec=PyAvNv12())(packets)
    assert_batch_equals_cpu(batch, ixs, picks)


def test_bad_batches_are_rejected(clips):
    stage = CpuStage()
    a = stage(clips[0], sample_gops(clips[0].gop_lengths, 8, mode="test"))
    b = stage(clips[0], sample_gops(clips[0].gop_lengths, 4, mode="test"))
    gpu = GpuStage(HostExecutor())
    with pytest.raises(ValueError, match="same segments"):
        gpu([a, b])
    with pytest.raises(ValueError, match="pixels='nvdec'"):
        GpuStage(HostExecutor(), pixels="nvdec")([a])
    with pytest.raises(ValueError, match="at least one"):
        gpu([])


def test_packet_is_compact_and_pickles(clips):
    ix = clips[0]
    packet = CpuStage()(ix, sample_gops(ix.gop_lengths, 8, mode="test"))
    again = pickle.loads(pickle.dumps(packet))
    for name in ("mv_records", "mv_offsets", "yuv", "frame_keys", "chain_first", "iframe_slot", "frame_slot"):
        np.testing.assert_array_equal(getattr(again, name), getattr(packet, name))
    # the picks' GOPs' I-frames and sampled P-frames, once each, and nothing else
    keys = {tuple(k) for k in packet.frame_keys.tolist()}
    assert keys == {(g, 0) for g in packet.gops} | {(g, p) for g, p in zip(packet.gops, packet.positions) if p > 0}
    assert packet.yuv.nbytes == len(keys) * packet.frame_bytes
    with pytest.raises(ValueError, match="mv_offsets"):
        ClipPacket(**{**packet.__dict__, "mv_offsets": packet.mv_offsets[:-1]})


# ------------------------------------------------------------------------------------------------
# Kernels against their twins; the trace form against the forward recurrence


def random_packet(rng, width, height, segments=5, gop=7, pixels=True) -> ClipPacket:
    """A packet with random MV records (some blocks off the 8-pixel grid), planes and picks."""
    picks = [(int(rng.integers(0, 3)), int(rng.integers(0, gop))) for _ in range(segments)]
    by_gop = {}
    for g, p in picks:
        by_gop[g] = max(by_gop.get(g, 0), p)
    records, counts, shifts, first = [], [0], [], {}
    for g in sorted(by_gop):
        first[g] = len(shifts)
        for _ in range(by_gop[g]):
            mvs = random_blocks(rng, width, height, misaligned=rng.random() < 0.3)
            records.append(mvs.view(np.uint8).reshape(-1))
            counts.append(len(mvs))
            shifts.append(cell_shift_for(mvs))
    keys = sorted({(g, 0) for g, _ in picks} | {(g, p) for g, p in picks})
    slot = {k: i for i, k in enumerate(keys)}
    y, uv, _ = i420_layout(width, height)
    return ClipPacket(
        path=f"random{width}x{height}", width=width, height=height, colour_matrix=int(rng.integers(0, 4)),
        modalities=("iframe", "mv", "residual"), pixels="upload",
        gops=np.array([g for g, _ in picks]), positions=np.array([p for _, p in picks]),
        chain_len=np.array([p for _, p in picks]), mv_records=np.concatenate(records) if records else np.zeros(0, np.uint8),
        mv_offsets=np.cumsum(counts), cell_shifts=np.array(shifts, np.int32),
        chain_first=np.array([first[g] for g, _ in picks], np.int32), frame_keys=np.array(keys, np.int32),
        iframe_slot=np.array([slot[(g, 0)] for g, _ in picks], np.int32),
        frame_slot=np.array([slot[(g, p)] for g, p in picks], np.int32),
        yuv=rng.integers(0, 256, len(keys) * (y + 2 * uv), dtype=np.uint8), frame_indices=np.zeros(len(keys), np.int64))


def plans(packet: ClipPacket) -> list:
    """The twins' view of a packet: per segment its chain's grids (rasterised by the twin) and planes."""
    from tests.test_kernels_host import MV_DTYPE

    frames = [(packet.records(f).view(MV_DTYPE), packet.width, packet.height, int(packet.cell_shifts[f]))
              for f in range(len(packet.cell_shifts))]
    grids = twin.batch_rasterize_mv(frames)
    out = []
    for t in range(packet.num_segments):
        a, k = int(packet.chain_first[t]), int(packet.chain_len[t])
        out.append(twin.SegmentPlan(packet.width, packet.height, packet.colour_matrix, grids[a:a + k],
                                    [f[3] for f in frames[a:a + k]], packet.planes(int(packet.iframe_slot[t])),
                                    packet.planes(int(packet.frame_slot[t]))))
    return out


def test_batch_kernels_equal_twins_on_random_batches():
    rng = np.random.default_rng(0)
    packets = [random_packet(rng, w, h) for w, h in ((340, 256), (33, 17), (161, 121))]
    assert {0, 3} <= {int(s) for p in packets for s in p.cell_shifts}  # both cell sizes occur
    batch = GpuStage(HostExecutor())(packets)
    out_h, out_w = batch.mv.shape[2:4]
    segments = [s for p in packets for s in plans(p)]
    want_mv, want_res = twin.batch_trace_gather(segments, out_h, out_w)
    t = packets[0].num_segments
    np.testing.assert_array_equal(batch.mv.reshape(-1, out_h, out_w, 2), want_mv)
    np.testing.assert_array_equal(batch.residual.reshape(-1, out_h, out_w, 3), want_res)
    np.testing.assert_array_equal(batch.iframe.reshape(-1, out_h, out_w, 3), twin.batch_iframe_rgb(segments, out_h, out_w))
    assert batch.mv.shape[:2] == (3, t)


def test_cell_shift_choice_matches_the_retry_of_the_cpu_backend():
    rng = np.random.default_rng(4)
    for misaligned in (False, True, True):
        mvs = random_blocks(rng, 96, 64, misaligned)
        _, flag = ref.rasterize_mv(mvs, 96, 64, 3)
        assert cell_shift_for(mvs) == (0 if flag else 3)
    assert cell_shift_for(np.zeros(0, mvs.dtype)) == 3


@pytest.mark.parametrize("name", REAL)
def test_trace_equals_forward_recurrence_on_real_clips(real_dir, name):
    """S_k by tracing back (twin and batch kernel) equals k forward steps, for every k of a GOP."""
    from gpudecode._av import open_video

    container, stream = open_video(real_dir / name, export_mvs=True)
    width, height = stream.codec_context.width, stream.codec_context.height
    grids, shifts, records, forward = [], [], [], None
    with container:
        for i, frame in enumerate(container.decode(stream)):
            if i == 0:
                continue
            mvs = motion_vectors(frame)
            shift = cell_shift_for(mvs)
            grids.append(ref.rasterize_mv(mvs, width, height, shift)[0])
            shifts.append(shift)
            records.append(mvs)
            forward = ref.accumulate_step(forward, grids[-1], shift, width, height)
            np.testing.assert_array_equal(twin.trace_source(grids, shifts, width, height), forward, err_msg=f"k={i}")
            if i == 8:
                break
    # the host build of batch_trace_gather, through the stage, for chains k = 1..8 in one batch
    k = len(records)
    y, uv, cw = i420_layout(width, height)
    packet = ClipPacket(
        path=name, width=width, height=height, colour_matrix=0, modalities=("mv",), pixels="upload",
        gops=np.zeros(k, np.int64), positions=np.arange(1, k + 1), chain_len=np.arange(1, k + 1),
        mv_records=np.concatenate([m.view(np.uint8).reshape(-1) for m in records]),
        mv_offsets=np.cumsum([0] + [len(m) for m in records]), cell_shifts=np.array(shifts, np.int32),
        chain_first=np.zeros(k, np.int32), frame_keys=np.zeros((0, 2), np.int32), iframe_slot=-np.ones(k, np.int32),
        frame_slot=-np.ones(k, np.int32), yuv=np.zeros(0, np.uint8), frame_indices=np.zeros(0, np.int64))
    mv = GpuStage(HostExecutor())([packet]).mv[0]
    ys, xs = np.mgrid[0:height, 0:width]
    src = ((ys - mv[k - 1, ..., 1]).astype(np.int32) << 16) | (xs - mv[k - 1, ..., 0])
    np.testing.assert_array_equal(src, forward)
    assert np.abs(mv).max() > 0


def test_cell_shifts_of_a_whole_clip_in_one_pass():
    rng = np.random.default_rng(9)
    frames = [random_blocks(rng, 96, 64, misaligned=m) for m in (False, True, False, True, False)]
    frames.insert(2, frames[0][:0])  # a P-frame with no MV records

    records = np.concatenate([f.view(np.uint8).reshape(-1) for f in frames])
    offsets = np.cumsum([0] + [len(f) for f in frames])
    want = [0 if ref.rasterize_mv(f, 96, 64, 3)[1] else 3 for f in frames]
    assert grid_cell_shifts(records, offsets).tolist() == want and 0 in want and 3 in want
    # the CPU stage's per-frame C glue (copy + the same decision while the records are in cache)
    from gpudecode._host import host_kernels

    append = host_kernels().raw.gd_host_append_mvs
    out = np.zeros(len(records) + 1, np.uint8)
    got, at = [], 0
    for f in frames:
        f = np.ascontiguousarray(f)
        got.append(append(f.ctypes.data if len(f) else None, len(f), out.ctypes.data + at, 3))
        at += f.nbytes
    assert got == want
    assert out[:-1].tobytes() == records.tobytes() and out[-1] == 0  # copied exactly, nothing past the end
