"""Decode of a mid-size random Llama on this machine's Vulkan (Mesa's lavapipe, no GPU needed): a
32-layer, 512-wide model, so a step dispatches as many kernels as Llama-2-7B's. Prints tok/s and,
per step, the queue submissions and the host's time waiting for the device (runtime/vulkan.py
counters): a check of the plugin's submission policy (runtime/wgpu/plugin.cc) where no GPU is.

    python benchmarks/lavapipe_decode.py build .bench/lavapipe
    python benchmarks/lavapipe_decode.py run .bench/lavapipe
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cuda_speed

SHAPE = {"hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 32, "num_attention_heads": 8,
         "num_key_value_heads": 8, "vocab_size": 4096, "rope_theta": 10000.0}
STEPS = 40


def build(out: Path) -> None:
    cuda_speed.MODELS["lavapipe-mid"] = SHAPE
    cuda_speed.compile_from_config("lavapipe-mid", "q4f16_1", "vulkan", out, 1024, 128)


def run(out: Path) -> None:
    from mlcgen.runtime import vulkan
    from mlcgen.runtime.engine import Engine

    engine = Engine(out, device="vulkan", random_weights=True)
    engine.prefill(list(range(3, 40)))
    token = 5
    for _ in range(5):
        token = int(engine.decode(token).argmax())
    before, start = vulkan.counters(), time.perf_counter()
    for _ in range(STEPS):
        token = int(engine.decode(token).argmax())
    step = (time.perf_counter() - start) / STEPS
    after = vulkan.counters()
    print(f"{1 / step:.1f} tok/s, {step * 1e3:.1f} ms a step, "
          f"{(after['submissions'] - before['submissions']) / STEPS:.1f} submissions a step, "
          f"host waiting {(after['wait_ns'] - before['wait_ns']) / STEPS / 1e6:.1f} ms a step")


if __name__ == "__main__":
    {"build": build, "run": run}[sys.argv[1]](Path(sys.argv[2]))
