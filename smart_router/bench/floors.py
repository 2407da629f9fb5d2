"""The floor under the router's CPU per request: what each part the design fixes costs at the
least, alone, on this machine (issue #21's target is a sum of these and the router's own work).

    python -m smart_router.bench.floors [--messages N] [--calls N] [--json]

- A JetStream hop (a push consumer's message in, one JetStream publish with its receipt, the
  ack), in a process of its own: through FastStream as the services configure it (no
  dependency injection, the message handed over undecoded, manual acks, 100 at once) and
  through nats-py alone; nats-server's CPU per hop beside it. Embedded nats-server.
- One provider call through each SDK adapter the dispatcher uses (the provider emulator at zero
  latency, in a process of its own; 20 calls in flight): this process's CPU per call.
- The classifier's local model on the test split's prompts: CPU per prompt, and the share that
  needed e5.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import nats
import psutil
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from shared import jsonl

from ..embedded import EmbeddedNats, free_port, port_open

STREAM, IN, OUT, CONSUMER = "FLOOR", "floor.in", "floor.out", "floor-hop"
IN_FLIGHT = 100
BODY = json.dumps({"prompt": "x" * 600}).encode()  # about a dispatch envelope's size
PROVIDERS = {"groq": "llama-3.1-8b-instant", "openai": "gpt-4o-mini",
             "anthropic": "claude-haiku-4-5"}


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system + times.children_user + times.children_system


# --- a JetStream hop, run by `--hop-process MODE URL` in a child -------------------------------

async def _faststream_hop(url: str) -> None:
    from faststream import AckPolicy as FastAck
    from faststream import FastStream
    from faststream.nats import JStream, NatsBroker, NatsMessage

    async def as_is(msg: NatsMessage) -> NatsMessage:
        return msg

    broker = NatsBroker(url, apply_types=False, decoder=as_is, log_level=logging.DEBUG,
                        logger=logging.getLogger("floors"))

    @broker.subscriber(IN, stream=JStream(STREAM, declare=False), queue=CONSUMER,
                       max_workers=IN_FLIGHT, ack_policy=FastAck.MANUAL)
    async def hop(msg: NatsMessage) -> None:
        await broker.config.connection_state.stream.publish(OUT, msg.body, stream=STREAM)
        await msg.ack()

    await FastStream(broker, logger=None).run()


async def _nats_py_hop(url: str) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    slots = asyncio.Semaphore(IN_FLIGHT)
    running: set[asyncio.Task] = set()

    async def hop(msg: Msg) -> None:
        async with slots:
            await js.publish(OUT, msg.data, stream=STREAM)
            await msg.ack()

    async def received(msg: Msg) -> None:
        task = asyncio.create_task(hop(msg))
        running.add(task)
        task.add_done_callback(running.discard)

    await js.subscribe(IN, queue=CONSUMER, durable=CONSUMER, stream=STREAM, cb=received,
                       manual_ack=True, pending_msgs_limit=-1)
    await asyncio.Event().wait()


async def _declare_hop(url: str) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await js.delete_stream(STREAM)
    await js.add_stream(StreamConfig(name=STREAM, subjects=["floor.>"]))
    await js.add_consumer(STREAM, ConsumerConfig(
        durable_name=CONSUMER, deliver_subject=f"_deliver.{CONSUMER}", deliver_group=CONSUMER,
        filter_subject=IN, ack_policy=AckPolicy.EXPLICIT, max_ack_pending=10 * IN_FLIGHT))
    await nc.close()


def _hops(url: str, mode: str, messages: int, server: psutil.Process) -> dict:
    """`messages` through a hop process of `mode`; its CPU and nats-server's per message."""
    asyncio.run(_declare_hop(url))
    child = subprocess.Popen([sys.executable, "-m", "smart_router.bench.floors",
                              "--hop-process", mode, url])
    try:
        return asyncio.run(_drive_hops(url, messages, child, server))
    finally:
        child.terminate()
        child.wait()


async def _drive_hops(url: str, messages: int, child: subprocess.Popen,
                      server: psutil.Process) -> dict:
    """Publish `messages` into the hop and wait for all of them out; CPU of both sides."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    out, target, everything_out = 0, 0, asyncio.Event()

    async def counted(_msg: Msg) -> None:
        nonlocal out
        out += 1
        if target and out >= target:
            everything_out.set()

    try:
        await nc.subscribe(OUT, cb=counted)
        await _warm_up(js, lambda: out, child)
        hop_process = psutil.Process(child.pid)
        target = out + messages
        start = (time.perf_counter(), _cpu_s(hop_process), _cpu_s(server))
        slots = asyncio.Semaphore(IN_FLIGHT)

        async def publish() -> None:
            async with slots:
                await js.publish(IN, BODY, stream=STREAM)

        await asyncio.gather(*(publish() for _ in range(messages)))
        await asyncio.wait_for(everything_out.wait(), timeout=120)
        wall, hop_cpu, server_cpu = (time.perf_counter() - start[0],
                                     _cpu_s(hop_process) - start[1], _cpu_s(server) - start[2])
    finally:
        await nc.close()
    return {"messages": messages, "per_s": round(messages / wall),
            "hop_cpu_ms": round(hop_cpu * 1000 / messages, 3),
            # the driver's publish and its receipt, the hop's in, out, receipt and ack
            "nats_server_cpu_ms": round(server_cpu * 1000 / messages, 3)}


async def _warm_up(js: nats.js.JetStreamContext, out_count: Callable[[], int],
                   child: subprocess.Popen, count: int = 200) -> None:
    """Until the hop process has bound its consumer and passed `count` messages on."""
    deadline = time.monotonic() + 30
    sent = 0
    while out_count() < count:
        if child.poll() is not None:
            raise RuntimeError(f"the hop process exited with {child.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError("the hop process passed nothing on within 30 s")
        if sent < count:
            await js.publish(IN, BODY, stream=STREAM)
            sent += 1
        else:
            await asyncio.sleep(0.05)


# --- provider calls through the SDK adapters ---------------------------------------------------

@contextlib.contextmanager
def _emulator() -> Iterator[str]:
    port = free_port()
    child = subprocess.Popen([sys.executable, "-m", "emulator", "--port", str(port),
                              "--latency-ms", "0"], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not port_open("127.0.0.1", port):
            if child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the provider emulator did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        child.terminate()
        child.wait()


async def _sdk_calls(provider: str, calls: int) -> dict:
    from shared.providers import Providers

    providers = Providers()
    client = providers.get(provider)
    slots = asyncio.Semaphore(20)
    messages = [{"role": "user", "content": "What is the capital of France?"}]

    async def call() -> None:
        async with slots:
            await client.complete(PROVIDERS[provider], messages, max_tokens=64,
                                  temperature=None, timeout=30, logprobs=False)

    try:
        await asyncio.gather(*(call() for _ in range(50)))  # connections, imports, caches
        start = time.process_time()
        await asyncio.gather(*(call() for _ in range(calls)))
        return {"calls": calls,
                "cpu_ms": round((time.process_time() - start) * 1000 / calls, 3)}
    finally:
        await providers.aclose()


# --- the classifier's model --------------------------------------------------------------------

def _classifier(limit: int) -> dict:
    from services.classifier.local_model import LocalModel

    from .pipeline import PROMPTS

    prompts = [row["prompt"] for row in jsonl.read_objects(PROMPTS)][:limit]
    model = LocalModel()
    model.warm_up()
    start = time.thread_time()
    stages = [model.predict(text).stage for text in prompts]
    cpu = time.thread_time() - start
    return {"prompts": len(prompts), "cpu_ms": round(cpu * 1000 / len(prompts), 3),
            "share_to_e5": round(stages.count("full") / len(prompts), 3)}


def measure(messages: int, calls: int, prompts: int) -> dict:
    report: dict = {"machine": os.uname().machine, "cores": os.cpu_count(),
                    "load_1m": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory() as data:
        server = EmbeddedNats.start(Path(data))
        try:
            process = psutil.Process(server.process.pid)
            for mode in ("faststream", "nats-py"):
                report[f"hop_{mode}"] = _hops(server.url, mode, messages, process)
        finally:
            server.stop()
    with _emulator() as url:
        os.environ.update(OPENAI_BASE_URL=f"{url}/v1", ANTHROPIC_BASE_URL=url, GROQ_BASE_URL=url,
                          OPENAI_API_KEY="emulated", ANTHROPIC_API_KEY="emulated",
                          GROQ_API_KEY="emulated")
        for provider in PROVIDERS:
            report[f"call_{provider}"] = asyncio.run(_sdk_calls(provider, calls))
    report["classifier_model"] = _classifier(prompts)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m smart_router.bench.floors",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000, help="hops per mode")
    parser.add_argument("--calls", type=int, default=2000, help="calls per provider")
    parser.add_argument("--prompts", type=int, default=1000, help="test-split prompts")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--hop-process", nargs=2, metavar=("MODE", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.hop_process:
        mode, url = args.hop_process
        asyncio.run(_faststream_hop(url) if mode == "faststream" else _nats_py_hop(url))
        return
    report = measure(args.messages, args.calls, args.prompts)
    if args.json:
        print(json.dumps(report))
        return
    for name, figures in report.items():
        print(f"{name:<20} {figures}")


if __name__ == "__main__":
    main()
