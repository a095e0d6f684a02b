"""A small asyncio TCP server to attach to: a planted stall and a planted leak.

Each line a client sends is answered with ``ok <line>``; the line ``stall`` makes the
handler block the loop (``time.sleep``, on the line marked STALL), ``leak`` opens a
socket that is never closed. It prints ``port N`` when it listens, and answers
``check`` with what asynclens left in the process (for the tests' detach checks).
"""

import asyncio
import gc
import json
import socket
import sys
import threading
import time

LEAKED = []


def fingerprint():
    """Every attribute of the places a session patches, by identity: equal before and after."""
    import asyncio.base_events
    import asyncio.events
    import asyncio.selector_events
    import asyncio.tasks
    import builtins
    import concurrent.futures
    import io
    import selectors
    import subprocess

    owners = {
        "asyncio.events": asyncio.events,
        "asyncio": asyncio,
        "asyncio.tasks": asyncio.tasks,
        "BaseEventLoop": asyncio.base_events.BaseEventLoop,
        "SelectorEventLoop": asyncio.selector_events.BaseSelectorEventLoop,
        "SelectorTransport": asyncio.selector_events._SelectorTransport,
        "socket.socket": socket.socket,
        "socket": socket,
        "builtins": builtins,
        "io": io,
        "Popen": subprocess.Popen,
        "selectors": selectors.DefaultSelector,
        "Thread": threading.Thread,
        "ThreadPoolExecutor": concurrent.futures.ThreadPoolExecutor,
    }
    loop = asyncio.get_running_loop()
    out = {f"{name}.{attr}": id(value) for name, owner in owners.items() for attr, value in vars(owner).items()}
    out.update({f"loop.{attr}": id(value) for attr, value in vars(loop).items() if callable(value)})
    out["loop_attrs"] = sorted(vars(loop))
    out["meta_path"] = len(sys.meta_path)
    out["gc.callbacks"] = len(gc.callbacks)
    out["path"] = list(sys.path)
    out["path_importer_cache"] = sorted(sys.path_importer_cache)
    out["task_attrs"] = sorted({a for t in asyncio.all_tasks() for a in getattr(t, "__dict__", {})})
    return out


def leftovers():
    import asyncio.events

    threads = [t.name for t in threading.enumerate() if t.name.startswith("asynclens")]
    mods = [m for m in sys.modules if m.startswith("asynclens")]
    gc.collect()
    # module-level objects of the imported asynclens modules are allowed to stay
    kept = {id(v) for m in mods for v in vars(sys.modules[m]).values()}
    objects = []
    for obj in gc.get_objects():
        if id(obj) in kept:
            continue
        module = type(obj).__dict__.get("__module__", "")
        module = module if isinstance(module, str) else ""
        if module.startswith("asynclens") and not isinstance(obj, type):
            objects.append(type(obj).__qualname__)
    return {
        "threads": threads,
        "modules": len(mods),
        "objects": sorted(set(objects)),
        "fingerprint": fingerprint(),
        "path": [p for p in sys.path if "asynclens" in p or p.endswith("/repo")],
    }


async def handle(reader, writer):
    while True:
        line = await reader.readline()
        if not line:
            break
        text = line.decode().strip()
        if text == "stall":
            time.sleep(0.3)  # STALL
        elif text == "leak":
            LEAKED.append(socket.socket())
        elif text == "check":
            writer.write((json.dumps(leftovers()) + "\n").encode())
            await writer.drain()
            continue
        writer.write(f"ok {text}\n".encode())
        await writer.drain()
    writer.close()


async def _ticker():
    while True:
        await asyncio.sleep(0.02)


async def main():
    if "--thread" in sys.argv:  # a second loop, in another thread
        threading.Thread(target=asyncio.run, args=(_ticker(),), name="worker-loop", daemon=True).start()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print("port", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if "--uvloop" in sys.argv:
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())
