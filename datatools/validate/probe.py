"""Opening and checking videos: one `probe_video` call per file, run inside Dask workers.

Two levels. `quick` (PyAV): demux every video packet without decoding, so a truncated file
shows as missing packets, and decode the first, a middle and the last keyframe. `full`: decode
every frame with decord (what MMAction2 trains with; PyAV where decord is missing); the frame
count is the exact number decoded. A container without a declared frame count (MPEG-TS, WebM)
cut short passes `quick` when its remaining packets decode; `full` is the authoritative check.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from ..root.status import CORRUPT, EMPTY, MISSING, NO_VIDEO_STREAM, NOT_VIDEO, OK, UNREADABLE

# Frames a container may declare beyond what is decodable before the file counts as truncated
# (some muxers count an extra or dropped frame).
TRUNCATION_SLACK = 2

try:
    import decord
except ImportError:  # decord ships x86_64 wheels only
    decord = None


@dataclass
class ProbeResult:
    """What a probe found; every field (and `decodable`) is a manifest column of the same name."""

    status: str
    size: int | None = None
    frame_count: int | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    codec: str | None = None
    error: str | None = None
    probe_level: str = "quick"

    @property
    def decodable(self) -> bool | None:
        if self.status in (MISSING, EMPTY, UNREADABLE, NOT_VIDEO):
            return None
        return self.status == OK


class ProbeError(Exception):
    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


def sniff_container(head: bytes) -> str | None:
    """The container family named by a file's first bytes, or None if none is recognised."""
    if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"):
        return "avi"
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"):
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if head[:3] == b"FLV":
        return "flv"
    if head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"):
        return "mpeg"
    if head[:4] == b"\x30\x26\xb2\x75":
        return "asf"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:4] == b".RMF":
        return "realmedia"
    if head[:1] == b"\x47" and len(head) > 188 and head[188:189] == b"\x47":
        return "mpegts"
    return None


def probe_video(path: str, level: str = "quick") -> ProbeResult:
    """Check one video file; never raises for a bad file, returns its status and reason."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return ProbeResult(MISSING, error="file not found", probe_level=level)
    except OSError as exc:
        return ProbeResult(UNREADABLE, error=exc.strerror, probe_level=level)
    if stat.S_ISDIR(st.st_mode):
        return ProbeResult(NOT_VIDEO, error="is a directory", probe_level=level)
    if not stat.S_ISREG(st.st_mode):
        return ProbeResult(NOT_VIDEO, error="not a regular file", probe_level=level)
    if st.st_size == 0:
        return ProbeResult(EMPTY, size=0, error="0 bytes", probe_level=level)
    # Root reads any file, but the training job reading it later may not run as root.
    if not st.st_mode & (stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH):
        return ProbeResult(UNREADABLE, size=st.st_size, probe_level=level,
                           error=f"no read permission (mode {stat.S_IMODE(st.st_mode):03o})")
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as exc:
        return ProbeResult(UNREADABLE, size=st.st_size, error=exc.strerror, probe_level=level)
    # Decoders happily open a JPEG or a GIF as a one-stream "video": recognise the container
    # first (every format these datasets ship in has a signature above).
    if sniff_container(head) is None:
        return ProbeResult(NOT_VIDEO, size=st.st_size, probe_level=level,
                           error="not a video container (unrecognised content)")
    try:
        result = _decode_check(path, level)
    except ProbeError as exc:
        return ProbeResult(exc.status, size=st.st_size, error=str(exc), probe_level=level)
    result.size = st.st_size
    return result


def probe_task(task: tuple[str, str]) -> ProbeResult:
    """Dask work unit: (path, level) -> ProbeResult."""
    return probe_video(*task)


def _first_line(exc: BaseException) -> str:
    """Decoder messages come with C++ file/line prefixes and stack traces; keep the gist."""
    text = str(exc).strip()
    for line in text.splitlines():
        line = line.strip()
        if "ERROR" in line or "Error" in line or "failed" in line or "cannot" in line:
            text = line
            break
    else:
        text = text.splitlines()[0] if text else type(exc).__name__
    if "] " in text and text.startswith("["):
        text = text.split("] ", 1)[1]
    for marker in ("video_reader.cc:", ".cc:"):
        if marker in text:
            text = text.split(marker, 1)[1].split(": ", 1)[-1]
    return text[:200]


def _ffmpeg_message(path: str, exc: BaseException) -> str:
    """FFmpeg's reason without the path it appends; the moov case named the way users know it."""
    msg = getattr(exc, "strerror", None) or str(exc)
    if path.endswith((".mp4", ".m4v", ".mov")) and "Invalid data" in msg:
        return f"{msg} (moov atom not found: file cut short or not finished)"
    return msg


def _open(path: str):
    import av
    try:
        return av.open(path)
    except FileNotFoundError:
        raise ProbeError(MISSING, "file not found") from None
    except PermissionError as exc:
        raise ProbeError(UNREADABLE, exc.strerror) from None
    except av.FFmpegError as exc:
        raise ProbeError(CORRUPT, _ffmpeg_message(path, exc)) from None


def _video_stream(container):
    if not container.streams.video:
        raise ProbeError(NO_VIDEO_STREAM, "no video stream (audio only?)")
    stream = container.streams.video[0]
    stream.thread_type = "NONE"  # one core per worker
    return stream


def _fps(stream) -> float | None:
    return float(stream.average_rate) if stream.average_rate else None


def _check_declared(declared: int, found: int) -> None:
    if declared and found + TRUNCATION_SLACK < declared:
        raise ProbeError(CORRUPT, f"truncated: the container declares {declared} frames, "
                         f"only {found} are present")


def _quick_check(path: str) -> ProbeResult:
    """Demux every video packet (no decoding) and decode the first, a middle and the last
    keyframe. Keyframes decode alone, so this costs three frames whatever the length; the
    packet count is the frame count (equal to decord's on every real clip tested)."""
    import av
    with _open(path) as container:
        stream = _video_stream(container)
        codec_ctx = stream.codec_context
        packets, keyframes = 0, []
        try:
            for packet in container.demux(stream):
                if packet.size:
                    if packet.is_keyframe:
                        keyframes.append(packet)
                    packets += 1
        except av.FFmpegError as exc:
            raise ProbeError(CORRUPT, f"container damaged after {packets} packets: "
                             f"{_first_line(exc)}") from None
        if not packets or not keyframes:
            raise ProbeError(CORRUPT, "no video packets" if not packets else "no keyframe")
        _check_declared(stream.frames or 0, packets)
        shape = None
        checks = {id(k): k for k in (keyframes[0], keyframes[len(keyframes) // 2], keyframes[-1])}
        for packet in checks.values():
            try:
                frames = codec_ctx.decode(packet) + codec_ctx.decode(None)
                codec_ctx.flush_buffers()
            except av.FFmpegError as exc:
                raise ProbeError(CORRUPT, f"keyframe at packet {keyframes.index(packet)} does "
                                 f"not decode: {_first_line(exc)}") from None
            if not frames:
                raise ProbeError(CORRUPT, "a keyframe decodes to no picture")
            shape = shape or (frames[0].height, frames[0].width)
        fps = _fps(stream)
        return ProbeResult(OK, frame_count=packets, fps=fps, height=shape[0], width=shape[1],
                           duration=packets / fps if fps else None, codec=codec_ctx.name,
                           probe_level="quick")


def _full_check(path: str) -> ProbeResult:
    """Decode every frame (decord, as MMAction2 trains with; PyAV where decord is missing)."""
    with _open(path) as container:
        stream = _video_stream(container)
        codec, declared = stream.codec_context.name, stream.frames or 0
    frames, fps, height, width = (_decord_decode_all if decord is not None else _pyav_decode_all)(path)
    _check_declared(declared, frames)
    return ProbeResult(OK, frame_count=frames, fps=fps, width=width, height=height,
                       duration=frames / fps if fps else None, codec=codec, probe_level="full")


def _decode_check(path: str, level: str) -> ProbeResult:
    return _quick_check(path) if level == "quick" else _full_check(path)


def _decord_decode_all(path: str):
    try:
        vr = decord.VideoReader(path, num_threads=1)
        n = len(vr)
        if n <= 0:
            raise ProbeError(CORRUPT, "no frames")
        fps = float(vr.get_avg_fps())
        height, width = vr.next().shape[:2]
        decoded = 1
        for _ in range(n - 1):
            vr.next()
            decoded += 1
        del vr
    except ProbeError:
        raise
    except decord.DECORDError as exc:
        if "cannot find video stream" in str(exc):
            raise ProbeError(NO_VIDEO_STREAM, "no video stream") from None
        raise ProbeError(CORRUPT, _first_line(exc)) from None
    except (RuntimeError, StopIteration) as exc:
        raise ProbeError(CORRUPT, _first_line(exc) or "decoding stopped early") from None
    return decoded, fps, height, width


def _pyav_decode_all(path: str):
    import av
    count, shape = 0, None
    with _open(path) as container:
        stream = _video_stream(container)
        try:
            for frame in container.decode(stream):
                shape = shape or (frame.height, frame.width)
                count += 1
        except av.FFmpegError as exc:
            raise ProbeError(CORRUPT, f"frame {count}: {_first_line(exc)}") from None
        fps = _fps(stream)
    if shape is None:
        raise ProbeError(CORRUPT, "no decodable frame")
    return count, fps, shape[0], shape[1]
