"""A decoder crash costs one file, never the run (issue 8 §3).

A real FFmpeg crash cannot be produced on demand, so these tests use the test-only hook
``GPUDECODE_TEST_CRASH_ON=<substring>``: a process about to read a matching path kills itself with
SIGSEGV, exactly as a native crash would end it. The Python stack that :mod:`faulthandler` prints for
such a crash (enabled in the forked workers by pytest, or by ``PYTHONFAULTHANDLER``) goes to a file per
crash (``GPUDECODE_TEST_CRASH_DUMPS``) that the tests read, not to the terminal: a test run that prints
"Fatal Python error: Segmentation fault" reads as a broken install.
"""

from __future__ import annotations

import os
import time

import pytest

from gpudecode import CorruptVideoError, GopIndex, IndexCache, index_videos
from gpudecode.cli import main as cli_main
from gpudecode.workers import TEST_CRASH_DUMPS_ENV, TEST_CRASH_ENV, WorkerDied, crash_if_testing, run_isolated
from tests.media import synthetic_video

CRASH = "crashme"


@pytest.fixture(autouse=True)
def crash_dumps(tmp_path, monkeypatch):
    """The faulthandler dumps of this test's crashed processes, as a function returning their texts."""
    folder = tmp_path / "crash_dumps"
    folder.mkdir()
    monkeypatch.setenv(TEST_CRASH_DUMPS_ENV, str(folder))
    return lambda: [p.read_text() for p in sorted(folder.iterdir())]


def assert_crash_dumps(texts, count=None):
    """Each crash left the dump a native SIGSEGV prints, pointing at the test hook (``count`` of them)."""
    assert texts and (count is None or len(texts) == count), texts
    for text in texts:
        assert text.startswith("Fatal Python error: Segmentation fault") and "in crash_if_testing" in text, text


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("crash_clips")
    return [synthetic_video(d / name, "mpeg4", num_frames=13) for name in ("a.mp4", f"{CRASH}.mp4", "b.mp4", "c.mp4")]


def _job(x):
    if x == "segv":
        crash_if_testing("segv")
    if x == "exit":
        os._exit(3)
    if x == "hang":
        time.sleep(60)
    if x == "raise":
        raise ValueError("bad job")
    return x * 2


def test_run_isolated_attributes_each_death_to_its_job(monkeypatch, crash_dumps):
    monkeypatch.setenv(TEST_CRASH_ENV, "segv")
    jobs = ["a", "segv", "b", "exit", "hang", "raise", "c", "d"]
    out = {job: (result, error) for job, result, error in run_isolated(_job, jobs, workers=2, timeout=3)}
    assert set(out) == set(jobs)
    assert [out[j][0] for j in "abcd"] == ["aa", "bb", "cc", "dd"]
    assert isinstance(out["segv"][1], WorkerDied) and out["segv"][1].reason == "crashed the decoder (SIGSEGV)"
    assert isinstance(out["exit"][1], WorkerDied) and "code 3" in out["exit"][1].reason
    assert isinstance(out["hang"][1], WorkerDied) and out["hang"][1].reason.startswith("hung")
    assert isinstance(out["raise"][1], ValueError)
    assert_crash_dumps(crash_dumps(), 1)  # one SIGSEGV job; the exit and the hang print nothing


def test_index_videos_survives_a_crashing_file_and_caches_it(clips, tmp_path, monkeypatch, capsys, crash_dumps):
    monkeypatch.setenv(TEST_CRASH_ENV, CRASH)
    cache = IndexCache(tmp_path / "c.sqlite")
    results = index_videos(clips, workers=2, cache=cache, progress=False)
    bad = results[str(clips[1])]
    assert isinstance(bad, CorruptVideoError) and bad.path == str(clips[1])
    assert bad.reason == "crashed the decoder (SIGSEGV)"
    assert all(isinstance(results[str(c)], GopIndex) for c in clips if c != clips[1])
    cached = cache.get(clips[1])  # cached like any other indexing failure: not retried every epoch
    assert isinstance(cached, CorruptVideoError) and cached.reason == bad.reason

    # the CLI lists it in the summary and goes on with the rest
    monkeypatch.setenv("GPUDECODE_CACHE_DIR", str(tmp_path / "cli_cache"))
    assert cli_main(["index", "--workers", "1", *map(str, clips)]) == 1
    out = capsys.readouterr().out
    assert "indexed 3 of 4 videos" in out and f"{clips[1]}: crashed the decoder (SIGSEGV)" in out
    assert_crash_dumps(crash_dumps(), 2)  # index_videos, then the CLI with a fresh cache


def test_prepare_survives_a_crashing_file(clips, tmp_path, monkeypatch, crash_dumps):
    from gpudecode.prepare import prepare_videos

    monkeypatch.setenv(TEST_CRASH_ENV, CRASH)
    report = prepare_videos(clips, tmp_path / "out", workers=2, progress=False)
    assert sorted(p.name for p in report.done) == ["a.mp4", "b.mp4", "c.mp4"]
    assert len(report.failed) == 1
    src, message = report.failed[0]
    assert src == clips[1] and message.startswith(f"{clips[1]}: crashed the decoder (SIGSEGV)")
    assert "crashed the decoder (SIGSEGV)" in report.summary()
    assert_crash_dumps(crash_dumps(), 1)


# -- training: a loader worker that dies --------------------------------------------------------------------
def test_inspect_reports_a_crashing_file_and_goes_on(clips, tmp_path, monkeypatch, capsys, crash_dumps):
    # inspect used to index in its own process: a decoder crash ended the command with a stack dump
    monkeypatch.setenv(TEST_CRASH_ENV, CRASH)
    assert cli_main(["inspect", "--no-cache", *map(str, clips)]) == 1
    out = capsys.readouterr().out
    assert f"{clips[1]}: cannot be read: {clips[1]}: crashed the decoder (SIGSEGV)" in out
    assert all(f"{c}: mpeg4 64x48" in out for c in clips if c != clips[1])
    assert_crash_dumps(crash_dumps(), 1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Its own set: the crash tests mark videos bad in the index cache, which the shared set must not see."""
    from tests.conftest import make_tiny_synthetic

    return make_tiny_synthetic(tmp_path_factory.getbasetemp() / "crash_synth", 3)


@pytest.mark.parametrize("kind,workers", [("torch", 2), ("torch", 1), ("dali", 2)])
def test_loader_marks_the_crashing_video_bad_and_the_epoch_goes_on(tiny, kind, workers, tmp_path, monkeypatch,
                                                                   capsys, crash_dumps):
    # torch with 1 worker: it used to decode in the training process, where a crash ended the run
    if kind == "dali":
        pytest.importorskip("nvidia.dali")
    from teamnet.dali_loader import ClipLoader
    from teamnet.datasets import load_split

    videos = load_split(tiny, "train")
    victim = videos.paths[5]
    monkeypatch.setenv(TEST_CRASH_ENV, os.path.basename(victim))
    cache = IndexCache(tmp_path / "c.sqlite")
    loader = ClipLoader(videos, mode="train", modalities=("iframe", "mv"), num_segments=2, batch_size=4, size=24,
                        workers=workers, kind=kind, seed=1, cache=str(cache.path))
    for epoch in range(2):
        batches = list(loader.epoch(epoch))
        assert len(batches) == loader.plan.steps  # every step, none lost to the restart
        seen = torch_cat([b.indices for b in batches])
        assert seen == loader.plan.order(epoch).tolist()
        valid = dict(zip(seen, torch_cat([b.valid for b in batches])))
        errors = {k: v for b in batches for k, v in b.errors.items()}
        if 5 in valid:  # the victim was drawn in this epoch: bad, with the reason; everything else read
            assert not valid.pop(5)
            assert errors == {victim: f"{victim}: crashed the decoder (SIGSEGV) (the file is damaged or hostile; drop it)"}
        assert all(valid.values()) and len(valid) >= len(seen) - 1
    assert "marked bad, the epoch goes on" in capsys.readouterr().err
    cached = cache.get(victim)  # remembered for the next run, like an indexing failure
    assert isinstance(cached, CorruptVideoError) and cached.reason == "crashed the decoder (SIGSEGV)"
    assert_crash_dumps(crash_dumps())  # how often the victim is read again to find it depends on the loader


def test_loader_ends_the_run_naming_the_videos_when_the_crash_does_not_recur(tiny, monkeypatch, crash_dumps):
    # a worker died but no video kills a worker when read again (a one-off): no hang, no silent
    # retry loop, an error that names what the worker was reading
    from teamnet.dali_loader import ClipLoader, ClipSource
    from teamnet.datasets import load_split

    videos = load_split(tiny, "train")
    loader = ClipLoader(videos, mode="train", modalities=("mv",), num_segments=2, batch_size=4, size=24,
                        workers=2, kind="torch", seed=1, cache=False)
    first = loader.plan.order(0)[0]
    monkeypatch.setenv(TEST_CRASH_ENV, os.path.basename(videos.paths[first]))
    monkeypatch.setattr(ClipSource, "find_crashes", lambda self, *a, **k: {})
    with pytest.raises(RuntimeError, match="a loader worker died in epoch 0 at step 0") as info:
        list(loader.epoch(0))
    assert videos.paths[first] in str(info.value) and "resume from the last checkpoint" in str(info.value)
    assert_crash_dumps(crash_dumps(), 1)


def torch_cat(tensors):
    return [v for t in tensors for v in t.tolist()]
