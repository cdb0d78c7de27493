"""Classify videos with a trained checkpoint; optionally draw the three streams' class activation maps.

    python -m teamnet.predict clip.mp4 other.avi --checkpoint runs/synthetic_teamnet/best.pt
    python -m teamnet.predict clip.mp4 --checkpoint best.pt --cam cam.png      # paper Fig. 2/4 style

Any video FFmpeg reads works: one the engine cannot read as is (B-frames, a codec without motion vectors
such as HEVC/VP9/AV1, GOPs much longer than the training data's) is re-encoded to the canonical MPEG-4,
GOP 12 form in a temporary file first, and the output says so. For a whole dataset, re-encode once with
``gpudecode prepare`` instead.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

if __name__ == "__main__":  # `python -m teamnet.predict --help`: answered before torch & co. are imported
    from teamnet.commands import predict_parser

    predict_parser().parse_args()

import numpy as np
import torch
import torch.nn.functional as F

from teamnet.augment import CropWindow, centre_square, eval_views, reference_transform
from teamnet.checkpoint import choose_preprocess, load_model
from teamnet.errors import TeamnetError, checkpoint_errors

#: Longer GOPs than this are re-encoded: the models are trained on GOP-12 accumulations.
MAX_GOP = 60


def read_clip(path: str, *, num_segments: int, modalities: Sequence[str], reencode: bool = True,
              gop: int = 12) -> tuple[Any, str | None]:
    """The engine's test-mode sample of ``path`` and, when it had to be re-encoded, why.

    Raises :class:`gpudecode.GpudecodeError` when the video cannot be read even after re-encoding,
    with the reason and what to do.
    """
    from gpudecode import GpudecodeError, UnsupportedVideoError, VideoSampler, index_video
    from gpudecode.prepare import prepare_one

    sampler = VideoSampler(num_segments=num_segments, backend="cpu", modalities=modalities, cache=False)
    reason = None
    try:
        index = index_video(path, cache=False)
        problems = index.problems()
        if problems:
            raise problems[0]
        if index.max_gop_length > MAX_GOP:
            reason = f"GOPs of up to {index.max_gop_length} frames (the model expects ~{gop})"
        else:
            return sampler(path, mode="test"), None
    except UnsupportedVideoError as e:
        reason = e.reason
    if not reencode:
        raise UnsupportedVideoError(path, f"cannot be read as is: {reason}",
                                    "re-encode it with `gpudecode prepare`, or drop --no-reencode")
    with tempfile.TemporaryDirectory(prefix="teamnet-predict-") as tmp:
        fixed = Path(tmp) / (Path(path).stem + ".mp4")
        try:
            prepare_one(path, fixed, codec="mpeg4", gop=gop)
        except GpudecodeError as e:
            raise type(e)(path, f"{reason}, and re-encoding failed: {e.reason}",
                          "check the file plays with ffplay; re-download it if damaged") from e
        return sampler(str(fixed), mode="test"), reason


def _display_window(h: int, w: int, crop_size: int, scale_size: int) -> CropWindow:
    """The source pixels the centre test crop covers (centre square -> scale_size -> centre crop_size)."""
    sq = centre_square(h, w)
    side = max(1, round(sq.width * crop_size / scale_size))
    return CropWindow(sq.x + (sq.width - side) // 2, sq.y + (sq.height - side) // 2, side, side)


def _raw_crop(sample, window: CropWindow, size: int) -> dict[str, np.ndarray]:
    """What the network saw, in pixels (for drawing): crop, resize, MVs rescaled with the resize."""
    out = {}
    for m in sample.modalities:
        a = torch.from_numpy(np.ascontiguousarray(getattr(sample, m))).float()
        a = a[:, window.y:window.y + window.height, window.x:window.x + window.width]
        a = F.interpolate(a.permute(0, 3, 1, 2), size=(size, size), mode="bilinear", align_corners=False,
                          antialias=True).permute(0, 2, 3, 1)
        if m == "mv":
            a = a * (size / window.width)
        out[m] = a.numpy()
    return out


class Predictor:
    """A checkpoint ready to classify clips: ``Predictor(path)(video) -> (probabilities, sample, note)``."""

    def __init__(self, checkpoint: str | os.PathLike, *, device: str = "cpu", num_segments: int | None = None,
                 crops: int | None = None, preprocess: str | None = None):
        with checkpoint_errors(checkpoint):
            self.model, ckpt = load_model(checkpoint, map_location="cpu")  # ours or a published TEAM-Net file
        # None: the input conventions the weights were trained with; note: the line saying so, if any
        self.preprocess, self.preprocess_note = choose_preprocess(preprocess or "auto", ckpt.get("preprocess"),
                                                                  checkpoint)
        self.model.eval().to(device)
        self.device = device
        data = (ckpt.get("config") or {}).get("data", {})
        extra = ckpt.get("extra") or {}
        self.num_classes = self.model.num_classes
        self.classes = list(extra.get("classes") or [str(i) for i in range(self.num_classes)])
        self.num_segments = num_segments or int(data.get("test_segments", 8))
        self.crop_size = int(data.get("crop_size", 224))
        self.scale_size = int(data.get("scale_size", 256))
        self.crops = crops or int(data.get("test_crops", 1))
        if self.model.num_segments is not None:
            self.model.set_num_segments(self.num_segments)

    def inputs(self, sample) -> dict[str, torch.Tensor]:
        h, w = getattr(sample, sample.modalities[0]).shape[1:3]
        frames = reference_transform(centre_square(h, w), self.scale_size, preprocess=self.preprocess,
                                     **{m: getattr(sample, m) for m in self.model.modalities})
        return {m: x.permute(0, 3, 1, 2)[None].to(self.device) for m, x in frames.items()}

    @torch.no_grad()
    def __call__(self, path: str, *, reencode: bool = True, return_features: bool = False):
        sample, note = read_clip(path, num_segments=self.num_segments, modalities=self.model.modalities,
                                 reencode=reencode)
        views = eval_views(self.inputs(sample), self.crop_size, self.crops)
        logits = sum(self.model(**v).float() for v in views) / len(views)
        probs = logits.softmax(dim=1)[0].cpu()
        if not return_features:
            return probs, sample, note
        out = self.model(**views[0], return_features=True)
        target = probs.argmax().view(1)
        cams = self.model.class_activation_maps(out.features, target.to(self.device))
        return probs, sample, note, {m: c[0].cpu() for m, c in cams.items()}

    def save_cams(self, sample, cams, path: str | os.PathLike, title: str, class_name: str | None = None) -> Path:
        from teamnet.cam import draw_cams

        h, w = getattr(sample, sample.modalities[0]).shape[1:3]
        frames = _raw_crop(sample, _display_window(h, w, self.crop_size, self.scale_size), self.crop_size)
        return draw_cams(frames, cams, path, title=title, class_name=class_name)


def _cam_path(base: str, video: str, many: bool) -> str:
    if not many:
        return base
    b = Path(base)
    return str(b.with_name(f"{b.stem}_{Path(video).stem}{b.suffix or '.png'}"))


def _main(argv: Sequence[str] | None = None) -> int:
    from gpudecode import BackendUnavailableError, GpudecodeError

    from teamnet.commands import predict_parser

    parser = predict_parser()
    args = parser.parse_args(argv)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.topk < 1 or (args.segments is not None and args.segments < 1):
        parser.error("--topk and --segments must be >= 1")
    if str(args.device).startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailableError(None, f"--device {args.device} but PyTorch sees no CUDA device",
                                      "use --device cpu")

    predictor = Predictor(args.checkpoint, device=args.device, num_segments=args.segments, crops=args.crops,
                          preprocess=args.preprocess)
    if predictor.preprocess_note:
        print(predictor.preprocess_note, file=sys.stderr)
    failed = 0
    for video in args.videos:
        try:
            result = predictor(video, reencode=not args.no_reencode, return_features=args.cam is not None)
        except GpudecodeError as e:
            print(f"{video}: cannot classify: {e}", file=sys.stderr)
            failed += 1
            continue
        probs, sample, note = result[:3]
        head = f"{video}" + (f"  (re-encoded to MPEG-4 GOP 12 in a temporary file: {note}; "
                             "for many videos run `gpudecode prepare` once)" if note else "")
        print(head)
        k = min(args.topk, len(probs))
        top = probs.topk(k)
        for rank, (p, i) in enumerate(zip(top.values.tolist(), top.indices.tolist()), 1):
            print(f"  {rank}. {predictor.classes[i]:<30s} {100 * p:6.2f}%")
        if args.cam is not None:
            path = _cam_path(args.cam, video, len(args.videos) > 1)
            best = predictor.classes[int(top.indices[0])]
            try:
                predictor.save_cams(sample, result[3], path,
                                    f"{Path(video).name}: {best} ({100 * float(top.values[0]):.1f}%)", best)
            except OSError as e:
                from gpudecode._cli_errors import UsageError

                raise UsageError(f"cannot write {path}: {e.strerror or e}", "choose another --cam path") from None
            print(f"  class activation maps: {os.path.abspath(path)}")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``teamnet-predict``: a bad checkpoint or video ends in one line on stderr and a non-zero exit status."""
    from gpudecode._cli_errors import run_main

    return run_main(_main, argv, prog="teamnet-predict", expected=(TeamnetError,))


if __name__ == "__main__":
    sys.exit(main())
