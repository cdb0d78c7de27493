"""The GOP index: read from the stream, cached on disk, built in parallel."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest

import gpudecode.index as index_mod
from gpudecode import CorruptVideoError, GopIndex, GpudecodeError, IndexCache, index_video, index_videos
from gpudecode.encode import write_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (30, 48, 64, 3), dtype=np.uint8)
    return write_video(tmp_path_factory.mktemp("idx") / "clip.mp4", frames, codec="mpeg4", gop=12)


def test_gop_table_of_a_canonical_video(clip):
    ix = index_video(clip, cache=False)
    assert (ix.codec, ix.width, ix.height, ix.num_frames) == ("mpeg4", 64, 48, 30)
    assert ix.gop_starts == (0, 12, 24) and ix.gop_lengths == (12, 12, 6)  # short last GOP
    assert (ix.num_i, ix.num_p, ix.num_b) == (3, 27, 0)
    assert ix.seekable and not ix.variable_frame_rate and ix.problems() == []
    assert GopIndex.from_json(ix.to_json()) == ix


def test_real_clips_agree_with_the_manifest(real_dir):
    """Frame and I/P/B counts and the gaps between I-frames, for all 25 real clips."""
    rows = list(csv.DictReader(open(real_dir / "MANIFEST.tsv"), delimiter="\t"))
    assert len(rows) == 25
    results = index_videos([real_dir / r["file"] for r in rows], workers=2, cache=False, progress=False)
    for r in rows:
        ix = results[str(real_dir / r["file"])]
        assert isinstance(ix, GopIndex), ix
        assert ix.num_frames == int(r["frames"]), r["file"]
        assert (ix.num_i, ix.num_p, ix.num_b) == (int(r["I"]), int(r["P"]), int(r["B"])), r["file"]
        if r["I_gaps"] != "-":
            assert {int(g) for g in r["I_gaps"].split(",")} <= set(ix.gop_lengths[:-1]), r["file"]
        w, h = (int(v) for v in r["res"].split("x"))
        assert (ix.width, ix.height) == (w, h)
        # B-frames are read as is in MPEG-4 Part 2 (skipped: the P chain stays exact) and reported as
        # a problem with the remedy in every other codec, never silently accepted.
        assert bool(ix.problems()) == (int(r["B"]) > 0 and not r["codec"].startswith("mpeg4")), r["file"]
        assert ix.skips_b_frames == (int(r["B"]) > 0 and r["codec"].startswith("mpeg4")), r["file"]


def test_cache_hit_skips_decoding(clip, tmp_path, monkeypatch):
    cache = IndexCache(tmp_path / "c.sqlite")
    first = index_video(clip, cache=cache)
    monkeypatch.setattr(index_mod, "build_index", lambda p: pytest.fail("re-indexed a cached video"))
    assert index_video(clip, cache=cache) == first


def test_cache_is_invalidated_when_the_file_changes(tmp_path):
    cache = IndexCache(tmp_path / "c.sqlite")
    path = tmp_path / "v.mp4"
    rng = np.random.default_rng(1)
    write_video(path, rng.integers(0, 256, (13, 32, 32, 3), dtype=np.uint8), gop=12)
    assert index_video(path, cache=cache).num_frames == 13
    write_video(path, rng.integers(0, 256, (25, 32, 32, 3), dtype=np.uint8), gop=12)
    os.utime(path, ns=(os.stat(path).st_atime_ns, os.stat(path).st_mtime_ns + 10**9))
    assert index_video(path, cache=cache).num_frames == 25


def test_failures_are_cached_and_typed(tmp_path, monkeypatch):
    cache = IndexCache(tmp_path / "c.sqlite")
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video\n")
    with pytest.raises(CorruptVideoError, match="notes.mp4") as first:
        index_video(bad, cache=cache)
    monkeypatch.setattr(index_mod, "build_index", lambda p: pytest.fail("retried a cached failure"))
    with pytest.raises(CorruptVideoError) as again:
        index_video(bad, cache=cache)
    assert str(again.value) == str(first.value)


def test_index_videos_reports_bad_files_without_raising(clip, tmp_path):
    empty = tmp_path / "empty.avi"
    empty.touch()
    missing = tmp_path / "missing.mp4"
    results = index_videos([clip, empty, missing], workers=2, cache=IndexCache(tmp_path / "c.sqlite"), progress=False)
    assert list(results) == [str(clip), str(empty), str(missing)]
    assert isinstance(results[str(clip)], GopIndex)
    assert isinstance(results[str(empty)], GpudecodeError) and "empty" in str(results[str(empty)])
    assert isinstance(results[str(missing)], GpudecodeError) and "missing.mp4" in str(results[str(missing)])
