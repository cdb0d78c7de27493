"""Evaluation metrics (top-k, per-class accuracy, confusion matrix) and the metrics log.

:class:`ClassificationMeter` accumulates a confusion matrix and top-k hits on each rank;
``all_reduce()`` sums them over the ranks, so every rank ends with the whole test set's numbers.
:class:`MetricsLog` writes one JSON object per line to ``metrics.jsonl`` and, when TensorBoard is
installed and asked for, the scalars to TensorBoard too.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.distributed as dist


def topk_hits(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, torch.Tensor]:
    """Per sample, whether the label is among the top ``k`` logits (``k`` capped at the class count)."""
    k_max = min(max(ks), logits.shape[1])
    top = logits.topk(k_max, dim=1).indices
    hit = top == labels.view(-1, 1)
    return {k: hit[:, : min(k, k_max)].any(dim=1) for k in ks}


class ClassificationMeter:
    """Confusion matrix (rows: true class, columns: predicted) and top-k hits over a test set."""

    def __init__(self, num_classes: int, ks: Sequence[int] = (1, 5)):
        self.num_classes = num_classes
        self.ks = tuple(ks)
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self.hits = torch.zeros(len(self.ks), dtype=torch.int64)
        self.count = torch.zeros((), dtype=torch.int64)

    def update(self, logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        logits, labels = logits.detach().float().cpu(), labels.detach().cpu().long()
        if valid is not None:
            keep = valid.detach().cpu().bool()
            logits, labels = logits[keep], labels[keep]
        if not len(labels):
            return
        pred = logits.argmax(dim=1)
        self.confusion += torch.bincount(labels * self.num_classes + pred,
                                         minlength=self.num_classes ** 2).view(self.num_classes, self.num_classes)
        hits = topk_hits(logits, labels, self.ks)
        self.hits += torch.stack([hits[k].sum() for k in self.ks])
        self.count += len(labels)

    def all_reduce(self) -> None:
        """Sum over the ranks (no-op outside torch.distributed)."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        flat = torch.cat([self.confusion.view(-1), self.hits, self.count.view(1)]).to(device)
        dist.all_reduce(flat)
        flat = flat.cpu()
        k2 = self.num_classes ** 2
        self.confusion = flat[:k2].view(self.num_classes, self.num_classes).clone()
        self.hits = flat[k2:k2 + len(self.ks)].clone()
        self.count = flat[-1].clone()

    def compute(self) -> dict[str, Any]:
        n = int(self.count)
        per_class_total = self.confusion.sum(dim=1)
        correct = self.confusion.diagonal()
        per_class = [float(c) / float(t) if t else math.nan for c, t in zip(correct.tolist(), per_class_total.tolist())]
        seen = [a for a in per_class if not math.isnan(a)]
        out = {f"top{k}": (float(h) / n if n else math.nan) for k, h in zip(self.ks, self.hits.tolist())}
        out.update(
            num_videos=n,
            mean_class_accuracy=sum(seen) / len(seen) if seen else math.nan,
            per_class_accuracy=per_class,
            confusion=self.confusion.tolist(),
        )
        return out


def format_metrics(m: Mapping[str, Any], classes: Sequence[str] | None = None, worst: int = 5) -> str:
    """One line of headline numbers, plus the classes with the lowest accuracy."""
    line = (f"top-1 {100 * m['top1']:.2f}%  top-5 {100 * m['top5']:.2f}%  "
            f"mean class {100 * m['mean_class_accuracy']:.2f}%  ({m['num_videos']} videos)")
    per = m.get("per_class_accuracy") or []
    ranked = sorted((a, i) for i, a in enumerate(per) if not math.isnan(a))[:worst]
    if classes is not None and ranked and ranked[0][0] < 1.0:
        line += "\n  lowest: " + ", ".join(f"{classes[i]} {100 * a:.0f}%" for a, i in ranked)
    return line


def _strict(value: Any) -> Any:
    """NaN and infinities (e.g. the accuracy of a class without test videos) as null: strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


class MetricsLog:
    """``metrics.jsonl`` (one JSON object per line) and optional TensorBoard scalars; rank 0 writes."""

    def __init__(self, out_dir: str | os.PathLike, *, enabled: bool = True, tensorboard: bool = False,
                 keep_until: int | None = None):
        """``keep_until``: a run that starts over (-1) or resumes at that global step drops the records
        written after it (a resumed run writes them again, once); ``None`` appends to what is there."""
        self.enabled = enabled
        self.path = Path(out_dir) / "metrics.jsonl"
        self.writer = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if keep_until is not None:
            self.trim(keep_until)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 (optional)
            except ImportError:  # optional: metrics.jsonl has everything
                pass
            else:
                purge = None if keep_until is None else max(keep_until + 1, 0)
                self.writer = SummaryWriter(str(Path(out_dir) / "tensorboard"), purge_step=purge)

    def trim(self, global_step: int) -> int:
        """Keep only the records up to ``global_step`` (atomically); returns how many were dropped."""
        if not self.path.exists():
            return 0
        kept, dropped = [], 0
        for line in self.path.read_text().splitlines():
            try:
                step = json.loads(line)["global_step"]
            except (ValueError, KeyError, TypeError):  # a line cut short by a crash
                dropped += 1
                continue
            if step <= global_step:
                kept.append(line)
            else:
                dropped += 1
        if dropped:
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            tmp.write_text("".join(f"{line}\n" for line in kept))
            os.replace(tmp, self.path)
        return dropped

    def log(self, kind: str, global_step: int, /, **values: Any) -> None:
        """One record ``{"kind", "global_step", "time", **values}``; numbers also to TensorBoard."""
        if not self.enabled:
            return
        record = _strict({"kind": kind, "global_step": global_step, "time": time.time(), **values})
        with open(self.path, "a") as f:
            f.write(json.dumps(record, default=float, allow_nan=False) + "\n")
        if self.writer is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self.writer.add_scalar(f"{kind}/{k}", v, global_step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


__all__ = ["ClassificationMeter", "MetricsLog", "format_metrics", "topk_hits"]
