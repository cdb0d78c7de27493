"""The engine's front door: index, sample and decode a video with the chosen backend."""

from __future__ import annotations

import os
import warnings
from typing import Iterable, Literal, Sequence

import numpy as np

from gpudecode.errors import GPU_INSTALL_REMEDY, BackendUnavailableError, OrientationWarning
from gpudecode.index import GopIndex, IndexCache, index_video, resolve_cache
from gpudecode.sample import MODALITIES, Sample
from gpudecode.sampling import Mode, sample_gops

BackendName = Literal["cpu", "gpu", "auto"]


def get_backend(backend: BackendName = "cpu", *, threads: int = 1, verbose: bool = False):
    """A backend object with ``decode(index, picks, modalities=...) -> Sample``.

    ``"auto"`` takes the GPU when CuPy, PyNvVideoCodec and a device are usable, else the CPU, and
    says which it chose when ``verbose``.
    """
    if backend not in ("cpu", "gpu", "auto"):
        raise ValueError(f"backend must be 'cpu', 'gpu' or 'auto', got {backend!r}")
    if backend in ("gpu", "auto"):
        try:
            from gpudecode.gpu import GpuBackend  # noqa: PLC0415 (optional, imports CuPy lazily)

            chosen = GpuBackend()
        except (ImportError, BackendUnavailableError) as e:
            if backend == "gpu":
                if isinstance(e, BackendUnavailableError):
                    raise
                raise BackendUnavailableError(None, f"the GPU backend is not available: {e}",
                                              GPU_INSTALL_REMEDY) from e
            if verbose:
                print(f"gpudecode: using the CPU backend ({e})")
        else:
            if verbose:
                print(f"gpudecode: using the GPU backend on {chosen.device_name}")
            return chosen
    from gpudecode.cpu import CpuBackend

    return CpuBackend(threads=threads)


class VideoSampler:
    """Turns video files into TEAM-Net samples: index (cached) → GOP sampling → decode.

    >>> sampler = VideoSampler(num_segments=8, backend="cpu")
    >>> sample = sampler("clip.mp4", mode="train", rng=0)
    """

    def __init__(self, *, num_segments: int = 8, backend: BackendName = "cpu",
                 modalities: Iterable[str] = MODALITIES,
                 cache: IndexCache | str | os.PathLike | bool | None = True, threads: int = 1):
        self.num_segments = num_segments
        self.modalities = tuple(modalities)
        self.backend = get_backend(backend, threads=threads)
        self.cache = resolve_cache(cache)

    def index(self, path: str | os.PathLike) -> GopIndex:
        return index_video(path, cache=self.cache if self.cache is not None else False)

    def picks(self, index: GopIndex, *, mode: Mode = "train", rng: np.random.Generator | int | None = None) -> list[tuple[int, int]]:
        return sample_gops(index.gop_lengths, self.num_segments, mode=mode, rng=rng, positions=index.p_positions)

    def __call__(self, path: str | os.PathLike, *, mode: Mode = "train", rng: np.random.Generator | int | None = None,
                 picks: Sequence[tuple[int, int]] | None = None) -> Sample:
        index = self.index(path)
        index.check_readable()
        if index.rotation or index.mirrored:
            warnings.warn(OrientationWarning(f"{index.path}: players show this video rotated {index.rotation} degrees"
                                             f"{' and mirrored' if index.mirrored else ''}; samples keep the coded "
                                             "orientation (re-encode with `gpudecode prepare` to bake it in)"),
                          stacklevel=2)
        return self.backend.decode(index, picks if picks is not None else self.picks(index, mode=mode, rng=rng),
                                   modalities=self.modalities)


def read_sample(path: str | os.PathLike, num_segments: int = 8, *, mode: Mode = "test",
                rng: np.random.Generator | int | None = None, backend: BackendName = "cpu",
                modalities: Iterable[str] = MODALITIES, cache: IndexCache | bool | None = True) -> Sample:
    """One-shot convenience: index ``path``, sample ``num_segments`` GOPs and decode them."""
    return VideoSampler(num_segments=num_segments, backend=backend, modalities=modalities, cache=cache)(path, mode=mode, rng=rng)
