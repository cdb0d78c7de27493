"""The CAM picture of `teamnet.predict --cam`: per-stream maps at their real resolution, over the I-frame,
with a colour bar and a caption (issue 19: smooth gradients and unexplained white contours)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from teamnet.cam import draw_cams, normalise_cams


def test_maps_are_scaled_per_stream_over_the_clip():
    cams = torch.tensor([[[0.0, 1.0], [2.0, 3.0]], [[-1.0, 1.0], [1.0, 5.0]]])
    heat = normalise_cams(cams)
    assert heat.shape == (2, 2, 2) and heat.min() == 0 and heat.max() == 1
    assert np.allclose(heat[0], (cams[0].numpy() + 1) / 6)  # segments share one scale


def test_draws_every_stream_with_its_inputs(tmp_path):
    rng = np.random.default_rng(0)
    frames = {"iframe": rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8),
              "mv": rng.normal(0, 4, (3, 64, 64, 2)).astype(np.float32),
              "residual": rng.normal(0, 20, (3, 64, 64, 3)).astype(np.float32)}
    cams = {m: torch.randn(3, 2, 2) for m in frames}
    path = draw_cams(frames, cams, tmp_path / "cam.png", title="clip: move_left (90%)", class_name="move_left")
    width, height = Image.open(path).size
    assert height > width > 300  # 5 rows (I-frame, MVs, three CAMs) of 3 columns, caption below
