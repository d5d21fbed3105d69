"""Prefill matmul on NVIDIA tensor cores (sm_80+: mma.sync m16n8k16, operands through ldmatrix), for
y[1, T, N] = x[1, T, K] @ dequantize(q_weight, q_scale).T.

Normalized like dlight's tensor-core rule to C[b, i, j] += A[b, i, k] * B[b, j, k] and padded to
whole block tiles. A block of warps computes a (16 * warps_i * tiles_i) x (16 * warps_j * tiles_j)
tile of C; each warp holds tiles_i x tiles_j accumulators of 16 x 16 in float32 registers, so every
operand fragment it loads feeds several MMAs (shared-memory traffic per MMA is what bounds an
mma.sync GEMM; dlight's WMMA rule gives each warp 2 x 2). The K loop is a software pipeline over
16 * k_tiles-wide K tiles; one iteration
  - starts the cp.async copy of the activation tile t + 2 (`stages` shared buffers),
  - loads tile t + 1's packed weight words and scales into registers,
  - multiplies tile t (ldmatrix + mma.sync),
  - dequantizes tile t + 1 into shared memory (two buffers), in fp16 as the q4f16 format defines it,
so the weight loads' latency hides behind the MMAs. The float32 sums go back through shared memory
to the epilogue (cast, residual add). Lowered with targets/gpu.py's TIR pipeline: TVM's own
leaves all but one register ("warp") buffer in local memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import tirx
from tvm.s_tir.dlight.base import ScheduleRule

from . import q4_schedule

WARP = 32
TILE = 16  # one mma.sync pair: 16 x 16 x 16
VECTOR = {0: 8, 1: 4}  # fp16 per shared-memory store: A 128-bit (cp.async), the dequantized weight 64-bit
# (TVM's CUDA codegen has no 8-lane uint32 vectors for the dequantize's arithmetic)
GROUP = 32  # q4f16_1: weights per scale
SHARED = "shared.dyn"  # the pipeline's buffers exceed the 48 KiB of static shared memory





@dataclass(frozen=True)
class MmaKnobs:
    warps_i: int = 2  # warps along the tokens
    warps_j: int = 2  # warps along the weight rows
    tiles_i: int = 4  # 16 x 16 accumulator tiles per warp, along the tokens
    tiles_j: int = 4  # ... along the weight rows
    k_tiles: int = 2  # 16-wide K tiles per pipeline stage
    stages: int = 3  # shared-memory buffers of the activation tile

    def __post_init__(self):
        # each thread dequantizes whole quantization groups (32 values: 4 words, 1 scale) of a stage
        groups = self.block_j * self.k_tiles * TILE // GROUP
        if self.k_tiles * TILE % GROUP or groups % self.threads or self.threads % self.block_j or self.stages < 3:
            raise ValueError(f"{self}: a stage's {groups} weight groups must split evenly over {self.threads} threads, "
                             f"each thread's within one of the {self.block_j} rows; at least 3 stages")

    @property
    def block_i(self) -> int:
        return TILE * self.warps_i * self.tiles_i

    @property
    def block_j(self) -> int:
        return TILE * self.warps_j * self.tiles_j

    @property
    def threads(self) -> int:
        return WARP * self.warps_i * self.warps_j


def _fragment(b, i, j):
    """[b, i, j] of a warp-held 16 x 16 operand -> [b, tile i, tile j, lane, element]."""
    from tvm.s_tir.tensor_intrin.cuda import shared_16x16_to_ldmatrix_32x8_layout

    return (b, i // TILE, j // TILE, *shared_16x16_to_ldmatrix_32x8_layout(i % TILE, j % TILE))


class MmaDequantMatmul(ScheduleRule):
    def __init__(self, knobs: MmaKnobs = MmaKnobs()):
        self.knobs = knobs

    def apply(self, func, target, tunable):
        from tvm.s_tir.dlight.gpu.matmul import (auto_inline_consumer_chain, auto_inline_producers, get_index_map,
                                                 get_reduction_blocks)

        q4 = q4_schedule(func)
        if q4 is None:
            return None
        sch, dequantize = q4
        for block in dequantize:
            sch.unsafe_set_dtype(block, 0, "float16")  # mma.sync takes fp16 operands
        reductions = get_reduction_blocks(sch, sch.get_child_blocks(sch.get_sblock("root")))
        if not reductions or len(reductions) != 1:
            return None
        main = reductions[0]
        index_maps = get_index_map(sch.get(main))
        if index_maps is None:
            return None
        kn = self.knobs

        matmul_map, a_map, b_map, c_map = index_maps
        reindexed = [sch.reindex(main, ("read", 0)), sch.reindex(main, ("read", 1)), sch.reindex(main, ("write", 0))]
        sch.transform_layout(reindexed[0], ("write", 0), a_map)
        sch.transform_layout(reindexed[1], ("write", 0), b_map)
        sch.transform_layout(reindexed[2], ("read", 0), c_map)
        sch.transform_block_layout(main, matmul_map)
        n, k = (sch.get(loop).extent for loop in sch.get_loops(main)[2:])
        if not (isinstance(n, tirx.IntImm) and isinstance(k, tirx.IntImm)) or n % kn.block_j or k % (TILE * kn.k_tiles):
            return None  # weight rows and K must tile whole (model shapes do): the weight loads are not guarded
        sch.pad_einsum(main, [1, kn.block_i, kn.block_j, TILE * kn.k_tiles])

        batch, i, j, k = sch.get_loops(main)
        i, i_tile = sch.split(i, [None, TILE])
        j, j_tile = sch.split(j, [None, TILE])
        k, k_tile = sch.split(k, [None, TILE])
        sch.reorder(i, j, k, i_tile, j_tile, k_tile)
        inner = main
        outer = sch.blockize(i_tile)
        i_block, i_warp, i_own = sch.split(i, [None, kn.warps_i, kn.tiles_i])
        j_block, j_warp, j_own = sch.split(j, [None, kn.warps_j, kn.tiles_j])
        k_stage, k_inner = sch.split(k, [None, kn.k_tiles])
        sch.reorder(i_block, j_block, i_warp, j_warp, k_stage, k_inner, i_own, j_own)
        # blocks sharing a weight tile are neighbours in launch order: the weight is read from
        # DRAM about once, the small activation matrix stays in L2
        sch.bind(sch.fuse(batch, i_block), "blockIdx.x")
        sch.bind(j_block, "blockIdx.y")
        warp = sch.fuse(i_warp, j_warp)
        sch.bind(warp, "threadIdx.y")

        a_shared = self._stage_in_shared(sch, outer, 0, k_stage)
        auto_inline_producers(sch, a_shared)
        b_shared = self._stage_in_shared(sch, outer, 1, k_stage)
        auto_inline_producers(sch, b_shared)  # the dequantize, into the weight tile's store
        for region in sch.get(b_shared).reads:  # the packed words and the scales
            self._prefetch_to_registers(sch, b_shared, region.source.name, k_stage)

        fragments = [sch.cache_read(outer, 0, "warp"), sch.cache_read(outer, 1, "warp")]
        for fragment in fragments:
            sch.compute_at(fragment, k_inner)
        out_staged = sch.cache_write(outer, 0, SHARED)
        accumulator = sch.cache_write(outer, 0, "warp")
        sch.reverse_compute_at(accumulator, warp)
        sch.reverse_compute_at(out_staged, warp)
        sch.storage_align(out_staged, 0, axis=-2, factor=16, offset=4)
        init = sch.get_child_blocks(sch.decompose_reduction(outer, k_stage))[0]
        self._tensorize(sch, fragments, accumulator, init, inner)

        auto_inline_consumer_chain(sch, out_staged)  # cast, residual add: from shared memory to the output
        _, lane, vector = sch.split(sch.fuse(*sch.get_loops(out_staged)[-2:]), [None, WARP, 4])
        sch.bind(lane, "threadIdx.x")
        sch.vectorize(vector)

        # k_stage's body: the copies of A, the words and the scales, the dequantize, the K-tile loop
        # (unrolled, not pipelined: multi-buffered fragments would not lower to registers). In one
        # iteration the copies of tile t + stages - 1 start, tile t is multiplied and tile t + 1
        # dequantized (its copies done)
        sch.annotate(k_stage, "software_pipeline_stage", [0, 1, 1, 1, kn.stages - 1])
        sch.annotate(k_stage, "software_pipeline_order", [0, 1, 2, 4, 3])
        sch.annotate(k_stage, "software_pipeline_async_stages", [0])
        sch.unroll(k_inner)
        return sch

    def _stage_in_shared(self, sch, outer, operand, k_stage):
        kn = self.knobs
        staged = sch.cache_read(outer, operand, SHARED)
        sch.compute_at(staged, k_stage)
        row, col = sch.get_loops(staged)[-2:]
        if operand == 0:  # the activations: 128-bit copies, consecutive threads along a row
            _, warp, lane, vector = sch.split(sch.fuse(row, col), [None, kn.warps_i * kn.warps_j, WARP, VECTOR[0]])
        else:  # the weight: thread t dequantizes a chunk of whole groups of row t % rows
            warp, lane, vector = self._chunk_major(sch, row, col)
            _, vector = sch.split(vector, [None, VECTOR[1]])
        sch.bind(warp, "threadIdx.y")
        sch.bind(lane, "threadIdx.x")
        sch.vectorize(vector)
        sch.storage_align(staged, 0, axis=-2, factor=16, offset=8)  # pad rows: conflict-free ldmatrix
        return staged

    def _chunk_major(self, sch, row, col):
        """Threads over (chunk of the row, row), chunk outer: a thread's place along the row
        depends on threadIdx.y only (through threadIdx.x, its registers would not compact)."""
        kn = self.knobs
        chunks = kn.threads // kn.block_j
        chunk, own = sch.split(col, [chunks, None])
        sch.reorder(chunk, row, own)
        _, warp, lane = sch.split(sch.fuse(chunk, row), [None, kn.warps_i * kn.warps_j, WARP])
        return warp, lane, own

    def _prefetch_to_registers(self, sch, b_shared, buffer, k_stage):
        """A stage's packed words or scales loaded into registers by the thread that dequantizes
        them (the same chunk-major split), in one vector."""
        local = sch.cache_read(b_shared, buffer, "local")
        sch.compute_at(local, k_stage)
        loops = sch.get_loops(local)
        own = loops[[sch.get(loop) for loop in loops].index(sch.get(k_stage)) + 1:]  # a unit loop may be gone
        if len(own) == 1:  # one scale per row: (row, 1)
            own = list(sch.split(own[0], [None, 1]))
        warp, lane, vector = self._chunk_major(sch, *own)
        sch.bind(warp, "threadIdx.y")
        sch.bind(lane, "threadIdx.x")
        sch.vectorize(vector)

    @staticmethod
    def _tensorize(sch, fragments, accumulator, init, inner):
        from tvm.s_tir.tensor_intrin import cuda as nv  # here: the package parses every target's intrinsics

        intrinsics = {
            "load_a": nv.LDMATRIX_f16_A_DYN_INTRIN,
            "load_b": nv.LDMATRIX_f16_B_TRANS_DYN_INTRIN,  # the weight is stored [N, K]: B transposed
            "compute": nv.MMA_f16f16f32_TRANS_B_INTRIN,
            "init": nv.MMA_fill_16x16_f32_INTRIN,
            # plain stores: TVM 0.27 StorageRewrite mistypes the access pointer of mma_store when the sums
            # reuse the (fp16) activation buffers, as deeper pipelines make them do
            "store": nv.MMA_store_16x16_f32_shared_dyn_INTRIN_SIMPLE,
        }
        for fragment in fragments:
            sch.transform_layout(fragment, ("write", 0), _fragment)
        sch.transform_layout(accumulator, ("read", 0), _fragment)
        for block in (*fragments, accumulator):
            row, col = sch.get_loops(block)[-2:]
            row_tile, row = sch.split(row, [None, TILE])
            col_tile, col = sch.split(col, [None, TILE])
            sch.reorder(row_tile, col_tile, row, col)
        sch.tensorize(sch.get_loops(fragments[0])[-2], intrinsics["load_a"])
        sch.tensorize(sch.get_loops(fragments[1])[-2], intrinsics["load_b"])
        sch.tensorize(sch.get_loops(init)[-2], intrinsics["init"])
        sch.tensorize(sch.get_loops(accumulator)[-2], intrinsics["store"])
        sch.tensorize(sch.get_loops(inner)[-3], intrinsics["compute"])
