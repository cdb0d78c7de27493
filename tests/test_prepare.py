"""`gpudecode prepare`: any readable input comes out canonical; bad inputs are reported by name."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import av
import pytest

from gpudecode.encode import canonical_pict_types, is_canonical, read_pict_types
from gpudecode.errors import CorruptVideoError, DecodeError, NoVideoStreamError, VideoNotFoundError
from gpudecode.prepare import PrepareReport, parse_size, prepare_one, prepare_videos
from tests import media
from tests.conftest import FIXTURES_ABSENT


def decoded_frames(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path), metadata_errors="replace") as container:
        return list(container.decode(video=0))


def assert_canonical(path: Path, gop: int, num_frames: int, size: tuple[int, int] | None = None) -> None:
    types = read_pict_types(path)
    assert types == canonical_pict_types(num_frames, gop), (path, types)
    if size is not None:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert (stream.width, stream.height) == size


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory) -> Path:
    """Readable non-canonical inputs in nested folders, plus bad files and a non-video file."""
    root = tmp_path_factory.mktemp("mixed")
    (root / "a" / "b").mkdir(parents=True)
    (root / "bad").mkdir()
    media.bframes_video(root / "a", "h264")  # a/bframes_h264.mp4
    media.bframes_video(root / "a", "mpeg4")  # a/bframes_mpeg4.avi
    media.odd_size_video(root / "a" / "b")  # a/b/odd_161x121.mp4
    media.vfr_video(root)  # vfr_h264.mp4
    media.single_frame_gop_video(root)  # single_frame_gop.mp4
    media.vp9_video(root)  # vp9.webm
    media.text_file(root / "bad")  # bad/not_a_video.mp4
    media.truncated(root / "bad", "mp4")  # bad/truncated.mp4
    media.audio_only(root / "bad")  # bad/audio_only.mp4
    (root / "notes.txt").write_text("not picked up: not a video extension\n")
    return root


GOOD = {
    "a/bframes_h264.mp4": (24, (64, 48)),
    "a/bframes_mpeg4.mp4": (24, (64, 48)),
    "a/b/odd_161x121.mp4": (14, (160, 120)),  # odd sizes round down to even for yuv420p
    "vfr_h264.mp4": (24, (64, 48)),
    "single_frame_gop.mp4": (30, (64, 48)),
    "vp9.mp4": (12, (64, 48)),
}
BAD = {"bad/not_a_video.mp4", "bad/truncated.mp4", "bad/audio_only.mp4"}


def test_prepare_folder_then_resume(mixed_folder, tmp_path):
    dst = tmp_path / "out"
    report = prepare_videos(mixed_folder, dst, codec="mpeg4", gop=12, workers=2, progress=False)
    assert sorted(p.relative_to(dst).as_posix() for p in report.done) == sorted(GOOD)
    assert {p.relative_to(mixed_folder).as_posix() for p, _ in report.failed} == BAD
    for path, message in report.failed:
        assert str(path) in message  # every message names the file...
        assert len(message) > len(str(path)) + 10  # ...and says why
    for rel, (frames, size) in GOOD.items():
        assert_canonical(dst / rel, 12, frames, size)
    assert not [p for p in dst.rglob("*") if p.name.endswith(".part")]
    assert not (dst / "bad").exists() or not list((dst / "bad").iterdir())

    # Rerun: everything done is skipped, the bad files fail again.
    again = prepare_videos(mixed_folder, dst, workers=2, progress=False)
    assert again.done == [] and len(again.skipped) == len(GOOD)
    assert [p for p, _ in again.failed] == [p for p, _ in report.failed]

    # An interrupted run leaves outputs missing, never half-written: only those are redone.
    (dst / "vfr_h264.mp4").unlink()
    resumed = prepare_videos(mixed_folder, dst, workers=1, progress=False)
    assert resumed.done == [dst / "vfr_h264.mp4"]

    redone = prepare_videos(mixed_folder, dst, workers=2, overwrite=True, progress=True)
    assert len(redone.done) == len(GOOD)
    assert "FAILED" in redone.summary() and f"prepared {len(GOOD)} videos" in str(redone)


def test_frames_are_kept_one_for_one(mixed_folder, tmp_path):
    # B-frame reordering and irregular timestamps must neither drop nor duplicate frames.
    for name in ("a/bframes_h264.mp4", "vfr_h264.mp4"):
        src = mixed_folder / name
        out = prepare_one(src, tmp_path / Path(name).name, gop=5)
        before = decoded_frames(src)
        after = decoded_frames(out)
        assert len(after) == len(before)
        steps = {b.pts - a.pts for a, b in zip(after, after[1:])}
        assert len(steps) == 1  # constant frame rate out


def test_size_codec_and_container(mixed_folder, tmp_path):
    src = mixed_folder / "a" / "bframes_h264.mp4"
    out = prepare_one(src, tmp_path / "small.mp4", size=(32, 24), codec="h264", gop=5)
    assert_canonical(out, 5, 24, (32, 24))
    out = prepare_one(src, tmp_path / "clip.avi", gop=6)
    with av.open(str(out)) as container:
        assert container.format.name == "avi"
        assert container.streams.video[0].codec_context.name == "mpeg4"
    assert_canonical(out, 6, 24)
    report = prepare_videos([src], tmp_path / "sized", size=(48, 32), container="avi", workers=1, progress=False)
    assert report.done == [tmp_path / "sized" / "bframes_h264.avi"]
    assert_canonical(report.done[0], 12, 24, (48, 32))


def test_hevc_and_hd_inputs(tmp_path):
    # HEVC exports no MVs and 1080p is big: both become small canonical mpeg4.
    hevc = media.hevc_video(tmp_path)
    assert is_canonical(prepare_one(hevc, tmp_path / "out" / "hevc.mp4"), 12)
    hd = media.hd_video(tmp_path)
    assert_canonical(prepare_one(hd, tmp_path / "out" / "hd.mp4", size=(340, 256)), 12, 4, (340, 256))


@pytest.mark.parametrize(
    "make, error, reason",
    [
        (media.missing_path, VideoNotFoundError, "no such file"),
        (lambda d: d, VideoNotFoundError, "not a regular file"),
        (media.empty_file, CorruptVideoError, "empty"),
        (media.text_file, CorruptVideoError, "cannot read it"),
        (media.audio_only, NoVideoStreamError, "no video stream"),
        (lambda d: media.truncated(d, "mp4"), CorruptVideoError, "cannot read it"),
        (lambda d: media.truncated(d, "avi"), CorruptVideoError, "damaged"),
        (media.truncated_at_packet, CorruptVideoError, "truncated"),
        (lambda d: media.flipped_bytes(d, "mp4"), DecodeError, "decoding failed"),
        (lambda d: media.flipped_bytes(d, "avi"), CorruptVideoError, "damaged"),
    ],
    ids=["missing", "directory", "empty", "text", "audio", "trunc-mp4", "trunc-avi", "trunc-packet",
         "flip-mp4", "flip-avi"],
)
def test_prepare_one_raises_typed_errors(tmp_path, make, error, reason):
    src_dir = tmp_path / "src"
    src_dir.mkdir()
    src = make(src_dir)
    dst = tmp_path / "out" / "clip.mp4"
    with pytest.raises(error, match=reason) as info:
        prepare_one(src, dst)
    assert info.value.path == os.fspath(src) and os.fspath(src) in str(info.value)
    assert not dst.exists()
    assert not dst.parent.exists() or not list(dst.parent.iterdir())  # no temp file left behind


def test_explicit_list_keeps_paths_below_common_folder(mixed_folder, tmp_path):
    sources = [mixed_folder / "a" / "b" / "odd_161x121.mp4", mixed_folder / "vfr_h264.mp4", tmp_path / "gone.mp4"]
    report = prepare_videos(sources, tmp_path / "out", workers=2, progress=False)
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in report.done) == [
        "a/b/odd_161x121.mp4",
        "vfr_h264.mp4",
    ]
    assert len(report.failed) == 1 and "gone.mp4: no such file" in report.failed[0][1]
    single = prepare_videos(mixed_folder / "vfr_h264.mp4", tmp_path / "one", progress=False)
    assert single.done == [tmp_path / "one" / "vfr_h264.mp4"]


def test_output_name_collision_is_reported(tmp_path):
    src = tmp_path / "src"
    media.synthetic_video(src / "clip.avi", num_frames=5)
    media.synthetic_video(src / "clip.mp4", num_frames=5)
    report = prepare_videos(src, tmp_path / "out", workers=1, progress=False)
    assert report.done == [tmp_path / "out" / "clip.mp4"]
    assert len(report.failed) == 1 and "already the output of" in report.failed[0][1]


def test_outputs_inside_the_source_folder_are_not_re_prepared(tmp_path):
    src = tmp_path / "src"
    media.synthetic_video(src / "x.mp4", num_frames=5)
    first = prepare_videos(src, src / "prepared", workers=1, progress=False)
    second = prepare_videos(src, src / "prepared", workers=1, progress=False)
    assert len(first.done) == 1 and len(second.skipped) == 1 and not second.done and not second.failed


def test_arguments_and_report():
    assert parse_size("340x256") == (340, 256)
    with pytest.raises(ValueError, match="WIDTHxHEIGHT"):
        parse_size("340")
    with pytest.raises(ValueError, match="even"):
        parse_size("341x256")
    with pytest.raises(ValueError, match="codec"):
        prepare_videos([], "unused", codec="vp9")
    with pytest.raises(ValueError, match="avi"):
        prepare_videos([], "unused", codec="h264", container="avi")
    empty = PrepareReport()
    assert empty.ok and "prepared 0 videos" in empty.summary()


REAL_CLIPS = {
    # name: why it is here
    "v_SoccerJuggling_g23_c01.avi": "UCF-101 xvid with regular GOPs of 12",
    "hmdb51_Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi": "HMDB-51: B-frames, one I-frame, "
    "non-UTF-8 metadata (PyAV's default strict metadata decoding fails to open it), header announces 84 "
    "frames for 83",
    "tests_data_rawvideo_dataset_part_0.mp4": "h264 with B-frames, 340x256",
}


@pytest.mark.parametrize("name", sorted(REAL_CLIPS))
def test_real_clips_become_canonical(tmp_path, name, real_dir):
    src = real_dir / name
    if not src.is_file():
        pytest.skip(f"{FIXTURES_ABSENT} ({name} is not among them)")
    out = prepare_one(src, tmp_path / "clip.mp4", gop=12)
    source = decoded_frames(src)
    assert_canonical(out, 12, len(source), (source[0].width, source[0].height))


def test_real_folder_copy_prepares_in_parallel(tmp_path, real_dir):
    src = tmp_path / "real"
    src.mkdir()
    for name in REAL_CLIPS:
        if (real_dir / name).is_file():
            shutil.copy(real_dir / name, src / name)
    report = prepare_videos(src, tmp_path / "out", codec="h264", size=(160, 120), workers=2, progress=False)
    assert report.ok and len(report.done) == len(list(src.iterdir()))
    for path in report.done:
        assert is_canonical(path, 12)


def test_symlinked_dataset_keeps_its_layout(tmp_path):
    # Datasets are often folders of symlinks into storage elsewhere; outputs follow the link names.
    store = tmp_path / "store"
    media.synthetic_video(store / "blob123.mp4", num_frames=5)
    src = tmp_path / "dataset" / "ClassA"
    src.mkdir(parents=True)
    (src / "clip.mp4").symlink_to(store / "blob123.mp4")
    report = prepare_videos(tmp_path / "dataset", tmp_path / "out", workers=1, progress=False)
    assert report.done == [tmp_path / "out" / "ClassA" / "clip.mp4"]
    listed = prepare_videos([src / "clip.mp4"], tmp_path / "out2", workers=1, progress=False)
    assert listed.done == [tmp_path / "out2" / "clip.mp4"]
