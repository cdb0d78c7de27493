"""The motion-only synthetic dataset: determinism, class-independent frames, motion semantics, layout."""

from __future__ import annotations

import json
from collections import Counter

import av
import numpy as np
import pytest

from gpudecode.encode import canonical_pict_types, read_pict_types, write_video
from gpudecode.synth import (
    CLASSES,
    make_synthetic_dataset,
    render_clip,
    render_clip_with_motion,
    render_translation,
)


def test_classes():
    assert len(CLASSES) == 8 and len(set(CLASSES)) == 8


def test_render_clip_shape_and_determinism():
    a = render_clip("rotate_cw", np.random.default_rng(7), (64, 48), 10)
    b = render_clip("rotate_cw", np.random.default_rng(7), (64, 48), 10)
    c = render_clip("rotate_cw", np.random.default_rng(8), (64, 48), 10)
    assert a.shape == (10, 48, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.std() > 20  # textured, not flat


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_first_frame_does_not_depend_on_class(seed):
    # Every random draw happens before the class is used, in the same order: the same generator
    # state gives the same frame 0 for every class, so an I-frame alone cannot tell the class.
    first = [render_clip(name, np.random.default_rng(seed), (64, 64), 2)[0] for name in CLASSES]
    for frame in first[1:]:
        assert np.array_equal(frame, first[0])
    # ...while the motion that follows does differ.
    second = [render_clip(name, np.random.default_rng(seed), (64, 64), 2)[1] for name in CLASSES]
    assert len({frame.tobytes() for frame in second}) == len(CLASSES)


def test_trajectories_follow_the_class():
    def motion(name):
        return render_clip_with_motion(name, np.random.default_rng(3), (112, 112), 12)[1]

    right = motion("move_right")
    step = np.diff(np.unwrap(right.centres[:, 1], period=112))
    assert np.allclose(step, step[0]) and 2.0 <= step[0] <= 4.0
    assert np.allclose(np.diff(right.centres[:, 0]), 0)
    assert np.all(np.diff(np.unwrap(motion("move_up").centres[:, 0], period=112)) < -1.9)
    assert np.all(np.diff(motion("rotate_cw").angles) > 0)
    assert np.all(np.diff(motion("rotate_ccw").angles) < 0)
    growth = np.diff(np.log(motion("zoom_in").radii))
    assert np.sum(growth > 0) >= 10  # growing, but for at most one restart of the sawtooth
    assert np.sum(np.diff(np.log(motion("zoom_out").radii)) < 0) >= 10


def _motion_vectors(path):
    """Per P-frame: structured MV arrays from FFmpeg's side data (dst - src is the motion)."""
    out = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.options = {"flags2": "+export_mvs"}
        for frame in container.decode(stream):
            side = frame.side_data.get("MOTION_VECTORS")
            out.append(None if side is None else side.to_ndarray())
    return out


def _object_motion(class_name, tmp_path, size=112, seed=4):
    """Encode a clip and measure, from the encoder's MVs, how the disk moves around its centre."""
    frames, motion = render_clip_with_motion(class_name, np.random.default_rng(seed), (size, size), 12)
    path = write_video(tmp_path / f"{class_name}.mp4", frames, codec="mpeg4", gop=12)
    mean_motion, curl, divergence = [], [], []
    for t, mvs in enumerate(_motion_vectors(path)):
        if mvs is None:
            continue
        mx = (mvs["dst_x"] - mvs["src_x"]).astype(float)
        my = (mvs["dst_y"] - mvs["src_y"]).astype(float)
        ox = (mvs["dst_x"] - motion.centres[t, 1] + size / 2) % size - size / 2
        oy = (mvs["dst_y"] - motion.centres[t, 0] + size / 2) % size - size / 2
        r = np.hypot(ox, oy)
        inside = (r < 0.8 * motion.radii[t]) & (r > 4)
        if inside.sum() < 3:
            continue
        mean_motion.append([mx[inside].mean(), my[inside].mean()])
        curl.append(np.mean((ox * my - oy * mx)[inside] / r[inside]))
        divergence.append(np.mean((ox * mx + oy * my)[inside] / r[inside]))
    return np.median(mean_motion, axis=0), np.median(curl), np.median(divergence)


def test_encoded_motion_vectors_show_the_class(tmp_path):
    # End to end: what the class says is what mpeg4's MVs see (x right, y down on screen).
    directions = {"move_right": (1, 0), "move_left": (-1, 0), "move_up": (0, -1), "move_down": (0, 1)}
    for name, (ex, ey) in directions.items():
        (mx, my), _, _ = _object_motion(name, tmp_path)
        assert mx * ex + my * ey > 1.5, (name, mx, my)
        assert abs(mx * ey) + abs(my * ex) < 0.75, (name, mx, my)  # little motion across
    assert _object_motion("rotate_cw", tmp_path)[1] > 0.5  # clockwise on screen
    assert _object_motion("rotate_ccw", tmp_path)[1] < -0.5
    assert _object_motion("zoom_in", tmp_path)[2] > 0.15  # zoom is the weakest motion: ~rate x radius
    assert _object_motion("zoom_out", tmp_path)[2] < -0.15


@pytest.mark.parametrize("dx, dy", [(2, 1), (-3, 0), (0, 4)])
def test_render_translation_moves_by_exactly_dx_dy(dx, dy):
    frames = render_translation((64, 48), 6, dx, dy, seed=1)
    assert frames.shape == (6, 48, 64, 3)
    for t in range(5):
        # frame t+1 at p equals frame t at p - (dx, dy), away from the wrapped border
        inner = frames[t + 1, 8:-8, 8:-8]
        source = frames[t, 8 - dy : 48 - 8 - dy, 8 - dx : 64 - 8 - dx]
        assert np.array_equal(inner, source)
    assert not np.array_equal(frames[0], frames[1])


def test_render_translation_mvs_equal_dx_dy(tmp_path):
    # The property the engine's accumulation tests build on: every interior block's MV is (dx, dy).
    dx, dy = 2, 1
    path = write_video(tmp_path / "t.mp4", render_translation((96, 96), 6, dx, dy, seed=2), codec="mpeg4")
    for mvs in _motion_vectors(path)[1:]:
        interior = (mvs["dst_x"] > 16) & (mvs["dst_x"] < 80) & (mvs["dst_y"] > 16) & (mvs["dst_y"] < 80)
        assert np.all(mvs["dst_x"][interior] - mvs["src_x"][interior] == dx)
        assert np.all(mvs["dst_y"][interior] - mvs["src_y"][interior] == dy)


def test_bad_arguments():
    with pytest.raises(ValueError, match="class_name"):
        render_clip("jump", np.random.default_rng(0))
    with pytest.raises(ValueError, match="even"):
        render_clip("zoom_in", np.random.default_rng(0), (63, 64))
    with pytest.raises(ValueError, match="num_videos_per_class"):
        make_synthetic_dataset("unused", num_videos_per_class=0)


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    report = make_synthetic_dataset(
        root, num_videos_per_class=4, size=(64, 64), num_frames=14, workers=2, progress=False
    )
    return root, report


def test_dataset_layout(small_dataset):
    root, report = small_dataset
    classes = (root / "classInd.txt").read_text().splitlines()
    assert classes == [f"{i + 1} {name}" for i, name in enumerate(CLASSES)]
    lists = {}
    for split in ("train", "test"):
        lines = (root / f"{split}.txt").read_text().splitlines()
        lists[split] = [(line.split()[0], int(line.split()[1])) for line in lines]
        for rel, label in lists[split]:
            assert rel.startswith(f"videos/{CLASSES[label]}/")
            assert (root / rel).is_file()
    assert lists["train"] == report.train and lists["test"] == report.test
    # balanced: every class has the same number of clips in each split
    assert set(Counter(label for _, label in lists["train"]).values()) == {3}
    assert set(Counter(label for _, label in lists["test"]).values()) == {1}
    assert not {rel for rel, _ in lists["train"]} & {rel for rel, _ in lists["test"]}
    assert len(list((root / "videos").rglob("*.mp4"))) == 32
    assert not list(root.rglob("*.part"))
    meta = json.loads((root / "synth.json").read_text())
    assert meta["classes"] == list(CLASSES) and meta["gop"] == 12 and meta["size"] == [64, 64]
    assert (root / "README.md").is_file()
    assert "32 videos" in report.summary()


def test_dataset_videos_are_canonical(small_dataset):
    root, report = small_dataset
    for rel, _ in report.train[:4] + report.test[:4]:
        assert read_pict_types(root / rel) == canonical_pict_types(14, 12)
        with av.open(str(root / rel)) as container:
            stream = container.streams.video[0]
            assert (stream.width, stream.height, stream.codec_context.name) == (64, 64, "mpeg4")


@pytest.mark.parametrize("codec", ["mpeg4", "h264"])
def test_dataset_bytes_are_deterministic(small_dataset, tmp_path, codec):
    # Same seed, different worker count (so different scheduling): byte-identical files.
    if codec == "mpeg4":
        first, _ = small_dataset
        kwargs = dict(num_videos_per_class=4, size=(64, 64), num_frames=14)
    else:
        first = tmp_path / "a"
        kwargs = dict(num_videos_per_class=1, size=(64, 64), num_frames=14, codec=codec)
        make_synthetic_dataset(first, workers=2, progress=False, **kwargs)
    second = tmp_path / "b"
    make_synthetic_dataset(second, workers=1, progress=False, **kwargs)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel
