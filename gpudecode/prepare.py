"""Re-encode videos into the engine's canonical form (``gpudecode prepare``).

Users bring whatever their dataset ships: B-frames, one I-frame per clip, scene-cut GOPs, odd sizes,
variable frame rates, HEVC/VP9 (no exported motion vectors). The engine reads only the canonical
stream that :mod:`gpudecode.encode` writes: an I-frame every ``gop`` frames, P-frames in between,
no B-frames. This module decodes any input FFmpeg can read and re-encodes it that way, in parallel,
resumably, and reporting every bad file by name instead of stopping.

Every decoded frame is kept, in presentation order, and written at a constant rate equal to the
input's average frame rate: the engine indexes frames, so variable timestamps are dropped. Audio and
subtitles are dropped too. A display rotation by a multiple of 90 degrees (phone footage) is baked
into the pixels, so samples come out the way players show the video; a mirrored or oblique display
matrix is dropped (``gpudecode inspect`` reports it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np

from ._av import display_matrix, display_orientation, open_video
from .encode import CODECS, CONTAINERS, Codec, CanonicalWriter
from .errors import (
    CorruptVideoError,
    DecodeError,
    GpudecodeError,
    VideoNotFoundError,
)
from .workers import WorkerDied, crash_if_testing, run_isolated

PathLike = str | os.PathLike

# Extensions picked up when a folder is given (case-insensitive); an explicitly listed file is
# always tried, whatever its extension.
VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts", ".mts"}
)

# A header may announce a frame or two that never decode (HMDB-51's AVIs carry one extra packet);
# more missing frames than this means the file was cut short.
_MISSING_FRAMES_TOLERATED = 2
_MISSING_FRACTION_TOLERATED = 0.05


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"340x256"`` (width x height) for the command line."""
    try:
        width, height = (int(v) for v in text.lower().replace("×", "x").split("x"))
    except ValueError:
        raise ValueError(f"size must look like WIDTHxHEIGHT, e.g. 340x256, got {text!r}") from None
    return _check_size((width, height))


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    width, height = (int(v) for v in size)
    if width < 2 or height < 2 or width % 2 or height % 2:
        raise ValueError(f"size must be (width, height), both even and >= 2 for yuv420p, got {size}")
    return width, height


def _even(n: int) -> int:
    return max(2, n - n % 2)


# --------------------------------------------------------------------------------------------------
# One video


def _frame_rate(stream: av.video.stream.VideoStream) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return Fraction(rate)
    return Fraction(25)


def _quarter_turns(frame: av.VideoFrame) -> int:
    """Counter-clockwise quarter turns that show ``frame`` upright (0 unless its display matrix rotates it).

    Only pure rotations by multiples of 90 degrees are applied; anything else (a mirror, an oblique
    angle) is left as coded, as the engine reads it.
    """
    rotation, mirrored = display_orientation(display_matrix(frame))
    if mirrored or rotation % 90:
        return 0
    return (rotation // 90) % 4


def _upright(frame: av.VideoFrame, turns: int) -> av.VideoFrame:
    """The frame rotated counter-clockwise by ``turns`` quarter turns, as players show it."""
    rgb = np.rot90(frame.to_ndarray(format="rgb24"), k=turns)
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")


def prepare_one(
    src: PathLike,
    dst: PathLike,
    *,
    codec: Codec = "mpeg4",
    gop: int = 12,
    size: tuple[int, int] | None = None,
    quality: int | None = None,
    container: Literal["mp4", "avi"] | None = None,
    threads: int = 1,
) -> Path:
    """Re-encode one video into canonical form at ``dst``; return ``dst``.

    ``size`` is ``(width, height)``; ``None`` keeps the source size, rounded down to even numbers
    (yuv420p needs them). ``container`` defaults to ``dst``'s extension. The file is written under
    a temporary name and renamed at the end, so ``dst`` either is complete or does not exist.

    Raises the typed errors of :mod:`gpudecode.errors`: :class:`VideoNotFoundError`,
    :class:`CorruptVideoError` (empty, unreadable, damaged or truncated), :class:`NoVideoStreamError`,
    :class:`DecodeError` (FFmpeg gave up part-way).
    """
    src = Path(src)
    dst = Path(dst)
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {CODECS}, got {codec!r}")
    if container is None:
        container = dst.suffix.lower().lstrip(".")  # type: ignore[assignment]
    if container not in CONTAINERS:
        raise ValueError(f"container must be one of {CONTAINERS} (or a .mp4/.avi dst), got {container!r}")
    if gop < 1:
        raise ValueError(f"gop must be >= 1, got {gop}")
    if size is not None:
        size = _check_size(size)

    input_container, stream = open_video(src, threads=threads)
    with input_container:
        announced = stream.frames  # 0 when the container does not say
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.{os.getpid()}.part")
        writer: CanonicalWriter | None = None
        count = 0
        damaged: list[int] = []
        frames = input_container.decode(stream)
        try:
            while True:
                try:
                    frame = next(frames)
                except StopIteration:
                    break
                except av.error.FFmpegError as e:
                    raise DecodeError(src, f"decoding failed after {count} frames: {e.strerror}") from None
                if writer is None:
                    turns = _quarter_turns(frame)
                    # Size from the first decoded frame, not the header: some headers are wrong.
                    shown = (frame.height, frame.width) if turns % 2 else (frame.width, frame.height)
                    width, height = size or (_even(shown[0]), _even(shown[1]))
                    writer = CanonicalWriter(
                        tmp,
                        codec=codec,
                        width=width,
                        height=height,
                        fps=_frame_rate(stream),
                        gop=gop,
                        quality=quality,
                        container=container,
                        threads=threads,
                    )
                if frame.is_corrupt:
                    damaged.append(count)
                writer.write(_upright(frame, turns) if turns else frame)
                count += 1
            if count == 0:
                raise CorruptVideoError(src, "no decodable video frames")
            if damaged:
                raise CorruptVideoError(
                    src, f"{len(damaged)} of {count} decoded frames are damaged (first at frame {damaged[0]})"
                )
            missing = announced - count
            if announced > 0 and missing > max(_MISSING_FRAMES_TOLERATED, _MISSING_FRACTION_TOLERATED * announced):
                raise CorruptVideoError(
                    src, f"truncated: the container announces {announced} frames but only {count} decode"
                )
            writer.close()
            os.replace(tmp, dst)
        finally:
            frames.close()  # before the container closes; PyAV's generators free their packet only when closed
            if writer is not None:
                writer.abort()  # no-op after close()
            tmp.unlink(missing_ok=True)
    return dst


# --------------------------------------------------------------------------------------------------
# Many videos


def remove_stale_parts(dst: PathLike) -> list[Path]:
    """Delete ``.NAME.PID.part`` files that :func:`prepare_one` left under ``dst`` when its process was
    killed (the PID no longer runs); a part whose process still runs belongs to a concurrent prepare."""
    removed = []
    for part in Path(dst).rglob(".*.part") if Path(dst).is_dir() else ():
        pid = part.name[:-len(".part")].rsplit(".", 1)[-1]
        if not pid.isdigit() or _pid_alive(int(pid)):
            continue
        try:
            part.unlink()
            removed.append(part)
        except OSError:  # gone already, or not ours to remove
            pass
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@dataclass
class PrepareReport:
    """Outcome of :func:`prepare_videos`.

    ``done`` and ``skipped`` hold output paths (written now / already there); ``failed`` holds
    ``(source path, message)``, the message being the typed error's, which names the file.
    """

    done: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def __str__(self) -> str:
        return self.summary()

    def summary(self) -> str:
        head = (
            f"prepared {len(self.done)} videos, skipped {len(self.skipped)} already done, "
            f"{len(self.failed)} failed in {self.seconds:.1f} s"
        )
        return "\n".join([head, *(f"  FAILED {message}" for _, message in self.failed)])


def _collect(
    sources: Sequence[PathLike] | PathLike, dst: Path
) -> tuple[Path | None, list[Path], list[tuple[Path, str]]]:
    """Expand folders; return the base folder for relative paths, the files, and missing sources."""
    single = isinstance(sources, (str, os.PathLike))
    items = [Path(sources)] if single else [Path(s) for s in sources]  # type: ignore[arg-type]
    dst_abs = Path(os.path.abspath(dst))
    files: list[Path] = []
    missing: list[tuple[Path, str]] = []
    for item in items:
        if item.is_dir():
            for path in sorted(item.rglob("*")):
                if path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file():
                    if not Path(os.path.abspath(path)).is_relative_to(dst_abs):  # never re-prepare outputs
                        files.append(path)
        elif item.exists():
            files.append(item)
        else:
            missing.append((item, str(VideoNotFoundError(item, "no such file"))))
    if len(items) == 1 and items[0].is_dir():
        base = items[0]
    elif files:
        # abspath, not resolve: a dataset of symlinks keeps its own layout.
        base = Path(os.path.commonpath([os.path.abspath(p.parent) for p in files]))
    else:
        base = None
    return base, files, missing


def _prepare_job(job: tuple[str, str, dict[str, Any]]) -> str | None:
    """Worker: run :func:`prepare_one` (and write the output's MV sidecar), turn any error into a message
    so one file never stops a run. ``options["encode"]`` False: the output exists, only its sidecar is due."""
    src, out, options = job
    options = dict(options)
    mvs, encode = options.pop("mvs", False), options.pop("encode", True)
    crash_if_testing(src)  # test-only hook (GPUDECODE_TEST_CRASH_ON); a no-op otherwise
    try:
        if encode:
            prepare_one(src, out, **options)
        if mvs:
            from .sidecar import write_sidecar

            write_sidecar(out)
    except GpudecodeError as e:
        return str(e)
    except Exception as e:  # a bug or an FFmpeg surprise: still report it against the file
        return f"{src}: unexpected {type(e).__name__}: {e}"
    return None


def _sidecar_due(out: Path) -> bool:
    from .sidecar import SidecarReader

    return SidecarReader().current(out) is not None


def run_parallel(
    fn: Callable[[Any], Any], jobs: Sequence[Any], *, workers: int, progress: bool, desc: str
) -> Iterator[tuple[Any, Any, BaseException | None]]:
    """Run ``fn`` over ``jobs`` in worker processes with a tqdm bar; yield ``(job, result, error)``.

    Results come in completion order. A worker that dies (a decoder crash) costs only the job it
    held: its error is :class:`~gpudecode.workers.WorkerDied` and the others go on (see
    :func:`~gpudecode.workers.run_isolated`). ``workers=0`` runs in this process (easy to debug, but
    a crash there ends the run).
    """
    from gpudecode.progress import tqdm  # plain lines when stderr is a log file

    with tqdm(total=len(jobs), disable=not progress, unit="video", desc=desc) as bar:
        if workers < 1:
            for job in jobs:
                try:
                    result, error = fn(job), None
                except Exception as e:
                    result, error = None, e
                bar.update()
                yield job, result, error
            return
        for job, result, error in run_isolated(fn, jobs, workers=workers):
            bar.update()
            yield job, result, error


def prepare_videos(
    sources: Sequence[PathLike] | PathLike,
    dst: PathLike,
    *,
    codec: Codec = "mpeg4",
    gop: int = 12,
    size: tuple[int, int] | None = None,
    quality: int | None = None,
    container: Literal["mp4", "avi"] = "mp4",
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    mvs: bool = True,
) -> PrepareReport:
    """Re-encode a folder (recursively) or a list of videos into canonical form under ``dst``.

    Each output keeps the source's path relative to the source folder (for a list: to the deepest
    folder common to all files) with the extension replaced by ``.mp4`` (or ``.avi``). Outputs that
    already exist are skipped unless ``overwrite``, so an interrupted run resumes where it stopped;
    outputs are renamed into place only when complete. A bad input is recorded in
    ``report.failed`` with its typed error's message and never stops the run.
    ``size`` is ``(width, height)``, e.g. ``(340, 256)`` as in the published recipe. ``mvs``: also
    write each output's MV sidecar (``gpudecode.sidecar``, beside it), decoding the output once more;
    a skipped output whose sidecar is missing or stale gets one.
    """
    start = time.perf_counter()
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {CODECS}, got {codec!r}")
    if container not in CONTAINERS or (container == "avi" and codec != "mpeg4"):
        raise ValueError(f"container must be 'mp4' (any codec) or 'avi' (mpeg4 only), got {container!r} for {codec!r}")
    if gop < 1:
        raise ValueError(f"gop must be >= 1, got {gop}")
    if size is not None:
        size = _check_size(size)
    dst = Path(dst)
    remove_stale_parts(dst)  # an earlier run that was killed left them
    base, files, missing = _collect(sources, dst)
    report = PrepareReport(failed=list(missing))

    options = {"codec": codec, "gop": gop, "size": size, "quality": quality, "container": container}
    jobs: list[tuple[str, str, dict[str, Any]]] = []
    claimed: dict[Path, Path] = {}
    sidecar_only: set[str] = set()  # outputs already there, whose sidecar is due
    for src in files:
        out = dst / Path(os.path.abspath(src)).relative_to(os.path.abspath(base)).with_suffix("." + container)
        if out in claimed:
            report.failed.append(
                (src, f"{src}: its output {out} is already the output of {claimed[out]} (rename one of them)")
            )
            continue
        claimed[out] = src
        if out.exists() and not overwrite:
            report.skipped.append(out)
            if mvs and _sidecar_due(out):
                jobs.append((os.fspath(src), os.fspath(out), {**options, "mvs": True, "encode": False}))
                sidecar_only.add(os.fspath(out))
        else:
            jobs.append((os.fspath(src), os.fspath(out), {**options, "mvs": mvs}))

    workers = (os.cpu_count() or 1) if workers is None else workers
    for (src, out, _), message, error in run_parallel(
        _prepare_job, jobs, workers=workers, progress=progress, desc="prepare"
    ):
        if isinstance(error, WorkerDied):
            message = str(CorruptVideoError(src, error.reason, "the file is damaged or hostile; re-download it or drop it"))
        elif error is not None:
            message = f"{src}: worker failed: {type(error).__name__}: {error}"
        if message is None:
            if out not in sidecar_only:
                report.done.append(Path(out))
        else:
            report.failed.append((Path(src), message))
    report.done.sort()
    report.skipped.sort()
    report.failed.sort()
    report.seconds = time.perf_counter() - start
    return report
