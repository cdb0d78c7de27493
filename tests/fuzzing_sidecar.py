"""Fuzzing the MV sidecar reader: mutated sidecars of a real clip, read in a child process.

Not a test module (``tests/test_fuzz.py`` runs it; ``python -m tests.fuzzing_sidecar OUT_DIR N`` by hand).
Mutations: bit flips anywhere, truncation, zeroed ranges, and, so that the reader's checks past the CRCs
are reached too, changes to the header fields, the metadata, the GOP table and a GOP's inflated content
(record counts, records) with every checksum made valid again. The child reads each file with
:class:`gpudecode.sidecar.SidecarReader` (every GOP, all its P-frames, then a prefix) under
``MALLOC_PERTURB_``; every file must end in "read fine" or a :class:`~gpudecode.errors.SidecarError` that
names it. A crash (the C expansion reading out of bounds) or a hang is pinned on the file printed last.

Child: ``python -m tests.fuzzing_sidecar --child INDEX_JSON LIST_FILE``.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]
_HEADER = struct.Struct("<8s6I")


def _parts(data: bytes):
    magic, version, meta_len, meta_crc, num_gops, table_crc, _ = _HEADER.unpack_from(data)
    table_at = _HEADER.size + meta_len
    return meta_len, num_gops, table_at


def _refit(data: bytearray) -> bytearray:
    """Make the header's metadata and table checksums match what the file now holds."""
    meta_len, num_gops, table_at = _parts(data)
    meta = bytes(data[_HEADER.size:table_at])
    table = bytes(data[table_at:table_at + 32 * num_gops])
    struct.pack_into("<I", data, 16, zlib.crc32(meta))
    struct.pack_into("<I", data, 24, zlib.crc32(table))
    return data


def mutate(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    d = bytearray(data)
    meta_len, num_gops, table_at = _parts(d)
    kind = rng.choice(["flip", "truncate", "zero", "header", "meta", "table", "gop_counts", "gop_records",
                       "gop_garbage"])
    if kind == "flip":
        for _ in range(int(rng.integers(1, 9))):
            i = int(rng.integers(len(d)))
            d[i] ^= 1 << int(rng.integers(8))
    elif kind == "truncate":
        d = d[:int(rng.integers(len(d)))]
    elif kind == "zero":
        a = int(rng.integers(len(d)))
        b = min(len(d), a + int(rng.integers(1, 64)))
        d[a:b] = bytes(b - a)
    elif kind == "header":  # a header field set to an extreme value
        field = int(rng.integers(1, 6))
        struct.pack_into("<I", d, 8 + 4 * field, [0, 1, 2, 0xFFFF, 0xFFFFFFFF, int(rng.integers(1 << 32))][int(rng.integers(6))])
    elif kind == "meta":
        meta = json.loads(bytes(d[_HEADER.size:table_at]))
        key = str(rng.choice(["video", "codec", "width", "height", "drop"]))
        if key == "drop":
            meta.pop("video")
        else:
            values = [None, -1, "x", [1], {"size": "big"}, 10**30]
            meta[key] = values[int(rng.integers(len(values)))]
        new = json.dumps(meta).encode()
        d = bytearray(d[:_HEADER.size]) + new + d[table_at:]
        struct.pack_into("<I", d, 12, len(new))
        # the table's offsets now point elsewhere unless fixed: sometimes fix them, sometimes not
        if rng.random() < 0.5:
            t = np.frombuffer(bytes(d[_HEADER.size + len(new):_HEADER.size + len(new) + 32 * num_gops]), "<i8").copy()
            t = t.reshape(num_gops, 4)
            t[:, 0] += len(new) - meta_len
            d[_HEADER.size + len(new):_HEADER.size + len(new) + 32 * num_gops] = t.tobytes()
        _refit(d)
    elif kind == "table":
        row = int(rng.integers(max(num_gops, 1)))
        col = int(rng.integers(1, 8))  # u32 columns after the u64 offset, or the offset's halves
        at = table_at + 32 * row + 4 * col
        value = [0, 1, 3, 7, 0xFFFF, 0xFFFFFFFF, int(rng.integers(1 << 32))][int(rng.integers(7))]
        if at + 4 <= len(d):
            struct.pack_into("<I", d, at, value)
        _refit(d)
    else:  # a GOP's content changed and recompressed, with its CRC and sizes made valid
        rows = np.frombuffer(bytes(d[table_at:table_at + 32 * num_gops]), np.dtype(
            [("offset", "<u8"), ("nbytes", "<u4"), ("raw_nbytes", "<u4"), ("crc", "<u4"), ("start", "<u4"),
             ("length", "<u4"), ("p_frames", "<u4")])).copy()
        g = int(rng.integers(num_gops))
        off, n, p = int(rows[g]["offset"]), int(rows[g]["nbytes"]), int(rows[g]["p_frames"])
        raw = bytearray(zlib.decompress(bytes(d[off:off + n])))
        if kind == "gop_counts" and p:
            i = int(rng.integers(p))
            struct.pack_into("<I", raw, 4 * i, [0, 1, 5000, 0xFFFFFFFF, int(rng.integers(1 << 32))][int(rng.integers(5))])
        elif kind == "gop_records" and len(raw) > 4 * p:
            for _ in range(int(rng.integers(1, 20))):
                i = int(rng.integers(4 * p, len(raw)))
                raw[i] = int(rng.integers(256))
        else:
            raw = bytearray(rng.integers(0, 256, int(rng.integers(0, 2 * len(raw) + 8)), dtype=np.uint8).tobytes())
        blob = zlib.compress(bytes(raw), 1)
        rows[g]["nbytes"], rows[g]["crc"] = len(blob), zlib.crc32(blob)
        if rng.random() < 0.7:
            rows[g]["raw_nbytes"] = len(raw)
        d = d[:off] + blob + d[off + n:]
        shift = len(blob) - n
        later = rows["offset"] > off
        rows["offset"][later] = (rows["offset"][later].astype(np.int64) + shift).astype(np.uint64)
        d[table_at:table_at + 32 * num_gops] = rows.tobytes()
        _refit(d)
    return str(kind), bytes(d)


def make_corpus(video: str | os.PathLike, directory: str | os.PathLike, n: int, seed: int = 0) -> list[Path]:
    """Write ``video``'s sidecar, then ``n`` mutated copies ``NNNN_kind.mvs`` under ``directory``."""
    from gpudecode.sidecar import write_sidecar

    written = write_sidecar(video)
    data = open(written.path, "rb").read()
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        kind, mutated = mutate(data, rng)
        p = out / f"{i:04d}_{kind}.mvs"
        p.write_bytes(mutated)
        paths.append(p)
    (out / "index.json").write_text(written.index.to_json())
    return paths


def child_main(index_json: str, list_file: str) -> int:
    from gpudecode.errors import SidecarError
    from gpudecode.index import GopIndex
    from gpudecode.sidecar import SidecarReader, _chain_frames

    index = GopIndex.from_json(Path(index_json).read_text())
    full = [(g, len(_chain_frames(index, g))) for g in range(index.num_gops)]
    half = [(g, n // 2) for g, n in full]
    for path in Path(list_file).read_text().split():
        print(f"FILE {path}", flush=True)

        class OneFile(SidecarReader):  # this mutated file stands for the video's sidecar
            def path(self, video):
                return Path(path)

        try:
            OneFile().read(index, full)
            OneFile().read(index, half)
            outcome = "ok"
        except SidecarError as e:
            outcome = f"typed {type(e).__name__}" if e.path == path and path in str(e) else f"unnamed {e!r}"
        except Exception as e:  # noqa: BLE001 (what the fuzzer is looking for)
            outcome = f"untyped {type(e).__name__}: {e}"
        print(f"DONE {outcome}", flush=True)
    return 0


def run_corpus(paths: list[Path], index_json: Path, *, timeout: float = 120.0) -> dict:
    """Read the corpus in one child (``MALLOC_PERTURB_``); returns outcome counts and the findings."""
    list_file = index_json.with_name("files.txt")
    list_file.write_text("\n".join(map(str, paths)) + "\n")
    env = {**os.environ, "MALLOC_PERTURB_": "165", "PYTHONFAULTHANDLER": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    try:
        proc = subprocess.run([sys.executable, "-m", "tests.fuzzing_sidecar", "--child", str(index_json), str(list_file)],
                              capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)
        out, rc, hung = proc.stdout, proc.returncode, False
    except subprocess.TimeoutExpired as e:
        out, rc, hung = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), None, True
    outcomes: Counter = Counter()
    findings, current = [], None
    for line in out.splitlines():
        if line.startswith("FILE "):
            current = line[5:]
        elif line.startswith("DONE "):
            outcome = line[5:]
            outcomes[outcome.split(":")[0] if outcome.startswith("untyped") else outcome.split(" ")[0] + (
                " " + outcome.split(" ")[1] if outcome.startswith("typed") else "")] += 1
            if not (outcome == "ok" or outcome.startswith("typed")):
                findings.append((current, outcome))
            current = None
    if current is not None or rc not in (0, None) or hung:
        findings.append((current, "hang" if hung else f"crash (exit {rc})"))
    return {"files": len(paths), "outcomes": dict(outcomes), "findings": findings}


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        sys.exit(child_main(sys.argv[2], sys.argv[3]))
    from tests.media import synthetic_video

    out_dir, n = Path(sys.argv[1]), int(sys.argv[2])
    clip = synthetic_video(out_dir / "clip.mp4", "h264", size=(96, 64), num_frames=30, gop=8)
    files = make_corpus(clip, out_dir / "corpus", n)
    print(json.dumps(run_corpus(files, out_dir / "corpus" / "index.json"), indent=2))
