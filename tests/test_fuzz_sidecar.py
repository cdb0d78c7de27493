"""Mutated MV sidecars never crash, hang or raise untyped errors (tests/fuzzing_sidecar.py)."""

from __future__ import annotations

from tests.fuzzing_sidecar import make_corpus, run_corpus
from tests.media import synthetic_video

NUM_FILES = 400


def test_mutated_sidecars_end_in_a_read_or_a_typed_error(tmp_path):
    clip = synthetic_video(tmp_path / "clip.mp4", "h264", size=(96, 64), num_frames=30, gop=8)
    files = make_corpus(clip, tmp_path / "corpus", NUM_FILES)
    kinds = {p.stem.split("_", 1)[1] for p in files}
    assert kinds == {"flip", "truncate", "zero", "header", "meta", "table", "gop_counts", "gop_records", "gop_garbage"}
    report = run_corpus(files, tmp_path / "corpus" / "index.json")
    assert report["findings"] == []
    assert sum(report["outcomes"].values()) == NUM_FILES
    # The checks past the checksums are reached: every kind of error occurs.
    for kind in ("Corrupt", "Truncated", "Stale", "Version"):
        assert any(kind in outcome for outcome in report["outcomes"]), report["outcomes"]
