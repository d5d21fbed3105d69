"""Top-p sampling on the device: the next token from the logits and a uniform number from a table
on the device, so that a sampling chat's step needs nothing from the host and is issued ahead of
the last step's read-back, as greedy decoding is.

No sort. The nucleus (the fewest most likely tokens whose probability reaches top_p) is every
token whose scaled logit d = (logit - max) / temperature reaches a threshold t*, and the mass
above a threshold falls as the threshold rises; so t* is found by a search over thresholds, each
round counting the mass above PROBES evenly spaced thresholds at once (a chunk of the row a
thread block, as the argmax does) and keeping the interval where the mass crosses top_p. The
search starts from [-log(vocab / (1 - top_p)), 0]: a token further below the maximum has less
than (1 - top_p) / vocab of the mass, so together they hold less than 1 - top_p. ROUNDS rounds
narrow that interval (at most 87 wide) to under 1e-6, about a float32 step of a logit near 10.
The token is then the first one, in vocabulary order, at which the running mass of the nucleus
passes uniform * its total: a draw from the renormalized nucleus. 20 kernels; on an H200 34 us a
token at a 32K vocabulary, 60 us at 128K (docs/benchmarks.md, session 22).

Host-side sampling (runtime/sampling.py) covers what this does not: top-k and the penalties.
"""

from __future__ import annotations

import math

import tvm
from tvm import s_tir, te, tirx
from tvm.relax.frontend import nn
from tvm.script import tirx as T

from ..runtime.sampling import UNIFORMS

CHUNK = 1024  # logits a thread block reduces
PROBES = 32  # thresholds counted per round
ROUNDS = 5  # 87 / 33^5 < 1e-6
REDUCE_THREADS = 256  # WebGPU's default limit a workgroup
THREADS = 256  # of the one-block kernels
GROUP = 32  # logits a step of the draw's second scan
MAX_SPAN = 87.0  # exp(-87) is float32's smallest normal: tokens further down weigh nothing

INV_TEMPERATURE, TOP_P = 0, 1  # the `sample` entry's config: float32 [2]


def sample_token(logits: nn.Tensor, config: nn.Tensor, uniforms: nn.Tensor, step: nn.Tensor) -> tuple[nn.Tensor, nn.Tensor]:
    """logits [1, 1, vocab] float32, config [1 / temperature, top_p], uniforms [UNIFORMS] (numbers in
    [0, 1)), step [1] int32 -> (token [1] int32, step). The draw takes uniforms[step % UNIFORMS] and
    counts step up in place, so that a run of steps needs no upload but a table every UNIFORMS
    steps (an upload a step cost Vulkan a fifth of its sampled decode speed)."""
    vocab = int(logits.shape[-1])
    chunks = -(-vocab // CHUNK)
    row = nn.op.reshape(logits, [vocab])
    chunk_max = _reduction([row], lambda x: _chunk_max(x, chunks), "chunk_max")
    top = _reduction([chunk_max], _max_of, "row_max")
    bounds, thresholds = _one_block([config], _start(vocab), "nucleus_start", [[2], [PROBES + 1]])
    for _ in range(ROUNDS):
        mass = _reduction([row, top, config, thresholds], lambda *a: _mass_above(*a, chunks), "mass_above")
        total = _reduction([mass], _sum_chunks, "mass_above_sum")
        bounds, thresholds = _one_block([total, bounds, thresholds, config], _narrow, "nucleus_narrow", [[2], [PROBES + 1]])
    kept = _reduction([row, top, config, bounds], lambda *a: _nucleus_mass(*a, chunks), "nucleus_mass")
    draw = _draw(vocab, chunks)(_gpu_target() is not None)  # it counts `step` up: the second output is that input
    return nn.op.tensor_ir_inplace_op(_finish(draw), "nucleus_draw", [row, top, config, bounds, kept, uniforms, step], [-1, 6],
                                      [nn.Tensor.placeholder([1], "int32"), nn.Tensor.placeholder([1], "int32")])


# Every kernel here is scheduled where it is made, by one of two rules (a GPU target's rule list
# does not take these shapes: dlight's GEMV analysis fails on the scalar inputs), and marked
# opaque so that fusion leaves it whole. The CPU compiles them as written.

def _gpu_target():
    target = tvm.target.Target.current(allow_none=True)
    return None if target is None or target.kind.name in ("llvm", "c") else target


def _finish(func):
    return func.without_attr("global_symbol").with_attr({"op_pattern": 8, "tirx.is_scheduled": _gpu_target() is not None})


def _reduction(inputs: list[nn.Tensor], compute, name: str) -> nn.Tensor:
    """A TE reduction (spatial axes, then one reduction axis): on GPUs a thread block per output
    element, REDUCE_THREADS threads across the reduction."""
    placeholders = [te.placeholder(t.shape, t.dtype, f"in{i}") for i, t in enumerate(inputs)]
    out = compute(*placeholders)
    func = te.create_prim_func([*placeholders, out])
    if _gpu_target() is not None:
        sch = s_tir.Schedule(func)
        block = sch.get_sblock(out.op.name)
        *spatial, reduce = sch.get_loops(block)
        sch.bind(sch.fuse(*spatial), "blockIdx.x")
        _, threads = sch.split(reduce, [None, REDUCE_THREADS])
        sch.bind(threads, "threadIdx.x")
        func = sch.mod["main"]
    return nn.op.tensor_ir_op(_finish(func), name, inputs, nn.Tensor.placeholder([int(d) for d in out.shape], out.dtype))


def _one_block(inputs: list[nn.Tensor], make, name: str, out_shapes, dtype: str = "float32"):
    """A kernel of one thread block, written in phases (`make(gpu)`: loops over THREADS threads,
    shared memory between phases): on a GPU the phases are the block's threads with barriers
    between them; on the CPU each phase is a serial loop, which computes the same."""
    outs = [nn.Tensor.placeholder(shape, dtype) for shape in out_shapes]
    return nn.op.tensor_ir_op(_finish(make(_gpu_target() is not None)), name, inputs, outs if len(outs) > 1 else outs[0])


def _loops(gpu: bool):
    """(the block's loop, a phase's loop over the threads, the scope of memory shared between phases)."""
    if gpu:
        return (lambda: T.thread_binding(1, thread="blockIdx.x"), lambda: T.thread_binding(THREADS, thread="threadIdx.x"), "shared")
    return (lambda: T.serial(1), lambda: T.serial(THREADS), "global")


def _scaled(x, top, config, i):
    """d: the logit's distance below the row's maximum, divided by the temperature."""
    return (x[i] - top[0]) * config[INV_TEMPERATURE]


def _chunk_max(x, chunks: int):
    vocab = int(x.shape[0])
    k = te.reduce_axis((0, CHUNK), "k")
    return te.compute((chunks,), lambda c: te.max(tirx.if_then_else(c * CHUNK + k < vocab, x[c * CHUNK + k], tirx.min_value("float32")),
                                                  axis=k), name="chunk_max")


def _max_of(m):
    c = te.reduce_axis((0, m.shape[0]), "c")
    return te.compute((1,), lambda _: te.max(m[c], axis=c), name="row_max")


def _mass_if(x, top, config, keep):
    """A chunk's mass: its sum of exp(d) over the logits with keep(d, other output indices)."""
    vocab = int(x.shape[0])
    k = te.reduce_axis((0, CHUNK), "k")
    zero = tirx.const(0, "float32")

    def mass(c, *rest):
        i = c * CHUNK + k
        d = _scaled(x, top, config, i)
        return te.sum(tirx.if_then_else(i < vocab, tirx.if_then_else(keep(d, *rest), tirx.exp(d), zero), zero), axis=k)

    return mass


def _mass_above(x, top, config, thresholds, chunks: int):
    """[chunks, PROBES + 1]: each chunk's mass at or above each threshold."""
    return te.compute((chunks, PROBES + 1), _mass_if(x, top, config, lambda d, q: d >= thresholds[q]), name="mass_above")


def _sum_chunks(mass):
    c = te.reduce_axis((0, mass.shape[0]), "c")
    return te.compute((mass.shape[1],), lambda q: te.sum(mass[c, q], axis=c), name="mass_above_sum")


def _nucleus_mass(x, top, config, bounds, chunks: int):
    return te.compute((chunks,), _mass_if(x, top, config, lambda d: d >= bounds[0]), name="nucleus_mass")


def _start(vocab: int):
    """The first interval, [-span, 0], and its thresholds."""
    log_vocab = math.log(vocab)

    def make(gpu: bool):
        block, threads, _ = _loops(gpu)

        @T.prim_func(private=True, s_tir=True)
        def start(config: T.Buffer((2,), "float32"), bounds: T.Buffer((2,), "float32"), thresholds: T.Buffer((PROBES + 1,), "float32")):
            with T.sblock("root"):
                for _ in block():
                    for t in threads():
                        span = T.min(T.float32(log_vocab) - T.log(T.float32(1) - config[TOP_P]), T.float32(MAX_SPAN))
                        if t <= PROBES:
                            thresholds[t] = _threshold(-span, T.float32(0), t)
                        if t == 0:
                            bounds[0] = -span
                            bounds[1] = T.float32(0)
        return start
    return make


def _threshold(lo, hi, q):
    """The q-th of the round's thresholds; the 0th is -inf, which counts the whole row's mass."""
    return T.if_then_else(q == 0, T.min_value("float32"), lo + (hi - lo) * (T.Cast("float32", q) / T.float32(PROBES)))


def _narrow(gpu: bool):
    """The next interval: between the highest threshold whose mass at or above it reaches top_p
    of the row's and the lowest one whose mass falls short; then its thresholds. (Thread 0 keeps
    its state in registers and reads shared memory into them: TVM's barrier planning does not
    follow a single thread's reads and writes of shared memory.)"""
    block, threads, shared = _loops(gpu)

    @T.prim_func(private=True, s_tir=True)
    def narrow(total: T.Buffer((PROBES + 1,), "float32"), bounds: T.Buffer((2,), "float32"),
               thresholds: T.Buffer((PROBES + 1,), "float32"), config: T.Buffer((2,), "float32"),
               new_bounds: T.Buffer((2,), "float32"), new_thresholds: T.Buffer((PROBES + 1,), "float32")):
        with T.sblock("root"):
            for _ in block():
                mass = T.decl_buffer((PROBES + 1,), "float32", scope=shared)
                probe = T.decl_buffer((PROBES + 1,), "float32", scope=shared)
                picked = T.decl_buffer((2,), "float32", scope=shared)
                for t in threads():
                    if t <= PROBES:  # the loads at once, not one after another in the scan
                        mass[t] = total[t]
                        probe[t] = thresholds[t]
                for t in threads():
                    if t == 0:
                        lo = T.decl_buffer((4,), "float32", scope="local")  # lo, hi, a mass, a threshold
                        lo[0] = bounds[0]
                        lo[1] = bounds[1]
                        for q in range(1, PROBES + 1):
                            lo[2] = mass[q]
                            lo[3] = probe[q]
                            if lo[2] >= config[TOP_P] * total[0]:
                                lo[0] = T.max(lo[0], lo[3])
                            else:
                                lo[1] = T.min(lo[1], lo[3])
                        picked[0] = lo[0]
                        picked[1] = lo[1]
                        new_bounds[0] = lo[0]
                        new_bounds[1] = lo[1]
                for t in threads():
                    if t <= PROBES:
                        ends = T.decl_buffer((2,), "float32", scope="local")
                        ends[0] = picked[0]
                        ends[1] = picked[1]
                        new_thresholds[t] = _threshold(ends[0], ends[1], t)
    return narrow


def _draw(vocab: int, chunks: int):
    """The first token, in vocabulary order, at which the running nucleus mass passes uniform x
    the nucleus's total: the chunk from the chunks' masses, then the group of GROUP logits in it,
    then the token; each scan over shared memory by thread 0. Where rounding leaves the running
    sum short of the goal, the last chunk, group or token with nucleus mass."""
    groups = CHUNK // GROUP

    def make(gpu: bool):
        block, threads, shared = _loops(gpu)

        @T.prim_func(private=True, s_tir=True)
        def draw(x: T.Buffer((vocab,), "float32"), top: T.Buffer((1,), "float32"), config: T.Buffer((2,), "float32"),
                 bounds: T.Buffer((2,), "float32"), kept: T.Buffer((chunks,), "float32"),
                 uniforms: T.Buffer((UNIFORMS,), "float32"), step: T.Buffer((1,), "int32"), token: T.Buffer((1,), "int32")):
            with T.sblock("root"):
                for _ in block():
                    chunk_mass = T.decl_buffer((chunks,), "float32", scope=shared)
                    weight = T.decl_buffer((CHUNK,), "float32", scope=shared)
                    group_mass = T.decl_buffer((groups,), "float32", scope=shared)
                    goal = T.decl_buffer((2,), "float32", scope=shared)  # the goal, the mass before the chunk
                    chunk = T.decl_buffer((1,), "int32", scope=shared)
                    for t in threads():
                        for j in range(-(-chunks // THREADS)):
                            if j * THREADS + t < chunks:
                                chunk_mass[j * THREADS + t] = kept[j * THREADS + t]
                    for t in threads():
                        if t == 0:
                            run = T.decl_buffer((3,), "float32", scope="local")  # goal, mass before, a value
                            pick = T.decl_buffer((2,), "int32", scope="local")  # index, found
                            run[0] = T.float32(0)
                            for c in range(chunks):
                                run[2] = chunk_mass[c]
                                run[0] = run[0] + run[2]
                            run[0] = run[0] * uniforms[T.floormod(step[0], UNIFORMS)]
                            run[1] = T.float32(0)
                            _scan(chunk_mass, chunks, 0, run, pick)
                            goal[0] = run[0]
                            goal[1] = run[1]
                            chunk[0] = pick[0]
                    for t in threads():
                        base = T.decl_buffer((1,), "int32", scope="local")
                        base[0] = chunk[0] * CHUNK
                        for j in range(CHUNK // THREADS):
                            i = base[0] + j * THREADS + t
                            d = _scaled(x, top, config, T.min(i, vocab - 1))  # as the mass kernels: the same nucleus
                            weight[j * THREADS + t] = T.if_then_else(i < vocab and d >= bounds[0], T.exp(d), T.float32(0))
                    for t in threads():
                        if t < groups:
                            acc = T.decl_buffer((1,), "float32", scope="local")
                            acc[0] = T.float32(0)
                            for k in range(GROUP):
                                acc[0] = acc[0] + weight[t * GROUP + k]
                            group_mass[t] = acc[0]
                    for t in threads():
                        if t == 0:
                            run = T.decl_buffer((3,), "float32", scope="local")
                            pick = T.decl_buffer((2,), "int32", scope="local")
                            found = T.decl_buffer((3,), "int32", scope="local")  # chunk, group, token
                            found[0] = chunk[0]
                            run[0] = goal[0]
                            run[1] = goal[1]
                            _scan(group_mass, groups, 0, run, pick)
                            found[1] = pick[0]
                            _scan(weight, GROUP, found[1] * GROUP, run, pick)
                            token[0] = found[0] * CHUNK + found[1] * GROUP + pick[0]
                            step[0] = step[0] + 1
        return draw
    return make


@T.macro
def _scan(values, n, offset, run, pick):
    """pick[0]: the first of values[offset:offset + n] with mass at which the running mass (run[1],
    the mass before them) passes the goal (run[0]); run[1] becomes the mass before it."""
    pick[0] = 0
    pick[1] = 0
    for c in range(n):
        run[2] = values[offset + c]
        if pick[1] == 0 and run[2] > T.float32(0):
            pick[0] = c
            if run[1] + run[2] > run[0]:
                pick[1] = 1
            else:
                run[1] = run[1] + run[2]
    if pick[1] == 0:  # rounding left the goal at the total: the last one with mass, from its start
        run[2] = values[offset + pick[0]]
        run[1] = run[1] - run[2]
