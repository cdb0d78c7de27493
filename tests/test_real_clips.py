"""Every real clip in ../shared/fixtures/real yields a correct sample or a typed error with a remedy;
after `gpudecode prepare`, every one of them yields a sample."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from gpudecode import GpudecodeError, UnsupportedVideoError, VideoSampler, index_video
from gpudecode._av import colour_matrix, open_video, yuv420_planes
from gpudecode.encode import read_pict_types
from gpudecode.kernels import reference as ref


def manifest(real_dir):
    return list(csv.DictReader(open(real_dir / "MANIFEST.tsv"), delimiter="\t"))


def assert_reconstructs(sample, index):
    """I-frame(p - mv(p)) + residual(p) equals the fully decoded frame k, for every segment."""
    want = {index.gop_starts[g] + p for g, p in zip(sample.gops, sample.positions)}
    frames = {}
    container, stream = open_video(index.path)
    with container:
        for i, f in enumerate(container.decode(stream)):
            if i in want:
                frames[i] = ref.yuv420_to_rgb(*yuv420_planes(f), f.width, f.height, colour_matrix(f))
            if i >= max(want):
                break
    h, w = sample.mv.shape[1:3]
    ys, xs = np.mgrid[0:h, 0:w]
    for s in range(sample.num_segments):
        sx, sy = xs - sample.mv[s, ..., 0], ys - sample.mv[s, ..., 1]
        rebuilt = sample.iframe[s][sy, sx].astype(np.int16) + sample.residual[s]
        np.testing.assert_array_equal(rebuilt, frames[index.gop_starts[sample.gops[s]] + sample.positions[s]])


def test_each_real_clip_gives_a_sample_or_a_typed_error_with_a_remedy(real_dir):
    readable = 0
    for row in manifest(real_dir):
        path = real_dir / row["file"]
        try:
            sample = VideoSampler(num_segments=4, cache=False)(path, mode="test")
        except UnsupportedVideoError as e:
            assert row["file"] in str(e) and "gpudecode prepare" in str(e)
            assert int(row["B"]) > 0  # every unreadable clip in the set is unreadable for its B-frames
            continue
        readable += 1
        assert int(row["B"]) == 0 or row["codec"].startswith("mpeg4")  # MPEG-4 Part 2: B-frames skipped
        assert_reconstructs(sample, index_video(path, cache=False))
        assert np.abs(sample.mv).max() > 0  # real footage moves
    assert readable == 10  # 5 without B-frames, and 5 MPEG-4 Part 2 AVIs with them


@pytest.mark.slow
def test_after_prepare_every_real_clip_gives_a_sample(real_dir, tmp_path):
    from gpudecode.prepare import prepare_videos

    rows = manifest(real_dir)
    # tests_data_test.avi and tests_data_test.mp4 would both become tests_data_test.mp4: one folder per extension.
    for ext in (".avi", ".mp4"):
        sources = [real_dir / r["file"] for r in rows if r["file"].endswith(ext)]
        report = prepare_videos(sources, tmp_path / ext[1:], codec="mpeg4", gop=12, size=(340, 256), workers=2,
                                progress=False)
        assert not report.failed, report.summary()
    outputs = sorted(tmp_path.rglob("*.mp4"))
    assert len(outputs) == len(rows)
    for path in outputs:
        index = index_video(path, cache=False)
        assert index.problems() == [] and index.num_b == 0
        assert all(n == 12 for n in index.gop_lengths[:-1]), (path.name, index.gop_lengths)
        assert read_pict_types(path)[::12].count("I") == index.num_gops
        try:
            sample = VideoSampler(num_segments=8, cache=False)(path, mode="train", rng=1)
        except GpudecodeError as e:
            pytest.fail(f"prepared clip still unreadable: {e}")
        assert sample.iframe.shape == (8, 256, 340, 3)
