"""One open per clip: walk the sampled GOPs of a video, each decoded once from its I-frame.

Both backends read frames through this: it seeks to each needed GOP's I-frame by timestamp
(continuing without a seek when the GOP follows the last one decoded), decodes up to the
furthest position any segment needs, and checks that what it decodes matches the index.
"""

from __future__ import annotations

import time
from typing import Iterator

import av

from gpudecode._av import PICT_B, PICT_I, PICT_P, open_video
from gpudecode.errors import BFramesError, DecodeError, PREPARE_REMEDY, UnsupportedVideoError
from gpudecode.index import GopIndex


class GopReader:
    """Frames of one video, GOP by GOP, in increasing GOP order. Use as a context manager."""

    def __init__(self, index: GopIndex, *, export_mvs: bool, threads: int = 1, fast: bool = False):
        self.index = index
        # fast: for an MV-only pass. Skipping the loop filter leaves the MVs identical (measured, DESIGN §4)
        # but changes the pixels, so it is only for callers that take the pixels from elsewhere.
        options = {"skip_loop_filter": "all"} if fast else None
        self.container, self.stream = open_video(index.path, export_mvs=export_mvs, threads=threads, options=options)
        #: seconds spent demuxing and decoding, and seeks made: the engine's per-stage report
        self.stats = {"demux": 0.0, "decode": 0.0, "seeks": 0, "frames": 0}
        self._frames = self._decode()
        self._next = 0  # decoded-frame index of the next frame self._frames yields
        self._closed = False

    def __enter__(self) -> "GopReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._frames.close()  # finish the demux generator before its container goes away
        self.container.close()

    def _reset_frames(self) -> None:
        self._frames.close()
        self._frames = self._decode()

    def _decode(self) -> Iterator[av.VideoFrame]:
        """container.decode(stream), with demuxing and decoding timed apart."""
        packets = self.container.demux(self.stream)
        clock, stats = time.perf_counter, self.stats
        try:
            while True:
                t0 = clock()
                packet = next(packets, None)
                t1 = clock()
                stats["demux"] += t1 - t0
                if packet is None:
                    return
                frames = packet.decode()  # the last, empty packet flushes the decoder
                stats["decode"] += clock() - t1
                stats["frames"] += len(frames)
                yield from frames
        finally:
            # PyAV's demux generator frees its read packet only when closed: one dropped while
            # suspended (every seek, every early stop) leaks ~150 bytes of native memory.
            packets.close()

    def _restart(self) -> None:
        self.container.seek(0, stream=self.stream, backward=True)
        self._reset_frames()
        self._next = 0

    def _position(self, gop: int) -> av.VideoFrame | None:
        """Make the next frame GOP ``gop``'s I-frame; return it if seeking already decoded it."""
        start = self.index.gop_starts[gop]
        if start == self._next:
            return None
        if self.index.seekable:
            target = self.index.gop_pts[gop]
            self.container.seek(target, stream=self.stream, backward=True)
            self.stats["seeks"] += 1
            self._reset_frames()
            for frame in self._frames:
                if frame.pts == target:
                    self._next = start + 1
                    return frame
                if frame.pts is None or frame.pts > target:
                    break
            self._restart()  # the seek landed somewhere unexpected: fall back to counting frames
        elif start < self._next:
            self._restart()
        while self._next < start:
            if next(self._frames, None) is None:
                raise DecodeError(self.index.path, f"the stream ended at frame {self._next}, before GOP {gop} "
                                                   f"(frame {start}); the file changed since it was indexed or is truncated")
            self._next += 1
        return None

    def frames(self, gop: int, last: int) -> Iterator[tuple[int, av.VideoFrame]]:
        """Yield ``(k, frame)`` for k = 0..last of GOP ``gop`` (k = 0 is the I-frame).

        In a video whose B-frames are skipped (``index.skips_b_frames``), B-frames are decoded (the
        decoder needs them to keep its order) but not yielded: only the I-frame and the P-frames of
        the chain come out, with their display positions ``k``.
        """
        path = self.index.path
        if self._closed:  # the stream and its frames point into freed memory once the container is closed
            raise ValueError(f"{path}: GopReader is closed")
        if not 0 <= last < self.index.gop_lengths[gop]:
            raise ValueError(f"{path}: position {last} is outside GOP {gop} of length {self.index.gop_lengths[gop]}")
        try:
            first = self._position(gop)
            for k in range(last + 1):
                if k == 0 and first is not None:
                    frame = first
                else:
                    frame = next(self._frames, None)
                    if frame is None:
                        raise DecodeError(path, f"the stream ended inside GOP {gop} (frame {self.index.gop_starts[gop] + k}); "
                                                "the file changed since it was indexed or is truncated")
                    self._next += 1
                if frame.width != self.index.width or frame.height != self.index.height:
                    raise UnsupportedVideoError(path, f"frame size changes mid-stream ({self.index.width}x"
                                                      f"{self.index.height} -> {frame.width}x{frame.height})", PREPARE_REMEDY)
                kind = int(frame.pict_type)
                if k == 0 and kind != PICT_I:
                    raise DecodeError(path, f"expected the I-frame of GOP {gop} at frame {self.index.gop_starts[gop]}, "
                                            f"decoded picture type {kind}; the file changed since it was indexed")
                if k > 0 and kind == PICT_B and self.index.skips_b_frames:
                    continue
                if k > 0 and kind != PICT_P:
                    if kind == PICT_B:
                        raise BFramesError(path, "has B-frames", PREPARE_REMEDY)
                    raise DecodeError(path, f"expected a P-frame at frame {self.index.gop_starts[gop] + k}, "
                                            f"decoded picture type {kind}; the file changed since it was indexed")
                yield k, frame
        except av.FFmpegError as e:
            raise DecodeError(path, f"decoding GOP {gop} failed ({e.strerror or e})",
                              "the file is damaged; re-download it or drop it") from e
