"""The `torch` TV-L1 backend on the CPU (CI has no GPU): accuracy against Middlebury ground
truth and against OpenCV's TV-L1 on real video frames, independence from the batch, and the
backend through `datatools extract`."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import VIDEOS
from middlebury import RUBBER, epe, read_flo
from PIL import Image
from trees import tree_bytes, ucf101_style_root

from datatools.extract.frames import iter_frames, resize, to_gray
from datatools.extract.options import ExtractOptions
from datatools.extract.run import extract
from datatools.lists.build import build_lists
from datatools.schedule.client import ClusterOptions

torch = pytest.importorskip("torch")  # the gpu/mmaction extras; `make test` installs it
from datatools.extract.backends.torch_flow import TorchFlow  # noqa: E402


def gray_pairs(name: str, count: int, size=(170, 128)) -> list[tuple[np.ndarray, np.ndarray]]:
    frames = []
    for frame in iter_frames(str(VIDEOS / name)):
        frames.append(to_gray(resize(frame, size)))
        if len(frames) > count:
            break
    return list(zip(frames, frames[1:]))


@pytest.fixture(scope="module")
def backend():
    return TorchFlow("tvl1", device="cpu")


def test_rubberwhale_float_flow_is_within_0_18_px_of_ground_truth(backend):
    frames = [np.asarray(Image.open(RUBBER / f"frame1{i}.png").convert("L")) for i in (0, 1)]
    flow = backend.compute(frames[0], frames[1])
    error = epe(flow, read_flo(RUBBER / "flow10.flo"))
    assert error <= 0.18, f"torch TV-L1 EPE {error:.3f} px (OpenCV: 0.156)"


def test_real_video_pairs_agree_with_opencv_tvl1(backend):
    import cv2

    from datatools.extract.tvl1 import TVL1
    cv2.setNumThreads(1)
    opencv = cv2.optflow.DualTVL1OpticalFlow_create(**TVL1.opencv_kwargs())
    errors = []
    for name in ("test.avi", "bikes.mp4", "short_32f.mp4"):
        for a, b in gray_pairs(name, 2):
            errors.append(epe(backend.compute(a, b), opencv.calc(a, b, None)))
    mean = float(np.mean(errors))
    print(f"mean EPE torch vs OpenCV TV-L1 over {len(errors)} real pairs: {mean:.3f} px")
    assert mean <= 0.25


def test_a_pairs_flow_does_not_depend_on_its_batch(backend):
    pairs = gray_pairs("test.mp4", 3) + gray_pairs("bikes.mp4", 2)
    alone = [backend.compute(a, b) for a, b in pairs]
    together = backend.compute_batch(pairs)
    shuffled = backend.compute_batch(pairs[::-1])[::-1]
    for x, y, z in zip(alone, together, shuffled):
        assert np.array_equal(x, y) and np.array_equal(x, z)  # bitwise, on the CPU


def test_extract_with_the_torch_backend_writes_every_pair(tmp_path):
    root = ucf101_style_root(tmp_path / "root", {"Real/v_Real_g01_c01.mp4": str(VIDEOS / "short_32f.mp4")})
    build_lists("ucf101", root)
    result = extract(root, ExtractOptions(task="flow", backend="torch", new_short=64),
                     cluster=ClusterOptions(workers=2))
    (rec, outcome), = result.outcomes
    assert outcome.status == "done" and outcome.flow_count == 31
    folder = root / "rawframes/Real/v_Real_g01_c01"
    assert len(list(folder.glob("flow_x_*.jpg"))) == 31 and (folder / "flow_y_00031.jpg").is_file()


def test_videos_run_together_share_batches_and_write_what_they_write_alone(tmp_path):
    """A worker running three videos at once (as a GPU worker does) batches their pairs
    together; every flow file equals the one written when the videos run one at a time."""
    from distributed import Client, LocalCluster

    from datatools.extract.batcher import batch_stats
    files = {f"Real/v_Real_g0{i}_c01.mp4": str(VIDEOS / "short_32f.mp4") for i in (1, 2, 3)}
    opts = ExtractOptions(task="flow", backend="torch", new_short=48)
    alone = ucf101_style_root(tmp_path / "alone", files)
    build_lists("ucf101", alone)
    assert extract(alone, opts, cluster=ClusterOptions(workers=1)).counts == {"done": 3}
    together = ucf101_style_root(tmp_path / "together", files)
    build_lists("ucf101", together)
    with LocalCluster(n_workers=1, threads_per_worker=3, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        result = extract(together, opts, cluster=ClusterOptions(scheduler=cluster.scheduler_address))
        (stats,) = client.run(batch_stats).values()
    assert result.counts == {"done": 3}
    assert stats["pairs"] == 93 and stats["mixed_batches"] >= 1, stats
    a, b = tree_bytes(alone / "rawframes"), tree_bytes(together / "rawframes")
    assert len([k for k in a if "/flow_" in k]) == 2 * 93
    assert {k: v for k, v in a.items() if "/flow_" in k} == {k: v for k, v in b.items() if "/flow_" in k}


def test_a_batch_the_device_cannot_hold_is_halved_until_it_fits(backend):
    """Free memory can shrink between batch_size() and the computation (another process on
    the GPU): the batcher splits the batch instead of failing the videos. The CPU has no
    memory limit to hit, so the device's out-of-memory error is raised for batches over 2."""
    from datatools.extract.batcher import PairBatcher

    class SmallDevice:
        def __init__(self, real):
            self.real = real

        def batch_size(self, width, height):
            return 8

        def compute_batch_quantized(self, pairs, bound):
            if len(pairs) > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return self.real.compute_batch_quantized(pairs, bound)

    pairs = gray_pairs("short_32f.mp4", 6, size=(64, 48))
    batcher = PairBatcher(SmallDevice(backend), 20.0)
    futures = [batcher.submit(a, b, "video") for a, b in pairs]
    flows = [f.result(timeout=120) for f in futures]
    expected = backend.compute_batch_quantized(pairs, 20.0)
    assert all(np.array_equal(x, y) for x, y in zip(flows, expected))
    assert batcher.stats["splits"] >= 1 and batcher.stats["pairs"] == 6


def test_a_device_error_while_sizing_a_batch_fails_the_pairs_instead_of_hanging(backend):
    from datatools.extract.batcher import PairBatcher

    class LostDevice:
        def batch_size(self, width, height):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")

    pairs = gray_pairs("short_32f.mp4", 3, size=(64, 48))
    batcher = PairBatcher(LostDevice(), 20.0)
    futures = [batcher.submit(a, b, "video") for a, b in pairs]
    for fut in futures:
        with pytest.raises(RuntimeError, match="illegal memory access"):
            fut.result(timeout=30)


def test_flow_quantized_on_the_device_equals_the_host_rule(backend):
    from datatools.extract.quantize import quantize_flow
    pairs = gray_pairs("short_32f.mp4", 2)
    floats = backend.compute_batch(pairs)
    quantized = backend.compute_batch_quantized(pairs, 20.0)
    for f, q in zip(floats, quantized):
        assert q.dtype == np.uint8
        assert np.array_equal(q[..., 0], quantize_flow(f[..., 0], 20.0))
        assert np.array_equal(q[..., 1], quantize_flow(f[..., 1], 20.0))
    edges = torch.tensor([-25.0, -20.0, 0.0, 20.0 * (1 / 255), 25.0])  # clip, 0 -> 128, half-even
    from datatools.extract.backends.torch_flow import quantize
    assert quantize(edges, 20.0).tolist() == quantize_flow(edges.numpy(), 20.0).tolist()
