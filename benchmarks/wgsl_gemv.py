"""Hand-written WGSL decode GEMVs (q4f16_1), run straight through wgpu: what the Vulkan driver can
reach, apart from TVM's codegen and our plugin.

TVM's WGSL GEMVs reach ~1.1 TB/s on the H200's Vulkan driver where the same schedule in CUDA
reaches ~1.9 (docs/benchmarks.md). This benchmark writes the kernel by hand, one variant per
choice the schedule could make, and times each with GPU timestamps over the Llama-2-7B layer
shapes (weights rotated through more copies than the L2 holds, one output buffer: each dispatch
waits for the last, as in a decode step), against numpy:
- form: how a lane turns a packed word into products. `unpack`: as TVM's kernel now
  (schedules/packed_dot.py): codes p and p + 4 of a word as an fp16 pair 1024 + code, read with
  unpack2x16float, minus 1031, times the activations; `magic`: each code ORed into the mantissa of
  float32 2^23, minus 2^23 + 7 (the generic preset's float32 form); `folded`: as `unpack` but
  the 1031 taken out of the sum (sum x * (1024 + code) - 1031 * sum x: one instruction fewer per
  weight, the subtract once per group and lane); `dp4a`: the activation as int8 codes (layout and
  math in compiler/int8_activations.py), a word's 8 codes in two dot4I8Packed.
- act: the activation loaded as vec4<f16> (8 bytes, as TVM's WGSL) or as vec4<u32> (16 bytes,
  read with unpack2x16float), or staged once per workgroup in workgroup memory (16-byte reads,
  padded so that neighbouring lanes do not share banks); for dp4a, `i8`: quantized beforehand
  (numpy), `u4`: quantized by each lane from the fp16 words.
- sum: one dependent chain of multiply-adds per row and group (TVM's) or one per word (a tree).
- unroll (groups a lane loads before using any), rows per lane, subgroups (rows) per workgroup.

    python benchmarks/wgsl_gemv.py             # GPU machine: NVIDIA's Vulkan driver
    python benchmarks/wgsl_gemv.py --quick     # here: lavapipe, small shapes, correctness only
    python benchmarks/wgsl_gemv.py --copy      # the 1 GiB copy's GB/s alone (vulkan_speed.py's bound)
    python benchmarks/wgsl_gemv.py --dispatch  # GPU time per dispatch of a trivial kernel, by pattern
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np

from gemv_efficiency import LAYER, SHAPES, rotation

LAYER_SHAPES = {shape: SHAPES[shape] for shape in LAYER}
QUICK_SHAPES = {"small": (256, 1024), "odd": (64, 11008)}
LANES = 32  # a subgroup (NVIDIA warp) per row


@dataclass(frozen=True)
class Variant:
    form: str = "unpack"  # unpack | magic | folded | dp4a
    act: str = "h4"  # h4 | u4 | staged | i8 (dp4a only)
    sum: str = "chain"  # chain | tree
    unroll: int = 1
    rows: int = 2  # rows per lane
    warps: int = 4  # subgroups per workgroup
    checks: bool = False  # Naga's per-access bounds checks (wgpu's default; the plugin turns them off)

    @property
    def name(self) -> str:
        return f"{self.form}/{self.act}/{self.sum}/u{self.unroll}/r{self.rows}/w{self.warps}{' checked' if self.checks else ''}"


VARIANTS = [
    Variant(),  # TVM's kernel for the vulkan:nvidia preset, written by hand
    Variant(checks=True),  # the same with Naga's bounds checks (wgpu's default)
    Variant(unroll=2),
    Variant(unroll=4),
    Variant(sum="tree", unroll=4),
    Variant(act="u4", sum="tree"),
    Variant(act="u4", sum="tree", unroll=2),
    Variant(act="u4", sum="tree", unroll=4),
    Variant(form="folded", act="u4", sum="tree", unroll=2),
    Variant(form="folded", act="u4", sum="tree", unroll=4),
    Variant(form="magic", act="u4", sum="tree", unroll=4),
    Variant(act="staged", sum="tree", unroll=4),
    Variant(act="u4", sum="tree", unroll=4, rows=1),
    Variant(act="u4", sum="tree", unroll=2, rows=4),
    Variant(act="u4", sum="tree", unroll=4, warps=8),
    Variant(act="u4", sum="tree", unroll=4, warps=2),
    Variant(form="magic", act="u4", sum="tree", unroll=2),
    Variant(form="dp4a", act="i8"),
    Variant(form="dp4a", act="i8", unroll=2),
    Variant(form="dp4a", act="i8", unroll=4),
    Variant(form="dp4a", act="i8", unroll=2, rows=4),
    Variant(form="dp4a", act="i8", unroll=2, rows=1),
    Variant(form="dp4a", act="u4", unroll=2),
    Variant(form="dp4a", act="u4", unroll=2, rows=4),
]


def word_products(v: Variant, w: str, x: list[str], row_acc: str) -> list[str]:
    """WGSL lines adding word `w`'s 8 products to `row_acc` (one chain) or returning its sum.
    x[c] is the f32 pair (x[2c], x[2c+1]) of the word's activations."""
    terms = []  # (activation expr, code expr) per weight
    for p in range(4):
        xa = f"{x[p // 2]}[{p % 2}]"  # x_p
        xb = f"{x[p // 2 + 2]}[{p % 2}]"  # x_{p+4}
        if v.form == "magic":
            for q, xq in ((p, xa), (p + 4, xb)):
                terms.append((xq, f"(bitcast<f32>(({w} >> {4 * q}u) & 15u | 0x4B000000u) - 8388615.0)"))
        else:
            pair = f"unpack2x16float(({w} >> {4 * p}u) & 0x000F000Fu | 0x64006400u)"
            if v.form == "unpack":
                pair = f"({pair} - vec2<f32>(1031.0))"
            terms.append((xa, f"{pair}[0]"))
            terms.append((xb, f"{pair}[1]"))
    acc = row_acc
    for a, c in terms:
        acc = f"fma({a}, {c}, {acc})"
    return acc


def gemv_wgsl(v: Variant, n: int, k: int, subgroups: bool = True) -> str:
    groups = k // 32
    steps = -(-groups // (LANES * v.unroll))  # loop iterations; the last may be partial
    rows_per_wg = v.warps * v.rows
    assert n % rows_per_wg == 0
    lines = []
    emit = lines.append
    emit("enable f16;")
    emit("@group(0) @binding(0) var<storage, read> W : array<vec4<u32>>;")  # [n, groups] groups of 4 words
    emit("@group(0) @binding(1) var<storage, read> S : array<f16>;")  # [n, groups]
    if v.form == "dp4a" and v.act == "u4":  # the fp16 activation, quantized to int8 by each lane
        emit("@group(0) @binding(2) var<storage, read> Xw : array<vec4<u32>>;")
        emit("@group(0) @binding(3) var<storage, read> Xunused : array<u32>;")
    elif v.form == "dp4a":  # the activation in int8 (layout: compiler/int8_activations.py)
        emit("@group(0) @binding(2) var<storage, read> X : array<vec4<u32>>;")  # [groups * 2]: even, odd codes' bytes
        emit("@group(0) @binding(3) var<storage, read> XD : array<vec2<f32>>;")  # [groups]: scale, 7 * sum of codes
    else:
        emit("@group(0) @binding(2) var<storage, read> X : array<vec4<u32>>;")  # [k / 8]: 8 halfs each
        emit("@group(0) @binding(3) var<storage, read> Xh : array<vec4<f16>>;")  # the same, 4 halfs each
    emit("@group(0) @binding(4) var<storage, read_write> Y : array<f32>;")
    if not subgroups:
        emit(f"var<workgroup> RED : array<f32, {LANES * v.warps}>;")
    if v.act == "staged":
        emit(f"var<workgroup> XS : array<vec4<u32>, {groups * 5}>;")  # 4 vectors a group + 1 pad
    emit(f"@compute @workgroup_size({LANES}, {v.warps}, 1)")
    emit("fn main(@builtin(workgroup_id) wg : vec3<u32>, @builtin(local_invocation_id) lid : vec3<u32>,")
    emit("        @builtin(local_invocation_index) tid : u32) {")
    emit("  let lane = lid.x;")
    emit(f"  let row0 = (wg.x * {v.warps}u + lid.y) * {v.rows}u;")
    if v.act == "staged":
        emit(f"  for (var i = tid; i < {groups * 4}u; i += {LANES * v.warps}u) {{ XS[i / 4u * 5u + i % 4u] = X[i]; }}")
        emit("  workgroupBarrier();")
    for r in range(v.rows):
        emit(f"  var acc{r} = 0.0;")
    emit(f"  for (var s = 0u; s < {steps}u; s++) {{")
    for u in range(v.unroll):
        emit(f"    let g{u} = (s * {v.unroll}u + {u}u) * {LANES}u + lane;")
        emit(f"    let ok{u} = g{u} < {groups}u;")
        emit(f"    let gc{u} = min(g{u}, {groups - 1}u);")  # in bounds; zero activation past the row
        for r in range(v.rows):
            emit(f"    let w{u}_{r} = W[(row0 + {r}u) * {groups}u + gc{u}];")
            emit(f"    let s{u}_{r} = f32(S[(row0 + {r}u) * {groups}u + gc{u}]);")
        if v.form == "dp4a" and v.act == "u4":  # quantized by the lane from the fp16 activation
            for j in range(4):
                emit(f"    let xv{u}_{j} = select(vec4<u32>(), Xw[gc{u} * 4u + {j}u], ok{u});")
                for c in range(4):
                    emit(f"    let x{u}_{j}_{c} = unpack2x16float(xv{u}_{j}[{c}]);")
            pairs = [f"x{u}_{j}_{c}" for j in range(4) for c in range(4)]
            emit(f"    var m{u} = abs({pairs[0]});")
            for pr in pairs[1:]:
                emit(f"    m{u} = max(m{u}, abs({pr}));")
            emit(f"    let amax{u} = max(m{u}.x, m{u}.y);")
            emit(f"    let inv{u} = select(0.0, 127.0 / amax{u}, amax{u} > 0.0);")
            for j in range(4):
                for e, half in (("e", "x"), ("o", "y")):
                    vals = ", ".join(f"x{u}_{j}_{c}.{half}" for c in range(4))
                    emit(f"    let q{e}{u}_{j} = pack4xI8(vec4<i32>(round(vec4<f32>({vals}) * inv{u})));")
            emit(f"    let xe{u} = vec4<u32>({', '.join(f'qe{u}_{j}' for j in range(4))});")
            emit(f"    let xo{u} = vec4<u32>({', '.join(f'qo{u}_{j}' for j in range(4))});")
            sums = " + ".join(f"dot4I8Packed(q{e}{u}_{j}, 0x01010101u)" for e in "eo" for j in range(4))
            emit(f"    let xd{u} = vec2<f32>(amax{u} / 127.0, 7.0 * f32({sums}));")
            continue
        if v.form == "dp4a":
            emit(f"    let xe{u} = select(vec4<u32>(), X[gc{u} * 2u], ok{u});")
            emit(f"    let xo{u} = select(vec4<u32>(), X[gc{u} * 2u + 1u], ok{u});")
            emit(f"    let xd{u} = select(vec2<f32>(), XD[gc{u}], ok{u});")
            continue
        for j in range(4):
            if v.act == "h4":
                emit(f"    let xh{u}_{j}a = select(vec4<f16>(), Xh[gc{u} * 8u + {2 * j}u], ok{u});")
                emit(f"    let xh{u}_{j}b = select(vec4<f16>(), Xh[gc{u} * 8u + {2 * j + 1}u], ok{u});")
            else:
                src = f"XS[gc{u} * 5u + {j}u]" if v.act == "staged" else f"X[gc{u} * 4u + {j}u]"
                emit(f"    let xv{u}_{j} = select(vec4<u32>(), {src}, ok{u});")
    for u in range(v.unroll):
        if v.form == "dp4a":  # integer dot products of 4 codes with 4 int8 activations
            for r in range(v.rows):
                dots = " + ".join(f"dot4I8Packed(w{u}_{r}[{j}] & 0x0F0F0F0Fu, xe{u}[{j}]) + "
                                  f"dot4I8Packed((w{u}_{r}[{j}] >> 4u) & 0x0F0F0F0Fu, xo{u}[{j}])" for j in range(4))
                emit(f"    acc{r} = fma(f32({dots}) - xd{u}.y, s{u}_{r} * xd{u}.x, acc{r});")
            continue
        for j in range(4):  # word j's activations as f32 pairs (x[2c], x[2c+1])
            for c in range(4):
                if v.act == "h4":
                    half = f"xh{u}_{j}{'ab'[c // 2]}"
                    emit(f"    let x{u}_{j}_{c} = vec2<f32>(f32({half}[{2 * (c % 2)}]), f32({half}[{2 * (c % 2) + 1}]));")
                else:
                    emit(f"    let x{u}_{j}_{c} = unpack2x16float(xv{u}_{j}[{c}]);")
        if v.form == "folded":
            xs = " + ".join(f"x{u}_{j}_{c}[0] + x{u}_{j}_{c}[1]" for j in range(4) for c in range(4))
            emit(f"    let xsum{u} = {xs};")
        for r in range(v.rows):
            words = [f"w{u}_{r}[{j}]" for j in range(4)]
            xs = [[f"x{u}_{j}_{c}" for c in range(4)] for j in range(4)]
            if v.sum == "chain":
                group = "0.0"
                for j in range(4):
                    group = word_products(v, words[j], xs[j], group)
            else:
                group = " + ".join(f"({word_products(v, words[j], xs[j], '0.0')})" for j in range(4))
            if v.form == "folded":
                group = f"(({group}) - 1031.0 * xsum{u})"
            emit(f"    acc{r} = fma({group}, s{u}_{r}, acc{r});")
    emit("  }")
    for r in range(v.rows):
        if subgroups:
            emit(f"  let total{r} = subgroupAdd(acc{r});")
        else:  # lavapipe's subgroups are not 32 wide: the row's sum through workgroup memory
            emit(f"  RED[tid] = acc{r};\n  workgroupBarrier();\n  var total{r} = 0.0;")
            emit(f"  for (var i = 0u; i < {LANES}u; i++) {{ total{r} += RED[lid.y * {LANES}u + i]; }}\n  workgroupBarrier();")
        emit(f"  if (lane == 0u) {{ Y[row0 + {r}u] = total{r}; }}")
    emit("}")
    return "\n".join(lines)


COPY_WGSL = """
@group(0) @binding(0) var<storage, read> A : array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> B : array<vec4<u32>>;
@compute @workgroup_size(256) fn main(@builtin(global_invocation_id) i : vec3<u32>, @builtin(num_workgroups) n : vec3<u32>) {
  let at = i.y * n.x * 256u + i.x;
  B[at] = A[at];
}"""


FLOOR_WGSL = """
@group(0) @binding(0) var<storage, read_write> B : array<f32>;
@compute @workgroup_size(32) fn main(@builtin(local_invocation_index) i : u32) { B[i] = B[i] + 1.0; }"""


class Bench:
    def __init__(self):
        import wgpu

        self.wgpu = wgpu
        self.adapter = wgpu.gpu.request_adapter_sync(power_preference="high-performance")
        limits = self.adapter.limits
        self.device = self.adapter.request_device_sync(
            required_features=["shader-f16", "subgroup", "timestamp-query"],
            required_limits={"max-storage-buffer-binding-size": limits["max-storage-buffer-binding-size"],
                             "max-buffer-size": limits["max-buffer-size"]})
        self.queries = self.device.create_query_set(type="timestamp", count=2)
        self.stamps = self.device.create_buffer(size=16, usage="QUERY_RESOLVE|COPY_SRC")

    def buffer(self, array: np.ndarray):
        return self.device.create_buffer_with_data(data=np.ascontiguousarray(array), usage="STORAGE|COPY_SRC")

    def pipeline(self, wgsl: str, bindings: int, checks: bool = False):
        """The kernel with an explicit layout: bindings 0..n-2 read-only, the last one written
        (a variant may leave some unused, which layout="auto" would drop)."""
        kinds = ["read-only-storage"] * (bindings - 1) + ["storage"]
        layout = self.device.create_bind_group_layout(entries=[
            {"binding": i, "visibility": self.wgpu.ShaderStage.COMPUTE, "buffer": {"type": kind}} for i, kind in enumerate(kinds)])
        module = self.device.create_shader_module(code=wgsl) if checks else self.unchecked_module(wgsl)
        pipeline = self.device.create_compute_pipeline(layout=self.device.create_pipeline_layout(bind_group_layouts=[layout]),
                                                       compute={"module": module, "entry_point": "main"})
        return pipeline, layout

    def unchecked_module(self, wgsl: str):
        """The shader without Naga's per-access bounds checks and loop bounding, as the plugin
        compiles TVM's kernels (wgpuDeviceCreateShaderModuleTrusted, which wgpu-py does not call)."""
        from wgpu.backends.wgpu_native import _api

        checked = _api.libf

        class Trusted:
            def __getattr__(self, name):
                return getattr(checked, name)

            @staticmethod
            def wgpuDeviceCreateShaderModule(device, descriptor):
                return checked.wgpuDeviceCreateShaderModuleTrusted(device, descriptor, _api.lib.WGPUShaderRuntimeChecks_None)

        _api.libf = Trusted()
        try:
            return self.device.create_shader_module(code=wgsl)
        finally:
            _api.libf = checked

    def group(self, pipeline, buffers):
        entries = [{"binding": i, "resource": {"buffer": b}} for i, b in enumerate(buffers)]
        return self.device.create_bind_group(layout=pipeline[1], entries=entries)

    def run(self, pipeline, groups: list, grid: tuple[int, int, int]) -> float:
        """GPU seconds for one pass that dispatches `grid` once per bind group, in turn."""
        encoder = self.device.create_command_encoder()
        cpass = encoder.begin_compute_pass(timestamp_writes={"query_set": self.queries, "beginning_of_pass_write_index": 0,
                                                             "end_of_pass_write_index": 1})
        cpass.set_pipeline(pipeline[0])
        for g in groups:
            cpass.set_bind_group(0, g)
            cpass.dispatch_workgroups(*grid)
        cpass.end()
        encoder.resolve_query_set(self.queries, 0, 2, self.stamps, 0)
        self.device.queue.submit([encoder.finish()])
        t0, t1 = np.frombuffer(self.device.queue.read_buffer(self.stamps), np.uint64)
        return (int(t1) - int(t0)) * 1e-9

    def read(self, buffer, dtype) -> np.ndarray:
        return np.frombuffer(self.device.queue.read_buffer(buffer), dtype)


def copy_gbs(bench: Bench, nbytes: int) -> float:
    """GB/s (read + written) of a copy of `nbytes`, or of the adapter's largest binding if smaller."""
    nbytes = min(nbytes, bench.adapter.limits["max-storage-buffer-binding-size"] // (1 << 20) << 20)
    vectors = nbytes // 16
    a, b = bench.buffer(np.zeros(vectors * 4, np.uint32)), bench.buffer(np.zeros(vectors * 4, np.uint32))
    pipeline = bench.pipeline(COPY_WGSL, 2)
    wgs = vectors // 256
    grid = (min(wgs, 32768), -(-wgs // 32768), 1)
    assert grid[0] * grid[1] == wgs
    group = bench.group(pipeline, [a, b])
    bench.run(pipeline, [group], grid)
    return 2 * nbytes * 10 / bench.run(pipeline, [group] * 10, grid) / 1e9


def dispatch_floor_us(bench: Bench) -> float:
    """GPU time of a one-workgroup dispatch that waits for the one before it."""
    pipeline = bench.pipeline(FLOOR_WGSL, 1)
    group = bench.group(pipeline, [bench.buffer(np.zeros(32, np.float32))])
    return bench.run(pipeline, [group] * 500, (1, 1, 1)) / 500 * 1e6


def floor_wgsl(extra: int = 0, uniform: bool = False) -> str:
    """A one-workgroup kernel B = A + 1 (+ `extra` more read-only buffers, + a uniform word)."""
    lines = ["@group(0) @binding(0) var<storage, read> A : array<f32>;",
             "@group(0) @binding(1) var<storage, read_write> B : array<f32>;"]
    lines += [f"@group(0) @binding({2 + e}) var<storage, read> E{e} : array<f32>;" for e in range(extra)]
    if uniform:
        lines += ["struct P { v : vec4<u32> }", f"@group(0) @binding({2 + extra}) var<uniform> p : P;"]
    value = "A[i] + 1.0" + "".join(f" + E{e}[i]" for e in range(extra)) + (" + f32(p.v.x)" if uniform else "")
    lines.append(f"@compute @workgroup_size(32) fn main(@builtin(local_invocation_index) i : u32) {{ B[i] = {value}; }}")
    return "\n".join(lines)


def dispatch_costs_us(bench: Bench, n: int = 2000) -> dict:
    """GPU time per dispatch of a trivial kernel, n in one pass (timestamps around the pass only),
    in the patterns a decode step's dispatches take through the plugin: each reading what the one
    before wrote (ping-pong between two buffers), with more bindings, with the plugin's
    dynamic-offset uniform, alternating two pipelines; and with no dependency at all."""
    wgpu, device = bench.wgpu, bench.device
    arena = device.create_buffer(size=n * 256, usage="UNIFORM|COPY_DST")

    def pipeline(extra=0, uniform=False):
        kinds = [{"type": "read-only-storage"}, {"type": "storage"}] + [{"type": "read-only-storage"}] * extra
        if uniform:
            kinds.append({"type": "uniform", "has_dynamic_offset": True})
        layout = device.create_bind_group_layout(entries=[
            {"binding": i, "visibility": wgpu.ShaderStage.COMPUTE, "buffer": kind} for i, kind in enumerate(kinds)])
        module = bench.unchecked_module(floor_wgsl(extra, uniform))
        return device.create_compute_pipeline(layout=device.create_pipeline_layout(bind_group_layouts=[layout]),
                                              compute={"module": module, "entry_point": "main"}), layout

    def group(p, a, b, extra=(), uniform=False):
        resources = [{"buffer": a}, {"buffer": b}] + [{"buffer": e} for e in extra]
        if uniform:
            resources.append({"buffer": arena, "offset": 0, "size": 16})
        return device.create_bind_group(layout=p[1], entries=[{"binding": i, "resource": r} for i, r in enumerate(resources)])

    bufs = [bench.buffer(np.zeros(32, np.float32)) for _ in range(32)]
    plain, wide, dyn, twin = pipeline(), pipeline(6), pipeline(uniform=True), pipeline()
    ping = [group(plain, bufs[0], bufs[1]), group(plain, bufs[1], bufs[0])]
    patterns = {
        "ping-pong (each reads the last one's output)": [(plain, ping[i % 2], None) for i in range(n)],
        "ping-pong, 6 more read-only bindings": [(wide, g, None) for g in
                                                 [group(wide, bufs[0], bufs[1], bufs[2:8]), group(wide, bufs[1], bufs[0], bufs[2:8])]] * (n // 2),
        "ping-pong, dynamic uniform offset per dispatch": [(dyn, [group(dyn, bufs[0], bufs[1], uniform=True),
                                                                   group(dyn, bufs[1], bufs[0], uniform=True)][i % 2], i * 256) for i in range(n)],
        "ping-pong, two pipelines in turn": [((plain, twin)[i % 2], [ping[0], group(twin, bufs[1], bufs[0])][i % 2], None) for i in range(n)],
        "independent (16 buffer pairs in turn)": [(plain, g, None) for g in
                                                  [group(plain, bufs[2 * j], bufs[2 * j + 1]) for j in range(16)]] * (n // 16),
    }
    result = {}
    for timed in (False, True):
        for name, steps in patterns.items():
            encoder = device.create_command_encoder()
            cpass = encoder.begin_compute_pass(timestamp_writes={"query_set": bench.queries, "beginning_of_pass_write_index": 0,
                                                                 "end_of_pass_write_index": 1})
            for p, g, offset in steps:
                cpass.set_pipeline(p[0])
                cpass.set_bind_group(0, g, [] if offset is None else [offset])
                cpass.dispatch_workgroups(1, 1, 1)
            cpass.end()
            encoder.resolve_query_set(bench.queries, 0, 2, bench.stamps, 0)
            device.queue.submit([encoder.finish()])
            t0, t1 = np.frombuffer(device.queue.read_buffer(bench.stamps), np.uint64)
            if timed:
                result[name] = (int(t1) - int(t0)) * 1e-3 / len(steps)
    return result


def pack(rng, n: int, k: int):
    from mlcgen.compiler.quantization import get_quantization

    q4 = get_quantization("q4f16_1")
    qw, qs = q4.pack(rng.standard_normal((n, k), dtype=np.float32) * 0.02)
    return qw, qs, q4.unpack(qw, qs)


def main(quick: bool) -> None:
    from mlcgen.compiler import int8_activations

    bench = Bench()
    print(f"adapter: {bench.adapter.info['device']} ({bench.adapter.info['backend_type']})")
    if not quick:
        print(f"WGSL copy, 1 GiB, vec4<u32> loads and stores: {copy_gbs(bench, 1 << 30):.0f} GB/s")
    print(f"dependent one-workgroup dispatch: {dispatch_floor_us(bench):.1f} us")
    rng = np.random.default_rng(0)
    shapes = QUICK_SHAPES if quick else LAYER_SHAPES
    table = {}
    for shape, (n, k) in shapes.items():
        qw, qs, dense = pack(rng, n, k)
        x = rng.standard_normal(k).astype(np.float16)
        ref = dense @ x.astype(np.float32)
        nbytes = qw.nbytes + qs.nbytes
        copies = 1 if quick else rotation(nbytes)
        weights = [(bench.buffer(qw), bench.buffer(qs)) for _ in range(copies)]
        xq, xd = int8_activations.quantize(x)
        ref8 = dense @ int8_activations.dequantize(xq, xd)  # what the dp4a form computes, exactly up to float32 rounding
        xb, y = bench.buffer(x), bench.buffer(np.zeros(n, np.float32))
        xqb, xdb = bench.buffer(xq), bench.buffer(xd)
        kernels = {}
        for v in VARIANTS:
            pipeline = bench.pipeline(gemv_wgsl(v, n, k, subgroups=not quick), 5, v.checks)
            acts = [xqb, xdb] if v.act == "i8" else [xb, xb]
            groups = [bench.group(pipeline, [w, s, *acts, y]) for w, s in weights]
            grid = (n // (v.warps * v.rows), 1, 1)
            bench.run(pipeline, groups[:1], grid)
            out = bench.read(y, np.float32)
            exact = ref8 if v.form == "dp4a" else ref  # the lane's own rounding may differ from numpy's in a few ties
            assert np.linalg.norm(out - exact) < 1e-3 * np.linalg.norm(exact), f"{v.name} on {shape}: wrong"
            err = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))  # against the fp16 activation
            calls = 1 if quick else 100
            kernels[v] = (pipeline, (groups * calls)[:calls], grid, err)
        # Two rounds, the first untimed: the first variants timed on newly written weights ran
        # 2-5x slower than the same kernels later in the run (H200), even after 5 passes of their own.
        for timed in (False, True) if not quick else (True,):
            for v, (pipeline, groups, grid, err) in kernels.items():
                seconds = min(bench.run(pipeline, groups, grid) for _ in range(5 if not quick else 1)) / len(groups)
                if timed:
                    table.setdefault(v.name, {})[shape] = (seconds * 1e6, nbytes, err)
        del weights
    names = list(shapes)
    print("variant (form/act/sum/unroll/rows per lane/warps)".ljust(44) + "".join(f"{s:>18}" for s in names) + "   layer GB/s  rel_err")
    for name, row in table.items():
        gbs = sum(row[s][1] for s in names) / sum(row[s][0] for s in names) / 1e3
        cells = "".join(f"{row[s][0]:8.1f} us {row[s][1] / row[s][0] / 1e3:5.0f}" for s in names)
        print(f"{name:44}{cells}   {gbs:8.0f}  {max(r[2] for r in row.values()):.1e}")


if __name__ == "__main__":
    if "--copy" in sys.argv:  # the copy alone, for vulkan_speed.py's bound
        print(f"{copy_gbs(Bench(), 1 << 30):.1f}")
        sys.exit()
    if "--dispatch" in sys.argv:  # what a dispatch costs the GPU, by pattern
        for name, us in dispatch_costs_us(Bench()).items():
            print(f"{name:50} {us:6.2f} us")
        sys.exit()
    t0 = time.time()
    main("--quick" in sys.argv)
    print(f"({time.time() - t0:.0f} s)")
