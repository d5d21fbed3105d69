"""Where a decode step's time goes, on the GPU machine (random weights, TVM runtime only).

    python benchmarks/decode_profile.py DIST [STEPS]        # STEPS: 64 by default

Prints: engine.decode + numpy argmax tok/s (a sampling chat's step), Engine.decode_greedy's (what
`mlcgen bench` measures: the argmax on the device, the host a step ahead), the VM decode call
alone without the logits copy to the host, Engine.decode's phases one by one (token upload, embed, KV-cache tables
upload, decode call, logits copy, argmax), the host's time to issue a step against the whole
step (is decode bound by the host?) with its time in each VM call, and the VM calls' times with
the device synchronized around each, largest first.
"""

from __future__ import annotations

import sys
import time

import numpy as np


def main(dist: str, steps: int = 64) -> None:
    import tvm

    from mlcgen.runtime.engine import Engine

    engine = Engine(dist, random_weights=True)
    engine.prefill(np.arange(16) % 1000)
    token = 1
    engine.decode(token)
    start = time.perf_counter()
    for _ in range(steps):
        token = int(engine.decode(token).argmax())
    full = steps / (time.perf_counter() - start)
    start = time.perf_counter()
    token = engine.decode_greedy(token, steps)[-1]
    greedy = steps / (time.perf_counter() - start)

    ids = tvm.runtime.tensor(np.array([token], np.int32), engine.device)
    embed = engine.vm["embed"](ids, engine.params)._create_view((1, 1, engine.hidden_size))
    start = time.perf_counter()
    for _ in range(steps):
        decode_step(engine, embed)
    engine.device.sync()
    vm_only = steps / (time.perf_counter() - start)
    print(f"engine.decode + host argmax: {full:.1f} tok/s; engine.decode_greedy: {greedy:.1f} tok/s; "
          f"VM decode call alone: {vm_only:.1f} tok/s ({steps} steps, context ~{engine.length})")
    host_phases(engine, steps)
    host_issue(engine, embed, steps)

    # Per-call times: synchronize around every VM call (adds sync cost to each; relative sizes hold).
    times, counts = vm_call_times(engine, embed, 4, synchronized=True)
    total = sum(times.values())
    print(f"{'call':48} {'calls':>6} {'us/step':>9} {'share':>6}")
    for name in sorted(times, key=times.get, reverse=True)[:25]:
        print(f"{name[:48]:48} {counts[name] // 4:6d} {times[name] / 4 * 1e6:9.1f} {times[name] / total:6.1%}")
    print(f"{'total (synchronized)':48} {sum(counts.values()) // 4:6d} {total / 4 * 1e6:9.1f}")


def decode_step(engine, embed) -> None:
    """One decode step's calls, as Engine.decode makes them, on an embedding already on the device."""
    engine._entries["decode"](embed, *engine.kv_step(1), engine.params)
    engine.length += 1


def vm_call_times(engine, embed, steps: int, synchronized: bool) -> tuple[dict, dict]:
    """Seconds and calls per VM function over `steps` decode steps, from the VM's instrument
    callback (it runs between calls); synchronized: the device is synchronized around each call."""
    import tvm_ffi

    times, counts, started = {}, {}, [0.0]

    def instrument(func, name, before_run, ret_value, *args):
        if synchronized:
            engine.device.sync()
        if before_run:
            started[0] = time.perf_counter()
        else:
            times[name] = times.get(name, 0.0) + time.perf_counter() - started[0]
            counts[name] = counts.get(name, 0) + 1
        return 0

    engine.vm.set_instrument(tvm_ffi.convert(instrument))
    for _ in range(steps):
        decode_step(engine, embed)
    engine.device.sync()
    return times, counts


def host_issue(engine, embed, steps: int) -> None:
    """Is a decode step bound by the host? The host's time to issue one step (begin_forward, the
    VM call, end_forward; nothing waits for the GPU) against the step with the GPU's work; then the
    host's time in each VM call, unsynchronized."""
    issued = whole = 0.0
    for _ in range(steps):
        engine.device.sync()
        start = time.perf_counter()
        decode_step(engine, embed)
        issued += time.perf_counter() - start
        engine.device.sync()
        whole += time.perf_counter() - start
    print(f"host issuing a step: {issued / steps * 1e6:.0f} us; the step with the GPU: {whole / steps * 1e6:.0f} us")
    times, counts = vm_call_times(engine, embed, steps, synchronized=False)
    print(f"host time in each VM call, unsynchronized ({steps} steps):")
    for name in sorted(times, key=times.get, reverse=True)[:12]:
        print(f"  {name[:48]:48} {counts[name] // steps:4d} calls {times[name] / counts[name] * 1e6:7.1f} us each {times[name] / steps * 1e6:8.1f} us/step")


def host_phases(engine, steps: int) -> None:
    """Engine.decode's phases one by one, the device synchronized after each: what each costs the
    host (a phase's GPU work is inside its own figure)."""
    phases = {}

    def timed(name, call):
        start = time.perf_counter()
        value = call()
        engine.device.sync()
        phases[name] = phases.get(name, 0.0) + time.perf_counter() - start
        return value

    token = 1
    for _ in range(steps):
        timed("token upload", lambda: engine._token.copyfrom(np.array([token], np.int32)))
        embed = timed("embed call", lambda: engine._entries["embed"](engine._token, engine.params))
        embed = embed._create_view((1, 1, engine.hidden_size))
        kv = timed("KV-cache tables", lambda: engine.kv_step(1))
        logits = timed("decode call", lambda: engine._entries["decode"](embed, *kv, engine.params))
        host = timed("logits to host", lambda: logits.numpy())
        token = timed("argmax", lambda: int(host.argmax()))
        engine.length += 1
    total = sum(phases.values())
    print(f"Engine.decode phases, synchronized after each ({steps} steps): {total / steps * 1e6:.0f} us/step")
    for name, seconds in phases.items():
        print(f"  {name:16} {seconds / steps * 1e6:8.1f} us")


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:]))
