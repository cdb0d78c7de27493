"""Split files of the usual action-recognition datasets, and a dataset that turns them into engine samples.

Parsers (each returns a :class:`VideoList` of absolute paths, 0-based labels and class names):

- :func:`parse_ucf101`: the official ``classInd.txt`` / ``trainlist0N.txt`` / ``testlist0N.txt``. Test lists
  usually have no label (taken from the class folder) but some copies append one; CRLF line endings; class
  names matched case-insensitively (the official classInd says ``HandstandPushups``, the videos are
  ``v_HandStandPushups_*``).
- :func:`parse_hmdb51`: the official ``<class>_test_split<N>.txt`` files (``video.avi 1|2|0``: train, test,
  unused); classes in alphabetical order.
- :func:`parse_coviar`: CoViAR's lists, ``ClassName/video.avi ClassName idx``.
- :func:`parse_kinetics_csv`: ``label,youtube_id,time_start,time_end,split`` CSVs; files found by
  ``<youtube_id>_<start:06d>_<end:06d>`` or ``<youtube_id>`` anywhere under the root.
- :func:`parse_list`: generic ``path label`` lines (label: 0-based index or class name).

A path that does not exist as written is looked up case-insensitively and with another video extension
(``gpudecode prepare`` may turn ``.avi`` into ``.mp4``); a video still missing stays in the list and is
reported as bad when it is read, like any other unreadable video.

:class:`ClipDataset` reads clips through the engine and never raises for a bad video: :meth:`ClipDataset.get`
returns the error instead, and :class:`BadVideoReport` counts and lists them for the end-of-epoch report.
"""

from __future__ import annotations

import csv
import os
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

Subset = Literal["train", "test"]
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v")


@dataclass
class VideoList:
    """Videos of one subset: ``paths[i]`` has label ``labels[i]`` (0-based index into ``classes``)."""

    paths: list[str]
    labels: list[int]
    classes: list[str]

    def __post_init__(self) -> None:
        if len(self.paths) != len(self.labels):
            raise ValueError(f"paths and labels differ in length: {len(self.paths)} vs {len(self.labels)}")
        bad = [y for y in self.labels if not 0 <= y < len(self.classes)]
        if bad:
            raise ValueError(f"labels must be in [0, {len(self.classes)}), got e.g. {bad[:5]}")

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        return f"VideoList({len(self.paths)} videos, {len(self.classes)} classes)"

    def subset(self, indices: Iterable[int]) -> VideoList:
        idx = list(indices)
        return VideoList([self.paths[i] for i in idx], [self.labels[i] for i in idx], list(self.classes))


# -- reading text -----------------------------------------------------------------------------------------
def _lines(path: str | os.PathLike) -> list[str]:
    """Non-empty, stripped lines; CRLF, CR and LF endings alike, UTF-8 with or without BOM."""
    text = Path(path).read_text(encoding="utf-8-sig", errors="replace")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _norm(name: str) -> str:
    """Class-name key: case, spaces, underscores and hyphens do not count."""
    return re.sub(r"[\s_\-]+", "", name).lower()


def read_class_index(path: str | os.PathLike) -> list[str]:
    """``classInd.txt`` (``1 ApplyEyeMakeup`` per line, any base, any order) -> names by index."""
    entries = []
    for line in _lines(path):
        parts = line.split(maxsplit=1)
        if len(parts) == 2 and parts[0].lstrip("-").isdigit():
            entries.append((int(parts[0]), parts[1].strip()))
        elif len(parts) == 1:
            entries.append((len(entries), parts[0]))
        else:
            raise ValueError(f"{path}: expected 'index name' lines, got {line!r}")
    entries.sort()
    idx = [i for i, _ in entries]
    if idx != list(range(idx[0], idx[0] + len(idx))):
        raise ValueError(f"{path}: class indices must be consecutive, got {idx[:10]}...")
    return [name for _, name in entries]


class _ClassLookup:
    """Class name -> index, tolerant of case and separators; says which names it knows when it fails."""

    def __init__(self, classes: Sequence[str], source: str):
        self.classes = list(classes)
        self.source = source
        self._index: dict[str, int] = {}
        for i, c in enumerate(classes):
            key = _norm(c)
            if key in self._index:
                raise ValueError(f"{source}: classes {classes[self._index[key]]!r} and {c!r} differ only in case")
            self._index[key] = i

    def __call__(self, name: str, where: str) -> int:
        i = self._index.get(_norm(name))
        if i is None:
            raise ValueError(f"{where}: unknown class {name!r} (not in {self.source}, which has "
                             f"{len(self.classes)} classes: {', '.join(self.classes[:5])}, ...)")
        return i


# -- finding files ----------------------------------------------------------------------------------------
class PathResolver:
    """Maps list entries to files under ``root``, forgiving case and the video extension.

    Directory listings are cached, so resolving a 200k-video list costs one listing per folder.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._listings: dict[Path, dict[str, list[str]]] = {}

    def _listing(self, folder: Path) -> dict[str, list[str]]:
        if folder not in self._listings:
            table: dict[str, list[str]] = {}
            try:
                for name in os.listdir(folder):
                    table.setdefault(name.lower(), []).append(name)
            except OSError:
                pass
            self._listings[folder] = table
        return self._listings[folder]

    def _find(self, folder: Path, name: str) -> str | None:
        names = self._listing(folder).get(name.lower())
        if not names:
            return None
        return name if name in names else names[0]

    def resolve(self, rel: str) -> str:
        """Absolute path of ``rel``; the path as written when nothing matches (it will be reported)."""
        rel = rel.replace("\\", "/").strip()
        direct = self.root / rel
        if direct.exists():
            return str(direct)
        folder = self.root
        parts = [p for p in rel.split("/") if p and p != "."]
        for part in parts[:-1]:
            found = self._find(folder, part)
            if found is None:
                return str(direct)
            folder = folder / found
        name = parts[-1] if parts else rel
        found = self._find(folder, name)
        if found is None:
            stem = Path(name).stem
            for ext in VIDEO_EXTENSIONS:
                found = self._find(folder, stem + ext)
                if found is not None:
                    break
        return str(folder / found) if found is not None else str(direct)


def _resolve_list(root: str | os.PathLike | None, rels: Sequence[str]) -> list[str]:
    if root is None:
        return [str(r) for r in rels]
    resolver = PathResolver(root)
    return [resolver.resolve(r) for r in rels]


def _split_file(folder: Path, pattern: str, split: int) -> Path:
    if split not in (1, 2, 3):
        raise ValueError(f"split must be 1, 2 or 3, got {split}")
    path = folder / pattern.format(split=split)
    if path.exists():
        return path
    listing = {p.name.lower(): p for p in folder.iterdir()} if folder.is_dir() else {}
    if path.name.lower() in listing:
        return listing[path.name.lower()]
    raise FileNotFoundError(f"{path} not found: point data.splits to the folder holding the official split files")


# -- parsers ----------------------------------------------------------------------------------------------
def parse_ucf101(splits: str | os.PathLike, subset: Subset = "train", *, split: int = 1,
                 root: str | os.PathLike | None = None) -> VideoList:
    """UCF-101's official split files in ``splits`` (``classInd.txt``, ``trainlist0N.txt``, ``testlist0N.txt``).

    Train lines are ``Class/v_Class_gXX_cYY.avi <1-based label>``; test lines have no label, or one
    appended by some copies. The class is read from the folder (case-insensitively) and, when a label is
    given, checked against it.
    """
    if subset not in ("train", "test"):
        raise ValueError(f"subset must be 'train' or 'test', got {subset!r}")
    folder = Path(splits)
    classes = read_class_index(_split_file(folder, "classInd.txt", 1))
    lookup = _ClassLookup(classes, "classInd.txt")
    list_path = _split_file(folder, f"{subset}list0{{split}}.txt", split)
    rels, labels = [], []
    for n, line in enumerate(_lines(list_path), 1):
        parts = line.split()
        rel = parts[0]
        where = f"{list_path.name}:{n}"
        folder_name = rel.replace("\\", "/").split("/")[0] if "/" in rel.replace("\\", "/") else None
        label = lookup(folder_name, where) if folder_name else None
        if len(parts) > 1:
            given = int(parts[-1]) - 1
            if not 0 <= given < len(classes):
                raise ValueError(f"{where}: label {given + 1} is outside classInd.txt's 1..{len(classes)}")
            if label is not None and given != label:
                raise ValueError(f"{where}: label {given + 1} says {classes[given]!r} but the folder says {folder_name!r}")
            label = given
        if label is None:
            raise ValueError(f"{where}: no label and no class folder in {line!r}")
        rels.append(rel)
        labels.append(label)
    return VideoList(_resolve_list(root, rels), labels, classes)


def parse_hmdb51(splits: str | os.PathLike, subset: Subset = "train", *, split: int = 1,
                 root: str | os.PathLike | None = None) -> VideoList:
    """HMDB-51's official ``testTrainMulti_7030_splits``: ``<class>_test_split<N>.txt`` per class, lines
    ``video.avi 1`` (train), ``2`` (test) or ``0`` (unused). Videos are ``root/<class>/<video>``."""
    if subset not in ("train", "test"):
        raise ValueError(f"subset must be 'train' or 'test', got {subset!r}")
    if split not in (1, 2, 3):
        raise ValueError(f"split must be 1, 2 or 3, got {split}")
    folder = Path(splits)
    suffix = f"_test_split{split}.txt"
    files = sorted(p for p in folder.iterdir() if p.name.lower().endswith(suffix)) if folder.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no *{suffix} files in {folder}: point data.splits to HMDB-51's "
                                "testTrainMulti_7030_splits folder")
    classes = sorted(p.name[: -len(suffix)] for p in files)
    wanted = "1" if subset == "train" else "2"
    rels, labels = [], []
    for label, cls in enumerate(classes):
        path = folder / f"{cls}{suffix}"
        for n, line in enumerate(_lines(path), 1):
            parts = line.split()
            if len(parts) < 2 or parts[-1] not in ("0", "1", "2"):
                raise ValueError(f"{path.name}:{n}: expected 'video.avi 0|1|2', got {line!r}")
            if parts[-1] == wanted:
                rels.append(f"{cls}/{parts[0]}")
                labels.append(label)
    return VideoList(_resolve_list(root, rels), labels, classes)


def parse_coviar(list_file: str | os.PathLike, *, root: str | os.PathLike | None = None,
                 classes: Sequence[str] | None = None) -> VideoList:
    """CoViAR's data lists: ``ClassName/video.avi ClassName idx`` (0-based index).

    Class names come from the lists' own (name, idx) pairs unless ``classes`` is given.
    """
    entries = []
    names: dict[int, str] = {}
    for n, line in enumerate(_lines(list_file), 1):
        parts = line.split()
        if len(parts) < 3 or not parts[-1].lstrip("-").isdigit():
            raise ValueError(f"{list_file}:{n}: expected 'path ClassName idx', got {line!r}")
        rel, name, idx = parts[0], " ".join(parts[1:-1]), int(parts[-1])
        if names.setdefault(idx, name) != name:
            raise ValueError(f"{list_file}:{n}: index {idx} is both {names[idx]!r} and {name!r}")
        entries.append((rel, idx))
    if classes is None:
        if sorted(names) != list(range(len(names))):
            raise ValueError(f"{list_file}: class indices are not 0..K-1 (got {sorted(names)[:10]}...): "
                             "pass the class list (data.class_index)")
        classes = [names[i] for i in range(len(names))]
    else:
        lookup = _ClassLookup(classes, "the class list")
        for idx, name in names.items():
            if lookup(name, str(list_file)) != idx:
                raise ValueError(f"{list_file}: {name!r} has index {idx} but {lookup(name, '')} in the class list")
    return VideoList(_resolve_list(root, [r for r, _ in entries]), [i for _, i in entries], list(classes))


def parse_kinetics_csv(csv_file: str | os.PathLike, *, root: str | os.PathLike | None = None,
                       classes: Sequence[str] | None = None) -> VideoList:
    """Kinetics annotation CSV (``label,youtube_id,time_start,time_end,split[,is_cc]``).

    Classes are the sorted labels of the file unless ``classes`` is given (use the training CSV's for the
    validation set). Each clip is looked for under ``root`` (any depth) as
    ``<youtube_id>_<start:06d>_<end:06d>.*`` (the downloaders' naming) or ``<youtube_id>.*``.
    """
    with open(csv_file, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    if not rows or "youtube_id" not in rows[0] or "label" not in rows[0]:
        raise ValueError(f"{csv_file}: expected a header with label, youtube_id, time_start, time_end")
    if classes is None:
        classes = sorted({r["label"].strip() for r in rows})
    lookup = _ClassLookup(classes, "the class list")
    by_stem: dict[str, str] = {}
    if root is not None and Path(root).is_dir():
        for dirpath, _, files in os.walk(root):
            for name in files:
                stem, ext = os.path.splitext(name)
                if ext.lower() in VIDEO_EXTENSIONS:
                    by_stem.setdefault(stem, os.path.join(dirpath, name))
    paths, labels = [], []
    for n, r in enumerate(rows, 2):
        yid = r["youtube_id"].strip()
        stem = f"{yid}_{int(float(r['time_start'])):06d}_{int(float(r['time_end'])):06d}"
        label = lookup(r["label"].strip(), f"{csv_file}:{n}")
        path = by_stem.get(stem) or by_stem.get(yid)
        if path is None:  # missing: reported when read, as Kinetics always has some
            path = str(Path(root or ".") / r["label"].strip() / f"{stem}.mp4")
        paths.append(path)
        labels.append(label)
    return VideoList(paths, labels, list(classes))


def parse_list(list_file: str | os.PathLike, *, root: str | os.PathLike | None = None,
               classes: Sequence[str] | None = None) -> VideoList:
    """Generic ``path label`` lines; the label is a 0-based index or a class name.

    Without ``classes``, integer labels name classes ``"0"``..``"K-1"`` and name labels are sorted.
    """
    rels, raw = [], []
    for n, line in enumerate(_lines(list_file), 1):
        parts = line.split()
        if len(parts) < 2:
            raise ValueError(f"{list_file}:{n}: expected 'path label', got {line!r}")
        rels.append(parts[0])
        raw.append((parts[-1], f"{list_file}:{n}"))
    numeric = all(lab.lstrip("-").isdigit() for lab, _ in raw)
    if numeric:
        labels = [int(lab) for lab, _ in raw]
        if classes is None:
            classes = [str(i) for i in range(max(labels) + 1)] if labels else []
            missing = len(classes) - len(set(labels))
            if missing > 0:
                warnings.warn(f"{list_file}: classes inferred from labels: {len(classes)} (max label {max(labels)}), "
                              f"{missing} of them without a video here; give a class index (data.class_index)",
                              stacklevel=2)
        for (lab, where), y in zip(raw, labels):
            if not 0 <= y < len(classes):
                raise ValueError(f"{where}: label {y} is outside the {len(classes)} classes (0..{len(classes) - 1})"
                                 " of the class index")
    else:
        if classes is None:
            classes = sorted({lab for lab, _ in raw})
        lookup = _ClassLookup(classes, "the class list")
        labels = [lookup(lab, where) for lab, where in raw]
    return VideoList(_resolve_list(root, rels), labels, list(classes))


def _in(folder: str, name: str) -> str:
    return name if not name or os.path.isabs(name) else os.path.join(folder, name)


def load_split(data, subset: Subset) -> VideoList:
    """The ``subset`` of the dataset a :class:`~teamnet.config.DataConfig` describes."""
    splits = data.splits or data.root
    classes = read_class_index(_in(splits, data.class_index)) if data.class_index else None
    list_name = data.train_list if subset == "train" else data.test_list
    kind = data.dataset
    if kind == "ucf101":
        return parse_ucf101(splits, subset, split=data.split, root=data.root)
    if kind == "hmdb51":
        return parse_hmdb51(splits, subset, split=data.split, root=data.root)
    if not list_name:
        raise ValueError(f"data.dataset={kind!r} needs data.{subset}_list")
    if kind == "coviar":
        return parse_coviar(_in(splits, list_name), root=data.root, classes=classes)
    if kind == "kinetics":
        if classes is None and subset == "test" and data.train_list:
            # the validation CSV may lack a class; take the class list from the training CSV
            classes = parse_kinetics_csv(_in(splits, data.train_list)).classes
        return parse_kinetics_csv(_in(splits, list_name), root=data.root, classes=classes)
    if kind in ("list", "synthetic"):
        return parse_list(_in(splits, list_name), root=data.root, classes=classes)
    raise ValueError(f"data.dataset must be one of ucf101, hmdb51, coviar, kinetics, list, synthetic; got {kind!r}")


def ensure_synthetic(data, *, progress: bool = True) -> bool:
    """Generate the synthetic dataset at ``data.root`` when its lists are absent; True if it generated."""
    root = Path(data.root)
    if (root / "train.txt").exists() and (root / "test.txt").exists():
        return False
    from gpudecode.synth import make_synthetic_dataset

    report = make_synthetic_dataset(root, num_videos_per_class=data.synth_videos_per_class,
                                    size=tuple(data.synth_size), num_frames=data.synth_frames, progress=progress)
    print(report.summary(), flush=True)
    return True


# -- reading clips ----------------------------------------------------------------------------------------
@dataclass
class BadVideoReport:
    """Videos that could not be read, with the reason: counted and listed, never fatal."""

    errors: dict[str, str] = field(default_factory=dict)
    count: int = 0  # reads that failed (a video read twice counts twice)

    def add(self, path: str, message: str) -> None:
        self.count += 1
        self.errors.setdefault(path, message)

    def update(self, other: BadVideoReport | Mapping[str, str]) -> None:
        if isinstance(other, BadVideoReport):
            self.count += other.count
            other = other.errors
        else:
            self.count += len(other)
        for k, v in other.items():
            self.errors.setdefault(k, v)

    def __len__(self) -> int:
        return len(self.errors)

    def summary(self, limit: int = 20) -> str:
        if not self.errors:
            return "no bad videos"
        lines = [f"skipped {len(self.errors)} bad video(s) ({self.count} failed reads):"]
        for path, message in sorted(self.errors.items())[:limit]:
            lines.append(f"  {message if path in message else f'{path}: {message}'}")
        if len(self.errors) > limit:
            lines.append(f"  ... and {len(self.errors) - limit} more (see metrics.jsonl)")
        return "\n".join(lines)


class ClipDataset:
    """A :class:`VideoList` read through the engine: ``get(i, rng)`` -> ``(Sample | None, error | None)``.

    Picklable (the engine's sampler is created lazily in each process), so decoding workers can hold it.
    """

    def __init__(self, videos: VideoList, *, num_segments: int, modalities: Sequence[str],
                 mode: Subset | Literal["train", "test"] = "train", backend: str = "cpu",
                 cache: bool | str = True):
        self.videos = videos
        self.num_segments = num_segments
        self.modalities = tuple(modalities)
        self.mode = mode
        self.backend = backend
        self.cache = cache
        self._sampler = None

    def __len__(self) -> int:
        return len(self.videos)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_sampler"] = None
        return state

    @property
    def sampler(self):
        if self._sampler is None:
            from gpudecode import VideoSampler

            self._sampler = VideoSampler(num_segments=self.num_segments, backend=self.backend,
                                         modalities=self.modalities, cache=self.cache)
        return self._sampler

    def get(self, index: int, rng: np.random.Generator | int | None = None):
        """The engine sample of video ``index``, or ``(None, message)`` when the video cannot be read.

        Every failure is caught: a typed engine error names the file and the reason; anything else
        (an FFmpeg surprise) is reported with its type, so that one file never stops a run.
        """
        from gpudecode import GpudecodeError

        path = self.videos.paths[index]
        try:
            return self.sampler(path, mode=self.mode, rng=rng), None
        except GpudecodeError as e:
            return None, str(e)
        except Exception as e:  # noqa: BLE001 (a bad file must not end a 200k-video run)
            return None, f"{path}: unexpected {type(e).__name__}: {e}"


__all__ = [
    "BadVideoReport",
    "ClipDataset",
    "PathResolver",
    "VideoList",
    "ensure_synthetic",
    "load_split",
    "parse_coviar",
    "parse_hmdb51",
    "parse_kinetics_csv",
    "parse_list",
    "parse_ucf101",
    "read_class_index",
]
