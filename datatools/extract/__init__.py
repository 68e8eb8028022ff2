"""RGB frames and optical flow: decoding, resizing, quantizing and writing, per video, in
parallel. `extract` is the step; `extract_video` the work unit; backends compute flow."""

from .options import ExtractOptions, output_size, parse_size
from .quantize import dequantize_flow, quantize_flow
from .run import ExtractResult, Selection, extract
from .video import VideoJob, VideoOutcome, extract_video

__all__ = ["ExtractOptions", "ExtractResult", "Selection", "VideoJob", "VideoOutcome",
           "dequantize_flow", "extract", "extract_video", "output_size", "parse_size",
           "quantize_flow"]
