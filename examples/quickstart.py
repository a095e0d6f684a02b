"""The README's quick start: a few traced requests, one of them slow, one failing."""

import asyncio

import asynclens


@asynclens.trace(name="db.query")
async def query(sql: str) -> list[int]:
    await asyncio.sleep(0.02)
    return [1, 2, 3]


@asynclens.trace
async def handle(request_id: int) -> int:
    async with asynclens.span("parse") as sp:
        sp.set("request_id", request_id)
    rows = await query("select 1")
    if request_id == 3:
        raise ValueError("bad request")
    return len(rows)


async def main() -> None:
    results = await asyncio.gather(*(handle(i) for i in range(5)), return_exceptions=True)
    print("results:", results)


if __name__ == "__main__":
    with asynclens.session(sinks=["quickstart.jsonl"]) as session:
        asyncio.run(main())
    print(session.summary())
