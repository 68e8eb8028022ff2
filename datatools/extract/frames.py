"""Frames in and JPEG files out: streaming decode, resize, grayscale, encode, write.

Decoding streams one frame at a time (a video is never held in memory). Frames come out as
BGR uint8, what OpenCV's JPEG encoder and grayscale conversion take.

Extraction decodes with OpenCV's FFmpeg reader on one thread. Measured on test.avi + test.mp4
(bench/extract.py, one process): 0.40 ms a frame against decord's 0.53 ms, and decord keeps a
second thread busy, so two decord workers on two cores slow each other down by 1.8x. Its frame
counts equal decord's on every real clip (tests/extract/test_extract.py checks them); decord and PyAV
remain as fallbacks for files OpenCV cannot open.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

try:
    import decord
except ImportError:  # decord ships x86_64 wheels only
    decord = None


class DecodeError(Exception):
    pass


def iter_frames_decord(path: str) -> Iterator[np.ndarray]:
    try:
        vr = decord.VideoReader(path, num_threads=1)
    except (decord.DECORDError, RuntimeError) as exc:
        raise DecodeError(f"cannot open: {str(exc).strip().splitlines()[-1][:160]}") from None
    n = len(vr)
    try:
        for i in range(n):
            try:
                rgb = vr.next().asnumpy()
            except (decord.DECORDError, RuntimeError) as exc:
                raise DecodeError(f"frame {i} of {n}: {str(exc).strip().splitlines()[-1][:160]}") from None
            yield np.ascontiguousarray(rgb[:, :, ::-1])  # RGB -> BGR
    finally:
        del vr


def iter_frames_pyav(path: str) -> Iterator[np.ndarray]:
    import av
    try:
        container = av.open(path)
    except av.FFmpegError as exc:
        raise DecodeError(str(exc)) from None
    with container:
        if not container.streams.video:
            raise DecodeError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "NONE"
        count = 0
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="bgr24")
                count += 1
        except av.FFmpegError as exc:
            raise DecodeError(f"frame {count}: {exc}") from None


def iter_frames(path: str) -> Iterator[np.ndarray]:
    """BGR frames of `path`, in order: OpenCV's reader (see above); where OpenCV cannot open a
    file, decord, then PyAV."""
    import cv2
    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    if not cap.isOpened():
        cap.release()
        yield from (iter_frames_decord if decord is not None else iter_frames_pyav)(path)
        return
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield frame
    finally:
        cap.release()


class JpegWriter:
    """Encodes frames and hands each JPEG's bytes to `put(name, data)`: a frame writer's `add`
    (frames/writers.py: a folder's file, or a pack's member)."""

    def __init__(self, quality: int, put: Callable[[str, memoryview], None]):
        import cv2
        self._cv2 = cv2
        self.params = [cv2.IMWRITE_JPEG_QUALITY, quality]
        self.put = put

    def write(self, name: str, image: np.ndarray) -> None:
        ok, buf = self._cv2.imencode(".jpg", image, self.params)
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for {name}")
        self.put(name, buf.reshape(-1).data)


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2
    h, w = image.shape[:2]
    if (w, h) == size:
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)


def to_gray(bgr: np.ndarray) -> np.ndarray:
    import cv2
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
