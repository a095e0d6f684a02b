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


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print("port", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()



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


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print("port", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()



def _debug_referrers(name):  # debugging aid, used by hand
    return _root_path(name)


def _root_path(name):
    import types
    gc.collect()
    start = [o for o in gc.get_objects() if type(o).__qualname__ == name][:1]
    if not start:
        return []
    seen = {id(start[0])}
    frontier = [(start[0], [name])]
    ignore = {id(start), id(frontier), id(seen)}
    for _ in range(12):
        nxt = []
        for obj, path in frontier:
            for r in gc.get_referrers(obj):
                if id(r) in seen or id(r) in ignore or isinstance(r, types.FrameType) and r.f_code.co_name in ("_root_path",):
                    continue
                seen.add(id(r))
                label = type(r).__qualname__
                if isinstance(r, dict):
                    label += str([k for k, v in r.items() if v is obj][:2])
                if isinstance(r, (types.ModuleType, asyncio.AbstractEventLoop, threading.Thread, types.FrameType)):
                    return [*path, label + (":" + r.f_code.co_name if isinstance(r, types.FrameType) else "")]
                nxt.append((r, [*path, label]))
        frontier = nxt[:2000]
        ignore.add(id(nxt)); ignore.add(id(frontier))
    return ["no root found"]


def _unused():
    gc.collect()
    objs = [o for o in gc.get_objects() if type(o).__qualname__ == name]
    out = []
    for o in objs[:1]:
        for r in gc.get_referrers(o):
            if r is objs:
                continue
            desc = type(r).__qualname__
            if type(r).__name__ == "cell":
                fns = [f for f in gc.get_referrers(r) if isinstance(f, tuple)]
                fns = [getattr(g, "__qualname__", type(g).__name__) for t in fns for g in gc.get_referrers(t)]
                desc += f" fns={fns[:4]}"
            if isinstance(r, list):
                desc += f" len={len(r)} is_gc_callbacks={r is gc.callbacks} owners={[type(x).__qualname__ for x in gc.get_referrers(r)][:5]}"
            if isinstance(r, dict):
                keys = [k for k, v in r.items() if v is o][:3]
                owners = [type(x).__qualname__ for x in gc.get_referrers(r) if x is not objs][:4]
                desc += f" keys={keys} owners={owners}"
            out.append(desc)
    return out


if __name__ == "__main__":
    asyncio.run(main())
