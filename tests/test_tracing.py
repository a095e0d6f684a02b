"""@trace and span(): paths, introspection, exceptions, generators."""

from __future__ import annotations

import asyncio
import inspect
import sys
import traceback

import pytest

import asynclens
from asynclens._state import context as _context
from asynclens.testing import FakeClock, capture


def test_disabled_trace_calls_through_without_recording() -> None:
    """With no session, a traced function just runs."""
    calls = []

    @asynclens.trace
    def f(x: int) -> int:
        calls.append(x)
        assert asynclens.current_span() is None
        return x + 1

    assert f(1) == 2
    assert calls == [1]


def test_sync_span_has_name_times_and_thread() -> None:
    """A traced sync call records one span with the injected clock's times."""
    clock = FakeClock(start_ns=1000)

    @asynclens.trace
    def work() -> str:
        clock.advance(250)
        return "done"

    with capture(clock=clock) as cap:
        assert work() == "done"
    [span] = cap.spans
    assert span.name == "test_sync_span_has_name_times_and_thread.<locals>.work"
    assert (span.start_ns, span.end_ns, span.duration_ns) == (1000, 1250, 250)
    assert span.status == "ok" and span.parent_id is None
    assert span.thread_id != 0 and span.task is None


@pytest.mark.asyncio
async def test_async_span_covers_awaited_body_not_creation() -> None:
    """The span starts when the coroutine first runs, not when it is created."""
    clock = FakeClock()

    @asynclens.trace(name="fetch", attrs={"url": "x"})
    async def fetch() -> int:
        clock.advance(40)
        await asyncio.sleep(0)
        clock.advance(60)
        return 7

    with capture(clock=clock) as cap:
        coro = fetch()
        clock.advance(1000)  # time between creation and first await is not the span's
        assert await coro == 7
    [span] = cap.spans
    assert span.name == "fetch"
    assert span.duration_ns == 100
    assert dict(span.attrs) == {"url": "x"}
    assert span.task is not None


def test_introspection_survives() -> None:
    """Signatures, docstrings, __wrapped__ and inspect predicates are preserved."""

    async def coro(a: int, *, b: str = "x") -> int:
        """Doc."""
        return a

    async def agen(n: int):  # type: ignore[no-untyped-def]
        yield n

    def gen(n: int):  # type: ignore[no-untyped-def]
        yield n

    def plain(a, b=2):  # type: ignore[no-untyped-def]
        return a

    for func, pred in (
        (coro, inspect.iscoroutinefunction),
        (agen, inspect.isasyncgenfunction),
        (gen, inspect.isgeneratorfunction),
        (plain, inspect.isfunction),
    ):
        traced = asynclens.trace(func)
        assert pred(traced), func
        assert inspect.signature(traced) == inspect.signature(func)
        assert traced.__wrapped__ is func
        assert traced.__name__ == func.__name__
        assert traced.__doc__ == func.__doc__


def test_methods_classmethods_staticmethods() -> None:
    """Bound methods get self; classmethods get cls; all record spans."""

    class Repo:
        factor = 3

        @asynclens.trace
        def method(self, x: int) -> int:
            return x * self.factor

        @asynclens.trace
        @classmethod
        def cm(cls, x: int) -> int:
            return x * cls.factor

        @classmethod
        @asynclens.trace
        def cm2(cls, x: int) -> int:
            return x + cls.factor

        @asynclens.trace
        @staticmethod
        def sm(x: int) -> int:
            return -x

        @asynclens.trace
        async def amethod(self) -> int:
            return self.factor

    repo = Repo()
    with capture() as cap:
        assert repo.method(2) == 6
        assert Repo.cm(2) == 6 and repo.cm(2) == 6
        assert Repo.cm2(1) == 4
        assert Repo.sm(5) == -5 and repo.sm(5) == -5
        assert asyncio.run(repo.amethod()) == 3
    names = [s.name for s in cap.spans]
    assert names == [
        "test_methods_classmethods_staticmethods.<locals>.Repo.method",
        "test_methods_classmethods_staticmethods.<locals>.Repo.cm",
        "test_methods_classmethods_staticmethods.<locals>.Repo.cm",
        "test_methods_classmethods_staticmethods.<locals>.Repo.cm2",
        "test_methods_classmethods_staticmethods.<locals>.Repo.sm",
        "test_methods_classmethods_staticmethods.<locals>.Repo.sm",
        "test_methods_classmethods_staticmethods.<locals>.Repo.amethod",
    ]


def test_misuse_gives_clear_errors() -> None:
    """Decorating a non-callable, or bad options, fail at decoration with a hint."""
    with pytest.raises(TypeError, match="did you mean @trace\\(name=...\\)"):
        asynclens.trace(42)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="can only decorate a function"):
        asynclens.trace("name")(42)
    with pytest.raises(TypeError, match="can only decorate a function"):
        asynclens.trace(name="x")("not callable")
    with pytest.raises(TypeError, match="attrs=.* must be a mapping"):
        asynclens.trace(name="x", attrs=[1])  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="span name twice"):
        asynclens.trace("a", name="b")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="name as a string"):
        asynclens.span(3)  # type: ignore[arg-type]


def test_string_shorthand_names_the_span() -> None:
    @asynclens.trace("db.query")
    def q() -> None:
        pass

    with capture() as cap:
        q()
    assert [s.name for s in cap.spans] == ["db.query"]


class Boom(Exception):
    pass


def _raise_boom() -> None:
    raise Boom("bad thing")


def test_exception_recorded_and_reraised_unchanged() -> None:
    """The same exception object propagates, its traceback still reaching the raise."""
    original = Boom("bad thing")

    @asynclens.trace
    def fails() -> None:
        raise original

    with capture() as cap:
        with pytest.raises(Boom) as info:
            fails()
    assert info.value is original
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert frames[-1] == "fails"
    [span] = cap.spans
    assert (span.status, span.error_type, span.error_message) == ("error", "Boom", "bad thing")


@pytest.mark.asyncio
async def test_cancellation_marks_span_cancelled_not_failed() -> None:
    started = asyncio.Event()

    @asynclens.trace
    async def waits() -> None:
        started.set()
        await asyncio.sleep(3600)

    with capture() as cap:
        task = asyncio.create_task(waits())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    [span] = cap.spans
    assert span.status == "cancelled"
    assert span.error_type == "CancelledError"


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_exits_are_not_errors(exc_type: type[BaseException]) -> None:
    @asynclens.trace
    def leave() -> None:
        raise exc_type()

    with capture() as cap:
        with pytest.raises(exc_type):
            leave()
    assert cap.spans[0].status == "cancelled"


def test_unprintable_exception_does_not_break_recording() -> None:
    class Ugly(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str for you")

    @asynclens.trace
    def f() -> None:
        raise Ugly()

    with capture() as cap:
        with pytest.raises(Ugly):
            f()
    assert cap.spans[0].error_message == "<unprintable Ugly>"


def test_span_context_manager_sets_current_span_and_attributes() -> None:
    clock = FakeClock()
    with capture(clock=clock) as cap:
        with asynclens.span("outer", route="/x") as outer:
            assert asynclens.current_span() is outer
            outer.set("status", 200)
            clock.advance(5)
            outer.event("cache.miss", key="k")
            with asynclens.span("inner") as inner:
                assert asynclens.current_span() is inner
            assert asynclens.current_span() is outer
        assert asynclens.current_span() is None
        outer.set("late", True)  # ignored after end
    inner_rec, outer_rec = cap.spans
    assert inner_rec.parent_id == outer_rec.span_id
    assert inner_rec.trace_id == outer_rec.trace_id
    assert dict(outer_rec.attrs) == {"route": "/x", "status": 200}
    [event] = outer_rec.events
    assert (event.name, event.time_ns - outer_rec.start_ns, dict(event.attrs)) == ("cache.miss", 5, {"key": "k"})


def test_span_without_session_is_a_noop_handle() -> None:
    with asynclens.span("x") as sp:
        sp.set("a", 1)
        sp.event("e")
        assert not sp.recording
    assert asynclens.current_span() is None


@pytest.mark.asyncio
async def test_async_with_span_records_exception() -> None:
    with capture() as cap:
        with pytest.raises(Boom):
            async with asynclens.span("block"):
                _raise_boom()
    assert cap.spans[0].status == "error"


def test_reentering_a_span_object_is_an_error() -> None:
    with capture():
        block = asynclens.span("once")
        with block:
            with pytest.raises(RuntimeError, match="already entered"):
                block.__enter__()


# ------------------------------------------------------------------ generators


def test_generator_span_covers_iteration() -> None:
    clock = FakeClock()

    @asynclens.trace
    def numbers(n: int):  # type: ignore[no-untyped-def]
        for i in range(n):
            clock.advance(10)
            assert asynclens.current_span() is not None
            yield i
        return "ret"

    with capture(clock=clock) as cap:
        gen = numbers(3)
        clock.advance(1000)  # creation is not iteration
        assert list(gen) == [0, 1, 2]
        assert asynclens.current_span() is None
    [span] = cap.spans
    assert span.duration_ns == 30 and span.status == "ok"


def test_generator_send_throw_and_return_value() -> None:
    @asynclens.trace
    def echo():  # type: ignore[no-untyped-def]
        received = []
        try:
            while True:
                received.append((yield len(received)))
        except ValueError:
            yield "caught"
        return received

    with capture() as cap:
        gen = echo()
        assert next(gen) == 0
        assert gen.send("a") == 1
        assert gen.throw(ValueError("x")) == "caught"
        with pytest.raises(StopIteration) as stop:
            next(gen)
    assert stop.value.value == ["a"]
    assert cap.spans[0].status == "ok"


def test_generator_closed_early_or_collected_ends_span_as_exited() -> None:
    @asynclens.trace
    def forever():  # type: ignore[no-untyped-def]
        while True:
            yield 1

    with capture() as cap:
        gen = forever()
        next(gen)
        gen.close()
        gen2 = forever()
        next(gen2)
        del gen2  # collected by refcount
    assert [s.status for s in cap.spans] == ["cancelled", "cancelled"]
    assert cap.spans[0].error_type == "GeneratorExit"


def test_generator_finished_in_another_context_raises_nothing() -> None:
    """The OpenTelemetry 'Failed to detach context' case: no error, span ends."""
    import contextvars

    @asynclens.trace
    def gen():  # type: ignore[no-untyped-def]
        yield 1
        yield 2

    with capture() as cap:
        g = gen()
        contextvars.copy_context().run(next, g)  # started in one context
        assert next(g) == 2  # resumed in another
        g.close()
        assert asynclens.current_span() is None
    assert len(cap.spans) == 1


@pytest.mark.asyncio
async def test_async_generator_span_and_aclose() -> None:
    clock = FakeClock()

    @asynclens.trace
    async def ticks(n: int):  # type: ignore[no-untyped-def]
        for i in range(n):
            clock.advance(5)
            await asyncio.sleep(0)
            yield i

    with capture(clock=clock) as cap:
        assert [i async for i in ticks(3)] == [0, 1, 2]
        agen = ticks(10)
        assert await agen.__anext__() == 0
        await agen.aclose()
    full, closed = cap.spans
    assert full.duration_ns == 15 and full.status == "ok"
    assert closed.status == "cancelled"


@pytest.mark.asyncio
async def test_async_generator_athrow_and_errors() -> None:
    @asynclens.trace
    async def agen():  # type: ignore[no-untyped-def]
        try:
            yield 1
        except KeyError:
            yield "handled"
        raise Boom("end")

    with capture() as cap:
        g = agen()
        assert await g.__anext__() == 1
        assert await g.athrow(KeyError("k")) == "handled"
        with pytest.raises(Boom):
            await g.__anext__()
    assert cap.spans[0].status == "error"


def test_generator_children_parent_to_generator_span() -> None:
    @asynclens.trace
    def child() -> None:
        pass

    @asynclens.trace
    def gen():  # type: ignore[no-untyped-def]
        child()
        yield 1
        child()

    with capture() as cap:
        with asynclens.span("caller"):
            list(gen())
    c1, c2, g, caller = cap.spans
    assert c1.parent_id == c2.parent_id == g.span_id
    assert g.parent_id == caller.span_id


def test_ids_are_w3c_sized_hex() -> None:
    with capture() as cap:
        with asynclens.span("x"):
            pass
    data = cap.spans[0].to_dict()
    assert len(data["trace_id"]) == 32 and int(data["trace_id"], 16) != 0
    assert len(data["span_id"]) == 16 and int(data["span_id"], 16) != 0


def test_span_ending_after_session_closed_is_counted_not_recorded() -> None:
    with capture() as cap:
        block = asynclens.span("late")
        block.__enter__()
    block.__exit__(None, None, None)
    assert cap.spans == []
    assert cap.session.statistics().records_dropped == 1


def test_no_current_span_leaks_out_of_session() -> None:
    with capture():
        with asynclens.span("a"):
            pass
    assert _context.current_span.get() is None
    assert sys.modules["asynclens"].current_session() is None


def test_callable_objects_classes_and_partials_are_traced_through_a_proxy() -> None:
    import functools

    class Adder:
        def __call__(self, a: int, b: int) -> int:
            return a + b

    class Point:
        def __init__(self, x: int) -> None:
            self.x = x

    add = asynclens.trace(name="add")(Adder())
    make_point = asynclens.trace(Point)
    double = asynclens.trace(name="double")(functools.partial(lambda k, v: k * v, 2))
    with capture() as cap:
        assert add(1, 2) == 3
        assert isinstance(make_point(4), Point) and isinstance(make_point(5), make_point)
        assert double(21) == 42
    assert [s.name.rsplit(".", 1)[-1] for s in cap.spans] == ["add", "Point", "Point", "double"]


def test_traced_functions_are_plain_functions_that_pickle_by_name() -> None:
    import pickle

    assert inspect.isfunction(traced_module_level) and traced_module_level.__wrapped__.__name__ == "traced_module_level"
    assert pickle.loads(pickle.dumps(traced_module_level)) is traced_module_level


@asynclens.trace
def traced_module_level() -> int:
    return 1


def test_a_root_makes_its_trace_id_when_first_asked_and_children_share_it() -> None:
    with capture() as cap:
        with asynclens.span("lonely") as lonely:
            assert lonely._trace_id is None  # nothing asked yet: no 128-bit int held
        with asynclens.span("root") as root:
            with asynclens.span("child") as child:
                pass
            assert root._trace_id is not None and child.trace_id == root.trace_id
    by_name = {s.name: s for s in cap.spans}
    assert by_name["lonely"].trace_id > 0  # made when the session froze the span
    assert by_name["child"].trace_id == by_name["root"].trace_id != by_name["lonely"].trace_id


def test_a_span_makes_its_span_id_when_first_asked_once_for_every_asker() -> None:
    import threading

    with capture() as cap:
        with asynclens.span("lonely") as lonely:
            assert lonely._span_id is None  # nothing asked yet: no 64-bit int held
        with asynclens.span("root") as root:
            with asynclens.span("child") as first, asynclens.span("grandchild") as second:
                pass
            asked = root.span_id
        with asynclens.span("contended") as contended:
            seen: list[int] = []
            threads = [threading.Thread(target=lambda: seen.append(contended.span_id)) for _ in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    by_name = {s.name: s for s in cap.spans}
    assert by_name["lonely"].span_id > 0  # made when the session froze the span
    assert first.parent_id == asked == by_name["root"].span_id == by_name["child"].parent_id
    assert second.parent_id == first.span_id == by_name["child"].span_id
    assert len(set(seen)) == 1 and seen[0] == by_name["contended"].span_id


@pytest.mark.skipif(
    asynclens.IMPLEMENTATION == "c",
    reason="the compiled core draws an id without running Python code: nothing can ask for it meanwhile",
)
@pytest.mark.parametrize("which", ["span_id", "trace_id"])
def test_an_id_asked_for_while_it_is_being_made_is_made_once(which: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """From 3.12 a collection runs at any bytecode boundary, also inside the making of an
    id, and asynclens's gc callback asks the current span for its ids: no deadlock, and
    the id it gets is the span's."""
    import threading

    from asynclens.tracing import spans as tracing

    real = tracing.getrandbits
    inner: list[int] = []
    outer: list[int] = []
    with capture():
        with asynclens.span("s") as live:

            collecting: list[bool] = []

            def collecting_meanwhile(bits: int) -> int:
                if not collecting:  # a collection does not start inside itself
                    collecting.append(True)
                    inner.append(getattr(live, which))  # what the gc callback does
                return real(bits)

            monkeypatch.setattr(tracing, "getrandbits", collecting_meanwhile)
            asker = threading.Thread(target=lambda: outer.append(getattr(live, which)), daemon=True)
            asker.start()
            asker.join(timeout=10)
            monkeypatch.setattr(tracing, "getrandbits", real)
            deadlocked = asker.is_alive()
            if deadlocked:  # the lock stays held: let the session freeze the span without it
                live._span_id = live._span_id or 1
                live._trace_id = live._trace_id or 1
    assert not deadlocked, "asking for an id while it was being made deadlocked"
    assert outer == inner == [getattr(live, which)]
