"""The CUDA kernels, compiled for the host through the shim, equal their NumPy twins bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gpudecode._host import ISAS, HostKernels, build_host_library, host_kernels, select_isa
from gpudecode.kernels import reference as ref
from gpudecode.kernels.reference import grid_shape

MV_DTYPE = np.dtype({"names": ["source", "w", "h", "src_x", "src_y", "dst_x", "dst_y", "flags", "motion_x", "motion_y", "motion_scale"],
                     "formats": ["<i4", "u1", "u1", "<i2", "<i2", "<i2", "<i2", "<u8", "<i4", "<i4", "<u2"],
                     "offsets": [0, 4, 5, 6, 8, 10, 12, 16, 24, 28, 32], "itemsize": 40})


@pytest.fixture(scope="module")
def jit(tmp_path_factory) -> HostKernels:
    """The same .cu sources, compiled here with the system C++ compiler (not the installed build),
    for the instruction set this CPU would use (GPUDECODE_HOST_ISA=baseline: the baseline)."""
    isa = select_isa()
    return HostKernels(build_host_library(tmp_path_factory.mktemp("host") / f"hostkernels-{isa}.so", isa=isa))


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, jit) -> HostKernels:
    """The baseline build, which CPUs without AVX2 run: it must give the same values."""
    if jit.isa == "baseline":
        return jit
    return HostKernels(build_host_library(tmp_path_factory.mktemp("host") / "hostkernels-baseline.so", isa="baseline"))


@pytest.fixture(scope="module")
def gpu_layout(tmp_path_factory) -> HostKernels:
    """The sources with GD_TILE=1, the per-pixel loops the GPU runs (the host build uses runs of
    pixels): the device code path, checked bit for bit without a GPU."""
    from gpudecode._host import BASE_FLAGS

    path = tmp_path_factory.mktemp("host") / "hostkernels-tile1.so"
    return HostKernels(build_host_library(path, flags=(*BASE_FLAGS, "-DGD_TILE=1")))


@pytest.fixture(scope="module", params=["jit", "baseline", "gpu_layout", "installed"])
def k(request, jit, baseline, gpu_layout) -> HostKernels:
    if request.param == "baseline" and jit.isa == "baseline":
        pytest.skip("the jit build is the baseline build already")
    return {"jit": jit, "baseline": baseline, "gpu_layout": gpu_layout}.get(request.param) or host_kernels()


def random_blocks(rng, width, height, misaligned=False) -> np.ndarray:
    """An FFmpeg-like MV list: a partition into 16x16 macroblocks, some split into 8x8/16x8/8x16."""
    recs = []
    for my in range(0, height, 16):
        for mx in range(0, width, 16):
            split = rng.integers(0, 4)
            parts = {0: [(0, 0, 16, 16)], 1: [(0, 0, 16, 8), (0, 8, 16, 8)], 2: [(0, 0, 8, 16), (8, 0, 8, 16)],
                     3: [(0, 0, 8, 8), (8, 0, 8, 8), (0, 8, 8, 8), (8, 8, 8, 8)]}[split]
            for ox, oy, w, h in parts:
                if rng.random() < 0.1:
                    continue  # an intra block: no vector
                dx, dy = (0, 0) if rng.random() < 0.3 else tuple(rng.integers(-12, 13, 2))
                cx, cy = mx + ox + w // 2, my + oy + h // 2
                if misaligned and rng.random() < 0.05:
                    cx += 2
                src = -1 if rng.random() < 0.95 else 1
                recs.append((src, w, h, cx - dx, cy - dy, cx, cy, 0, -2 * dx, -2 * dy, 2))
    return np.array(recs, MV_DTYPE)


@pytest.mark.parametrize("size", [(340, 256), (322, 242), (17, 9), (64, 48)])
@pytest.mark.parametrize("cell_shift", [0, 2, 3])
def test_rasterize_matches_twin(k, size, cell_shift):
    rng = np.random.default_rng(hash(size) % 1000 + cell_shift)
    width, height = size
    for misaligned in (False, True):
        mvs = random_blocks(rng, width, height, misaligned)
        grid = np.zeros((*grid_shape(width, height, cell_shift), 2), np.int16)
        flag = k.rasterize_mv(mvs, grid, cell_shift)
        want, want_flag = ref.rasterize_mv(mvs, width, height, cell_shift)
        np.testing.assert_array_equal(grid, want)
        assert flag == want_flag
        if cell_shift == 0:
            assert not flag  # every block sits on a 1-pixel grid


def test_rasterize_flags_blocks_off_the_grid(k):
    mvs = np.array([(-1, 16, 16, 10, 8, 10, 8, 0, 0, 0, 2)], MV_DTYPE)  # x0 = 2: not a multiple of 8
    grid = np.zeros((*grid_shape(32, 32, 3), 2), np.int16)
    assert k.rasterize_mv(mvs, grid, 3)


# 2100: wider than the host's chunk of 256 cells per grid row
@pytest.mark.parametrize("size", [(340, 256), (322, 242), (33, 17), (2100, 11)])
@pytest.mark.parametrize("cell_shift", [0, 3])
def test_accumulation_chain_matches_twin(k, size, cell_shift):
    rng = np.random.default_rng(7)
    width, height = size
    src, want = None, None
    bufs = [np.empty((height, width), np.int32) for _ in range(2)]
    for step in range(6):
        grid = rng.integers(-9, 10, (*grid_shape(width, height, cell_shift), 2)).astype(np.int16)
        grid[rng.random(grid.shape[:2]) < 0.3] = 0
        out = bufs[step % 2]
        k.accumulate_step(src, out, grid, cell_shift)
        want = ref.accumulate_step(want, grid, cell_shift, width, height)
        np.testing.assert_array_equal(out, want)
        src = out


def test_p_frame_in_one_call_matches_twins(k):
    """The CPU backend's one-call P-frame step (zero, rasterise, fall back to 1-pixel cells, accumulate)."""
    rng = np.random.default_rng(11)
    width, height = 100, 66
    prev = None
    for misaligned in (False, True):
        mvs = random_blocks(rng, width, height, misaligned)
        grid = np.full((*grid_shape(width, height, 3), 2), 7, np.int16)  # stale values: the call zeroes them
        dense = np.full((height, width, 2), 7, np.int16)
        out = np.empty((height, width), np.int32)
        shift = k.p_frame(mvs, grid, dense, prev, out, 3)
        want_grid, want_misaligned = ref.rasterize_mv(mvs, width, height, 3)
        assert want_misaligned == misaligned and shift == (0 if misaligned else 3)
        if misaligned:
            want_grid, _ = ref.rasterize_mv(mvs, width, height, 0)
        np.testing.assert_array_equal(out, ref.accumulate_step(prev, want_grid, shift, width, height))
        prev = out


def test_accumulation_pure_translation(k):
    """A uniform MV (dx, dy) for k steps traces interior pixels back by exactly k*(dx, dy)."""
    width, height, dx, dy = 64, 48, 3, -2
    grid = np.zeros((*grid_shape(width, height, 3), 2), np.int16)
    grid[...] = (dx, dy)
    src, bufs = None, [np.empty((height, width), np.int32) for _ in range(2)]
    for step in range(4):
        k.accumulate_step(src, bufs[step % 2], grid, 3)
        src = bufs[step % 2]
    sx, sy = src & 0xFFFF, src >> 16
    ys, xs = np.mgrid[0:height, 0:width]
    interior = (xs >= 4 * dx) & (ys < height + 4 * dy)
    assert np.all(xs[interior] - sx[interior] == 4 * dx) and np.all(ys[interior] - sy[interior] == 4 * dy)


def random_planes(rng, width, height, pad=16):
    cw, ch = (width + 1) // 2, (height + 1) // 2
    y = rng.integers(0, 256, (height, width + pad), dtype=np.uint8)
    u = rng.integers(0, 256, (ch, cw + pad // 2), dtype=np.uint8)
    v = rng.integers(0, 256, (ch, cw + pad // 2), dtype=np.uint8)
    return y, u, v


# 343: a row's short last run has an odd length (the host redoes it as a whole run plus one pixel)
@pytest.mark.parametrize("size", [(340, 256), (321, 241), (343, 9), (5, 3)])
@pytest.mark.parametrize("matrix", [0, 1, 2, 3])
def test_yuv420_to_rgb_matches_twin(k, size, matrix):
    rng = np.random.default_rng(matrix)
    width, height = size
    y, u, v = random_planes(rng, width, height)
    out = np.empty((height, width, 3), np.uint8)
    k.yuv420_to_rgb(y, u, v, matrix, out)
    np.testing.assert_array_equal(out, ref.yuv420_to_rgb(y, u, v, width, height, matrix))


@pytest.mark.parametrize("matrix", [0, 1, 2, 3])
def test_yuv420_to_rgb_every_chroma_pair(k, matrix):
    """All 65536 (U, V) pairs (the 16-bit chroma split depends on them alone), each under four lumas."""
    rng = np.random.default_rng(matrix)
    u, v = (a.astype(np.uint8) for a in np.meshgrid(np.arange(256), np.arange(256), indexing="ij"))
    y = rng.integers(0, 256, (512, 512), dtype=np.uint8)
    y[:2, :2] = [[0, 255], [16, 235]]  # the range ends at the (U, V) = (0, 0) sample
    out = np.empty((512, 512, 3), np.uint8)
    k.yuv420_to_rgb(y, u, v, matrix, out)
    np.testing.assert_array_equal(out, ref.yuv420_to_rgb(y, u, v, 512, 512, matrix))


_EXHAUSTIVE = r"""
#include <stdio.h>
#include "host/shim.h"
#include "common.cuh"
static const int M[4][6] = {MATRICES};
static int clamp(int v) { return v < 0 ? 0 : (v > 255 ? 255 : v); }
int main(void) {
    long bad = 0;
    for (int m = 0; m < 4; ++m) {
        const gd_yuv_coeffs k = gd_yuv_matrix(m);
        const int scale = M[m][0], offset = M[m][1], cr_r = M[m][2], cb_g = M[m][3], cr_g = M[m][4], cb_b = M[m][5];
        for (int u = 0; u < 256; ++u)
            for (int v = 0; v < 256; ++v) {
                const gd_chroma ch = gd_chroma_terms(u, v, k);
                const int d = u - 128, e = v - 128;
                for (int y = 0; y < 256; ++y) {
                    gd_u8 rgb[3];
                    gd_pixel_from_terms(y, k, ch, rgb);
                    const int c = scale * (y - offset);  /* the twin's formula (reference.yuv_to_rgb) */
                    bad += rgb[0] != clamp((c + cr_r * e + 128) >> 8);
                    bad += rgb[1] != clamp((c - cb_g * d - cr_g * e + 128) >> 8);
                    bad += rgb[2] != clamp((c + cb_b * d + 128) >> 8);
                }
            }
    }
    printf("%ld\n", bad);
    return 0;
}
"""


def test_yuv_arithmetic_is_exact_for_every_input(tmp_path):
    """The kernels' 16-bit form of the conversion (common.cuh) equals the twin's 8.8 formula for all
    2^24 (Y, U, V) of every matrix: an identity, checked exhaustively in C (about a second)."""
    import shutil
    import subprocess

    from gpudecode.kernels import KERNEL_DIR

    cxx = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    matrices = ", ".join("{" + ", ".join(map(str, ref.YUV_MATRICES[m])) + "}" for m in range(4))
    src = tmp_path / "exhaustive.cpp"
    src.write_text(_EXHAUSTIVE.replace("MATRICES", matrices))
    exe = tmp_path / "exhaustive"
    subprocess.run([cxx, "-O2", "-I", str(KERNEL_DIR), str(src), "-o", str(exe)], check=True, capture_output=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "0", f"{out.strip()} channel values differ from the twin's formula"


def nv12_views(rng, width, height):
    """NVDEC's layout: one interleaved UV plane; U and V are strided views into it."""
    y, _, _ = random_planes(rng, width, height)
    uv = rng.integers(0, 256, ((height + 1) // 2, 2 * ((width + 1) // 2) + 8), dtype=np.uint8)
    return y, uv[:, 0::2], uv[:, 1::2]


@pytest.mark.parametrize("size", [(340, 256), (33, 17)])
def test_nv12_input_matches_twin(k, size):
    rng = np.random.default_rng(5)
    width, height = size
    y, u, v = nv12_views(rng, width, height)
    out = np.empty((height, width, 3), np.uint8)
    k.yuv420_to_rgb(y, u, v, 1, out)
    np.testing.assert_array_equal(out, ref.yuv420_to_rgb(y, u, v, width, height, 1))
    iframe = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mv, res = np.empty((height, width, 2), np.int16), np.empty((height, width, 3), np.int16)
    k.gather_mv_residual(None, iframe, y, u, v, 1, mv, res)
    np.testing.assert_array_equal(res, ref.gather_mv_residual(None, iframe, y, u, v, width, height, 1)[1])


@pytest.mark.parametrize("size", [(340, 256), (321, 241), (343, 9)])
@pytest.mark.parametrize("identity", [False, True])
def test_gather_matches_twin(k, size, identity):
    rng = np.random.default_rng(3)
    width, height = size
    y, u, v = random_planes(rng, width, height)
    iframe = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    src = None
    if not identity:
        sx, sy = rng.integers(0, width, (height, width)), rng.integers(0, height, (height, width))
        src = ((sy << 16) | sx).astype(np.int32)
        # The I-frame's last pixel as a source (the host fetches 4 bytes per pixel elsewhere), and
        # a row of contiguous sources (the host's block copy).
        src[0, 0:8:2] = src[-1, -1] = ((height - 1) << 16) | (width - 1)
        src[1, :] = (7 << 16) | np.arange(width)
    mv = np.empty((height, width, 2), np.int16)
    res = np.empty((height, width, 3), np.int16)
    k.gather_mv_residual(src, iframe, y, u, v, 0, mv, res)
    want_mv, want_res = ref.gather_mv_residual(src, iframe, y, u, v, width, height, 0)
    np.testing.assert_array_equal(mv, want_mv)
    np.testing.assert_array_equal(res, want_res)
    mv_only = np.empty_like(mv)
    k.gather_mv_residual(src, None, y, u, v, 0, mv_only, None)
    np.testing.assert_array_equal(mv_only, want_mv)


@pytest.mark.parametrize("name", ["v_SoccerJuggling_g23_c01.avi", "v_GGSY1Qvo990.mp4"])
def test_kernels_on_real_mvs(k, real_dir, name):
    """MVs exported by FFmpeg from real mpeg4 and h264 clips: the whole chain equals the twins."""
    from gpudecode._av import colour_matrix, open_video, yuv420_planes
    from gpudecode._av import motion_vectors

    container, stream = open_video(real_dir / name, export_mvs=True)
    width, height = stream.codec_context.width, stream.codec_context.height
    src = want = None
    bufs = [np.empty((height, width), np.int32) for _ in range(2)]
    iframe = np.empty((height, width, 3), np.uint8)
    with container:
        for i, frame in enumerate(container.decode(stream)):
            planes = yuv420_planes(frame)
            m = colour_matrix(frame)
            if i == 0:
                k.yuv420_to_rgb(*planes, m, iframe)
                np.testing.assert_array_equal(iframe, ref.yuv420_to_rgb(*planes, width, height, m))
                continue
            mvs = motion_vectors(frame)
            assert len(mvs) > 0
            for shift in (3, 0):
                grid = np.zeros((*grid_shape(width, height, shift), 2), np.int16)
                assert not k.rasterize_mv(mvs, grid, shift)
                want_grid, _ = ref.rasterize_mv(mvs, width, height, shift)
                np.testing.assert_array_equal(grid, want_grid)
            out = bufs[i % 2]
            k.accumulate_step(src, out, grid, 0)
            want = ref.accumulate_step(want, want_grid, 0, width, height)
            np.testing.assert_array_equal(out, want)
            src = out
            if i == 5:
                break
    mv, res = np.empty((height, width, 2), np.int16), np.empty((height, width, 3), np.int16)
    k.gather_mv_residual(src, iframe, *planes, m, mv, res)
    want_mv, want_res = ref.gather_mv_residual(src, iframe, *planes, width, height, m)
    np.testing.assert_array_equal(mv, want_mv)
    np.testing.assert_array_equal(res, want_res)
    assert np.abs(mv).max() > 0  # real motion was accumulated


def test_colour_conversion_close_to_ffmpeg(real_dir):
    """Our fixed-point BT.601 conversion stays within a few levels of FFmpeg's own (swscale)."""
    from gpudecode._av import colour_matrix, open_video, yuv420_planes

    container, stream = open_video(real_dir / "v_SoccerJuggling_g23_c01.avi")
    with container:
        frame = next(container.decode(stream))
        ours = ref.yuv420_to_rgb(*yuv420_planes(frame), frame.width, frame.height, colour_matrix(frame))
        theirs = frame.to_ndarray(format="rgb24")
    diff = np.abs(ours.astype(int) - theirs.astype(int))
    assert np.median(diff) <= 2 and np.mean(diff) < 4


def test_installed_build_is_current():
    """The libraries built at install time carry the digest of the sources they were built from."""
    import importlib.util

    from gpudecode._host import library_digest, sources_digest

    specs = {isa: importlib.util.find_spec(module) for isa, (_, _, module) in ISAS.items()}
    if specs["baseline"] is None:
        pytest.skip("installed without a C++ compiler: the sources are compiled on first use instead")
    for isa, spec in specs.items():
        assert spec is not None, f"the {isa} build is missing: run `pip install -e .` again"
        assert library_digest(spec.origin) == sources_digest(), f"stale {isa} build: run `pip install -e .` again"
    assert host_kernels().path == Path(specs[select_isa()].origin)


def test_isa_choice(monkeypatch):
    """The fastest build the CPU runs, unless GPUDECODE_HOST_ISA names one; bad names are refused."""
    import gpudecode._host as host
    from gpudecode.errors import BackendUnavailableError

    monkeypatch.delenv("GPUDECODE_HOST_ISA", raising=False)
    assert select_isa() == host.supported_isas()[-1]
    monkeypatch.setenv("GPUDECODE_HOST_ISA", "baseline")
    assert select_isa() == "baseline"
    monkeypatch.setenv("GPUDECODE_HOST_ISA", "sse9")
    with pytest.raises(ValueError, match="GPUDECODE_HOST_ISA"):
        select_isa()
    if "avx2" in ISAS:  # a CPU without AVX2 asked for it: a clear error, not SIGILL
        monkeypatch.setattr(host, "supported_isas", lambda: ["baseline"])
        monkeypatch.setenv("GPUDECODE_HOST_ISA", "avx2")
        with pytest.raises(BackendUnavailableError, match="does not have"):
            select_isa()


def test_forced_baseline_matches_twin(tmp_path):
    """GPUDECODE_HOST_ISA=baseline loads the baseline build in a fresh process, and it is bit-exact."""
    import os
    import subprocess
    import sys

    script = """
import numpy as np
from gpudecode._host import host_kernels
from gpudecode.kernels import reference as ref
from tests.test_kernels_host import random_planes
k = host_kernels()
assert k.isa == "baseline", k.isa
rng = np.random.default_rng(0)
y, u, v = random_planes(rng, 341, 243)
out = np.empty((243, 341, 3), np.uint8)
k.yuv420_to_rgb(y, u, v, 1, out)
np.testing.assert_array_equal(out, ref.yuv420_to_rgb(y, u, v, 341, 243, 1))
src = ((rng.integers(0, 243, (243, 341)) << 16) | rng.integers(0, 341, (243, 341))).astype(np.int32)
mv, res = np.empty((243, 341, 2), np.int16), np.empty((243, 341, 3), np.int16)
k.gather_mv_residual(src, out, y, u, v, 1, mv, res)
want_mv, want_res = ref.gather_mv_residual(src, out, y, u, v, 341, 243, 1)
np.testing.assert_array_equal(mv, want_mv)
np.testing.assert_array_equal(res, want_res)
"""
    env = {**os.environ, "GPUDECODE_HOST_ISA": "baseline"}
    env.pop("GPUDECODE_HOST_KERNELS", None)
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=root)
    assert proc.returncode == 0, proc.stderr
