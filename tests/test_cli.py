"""The `gpudecode` command line, end to end on small files."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from gpudecode.cli import main
from gpudecode.encode import write_video


def _gpu_usable() -> bool:
    try:
        from gpudecode._cuda import import_cupy

        import_cupy()
        return True
    except Exception:
        return False


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


def test_benchmark_labels_its_data_and_columns_and_writes_to_the_cache_by_default(tmp_path, monkeypatch, capsys):
    # it used to write an untracked engine_<host>.json into the checkout's benchmarks/results/
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    video = clip(tmp_path / "v.mp4")
    monkeypatch.chdir(tmp_path)
    assert main(["benchmark", str(video), "--clips", "2", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert not list((tmp_path / "benchmarks" / "results").iterdir())
    written = out.strip().splitlines()[-1].removeprefix("wrote ")
    assert written.startswith(os.environ["GPUDECODE_CACHE_DIR"]) and json.loads(open(written).read())["results"]["cpu"]
    assert "data: 1 video(s) given on the command line" in out
    assert "ms per clip in each stage" in out and "throughput" in out
    assert "cpu: the CPU engine" in out


def test_benchmark_says_what_its_generated_videos_are():
    from gpudecode.benchmark import describe_data

    text = describe_data(8, True)
    assert text.startswith("8 synthetic clips") and "gpudecode synth" in text and "340x256" in text


@pytest.mark.skipif(_gpu_usable(), reason="needs a machine without a usable GPU")
def test_benchmark_both_says_each_gpu_failure_once_and_what_cpu_stage_is(tmp_path, capsys):
    out_json = tmp_path / "b.json"
    assert main(["benchmark", str(clip(tmp_path / "v.mp4")), "--backend", "both", "--clips", "2", "--workers", "1",
                 "--out", str(out_json)]) == 1
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("gpudecode benchmark: error: gpu_upload, gpu_nvdec: "), errors
    assert "cpu_stage: the GPU path's CPU stage alone" in captured.out
    assert "gpu_upload, gpu_nvdec: not measured" in captured.out and "CuPy cannot be imported" not in captured.out
    assert set(json.loads(out_json.read_text())["results"]) == {"cpu", "cpu_stage", "gpu_upload", "gpu_nvdec"}


def test_benchmark_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["benchmark", str(clip(tmp_path / "v.mp4")), "--clips", "4", "--workers", "1", "--output", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["results"]["cpu"]["clips"] == 4 and doc["results"]["cpu"]["clips_per_s"] > 0
    assert {"demux", "decode", "mv_parse", "kernels"} <= set(doc["results"]["cpu"]["ms_per_clip_by_stage"])
    assert doc["machine"]["cpu_count"] and doc["commit"]
