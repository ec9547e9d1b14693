"""The flow protocol: typed effects keyed by protocol methods, and flows that are always driven."""

from __future__ import annotations

import ast
import asyncio
import builtins
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pat_middleware.cache.local import SharedCache
from pat_middleware.core.drivers import AsyncDriver, InThreads, SyncDriver
from pat_middleware.core.flow import PROTOCOLS, Call, Flow, effect_of, perform
from pat_middleware.core.hashing import Hasher
from pat_middleware.stores.base import Store
from pat_middleware.stores.memory import MemoryStore

PACKAGE = Path(__file__).resolve().parent.parent / "pat_middleware"


def test_effects_are_the_protocols_methods() -> None:
    assert effect_of(Store.get) == (Store, "get")
    assert effect_of(SharedCache.lookup) == (SharedCache, "lookup")
    assert effect_of(Hasher.verify) == (Hasher, "verify")
    assert (Store, SharedCache, Hasher) == PROTOCOLS
    with pytest.raises(TypeError):
        effect_of(MemoryStore.get)  # an implementation, not the protocol
    with pytest.raises(TypeError):
        effect_of(print)


def test_perform_yields_one_call_and_returns_its_result() -> None:
    flow = perform(Store.get, "K1")
    call = next(flow)
    assert call == Call(Store.get, ("K1",))
    with pytest.raises(StopIteration) as stop:
        flow.send("the record")
    assert stop.value.value == "the record"


def test_effects_take_keywords_too() -> None:
    assert next(perform(SharedCache.lookup, "K1", b"d", client="1.2.3.4")) == Call(
        SharedCache.lookup, ("K1", b"d"), {"client": "1.2.3.4"}
    )
    store = MemoryStore()

    def flow() -> Flow[object]:
        return (yield from perform(Store.get, token_id="K00000000001"))

    sync, asynchronous, pool = _both(store)
    try:
        assert sync.run(flow()) is None
        assert asyncio.run(asynchronous.run(flow())) is None
    finally:
        pool.shutdown()


def _both(store: object) -> tuple[SyncDriver, AsyncDriver, ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(1)
    sync = SyncDriver({Store: store, SharedCache: None, Hasher: None}, lambda: pool)
    asynchronous = AsyncDriver({Store: InThreads(store, lambda: pool), SharedCache: None, Hasher: None})
    return sync, asynchronous, pool


def test_drivers_run_effects_on_their_targets() -> None:
    store = MemoryStore()

    def flow() -> Flow[tuple[object, object]]:
        missing = yield from perform(Store.get, "K00000000001")
        listed = yield from perform(Store.list_user, "alice")
        return missing, listed

    sync, asynchronous, pool = _both(store)
    try:
        assert sync.run(flow()) == (None, [])
        assert asyncio.run(asynchronous.run(flow())) == (None, [])
    finally:
        pool.shutdown()


def test_a_failed_effect_is_raised_inside_the_flow() -> None:
    def flow() -> Flow[str]:
        try:
            yield from perform(Hasher.verify, "stored", "secret")  # no hasher: the call fails
        except AttributeError:
            return "caught"
        return "not raised"

    sync, asynchronous, pool = _both(MemoryStore())
    try:
        assert sync.run(flow()) == "caught"
        assert asyncio.run(asynchronous.run(flow())) == "caught"
    finally:
        pool.shutdown()


def test_yielding_something_else_than_a_protocol_method_fails_in_the_flow() -> None:
    def flow() -> Flow[None]:
        yield Call(MemoryStore.get, ("K00000000001",))

    sync, _, pool = _both(MemoryStore())
    try:
        with pytest.raises(TypeError, match="not a method of"):
            sync.run(flow())
    finally:
        pool.shutdown()


# -- every flow the package calls is driven ---------------------------------------
def _flow_functions(trees: dict[Path, ast.Module]) -> set[str]:
    """Names of the package's functions annotated ``-> Flow[...]``, minus names that
    some non-flow function or a builtin shares (``get``, ``list``...: a call cannot be
    told apart)."""
    flows, others = set(), set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                returns = node.returns
                is_flow = (
                    isinstance(returns, ast.Subscript)
                    and isinstance(returns.value, ast.Name)
                    and returns.value.id == "Flow"
                )
                (flows if is_flow else others).add(node.name)
    return flows - others - set(dir(builtins))


def _through_a_manager(call: ast.Call) -> bool:
    """``auth.manager.sweep(...)``/``auth.async_manager.sweep(...)``: the manager's
    method of that name, which drives the flow itself."""
    receiver = call.func.value if isinstance(call.func, ast.Attribute) else None
    return isinstance(receiver, ast.Attribute) and receiver.attr in ("manager", "async_manager")


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    if isinstance(call.func, ast.Name):
        return call.func.id
    return None


def test_every_flow_call_in_the_package_is_driven() -> None:
    """A flow called without ``yield from`` (or being handed to a driver) silently
    does nothing: each call of a flow function must sit under ``yield from``, be
    returned, or be an argument of another call (``run(...)``, ``defer(...)``)."""
    trees = {path: ast.parse(path.read_text(), str(path)) for path in PACKAGE.rglob("*.py")}
    flows = _flow_functions(trees)
    assert {"perform", "store_call", "cache_call", "verify_flow", "invalidate_flow", "_owned"} <= flows
    undriven = []
    for path, tree in trees.items():
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _called_name(node) in flows and not _through_a_manager(node):
                parent = parents[node]
                if not isinstance(parent, ast.YieldFrom | ast.Return | ast.Call | ast.keyword | ast.Lambda):
                    undriven.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not undriven, f"flows called but not driven: {undriven}"
