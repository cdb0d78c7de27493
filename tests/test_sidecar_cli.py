"""`gpudecode mvs` (parallel, resumable, crash-contained), `prepare --mvs/--no-mvs`, and `inspect` on sidecars."""

from __future__ import annotations

import json
import os

import pytest

from gpudecode.cli import main
from gpudecode.index import IndexCache
from gpudecode.workers import TEST_CRASH_ENV
from tests import media


@pytest.fixture
def dataset(tmp_path):
    d = tmp_path / "data"
    media.synthetic_video(d / "a" / "one.mp4", "mpeg4", num_frames=30)
    media.synthetic_video(d / "b" / "two.mp4", "h264", num_frames=20, gop=6)
    (d / "b" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(300))
    return d


def test_mvs_writes_resumes_and_survives_a_crash(dataset, capsys, monkeypatch):
    monkeypatch.setenv(TEST_CRASH_ENV, "two.mp4")  # this file kills its worker, as a decoder crash would
    assert main(["mvs", str(dataset), "--workers", "2"]) == 1
    out = capsys.readouterr().out
    assert "wrote 1 MV sidecars" in out and "2 failed" in out
    assert "crashed the decoder (SIGSEGV)" in out and "broken.mp4" in out
    assert (dataset / "a" / "one.mp4.mvs").is_file() and not (dataset / "b" / "two.mp4.mvs").exists()
    monkeypatch.delenv(TEST_CRASH_ENV)
    assert main(["mvs", str(dataset), "--workers", "2"]) == 1  # resumed: one skipped, one written, broken fails
    out = capsys.readouterr().out
    assert "wrote 1 MV sidecars" in out and "skipped 1 already current" in out
    assert (dataset / "b" / "two.mp4.mvs").is_file()
    # The index came with the MVs: the cache has it without another pass.
    assert IndexCache().get(dataset / "b" / "two.mp4").num_frames == 20
    os.utime(dataset / "a" / "one.mp4", ns=(0, 10**18))  # a changed video is stale: rewritten
    main(["mvs", str(dataset / "a")])
    assert "wrote 1 MV sidecars" in capsys.readouterr().out


def test_mvs_into_a_cache_folder_and_inspect_says_so(dataset, tmp_path, capsys):
    cache = tmp_path / "cache"
    video = dataset / "a" / "one.mp4"
    assert main(["mvs", str(video), "--cache-dir", str(cache)]) == 0
    assert not (dataset / "a" / "one.mp4.mvs").exists()
    capsys.readouterr()
    assert main(["inspect", str(video), "--cache-dir", str(cache), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)[0]
    assert report["mv_sidecar"]["valid"] and report["mv_sidecar"]["path"].startswith(str(cache))
    assert main(["inspect", str(video)]) == 0  # beside the video there is none
    assert "MV sidecar: missing" in capsys.readouterr().out
    side = report["mv_sidecar"]["path"]
    data = bytearray(open(side, "rb").read())
    data[-3] ^= 0xFF
    open(side, "wb").write(bytes(data))
    main(["inspect", str(video), "--cache-dir", str(cache)])
    out = capsys.readouterr().out
    assert "MV sidecar: corrupt" in out and "checksum" in out


def test_prepare_writes_sidecars_unless_told_not_to(tmp_path, capsys):
    src = tmp_path / "src"
    media.synthetic_video(src / "x.mp4", "mpeg4", num_frames=20)
    assert main(["prepare", str(src), str(tmp_path / "with"), "--workers", "1"]) == 0
    assert (tmp_path / "with" / "x.mp4.mvs").is_file()
    assert main(["prepare", str(src), str(tmp_path / "without"), "--no-mvs", "--workers", "1"]) == 0
    assert (tmp_path / "without" / "x.mp4").is_file() and not (tmp_path / "without" / "x.mp4.mvs").exists()
    # Resuming with sidecars on: the existing output is skipped, its missing sidecar written.
    assert main(["prepare", str(src), str(tmp_path / "without"), "--workers", "1"]) == 0
    assert "skipped 1" in capsys.readouterr().out and (tmp_path / "without" / "x.mp4.mvs").is_file()
