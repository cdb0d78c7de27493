"""A synthetic action-recognition dataset whose classes are defined by motion only.

Each clip shows a textured disk on a textured, slowly drifting background. The class says how the disk
moves (translates right/left/up/down, rotates clockwise/counter-clockwise, zooms in/out); everything a
single frame shows (position, size, angle, textures, colours, background) is drawn from the same
distribution for every class, in the same order from the clip's random generator, so frame 0 of a clip
is *identical* whatever its class. An I-frame alone therefore cannot tell the class; the accumulated
motion vectors within a GOP can. That makes it a quick end-to-end check that a TEAM-Net actually uses
its MV stream, and small enough to generate and train on a 2-core machine in minutes.

The scene lives on a torus the size of the frame: the disk leaves on one side and comes back on the
other. A zooming disk restarts at every I-frame (a sawtooth with the GOP's period) from a size that
does not depend on the class, and grows or shrinks only along the P-frames: every I-frame has the same
class-independent distribution of position and size, and no size jump ever falls inside a P-frame
chain, where it would scramble the MVs that carry the class. Clips are rendered with vectorised NumPy bilinear
sampling (sub-pixel motion, no extra dependencies) and encoded canonically by :mod:`gpudecode.encode`.

Layout written by :func:`make_synthetic_dataset`::

    dst/videos/<class>/<class>_<k>.mp4
    dst/classInd.txt    "1 move_right" ...   (1-based, as UCF-101's classInd.txt)
    dst/train.txt       "videos/<class>/<class>_<k>.mp4 <label>"  (relative to dst, 0-based label)
    dst/test.txt        same format
    dst/synth.json      the parameters, classes and file lists
    dst/README.md       this description, short
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .encode import Codec, write_video
from .prepare import run_parallel

CLASSES: tuple[str, ...] = (
    "move_right",
    "move_left",
    "move_up",
    "move_down",
    "rotate_cw",
    "rotate_ccw",
    "zoom_in",
    "zoom_out",
)

# Ranges of the per-clip random draws. Translation and rotation move the disk's rim by about
# 2-4 px per frame at 112x112, i.e. 24-48 px over a GOP of 12: far above mpeg4's half-pel MVs.
TRANSLATION_SPEED = (2.0, 4.0)  # px per frame
ROTATION_SPEED = (4.0, 8.0)  # degrees per frame
ZOOM_RATE = (0.05, 0.08)  # relative size change per frame
SCALE_RANGE = (0.6, 1.7)  # disk size at an I-frame (log-uniform); zoom grows/shrinks from there within a GOP
RADIUS_FRACTION = (0.2, 0.28)  # disk radius at scale 1 over min(width, height): 40-56 % wide at scale 1
BACKGROUND_SPEED = (0.0, 0.75)  # px per frame, random direction, whatever the class
TEXTURE_CELL = (6.0, 12.0)  # px, feature size of the coarse noise octave; fine octave is half


@dataclass
class SynthReport:
    """What :func:`make_synthetic_dataset` wrote."""

    root: Path
    classes: tuple[str, ...]
    train: list[tuple[str, int]] = field(default_factory=list)
    test: list[tuple[str, int]] = field(default_factory=list)
    seconds: float = 0.0

    def __str__(self) -> str:
        return self.summary()

    def summary(self) -> str:
        n = len(self.train) + len(self.test)
        return (
            f"synthetic dataset in {self.root}: {n} videos, {len(self.classes)} classes "
            f"({len(self.train)} train, {len(self.test)} test) in {self.seconds:.1f} s"
        )


# --------------------------------------------------------------------------------------------------
# Rendering


def _bilinear_periodic(texture: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Sample an (h, w, C) float32 texture at real coordinates, wrapping around its edges."""
    h, w, channels = texture.shape
    flat = texture.reshape(h * w, channels)
    y0f = np.floor(y)
    x0f = np.floor(x)
    fy = (y - y0f).astype(np.float32)[..., None]
    fx = (x - x0f).astype(np.float32)[..., None]
    y0 = y0f.astype(np.intp) % h
    x0 = x0f.astype(np.intp) % w
    row0 = y0 * w
    row1 = ((y0 + 1) % h) * w
    x1 = (x0 + 1) % w
    # Flat indices into (h*w, C): one gather per corner, much faster than 2-D fancy indexing.
    top = flat.take(row0 + x0, axis=0)
    top += (flat.take(row0 + x1, axis=0) - top) * fx
    bottom = flat.take(row1 + x0, axis=0)
    bottom += (flat.take(row1 + x1, axis=0) - bottom) * fx
    return top + (bottom - top) * fy


def _shift_periodic(texture: np.ndarray, dy: float, dx: float) -> np.ndarray:
    """``texture`` moved by a sub-pixel ``(dy, dx)`` with wrap-around: bilinear weights are the same
    for every pixel, so four rolls replace a per-pixel gather."""
    iy, ix = math.floor(dy), math.floor(dx)
    fy, fx = dy - iy, dx - ix
    rows = np.roll(texture, iy, axis=0) * (1 - fy) + np.roll(texture, iy + 1, axis=0) * fy
    return np.roll(rows, ix, axis=1) * (1 - fx) + np.roll(rows, ix + 1, axis=1) * fx


def _noise_texture(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Smooth, periodic colour noise (two octaves) with random mean colour and contrast, 0..255."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.zeros((height, width, 3), np.float32)
    for octave_cell, weight in ((cell, 1.0), (cell / 2, 0.5)):
        gh = max(2, round(height / octave_cell))
        gw = max(2, round(width / octave_cell))
        grid = rng.standard_normal((gh, gw, 3)).astype(np.float32)
        out += weight * _bilinear_periodic(grid, ys * gh / height, xs * gw / width)
    out /= out.std(axis=(0, 1), keepdims=True) + 1e-6
    mean = rng.uniform(60, 195, size=3).astype(np.float32)
    contrast = rng.uniform(25, 50, size=3).astype(np.float32)
    return mean + contrast * out


def _wrap(d: np.ndarray, period: float) -> np.ndarray:
    """Signed offset on a circle of the given period, in [-period/2, period/2)."""
    return (d + period / 2) % period - period / 2


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    width, height = (int(v) for v in size)
    if width < 16 or height < 16 or width % 2 or height % 2:
        raise ValueError(f"size must be (width, height), even and at least 16x16, got {size}")
    return width, height


@dataclass(frozen=True)
class ClipMotion:
    """Where the disk is in each frame of a clip: ground truth for tests of MVs.

    ``centres`` (T, 2) as (y, x) in pixels, wrapped into the frame; ``angles`` (T,) in radians,
    growing clockwise on screen; ``radii`` (T,) in pixels; ``background_shift`` (T, 2) (y, x).
    """

    centres: np.ndarray
    angles: np.ndarray
    radii: np.ndarray
    background_shift: np.ndarray


def render_clip(
    class_name: str, rng: np.random.Generator, size: tuple[int, int] = (112, 112), num_frames: int = 48,
    gop: int = 12,
) -> np.ndarray:
    """Render one clip of ``class_name`` as ``(T, H, W, 3)`` uint8 RGB.

    ``size`` is ``(width, height)``. All random draws happen before the class is looked at and in the
    same order, so the same generator state gives the same frame 0 for every class.
    """
    return render_clip_with_motion(class_name, rng, size, num_frames, gop)[0]


def render_clip_with_motion(
    class_name: str, rng: np.random.Generator, size: tuple[int, int] = (112, 112), num_frames: int = 48,
    gop: int = 12,
) -> tuple[np.ndarray, ClipMotion]:
    """:func:`render_clip` plus the disk's trajectory (:class:`ClipMotion`)."""
    if class_name not in CLASSES:
        raise ValueError(f"class_name must be one of {CLASSES}, got {class_name!r}")
    width, height = _check_size(size)
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")

    # --- every random draw, class-independent -------------------------------------------------
    background = _noise_texture(rng, height, width, rng.uniform(*TEXTURE_CELL) * 4 / 3)
    obj_texture = _noise_texture(rng, 128, 128, rng.uniform(*TEXTURE_CELL))
    texture_offset = rng.uniform(0, 128, size=2)
    bg_angle = rng.uniform(0, 2 * math.pi)
    bg_speed = rng.uniform(*BACKGROUND_SPEED)
    bg_offset = rng.uniform(0, [height, width])
    centre0 = rng.uniform(0, [height, width])  # (y, x)
    radius = rng.uniform(*RADIUS_FRACTION) * min(width, height)
    log_range = math.log(SCALE_RANGE[1] / SCALE_RANGE[0])
    log_scale0 = rng.uniform(0, log_range)
    angle0 = rng.uniform(0, 2 * math.pi)
    speed = rng.uniform(*TRANSLATION_SPEED)
    omega = math.radians(rng.uniform(*ROTATION_SPEED))
    zoom = math.log1p(rng.uniform(*ZOOM_RATE))

    # --- the class decides the motion ----------------------------------------------------------
    t = np.arange(num_frames, dtype=np.float64)
    direction = {"move_right": (0, 1), "move_left": (0, -1), "move_up": (-1, 0), "move_down": (1, 0)}
    dy, dx = direction.get(class_name, (0, 0))
    centres = (centre0[None, :] + speed * t[:, None] * np.array([dy, dx], np.float64)) % [height, width]
    spin = {"rotate_cw": 1.0, "rotate_ccw": -1.0}.get(class_name, 0.0)
    # Image y points down, so a positive angle step turns the texture clockwise on screen.
    angles = angle0 + spin * omega * t
    grow = {"zoom_in": 1.0, "zoom_out": -1.0}.get(class_name, 0.0)
    # Each GOP starts from its own class-independent size (golden-ratio steps through the range) and
    # zooms only along its P-frames.
    gop_start = (log_scale0 + (t // gop) * 0.618034 * log_range) % log_range
    scales = SCALE_RANGE[0] * np.exp(gop_start + grow * zoom * (t % gop))
    bg_shift = bg_offset[None, :] + bg_speed * t[:, None] * np.array([math.sin(bg_angle), math.cos(bg_angle)])

    ys = np.arange(height, dtype=np.float32)
    xs = np.arange(width, dtype=np.float32)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for i in range(num_frames):
        frame = _shift_periodic(background, bg_shift[i, 0], bg_shift[i, 1]).astype(np.float32)
        # Offsets from the disk's centre on the torus; separable, so wrap rows and columns once.
        oy = _wrap(ys - np.float32(centres[i, 0]), height)
        ox = _wrap(xs - np.float32(centres[i, 1]), width)
        alpha = np.clip(radius * scales[i] - np.hypot(oy[:, None], ox[None, :]) + 0.5, 0.0, 1.0)
        inside = np.nonzero(alpha > 0)  # sample the object's texture only under the disk
        oy, ox = oy[inside[0]], ox[inside[1]]
        # Texture coordinates: undo the rotation and the scale around the disk's centre.
        cos, sin = math.cos(angles[i]), math.sin(angles[i])
        uy = (cos * oy - sin * ox) / scales[i] + texture_offset[0]
        ux = (sin * oy + cos * ox) / scales[i] + texture_offset[1]
        obj = _bilinear_periodic(obj_texture, uy, ux)
        under = frame[inside]
        frame[inside] = under + (obj - under) * alpha[inside][:, None].astype(np.float32)
        np.clip(np.rint(frame, out=frame), 0, 255, out=frame)
        frames[i] = frame
    motion = ClipMotion(centres=centres, angles=angles, radii=radius * scales, background_shift=bg_shift)
    return frames, motion


def render_translation(
    size: tuple[int, int] = (112, 112), num_frames: int = 13, dx: int = 2, dy: int = 1, seed: int = 0
) -> np.ndarray:
    """A clip whose whole content moves by exactly ``(dx, dy)`` integer pixels per frame.

    Frame ``t`` is a periodic texture rolled by ``(t*dy, t*dx)``, so frame ``t+1`` at pixel ``p`` equals
    frame ``t`` at ``p - (dx, dy)`` (x right, y down). Encoded canonically, the MV field accumulated
    from P-frame ``k`` back to its I-frame should be ``k * (dx, dy)`` away from the borders, where
    content wraps around.
    """
    width, height = _check_size(size)
    rng = np.random.default_rng(seed)
    texture = np.clip(np.rint(_noise_texture(rng, height, width, cell=8.0)), 0, 255).astype(np.uint8)
    return np.stack([np.roll(texture, (t * int(dy), t * int(dx)), axis=(0, 1)) for t in range(num_frames)])


# --------------------------------------------------------------------------------------------------
# Dataset


def _clip_rng(seed: int, label: int, index: int) -> np.random.Generator:
    # One independent stream per clip: the result does not depend on worker scheduling.
    return np.random.default_rng([seed, label, index])


def _render_and_write(job: tuple[str, int, int, str, tuple[int, int], int, int, str, int, int]) -> str:
    class_name, label, index, path, size, num_frames, fps, codec, gop, seed = job
    frames = render_clip(class_name, _clip_rng(seed, label, index), size, num_frames, gop)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        write_video(tmp, frames, codec=codec, fps=fps, gop=gop, container="mp4")  # type: ignore[arg-type]
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def make_synthetic_dataset(
    dst: str | os.PathLike,
    *,
    num_videos_per_class: int = 30,
    size: tuple[int, int] = (112, 112),
    num_frames: int = 48,
    fps: int = 25,
    codec: Codec = "mpeg4",
    gop: int = 12,
    test_fraction: float = 0.25,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
) -> SynthReport:
    """Render and encode the motion-only dataset into ``dst`` (see the module docstring for the layout).

    Deterministic: the same arguments give the same frames, and, since the encoders run
    single-threaded, the same bytes. The first ``round(test_fraction * n)`` clips of each class
    (by index) go to test.txt, the rest to train.txt.
    """
    if num_videos_per_class < 1:
        raise ValueError(f"num_videos_per_class must be >= 1, got {num_videos_per_class}")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    width, height = _check_size(size)
    start = time.perf_counter()
    root = Path(dst)
    video_root = root / "videos"
    video_root.mkdir(parents=True, exist_ok=True)
    num_test = min(num_videos_per_class - 1, round(test_fraction * num_videos_per_class))

    report = SynthReport(root=root, classes=CLASSES)
    jobs = []
    for label, class_name in enumerate(CLASSES):
        for index in range(num_videos_per_class):
            rel = f"videos/{class_name}/{class_name}_{index:03d}.mp4"
            (report.test if index < num_test else report.train).append((rel, label))
            jobs.append(
                (class_name, label, index, str(root / rel), (width, height), num_frames, fps, codec, gop, seed)
            )
    workers = (os.cpu_count() or 1) if workers is None else workers
    for _, _, error in run_parallel(_render_and_write, jobs, workers=workers, progress=progress, desc="synth"):
        if error is not None:
            raise error

    (root / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(CLASSES)))
    for name, items in (("train.txt", report.train), ("test.txt", report.test)):
        (root / name).write_text("".join(f"{rel} {label}\n" for rel, label in items))
    report.seconds = time.perf_counter() - start
    params = {
        "generator": "gpudecode.synth.make_synthetic_dataset",
        "classes": list(CLASSES),
        "num_videos_per_class": num_videos_per_class,
        "size": [width, height],
        "num_frames": num_frames,
        "fps": fps,
        "codec": codec,
        "gop": gop,
        "test_fraction": test_fraction,
        "seed": seed,
        "paths_relative_to": "the folder of this file",
        "train_list": "train.txt",
        "test_list": "test.txt",
        "class_index": "classInd.txt",
        "ranges": {
            "translation_speed_px": TRANSLATION_SPEED,
            "rotation_speed_deg": ROTATION_SPEED,
            "zoom_rate": ZOOM_RATE,
            "scale_range": SCALE_RANGE,
            "radius_fraction": RADIUS_FRACTION,
            "background_speed_px": BACKGROUND_SPEED,
            "texture_cell_px": TEXTURE_CELL,
        },
    }
    (root / "synth.json").write_text(json.dumps(params, indent=2) + "\n")
    (root / "README.md").write_text(
        "# Synthetic motion-only dataset\n\n"
        f"{len(CLASSES)} classes defined by how a textured disk moves: {', '.join(CLASSES)}.\n"
        "Frame 0 of a clip is the same whatever its class, so only motion (MVs, residuals) tells\n"
        "the classes apart. Generated by `gpudecode.synth.make_synthetic_dataset`; parameters in\n"
        "synth.json. Videos under videos/; train.txt and test.txt list `<path relative to this folder>\n"
        "<0-based label>`; classInd.txt lists `<1-based index> <class>`.\n"
        f"Canonical {codec}, GOP {gop}, no B-frames, {width}x{height}, {num_frames} frames at {fps} fps.\n"
    )
    return report
