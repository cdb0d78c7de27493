"""Typed errors of the engine.

Every error names the file and the reason and, where there is one, the remedy, so that a user
with 200k videos can tell at once which file is bad and what to do about it. A dataset loader
catches :class:`GpudecodeError`, skips the video, counts it and reports it; nothing else is
swallowed.
"""

from __future__ import annotations

import os

PREPARE_REMEDY = "re-encode it with `gpudecode prepare`"
#: Every "the GPU path is not available" hint: the extra in both install forms (a checkout, as the README
#: installs, and a package index), and which CUDA line fits which GPU (CUDA 13 dropped V100, DESIGN §4).
GPU_INSTALL_REMEDY = ('install the CUDA extra on a machine with an NVIDIA GPU: in a checkout '
                      '`pip install -e ".[cuda13]"` (Turing and newer) or `pip install -e ".[cuda12]"` (V100 and '
                      'newer); from a package index `pip install "gpudecode[cuda13]"` or `"gpudecode[cuda12]"`')


class GpudecodeError(Exception):
    """Base class: something about a specific video (or the machine) stops the engine."""

    def __init__(self, path: str | os.PathLike | None, reason: str, remedy: str | None = None):
        self.path = None if path is None else os.fspath(path)
        self.reason = reason
        self.remedy = remedy
        where = f"{self.path}: " if self.path is not None else ""
        tail = f" ({remedy})" if remedy else ""
        super().__init__(f"{where}{reason}{tail}")

    def __reduce__(self):  # keep the fields across worker processes
        return (type(self), (self.path, self.reason, self.remedy))


class VideoNotFoundError(GpudecodeError, FileNotFoundError):
    """The path does not exist or is not a regular file."""


class CorruptVideoError(GpudecodeError):
    """The file exists but FFmpeg cannot read it: empty, not a media file, truncated, damaged."""


class NoVideoStreamError(GpudecodeError):
    """The container has no video stream (e.g. audio only)."""


class UnsupportedVideoError(GpudecodeError):
    """A readable video that the engine cannot turn into I-frame/MV/residual samples as is."""


class BFramesError(UnsupportedVideoError):
    """B-frames need bidirectional accumulation, which the published semantics do not define."""


class NoMotionVectorsError(UnsupportedVideoError):
    """FFmpeg exports no motion vectors for this codec (HEVC, VP9, AV1, ...)."""


class DecodeError(GpudecodeError):
    """Decoding failed part-way through a stream that opened fine."""


class BackendUnavailableError(GpudecodeError):
    """A requested backend (GPU, CuPy, PyNvVideoCodec, DALI, the host kernels) cannot be used here."""


class OrientationWarning(UserWarning):
    """The video has a display rotation that samples do not apply (they keep coded orientation)."""


class SidecarError(GpudecodeError):
    """An MV sidecar (``gpudecode.sidecar``) cannot be used: the clip falls back to decoding its MVs.

    ``path`` is the sidecar's path; ``kind`` says why, in one word: ``missing``, ``stale`` (it
    describes another version of the video), ``truncated``, ``corrupt`` or ``version`` (written by
    another format version).
    """

    kind = "corrupt"


class MissingSidecarError(SidecarError):
    kind = "missing"


class StaleSidecarError(SidecarError):
    kind = "stale"


class TruncatedSidecarError(SidecarError):
    kind = "truncated"


class CorruptSidecarError(SidecarError):
    kind = "corrupt"


class SidecarVersionError(SidecarError):
    kind = "version"


class SidecarWarning(UserWarning):
    """A video's MV sidecar could not be used (stale, damaged, another version): its MVs are decoded."""
