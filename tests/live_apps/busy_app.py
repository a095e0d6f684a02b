"""A small app for the live view: a few tasks, a span, a stall now and then, an executor
job, an open socket; runs for ``argv[1]`` seconds (default: until stopped)."""

import asyncio
import socket
import sys
import time

import asynclens


@asynclens.trace(name="request")
async def request(i: int) -> None:
    await asyncio.sleep(0.01)
    if i % 20 == 0:
        time.sleep(0.12)  # STALL
    await asyncio.get_running_loop().run_in_executor(None, time.sleep, 0.005)


async def worker(name: str) -> None:
    i = 0
    while True:
        await request(i)
        i += 1


async def main(seconds: float) -> None:
    held = socket.socket()  # an open handle to see
    workers = [asyncio.create_task(worker(f"w{i}"), name=f"worker-{i}") for i in range(3)]
    print("app started", flush=True)
    try:
        await asyncio.sleep(seconds)
    finally:
        for w in workers:
            w.cancel()
        held.close()


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1]) if len(sys.argv) > 1 else 3600))
