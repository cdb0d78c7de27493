"""``gpudecode mvs``: write the MV sidecars of a dataset, in parallel, resumable and crash-contained.

Each video is decoded once with MV export in a worker process (:func:`gpudecode.sidecar.write_sidecar`);
the GOP index built in the same pass goes into the index cache, so the pass also does `gpudecode index`'s
work. A video whose sidecar is already current (header sound, written for this version of the video) is
skipped, so an interrupted run resumes where it stopped; a file that crashes or hangs its worker costs that
file only (``gpudecode.workers.run_isolated``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from gpudecode.errors import CorruptVideoError, GpudecodeError
from gpudecode.workers import WorkerDied, crash_if_testing, run_isolated


@dataclass
class SidecarReport:
    """Outcome of :func:`write_sidecars`: sidecars written (path, bytes, video bytes), videos skipped as
    current, and failures as (video, message naming it)."""

    written: list[tuple[str, int, int]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        sidecar, video = sum(w[1] for w in self.written), sum(w[2] for w in self.written)
        ratio = f" ({sidecar / video:.1%} of the videos' bytes)" if video else ""
        head = (f"wrote {len(self.written)} MV sidecars{ratio}, skipped {len(self.skipped)} already current, "
                f"{len(self.failed)} failed in {self.seconds:.1f} s")
        return "\n".join([head, *(f"  FAILED {message}" for _, message in self.failed)])


def _job(job: tuple[str, str | None]):
    from gpudecode.sidecar import write_sidecar

    video, cache_dir = job
    crash_if_testing(video)  # test-only hook (GPUDECODE_TEST_CRASH_ON); a no-op otherwise
    try:
        return write_sidecar(video, cache_dir=cache_dir)
    except GpudecodeError as e:
        return e
    except Exception as e:  # an FFmpeg surprise still names the file
        return CorruptVideoError(video, f"exporting its MVs failed: {type(e).__name__}: {e}")


def write_sidecars(videos: Iterable[str | os.PathLike], *, cache_dir: str | os.PathLike | None = None,
                   workers: int | None = None, overwrite: bool = False, progress: bool = True,
                   timeout: float | None = None, index_cache: bool = True) -> SidecarReport:
    """Write the sidecar of every video that has no current one (all of them with ``overwrite``)."""
    from tqdm.auto import tqdm

    from gpudecode.index import resolve_cache
    from gpudecode.sidecar import SidecarReader

    start = time.perf_counter()
    report = SidecarReport()
    reader = SidecarReader(cache_dir)
    todo = []
    for v in dict.fromkeys(str(p) for p in videos):
        if not overwrite and os.path.isfile(v) and reader.current(v) is None:
            report.skipped.append(v)
        else:
            todo.append(v)
    store = resolve_cache(index_cache)
    cache = None if cache_dir is None else os.fspath(cache_dir)
    workers = workers or os.cpu_count() or 1
    with tqdm(total=len(todo), desc="MV sidecars", unit="video", disable=not progress or not todo) as bar:
        for (video, _), result, error in run_isolated(_job, [(v, cache) for v in todo], workers=workers,
                                                      timeout=timeout):
            if isinstance(error, WorkerDied):
                result = CorruptVideoError(video, error.reason, "the file is damaged or hostile; re-download it or drop it")
            elif error is not None:  # _job returns every error: this is a bug, not a bad file
                raise error
            if isinstance(result, GpudecodeError):
                report.failed.append((video, str(result)))
            else:
                report.written.append((result.path, result.nbytes, result.video_bytes))
                if store is not None:
                    store.put(video, result.index)  # the index came free with the MVs
            bar.update()
    report.failed.sort()
    report.seconds = time.perf_counter() - start
    return report


__all__ = ["SidecarReport", "write_sidecars"]
