"""gpudecode: compressed-domain video for action recognition.

video → GOP index → GOP sampling → decode (I-frame, P-frame chain, FFmpeg MVs) → kernels
(MV rasterisation, accumulation to the I-frame, residual gather) → Sample.

>>> from gpudecode import VideoSampler
>>> sample = VideoSampler(num_segments=8)("clip.mp4", mode="train", rng=0)
>>> sample.iframe.shape, sample.mv.shape, sample.residual.shape   # (8,H,W,3) (8,H,W,2) (8,H,W,3)
"""

from gpudecode.engine import VideoSampler, get_backend, read_sample
from gpudecode.errors import (
    BackendUnavailableError,
    BFramesError,
    CorruptVideoError,
    DecodeError,
    GpudecodeError,
    NoMotionVectorsError,
    NoVideoStreamError,
    UnsupportedVideoError,
    VideoNotFoundError,
)
from gpudecode.index import GopIndex, IndexCache, index_video, index_videos
from gpudecode.sample import MODALITIES, Sample
from gpudecode.sampling import sample_gops

__version__ = "0.1.0"

__all__ = [
    "BFramesError", "BackendUnavailableError", "CorruptVideoError", "DecodeError", "GopIndex",
    "GpudecodeError", "IndexCache", "MODALITIES", "NoMotionVectorsError", "NoVideoStreamError",
    "Sample", "UnsupportedVideoError", "VideoNotFoundError", "VideoSampler", "get_backend",
    "index_video", "index_videos", "read_sample", "sample_gops",
]
