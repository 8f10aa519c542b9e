"""One backbone, many tasks: throughput of mixed-task batches, and of the real server on loopback.

    python benchmarks/serve_bench.py --out docs/bench/serve.json          # default backbone, 112 px

1. Library (`MultiTaskModel`), batches of --batch images spread over 1, 4, 8 and 16 VPT-deep tasks, against a
   single-task batch and against the naive alternative: one model per task, each task's images in its own forward
   pass. Timed in turns, --repeats times; images/s at the median (a sustained rate, comparable with the server's).
2. Batcher: our asyncio queue (`vptune.inference.batcher.Batcher`) against `batched`'s AsyncBatchProcessor on the
   same model and load, in process (skipped if `batched` is not installed).
3. Server (`vptune serve` as a subprocess on 127.0.0.1, default settings but --max-batch): --clients concurrent
   keep-alive clients (aiohttp: pip install aiohttp) posting PNG uploads, each to its own task (tasks: 1, 4 or
   16), --requests in all; throughput, p50 / p99 latency, the batch sizes the server formed, the CPU both sides
   used (the clients share the server's cores here), and the ratio to the library's mixed batch of the same tasks
   and size, measured in turns with the serving (--rounds).
Every figure of one run comes from the same machine in one process, side by side.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

import torch
from PIL import Image

from vptune import MultiTaskModel, PromptConfig, build_model, create_backbone, save_task
from vptune.inference.batcher import Batcher


def make_tasks(folder: Path, count: int, backbone, num_tokens: int, num_classes: int = 10) -> dict[str, Path]:
    tasks = {}
    for t in range(count):
        torch.manual_seed(t)
        model = build_model("vpt-deep", backbone, PromptConfig(num_tokens=num_tokens), num_classes)
        tasks[f"task{t}"] = save_task(model, folder / f"task{t}")
    return tasks


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def library(multi: MultiTaskModel, batch: int, repeats: int) -> dict:
    """Per task count: a single-task batch, the mixed batch and one model per task, timed in turns `repeats`
    times (this machine's speed drifts by 10-20% over a minute; in turns, the ratios do not carry it). Rates are
    at the median time: sustained, as a server sees them, not the best call."""
    images = torch.randn(batch, 3, *multi.data_config["input_size"][1:])
    names = list(multi.tasks)
    rows = {}
    for count in (1, 4, 8, 16):
        if count > min(len(names), batch):  # every task needs at least one image of the batch
            break
        assignment = [names[j % count] for j in range(batch)]  # round-robin over the first `count` tasks
        rows_of = {name: [j for j in range(batch) if j % count == i] for i, name in enumerate(names[:count])}

        def one_model_per_task():
            with torch.inference_mode():
                for name, rows_of_task in rows_of.items():
                    multi.tasks[name](images[rows_of_task])
        ways = {"single_task_img_s": lambda: multi(images, [names[0]] * batch),
                "mixed_img_s": lambda: multi(images, assignment), "one_model_per_task_img_s": one_model_per_task}
        times: dict[str, list[float]] = {way: [] for way in ways}
        for turn in range(repeats + 1):
            for way, fn in ways.items():
                seconds = timed(fn)
                if turn:  # the first turn warms the per-task prompt caches up
                    times[way].append(seconds)
        row = {way: batch / statistics.median(t) for way, t in times.items()}
        row["vs_single_task_batch"] = statistics.median(s / m for s, m in zip(times["single_task_img_s"],
                                                                              times["mixed_img_s"]))
        rows[count] = row
        print(f"library, batch {batch}, {count:>2} tasks: mixed {row['mixed_img_s']:7.1f} img/s "
              f"({row['vs_single_task_batch']:.2f}x single-task), one model per task "
              f"{row['one_model_per_task_img_s']:7.1f} img/s", flush=True)
    return rows


def batcher_comparison(multi: MultiTaskModel, batch: int, requests: int) -> dict:
    """Both batchers fed by `batch` concurrent coroutines, `requests` items in all, on the same model."""
    image = torch.randn(3, *multi.data_config["input_size"][1:])
    names = list(multi.tasks)

    def run(items):
        return multi(torch.stack([i for _, i in items]), [n for n, _ in items])

    async def drive(submit) -> float:
        per_client = requests // batch

        async def client(c):
            for _ in range(per_client):
                await submit((names[c % len(names)], image))
        started = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(batch)))
        return per_client * batch / (time.perf_counter() - started)

    async def ours() -> float:
        batcher = Batcher(run, max_batch=batch, max_wait=0.005, max_pending=10 * batch)
        await batcher.start()
        rate = await drive(batcher.submit)
        await batcher.stop()
        return rate

    results = {"vptune_batcher_img_s": asyncio.run(ours())}
    try:
        from batched.aio import AsyncBatchProcessor
    except ImportError:
        print("batched is not installed: pip install batched to compare", flush=True)
        return results

    async def theirs() -> float:
        processor = AsyncBatchProcessor(run, batch_size=batch, timeout_ms=5.0)  # runs `run` on the event loop
        return await drive(processor)

    results["batched_AsyncBatchProcessor_img_s"] = asyncio.run(theirs())
    print(f"batchers, batch {batch}: ours {results['vptune_batcher_img_s']:.1f} img/s, batched "
          f"{results['batched_AsyncBatchProcessor_img_s']:.1f} img/s", flush=True)
    return results


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc), None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def multipart_png(size: int) -> tuple[bytes, str]:
    """One PNG upload as a ready multipart body and its content type: the load generator builds it once, as wrk
    or hey would, so the client's CPU (on the same cores as the server here) stays small."""
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (120, 60, 200)).save(buffer, format="PNG")
    boundary = "vptune-bench"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
            f"Content-Type: image/png\r\n\r\n").encode()
    return head + buffer.getvalue() + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def start_server(tasks: dict[str, Path], max_batch: int, clients: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    args = [sys.executable, "-m", "vptune", "serve", "--port", str(port), "--max-batch", str(max_batch),
            "--max-pending", str(4 * clients)]
    for name, directory in tasks.items():
        args += ["--task", f"{name}={directory}"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        if process.poll() is not None:
            raise RuntimeError(f"vptune serve exited with {process.returncode}: run it by hand to see why")
        try:
            with urllib.request.urlopen(url + "/health", timeout=1):
                return process, url
        except OSError:  # not listening yet
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("vptune serve did not answer /health within 60 s")


def server(multi: MultiTaskModel, tasks: dict[str, Path], clients: int, requests: int, max_batch: int,
           rounds: int) -> dict:
    """`clients` concurrent keep-alive clients (one asyncio loop, aiohttp), each posting to its own task in turn,
    `requests` in all after a warm-up; throughput, latency, batch sizes and both sides' CPU.

    aiohttp, not httpx: the clients share the server's cores here, and httpx's client took 0.12-0.13 cores at
    this load against aiohttp's 0.03 (with the server's throughput 7% lower under httpx, measured in turns).

    The serving is cut into `rounds`, and before each round the library runs two mixed batches of the same tasks
    and size while the server idles: this machine's speed drifts by 10-20% over a minute, and measured in turns
    the ratio does not carry that drift."""
    import aiohttp

    size = multi.data_config["input_size"][-1]
    body, content_type = multipart_png(size)
    names = list(tasks)
    images = torch.randn(max_batch, 3, size, size)
    assignment = [names[j % len(names)] for j in range(max_batch)]
    latencies: list[float] = []
    batch_sizes: Counter = Counter()
    library_times: list[float] = []
    spent = {"serving": 0.0, "client_cpu": 0.0}

    async def load(url: str) -> None:
        connector = aiohttp.TCPConnector(limit=clients)
        async with aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(120)) as session:
            async def client(c: int, count: int) -> None:
                path = f"/v1/tasks/{names[c % len(names)]}/predict"
                for _ in range(count):
                    started = time.perf_counter()
                    async with session.post(path, data=body, headers={"content-type": content_type}) as response:
                        response.raise_for_status()
                        await response.read()
                    latencies.append(time.perf_counter() - started)
                    batch_sizes[int(response.headers["x-batch-size"])] += 1

            await asyncio.gather(*(client(c, 2) for c in range(clients)))  # warm-up: connections open
            latencies.clear()
            batch_sizes.clear()
            multi(images, assignment)  # warm-up of the library side
            for _ in range(rounds):
                library_times.extend(timed(lambda: multi(images, assignment)) for _ in range(2))
                started, cpu = time.perf_counter(), time.process_time()
                await asyncio.gather(*(client(c, requests // (clients * rounds)) for c in range(clients)))
                spent["serving"] += time.perf_counter() - started
                spent["client_cpu"] += time.process_time() - cpu

    process, url = start_server(tasks, max_batch, clients)
    try:
        server_cpu = cpu_seconds(process.pid)
        asyncio.run(load(url))  # the server is idle while the library runs: its CPU counts the serving only
        server_cpu = (cpu_seconds(process.pid) - server_cpu) if server_cpu is not None else None
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    latencies.sort()
    count, elapsed = len(latencies), spent["serving"]
    library_rate = max_batch / statistics.median(library_times)
    row = {"tasks": len(tasks), "clients": clients, "requests": count, "img_s": count / elapsed,
           "p50_ms": 1000 * statistics.median(latencies), "p99_ms": 1000 * latencies[int(0.99 * (count - 1))],
           "mean_batch": sum(k * v for k, v in batch_sizes.items()) / count,
           "batch_sizes": dict(sorted(batch_sizes.items())),
           "server_cpu_cores": server_cpu / elapsed if server_cpu is not None else None,
           "client_cpu_cores": spent["client_cpu"] / elapsed,
           "library_img_s": library_rate, "vs_library_mixed_batch": count / elapsed / library_rate}
    print(f"server, {clients} clients, {len(tasks):>2} tasks: {row['img_s']:6.1f} img/s, p50 {row['p50_ms']:.0f} ms, "
          f"p99 {row['p99_ms']:.0f} ms, mean batch {row['mean_batch']:.1f}, client CPU "
          f"{row['client_cpu_cores']:.2f} cores; library in turns {library_rate:.1f} img/s: "
          f"{row['vs_library_mixed_batch']:.2f}x", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="dinov2-s14-imgfocus")
    parser.add_argument("--img-size", type=int, default=112)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--num-tokens", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16, help="images per batch (and the server's --max-batch)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=768, help="server requests per setting")
    parser.add_argument("--rounds", type=int, default=12, help="turns of library batches and serving per setting")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    backbone = create_backbone(args.backbone, img_size=args.img_size, weights=args.weights)
    with tempfile.TemporaryDirectory(prefix="vptune-serve-bench-") as folder:
        tasks = make_tasks(Path(folder), 16, backbone, args.num_tokens)
        multi = MultiTaskModel(backbone, tasks)
        report = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                              "torch_threads": torch.get_num_threads(), "torch": torch.__version__},
                  "settings": vars(args) | {"out": str(args.out)},
                  "library": library(multi, args.batch, args.repeats),
                  "batchers": batcher_comparison(multi, args.batch, 20 * args.batch),
                  "server": []}
        try:
            import aiohttp  # noqa: F401  (the load generator)
        except ImportError:
            print("aiohttp is not installed: pip install aiohttp to time the server", flush=True)
        else:
            for count in (1, 4, 16):
                served = dict(list(tasks.items())[:count])
                report["server"].append(server(multi, served, args.clients, args.requests, args.batch, args.rounds))
    print(markdown(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"written {args.out}")


def markdown(report: dict) -> str:
    """The tables of docs/performance.md's serving section."""
    lines = ["| tasks in the batch | single-task batch (img/s) | mixed batch (img/s) | x single-task batch | "
             "one model per task (img/s) | mixed x naive |", "|---|---|---|---|---|---|"]
    for count, row in report["library"].items():
        cells = [count, f"{row['single_task_img_s']:.1f}", f"{row['mixed_img_s']:.1f}",
                 f"{row['vs_single_task_batch']:.2f}", f"{row['one_model_per_task_img_s']:.1f}",
                 f"{row['mixed_img_s'] / row['one_model_per_task_img_s']:.2f}"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    lines += ["", "| server: tasks | clients | requests | img/s | p50 ms | p99 ms | mean batch | library, same batch "
                  "(img/s) | x library | server / client CPU (cores) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["server"]:
        server_cpu = f"{row['server_cpu_cores']:.2f}" if row["server_cpu_cores"] is not None else "-"
        lines.append(f"| {row['tasks']} | {row['clients']} | {row['requests']} | {row['img_s']:.1f} | "
                     f"{row['p50_ms']:.0f} | {row['p99_ms']:.0f} | {row['mean_batch']:.1f} | "
                     f"{row['library_img_s']:.1f} | {row['vs_library_mixed_batch']:.2f} | "
                     f"{server_cpu} / {row['client_cpu_cores']:.2f} |")
    batchers = report["batchers"]
    lines += ["", "| batcher | img/s |", "|---|---|"] + [f"| {name} | {rate:.1f} |" for name, rate in batchers.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
