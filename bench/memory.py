"""Memory per idle WebSocket, on fresh servers, alone: `python bench/memory.py 1000`.

The same measurement as the first step of `bench/run.py` (46 KiB a socket for
Colloquy, 12.5 for the reference on this machine). Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import (
    DEFAULT_LAYER,
    DEFAULT_SERVER,
    Stack,
    measure_memory,
    prepare_stack,
    start_colloquy,
    start_reference,
    start_stub,
    stop_stub,
    stop_target,
)


async def measure(stack: Stack, connections: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    for name, start in (
        ("colloquy", lambda: start_colloquy(stack, DEFAULT_SERVER, DEFAULT_LAYER, 2)),
        ("reference", lambda: start_reference(stack)),
    ):
        target = start()
        await asyncio.sleep(1)
        figures[name] = await measure_memory(target, "bench0", connections)
        stop_target(stack, target)
    return figures


if __name__ == "__main__":
    connections = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    stub, stub_port = start_stub()
    try:
        stack = prepare_stack(Path(tempfile.mkdtemp(prefix="colloquy-mem-")), stub_port, channels=2)
        try:
            print(json.dumps(asyncio.run(measure(stack, connections))))
        finally:
            stack.stop_all()
    finally:
        stop_stub(stub)
