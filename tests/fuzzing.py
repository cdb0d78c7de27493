"""Fuzzing the engine with damaged files: mutate small synthetic clips, read each in a child process.

Not a test module (``tests/test_fuzz.py`` and ``benchmarks/fuzz.py`` use it). :func:`make_corpus`
writes ``n`` mutated files, deterministic by seed, from a few small mpeg4 and h264 clips: bit flips
in container headers and in the coded data, truncation, zeroed ranges, moved, duplicated or resized
MP4 boxes, splices of two files, and garbage with a video extension. :func:`run_corpus` reads them
(index, sample with :class:`~gpudecode.VideoSampler` on the CPU backend, the engine's decode of a
few picks) in child processes run with ``MALLOC_PERTURB_`` (freed and new heap memory is filled with
a pattern, so a use-after-free reads garbage and tends to crash at once) and ``PYTHONFAULTHANDLER=1``
(a native crash prints the Python stack). Each child reads many files and prints every file's name
before it touches it, so a crash or a hang is pinned on one file, and a new child goes on with the rest.

Every file must end in one of: read fine, or a typed :class:`~gpudecode.GpudecodeError` that names
it. Anything else is a finding: ``crash`` (the child died by a signal), ``hang`` (no answer within
``timeout`` seconds), ``untyped`` (another exception), ``unnamed`` (a typed error without the path).

Child: ``python -m tests.fuzzing --child LIST_FILE`` (one path per line).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make `gpudecode` and `tests` importable from the repo
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
#: MP4 boxes whose payload is a list of boxes (enough of ISO/IEC 14496-12 for moving boxes around).
_CONTAINER_BOXES = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf", b"udta", b"mvex", b"moof", b"traf"}


# -- the seed clips -----------------------------------------------------------------------------------------
def make_seeds(directory: str | os.PathLike) -> list[Path]:
    """Small valid clips in the containers and codecs users bring (canonical and raw streams)."""
    from tests.media import _encode_raw, _frames, odd_size_video, synthetic_video

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    x264 = {"x264-params": "bframes=0:scenecut=0:log-level=none"}
    return [
        synthetic_video(d / "seed_mpeg4.mp4", "mpeg4", num_frames=36, gop=6),
        synthetic_video(d / "seed_h264.mp4", "h264", num_frames=36, gop=6),
        synthetic_video(d / "seed_mpeg4.avi", "mpeg4", num_frames=36, gop=6),
        synthetic_video(d / "seed_h264_80x48.mp4", "h264", size=(80, 48), num_frames=24, gop=8, dx=-3, dy=2),
        _bitexact_mkv(_encode_raw(d / ".seed_h264.tmp.mkv", _frames((64, 48), 24), "libx264", container="matroska",
                                  gop=6, options=x264), d / "seed_h264.mkv"),
        _encode_raw(d / "seed_mpeg4.m4v", _frames((64, 48), 24), "mpeg4", container="m4v", gop=6,
                    options={"sc_threshold": "1000000000"}),
        _encode_raw(d / "seed_h264.h264", _frames((64, 48), 24), "libx264", container="h264", gop=6, options=x264),
        odd_size_video(d),  # 161x121 mpeg4: partial macroblocks, odd chroma
    ]


def _bitexact_mkv(src: Path, dst: Path) -> Path:
    """Remux without the random segment UID and the date, so the same seed gives the same bytes."""
    import av

    with av.open(os.fspath(src)) as inp, av.open(os.fspath(dst), "w", format="matroska",
                                                 options={"fflags": "+bitexact"}) as out:
        stream = inp.streams.video[0]
        target = out.add_stream_from_template(stream)
        for packet in inp.demux(stream):
            if packet.dts is not None:
                packet.stream = target
                out.mux(packet)
    src.unlink()
    return dst


# -- MP4 boxes ----------------------------------------------------------------------------------------------
def mp4_boxes(data: bytes, start: int = 0, end: int | None = None, depth: int = 0) -> list[tuple[int, int, bytes, int]]:
    """``(offset, size, type, depth)`` of every box, children after their parent; stops at the first
    size that does not fit."""
    end = len(data) if end is None else end
    out, pos = [], start
    while pos + 8 <= end:
        size = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        header = 8
        if size == 1 and pos + 16 <= end:
            size, header = int.from_bytes(data[pos + 8:pos + 16], "big"), 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            break
        out.append((pos, size, kind, depth))
        if kind in _CONTAINER_BOXES:
            out += mp4_boxes(data, pos + header, pos + size, depth + 1)
        pos += size
    return out


# -- mutations ----------------------------------------------------------------------------------------------
def _flip_bits(data: bytearray, rng, lo: int, hi: int, count: int) -> None:
    hi = max(lo + 1, min(hi, len(data)))
    for _ in range(count):
        i = int(rng.integers(lo, hi))
        data[i] ^= 1 << int(rng.integers(8))


def _header_range(data: bytes, boxes) -> tuple[int, int]:
    """The container's header: the moov box of an MP4, else the first 1-4 KB (AVI hdrl, stream headers)."""
    for off, size, kind, _ in boxes:
        if kind == b"moov":
            return off, off + size
    return 0, min(len(data), 4096)


def _stream_range(data: bytes, boxes) -> tuple[int, int]:
    for off, size, kind, _ in boxes:
        if kind == b"mdat":
            return off + 8, off + size
    return min(len(data) // 8, 4096), len(data)


def mutate(data: bytes, other: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """One random mutation of ``data`` (``other``: a second seed, for splices); returns (name, bytes)."""
    boxes = mp4_boxes(data)
    is_mp4 = any(k == b"moov" for _, _, k, _ in boxes)
    kinds = ["flip_header", "flip_stream", "flip_anywhere", "truncate", "cut_front", "zero_range", "splice",
             "insert_delete", "garbage", "flip_many"]
    if is_mp4:
        kinds += ["move_box", "duplicate_box", "box_size", "drop_box"] * 2
    kind = kinds[int(rng.integers(len(kinds)))]
    b = bytearray(data)
    n = len(b)
    if kind == "flip_header":
        lo, hi = _header_range(data, boxes)
        _flip_bits(b, rng, lo, hi, int(rng.integers(1, 9)))
    elif kind == "flip_stream":
        lo, hi = _stream_range(data, boxes)
        _flip_bits(b, rng, lo, hi, int(rng.integers(1, 33)))
    elif kind == "flip_anywhere":
        _flip_bits(b, rng, 0, n, int(rng.integers(1, 5)))
    elif kind == "flip_many":
        _flip_bits(b, rng, 0, n, int(rng.integers(n // 100 + 1, n // 10 + 2)))
    elif kind == "truncate":
        b = b[: int(rng.integers(1, n))]
    elif kind == "cut_front":  # a raw stream that starts mid-GOP; a container without its head
        b = b[int(rng.integers(1, n)):]
    elif kind == "zero_range":
        start = int(rng.integers(n))
        length = int(rng.choice([16, 256, 4096, n]))
        b[start:start + length] = bytes(len(b[start:start + length]))
    elif kind == "splice":
        cut_a, cut_b = int(rng.integers(n)), int(rng.integers(len(other)))
        b = b[:cut_a] + other[cut_b:]
    elif kind == "insert_delete":
        at = int(rng.integers(n))
        if rng.random() < 0.5:
            b[at:at] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
        else:
            del b[at:at + int(rng.integers(1, 64))]
    elif kind == "garbage":
        size = int(rng.integers(1, 20000))
        junk = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        head = [b"", data[:32], data[: int(rng.integers(8, 512))]][int(rng.integers(3))]  # with a real magic, sometimes
        b = bytearray(head + junk)
    else:
        off, size, box, _ = boxes[int(rng.integers(len(boxes)))]
        chunk = bytes(b[off:off + size])
        if kind == "move_box":
            del b[off:off + size]
            at = int(rng.choice([0, 8 * int(rng.integers(len(b) // 8 + 1)), len(b)]))
            b[at:at] = chunk
        elif kind == "duplicate_box":
            b[off + size:off + size] = chunk
        elif kind == "drop_box":
            del b[off:off + size]
        else:  # box_size: a size field that lies
            new = int(rng.choice([0, 1, 7, 8, size - 1, size + 1, size * 2, 0xFFFFFFFF]))
            b[off:off + 4] = (new & 0xFFFFFFFF).to_bytes(4, "big")
        kind = f"{kind}_{box.decode('latin-1')}"
    return kind, bytes(b)


def make_corpus(directory: str | os.PathLike, n: int, seed: int = 0,
                seeds: list[Path] | None = None) -> list[Path]:
    """``n`` mutated files in ``directory``, the same for the same seed; mutated from ``seeds`` (default:
    :func:`make_seeds`, written to ``directory/seeds``). File names say what was done:
    ``00042_seed_h264_truncate.mp4``."""
    d = Path(directory)
    seeds = [Path(p) for p in seeds] if seeds else make_seeds(d / "seeds")
    blobs = [p.read_bytes() for p in seeds]
    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        k = int(rng.integers(len(seeds)))
        kind, data = mutate(blobs[k], blobs[int(rng.integers(len(seeds)))], rng)
        ext = seeds[k].suffix if kind != "garbage" else str(rng.choice([".mp4", ".avi", ".mkv", ".mov", ".h264"]))
        path = d / f"{i:05d}_{seeds[k].stem}_{kind}{ext}"
        path.write_bytes(data)
        out.append(path)
    return out


# -- the child: read files, say what happened to each -------------------------------------------------------
def _read_one(path: str, rng_seed: int) -> None:
    """Everything a user does with a file: index, inspect, sample (train and test), decode a few picks."""
    from gpudecode import VideoSampler, index_video

    index = index_video(path, cache=False)
    _check_index_facts(path, index)
    index.problems()
    index.warnings()
    index.check_readable()
    sampler = VideoSampler(num_segments=3, backend="cpu", cache=False)
    sampler(path, mode="train", rng=rng_seed)
    last = index.num_gops - 1
    for picks in ([(0, 0)], [(last, index.gop_lengths[last] - 1)], sampler.picks(index, mode="test"),
                  sampler.picks(index, mode="train", rng=rng_seed + 1)):
        sampler.backend.decode(index, picks, modalities=("iframe", "mv", "residual"))


class InconsistentIndex(AssertionError):
    """The index disagrees with the stream read while its container is open (memory read after free?)."""


def _check_index_facts(path: str, index) -> None:
    """Facts the index copied from the stream, read again while the container is open. A use-after-free
    in indexing often returns garbage rather than crashing (under ``MALLOC_PERTURB_`` the frame rate of a
    freed stream reads as 1.0): this turns it into a finding."""
    from gpudecode._av import open_video

    container, stream = open_video(path)
    with container:
        ctx = stream.codec_context
        codec, size = ctx.name, (ctx.width, ctx.height)
        rates = {float(r) for r in (stream.average_rate, stream.guessed_rate, stream.base_rate) if r} or {0.0}
    # any of the stream's rates, and the size either way round (rotation), so that this checks only the copy
    if index.codec != codec or (index.width, index.height) not in (size, size[::-1]) or index.fps not in rates:
        raise InconsistentIndex(f"{path}: index says {index.codec} {index.width}x{index.height} {index.fps} fps, "
                                f"the open stream says {codec} {size[0]}x{size[1]}, rates {sorted(rates)}")


def child_main(list_file: str) -> int:
    from gpudecode import GpudecodeError

    paths = Path(list_file).read_text().splitlines()
    out = sys.stdout
    for k, path in enumerate(paths):
        out.write(f"BEGIN\t{path}\n")
        out.flush()
        try:
            _read_one(path, k)
        except InconsistentIndex as e:
            out.write(f"INCONSISTENT\t{path}\tInconsistentIndex\t{json.dumps(str(e))}\n")
        except GpudecodeError as e:
            named = e.path is not None and os.path.abspath(e.path) == os.path.abspath(path)
            status = "ERR" if named or path in str(e) else "UNNAMED"
            out.write(f"{status}\t{path}\t{type(e).__name__}\t{json.dumps(str(e))}\n")
        except Exception as e:  # noqa: BLE001 (exactly what the fuzzer looks for)
            out.write(f"UNTYPED\t{path}\t{type(e).__name__}\t{json.dumps(repr(e))}\n")
        else:
            out.write(f"OK\t{path}\n")
        out.flush()
    return 0


# -- the parent: children over chunks, deaths and hangs pinned on a file ------------------------------------
@dataclass
class FuzzReport:
    files: int = 0
    ok: int = 0
    error_types: Counter = field(default_factory=Counter)
    crashes: list[dict] = field(default_factory=list)  # {file, signal, stderr}
    hangs: list[dict] = field(default_factory=list)  # {file, seconds}
    untyped: list[dict] = field(default_factory=list)  # {file, type, message}
    unnamed: list[dict] = field(default_factory=list)
    inconsistent: list[dict] = field(default_factory=list)  # index facts that differ from the open stream
    seconds: float = 0.0
    children: int = 0

    @property
    def findings(self) -> list[dict]:
        return self.crashes + self.hangs + self.untyped + self.unnamed + self.inconsistent

    def summary(self) -> str:
        lines = [f"{self.files} files in {self.seconds:.1f} s ({self.children} child processes): {self.ok} read, "
                 f"{sum(self.error_types.values())} typed errors {dict(self.error_types.most_common())}; "
                 f"{len(self.crashes)} crashes, {len(self.hangs)} hangs, {len(self.untyped)} untyped, "
                 f"{len(self.unnamed)} without the file name, {len(self.inconsistent)} inconsistent indexes"]
        for f in self.findings:
            lines.append(f"  {json.dumps(f)[:2000]}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"files": self.files, "ok": self.ok, "typed_errors": sum(self.error_types.values()),
                "error_types": dict(self.error_types.most_common()), "crashes": self.crashes, "hangs": self.hangs,
                "untyped": self.untyped, "unnamed": self.unnamed,
                "inconsistent": self.inconsistent, "seconds": round(self.seconds, 1),
                "children": self.children}


def child_env(malloc_perturb: int = 165, extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.update({"MALLOC_PERTURB_": str(malloc_perturb), "PYTHONFAULTHANDLER": "1",
                "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)})
    env.update(extra or {})
    return env


def _run_chunk(paths: list[str], timeout: float, env: dict) -> FuzzReport:
    """Read ``paths`` in as many children as it takes: a child that dies or hangs is replaced."""
    report = FuzzReport()
    while paths:
        with tempfile.TemporaryDirectory(prefix="fuzz_") as tmp:
            list_file = Path(tmp) / "files.txt"
            list_file.write_text("\n".join(paths) + "\n")
            with open(Path(tmp) / "stderr.txt", "w+b") as err:
                proc = subprocess.Popen([sys.executable, "-m", "tests.fuzzing", "--child", str(list_file)],
                                        stdout=subprocess.PIPE, stderr=err, env=env, cwd=REPO, bufsize=0)
                report.children += 1
                fd = proc.stdout.fileno()
                current, done, hung, pending = None, 0, False, b""
                deadline = time.monotonic() + max(120.0, timeout)  # the first file also waits for the imports
                while True:
                    ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
                    if not ready:
                        hung = True
                        break
                    chunk = os.read(fd, 1 << 16)
                    if not chunk:
                        break
                    *lines, pending = (pending + chunk).split(b"\n")
                    for line in lines:
                        fields = line.decode("utf-8", "replace").split("\t")
                        deadline = time.monotonic() + timeout
                        if fields[0] == "BEGIN":
                            current = fields[1]
                            continue
                        status, path = fields[0], fields[1]
                        report.files += 1
                        done += 1
                        current = None
                        if status == "OK":
                            report.ok += 1
                        elif status == "ERR":
                            report.error_types[fields[2]] += 1
                        else:
                            entry = {"file": path, "type": fields[2], "message": json.loads(fields[3])}
                            {"UNTYPED": report.untyped, "UNNAMED": report.unnamed,
                             "INCONSISTENT": report.inconsistent}[status].append(entry)
                if hung:
                    proc.kill()
                proc.wait()
                proc.stdout.close()
                err.seek(0)
                tail = err.read()[-3000:].decode("utf-8", "replace")
        if current is None:
            if done < len(paths):  # the child ended between files: the harness, not a file, is at fault
                raise RuntimeError(f"fuzz child ended (code {proc.returncode}, hung={hung}) after {done} of "
                                   f"{len(paths)} files without naming a file:\n{tail}")
            break
        report.files += 1
        if hung:
            report.hangs.append({"file": current, "seconds": timeout, "stderr": tail})
        else:
            code = proc.returncode
            name = signal.Signals(-code).name if code < 0 and -code in signal.valid_signals() else f"exit {code}"
            report.crashes.append({"file": current, "signal": name, "stderr": tail})
        paths = paths[paths.index(current) + 1:]
    return report


def run_corpus(paths: list[str | os.PathLike], *, jobs: int = 2, chunk: int = 50, timeout: float = 30.0,
               env: dict | None = None) -> FuzzReport:
    """Read every file in child processes (``jobs`` at a time, ``chunk`` files per child)."""
    start = time.perf_counter()
    env = env if env is not None else child_env()
    paths = [str(p) for p in paths]
    chunks = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]
    report = FuzzReport()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for part in pool.map(lambda c: _run_chunk(c, timeout, env), chunks):
            report.files += part.files
            report.ok += part.ok
            report.error_types.update(part.error_types)
            report.children += part.children
            for name in ("crashes", "hangs", "untyped", "unnamed", "inconsistent"):
                getattr(report, name).extend(getattr(part, name))
    report.seconds = time.perf_counter() - start
    return report


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        sys.exit(child_main(sys.argv[2]))
    sys.exit("usage: python -m tests.fuzzing --child LIST_FILE (see benchmarks/fuzz.py for runs)")
