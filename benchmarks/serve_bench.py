"""One backbone, many tasks: throughput of mixed-task batches, and of the real server on loopback.

    python benchmarks/serve_bench.py --out docs/bench/serve.json          # default backbone, 112 px

1. Library (`MultiTaskModel`), batches of --batch images spread over 1, 4, 8 and 16 VPT-deep tasks, against the
   naive alternative: one model per task, each task's images in its own forward pass. Images/s, best of --repeats.
2. Batcher: our asyncio queue (`vptune.inference.batcher.Batcher`) against `batched`'s AsyncBatchProcessor on the
   same model and load, in process (skipped if `batched` is not installed).
3. Server (`vptune serve` as a subprocess on 127.0.0.1): --clients concurrent clients, each sending PNG uploads
   for its own task (tasks: 1, 4 or 16), a bounded number of requests; throughput, p50 / p99 latency, and the
   ratio to the library's mixed-batch throughput at the server's batch size.
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
import threading
import time
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


def best_rate(fn, images: int, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return images / min(times)


def library(multi: MultiTaskModel, batch: int, repeats: int) -> dict:
    images = torch.randn(batch, 3, *multi.data_config["input_size"][1:])
    names = list(multi.tasks)
    rows = {}
    for count in (1, 4, 8, 16):
        if count > len(names):
            break
        assignment = [names[j % count] for j in range(batch)]
        mixed = best_rate(lambda: multi(images, assignment), batch, repeats)

        def one_model_per_task():
            with torch.inference_mode():
                for name in names[:count]:
                    rows_of = [j for j, n in enumerate(assignment) if n == name]
                    if rows_of:
                        multi.tasks[name](images[rows_of])
        naive = best_rate(one_model_per_task, batch, repeats)
        rows[count] = {"mixed_img_s": mixed, "one_model_per_task_img_s": naive}
        print(f"library, batch {batch}, {count:>2} tasks: mixed {mixed:7.1f} img/s, one model per task "
              f"{naive:7.1f} img/s", flush=True)
    single = rows[1]["mixed_img_s"]
    for row in rows.values():
        row["vs_single_task_batch"] = row["mixed_img_s"] / single
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


def server(tasks: dict[str, Path], num_tasks: int, clients: int, requests: int, max_batch: int, size: int) -> dict:
    import httpx

    port = free_port()
    args = [sys.executable, "-m", "vptune", "serve", "--port", str(port), "--max-batch", str(max_batch),
            "--max-wait-ms", "5", "--max-pending", str(4 * clients)]
    for name in list(tasks)[:num_tasks]:
        args += ["--task", f"{name}={tasks[name]}"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        buffer = io.BytesIO()
        Image.new("RGB", (size, size), (120, 60, 200)).save(buffer, format="PNG")
        png = buffer.getvalue()
        names = list(tasks)[:num_tasks]
        latencies: list[float] = []
        lock = threading.Lock()
        per_client = requests // clients

        def client(c: int) -> None:
            with httpx.Client(timeout=60) as session:
                for _ in range(per_client):
                    started = time.perf_counter()
                    r = session.post(f"{url}/v1/tasks/{names[c % num_tasks]}/predict",
                                     files={"image": ("x.png", png, "image/png")})
                    r.raise_for_status()
                    with lock:
                        latencies.append(time.perf_counter() - started)

        client(0)  # warm-up
        latencies.clear()
        threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    latencies.sort()
    row = {"tasks": num_tasks, "clients": clients, "requests": len(latencies), "img_s": len(latencies) / elapsed,
           "p50_ms": 1000 * statistics.median(latencies), "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))]}
    print(f"server, {clients} clients, {num_tasks:>2} tasks: {row['img_s']:6.1f} img/s, p50 {row['p50_ms']:.0f} ms, "
          f"p99 {row['p99_ms']:.0f} ms", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="dinov2-s14-imgfocus")
    parser.add_argument("--img-size", type=int, default=112)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--num-tokens", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16, help="images per batch (and the server's --max-batch)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=320, help="server requests per setting")
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
                  "batchers": batcher_comparison(multi, args.batch, 20 * args.batch)}
        report["server"] = [server(tasks, n, args.clients, args.requests, args.batch, args.img_size)
                            for n in (1, 4, 16)]
        library_rate = report["library"][8]["mixed_img_s"] if 8 in report["library"] else None
        for row in report["server"]:
            row["vs_library_mixed_batch"] = row["img_s"] / library_rate if library_rate else None
    print(markdown(report))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"written {args.out}")


def markdown(report: dict) -> str:
    """The tables of docs/performance.md's serving section."""
    lines = ["| tasks in the batch | mixed batch (img/s) | x single-task batch | one model per task (img/s) | mixed x naive |",
             "|---|---|---|---|---|"]
    for count, row in report["library"].items():
        lines.append(f"| {count} | {row['mixed_img_s']:.1f} | {row['vs_single_task_batch']:.2f} | "
                     f"{row['one_model_per_task_img_s']:.1f} | {row['mixed_img_s'] / row['one_model_per_task_img_s']:.2f} |")
    lines += ["", "| server: tasks | clients | requests | img/s | p50 ms | p99 ms | x library mixed batch (8 tasks) |",
              "|---|---|---|---|---|---|---|"]
    for row in report["server"]:
        ratio = f"{row['vs_library_mixed_batch']:.2f}" if row.get("vs_library_mixed_batch") else "-"
        lines.append(f"| {row['tasks']} | {row['clients']} | {row['requests']} | {row['img_s']:.1f} | "
                     f"{row['p50_ms']:.0f} | {row['p99_ms']:.0f} | {ratio} |")
    batchers = report["batchers"]
    lines += ["", "| batcher | img/s |", "|---|---|"] + [f"| {name} | {rate:.1f} |" for name, rate in batchers.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
