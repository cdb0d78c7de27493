"""The `gpudecode` command line, end to end on small files."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from gpudecode.cli import main
from gpudecode.encode import write_video


def clip(path, codec="mpeg4", frames=30):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (72, 96, 3), dtype=np.uint8)
    return write_video(path, np.stack([np.roll(base, 2 * k, axis=1) for k in range(frames)]), codec=codec, gop=12)


def test_inspect_reports_the_gop_table_and_readability(tmp_path, capsys):
    good = clip(tmp_path / "good.mp4")
    assert main(["inspect", str(good), "--gops"]) == 0
    out = capsys.readouterr().out
    assert "mpeg4 96x72" in out and "3 GOPs" in out and "readable as is: yes" in out and "GOP    2: frames 24..29 (6)" in out
    (tmp_path / "bad.mp4").write_text("not a video")
    assert main(["inspect", str(good), str(tmp_path / "bad.mp4")]) == 1
    assert "bad.mp4: cannot be read" in capsys.readouterr().out


def test_inspect_json(tmp_path, capsys):
    clip(tmp_path / "good.mp4", codec="h264")
    assert main(["inspect", str(tmp_path), "--json"]) == 0
    [report] = json.loads(capsys.readouterr().out)
    assert report["readable"] and report["codec"] == "h264" and report["gop_lengths"] == [12, 12, 6]


def test_show_draws_a_png(tmp_path, capsys):
    out = tmp_path / "sample.png"
    assert main(["show", str(clip(tmp_path / "v.mp4")), "-o", str(out), "--segments", "3"]) == 0
    image = Image.open(out)
    assert image.size[0] > image.size[1] > 100  # three columns, three rows
    assert "wrote" in capsys.readouterr().out


def test_show_never_draws_a_gop_twice_and_says_so(tmp_path, capsys):
    # 3 GOPs and the default 8 segments: each column used to be drawn two or three times
    assert main(["show", str(clip(tmp_path / "v.mp4")), "-o", str(tmp_path / "s.png")]) == 0
    out = capsys.readouterr().out
    assert "3 GOPs: showing 3 segments, one per GOP (asked for 8)" in out
    assert "picks=[(0, 6), (1, 6), (2, 3)]" in out and "iframe=(3, 72, 96, 3)" in out


def test_figure_drops_segments_that_share_a_gop_and_stretches_the_residual():
    from gpudecode.visualize import distinct_gop_segments, residual_scale, residual_to_rgb

    assert distinct_gop_segments([0, 0, 1, 1, 2, 2, 3]) == [0, 2, 4, 6]
    residual = np.array([[-200, -100, 0], [50, 100, 0]], np.int16)[..., None].repeat(3, -1)
    assert residual_scale(residual) == np.percentile(np.abs(residual).astype(np.float32), 99)
    assert residual_scale(np.zeros((4, 4, 3), np.int16)) == 1.0  # an all-zero residual stays grey
    grey = residual_to_rgb(residual, 100)[..., 0]
    assert grey.tolist() == [[0, 1, 128], [192, 255, 128]]  # symmetric around 128, clipped beyond the scale


def test_show_on_a_missing_file_is_a_clean_error(tmp_path, capsys):
    assert main(["show", str(tmp_path / "nope.mp4")]) == 2
    assert "nope.mp4: no such file" in capsys.readouterr().err


def test_index_a_folder(tmp_path, capsys):
    clip(tmp_path / "a.mp4")
    clip(tmp_path / "b.mp4", codec="h264")
    assert main(["index", str(tmp_path), "--workers", "2"]) == 0
    assert "indexed 2 of 2 videos" in capsys.readouterr().out


def test_prepare_and_synth_commands(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "synth"), "--videos-per-class", "1", "--frames", "13", "--size", "64x64"]) == 0
    assert (tmp_path / "synth" / "train.txt").exists()
    assert main(["prepare", str(tmp_path / "synth" / "videos"), str(tmp_path / "prepared"), "--codec", "h264",
                 "--gop", "6", "--size", "48x32", "--workers", "1"]) == 0
    prepared = sorted((tmp_path / "prepared").rglob("*.mp4"))
    assert prepared
    assert main(["inspect", str(prepared[0]), "--json"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(prepared[0]), "--json"]) == 0
    [report] = json.loads(capsys.readouterr().out)
    assert report["codec"] == "h264" and (report["width"], report["height"]) == (48, 32) and report["gop_lengths"][0] == 6


def test_benchmark_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["benchmark", str(clip(tmp_path / "v.mp4")), "--clips", "4", "--workers", "1", "--output", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["results"]["cpu"]["clips"] == 4 and doc["results"]["cpu"]["clips_per_s"] > 0
    assert {"demux", "decode", "mv_parse", "kernels"} <= set(doc["results"]["cpu"]["ms_per_clip_by_stage"])
    assert doc["machine"]["cpu_count"] and doc["commit"]
