"""The extract step: RGB frames and optical flow per video, in parallel.

`run.extract` is the step, `video.extract_video` the work unit, `options` what the output
depends on, `backends/` what computes flow, `frames` decoding and writing, `quantize` the
flow-to-JPEG rule, `batcher` the GPU worker's shared batches.
"""
