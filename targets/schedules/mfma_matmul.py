"""Prefill matmul on CDNA's matrix cores (gfx90a: v_mfma_f32_16x16x16f16), for
y[1, T, N] = x[1, T, K] @ dequantize(q_weight, q_scale).T.

The structure is that of dlight's CUDA tensor-core rule, with AMD's operands: the matmul is
normalized to C[b, i, j] += A[b, i, k] * B[b, j, k] and padded to whole tiles; a block of 4 waves
computes a 64 x 64 tile of C, each wave 2 x 2 MFMA tiles of 16 x 16, over K in steps of 32. A and
the weight go through LDS (the weight dequantized to fp16 on the way in, as the q4f16 format
defines it); each wave loads its 16 x 16 operands from LDS into registers ("warp" buffers: one
row of 4 values per lane) and accumulates in float32 registers, which go back through LDS to the
epilogue (cast, residual add).

Operand layout of v_mfma_f32_16x16x16f16 (AMD's CDNA2 ISA guide, matrix instruction tables):
lane l holds A[l % 16][4 (l / 16) + v], B[4 (l / 16) + v][l % 16] and D[4 (l / 16) + v][l % 16],
v = 0..3. The weight is stored [N, K], so its tile is B transposed: lane l holds
Bt[l % 16][4 (l / 16) + v], the same map as A's: `lane_of` below, checked against these
tables by tests/test_rocm.py.
"""

from __future__ import annotations

from tvm.s_tir import TensorIntrin
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.s_tir.tensor_intrin import rocm as amd
from tvm.script import tirx as T

from . import q4_schedule

WAVE = 64
TILE = 16  # one MFMA: 16 x 16 x 16
TILES_I, TILES_J = (2, 2), (2, 2)  # (waves, tiles per wave) along i (tokens) and j (weight rows)
K_TILES = 2  # 16-wide K tiles per LDS stage
VECTOR = 4  # fp16 per LDS store and per epilogue store


def lane_of(row, col):
    """Register (lane, element) of element [row, col] of a 16 x 16 MFMA operand held as A is
    (and as the accumulator's transpose is)."""
    return row + TILE * (col // 4), col % 4


@T.prim_func(s_tir=True)
def _mfma_bt_description(a: T.handle, b: T.handle, c: T.handle) -> None:
    A = T.match_buffer(a, (WAVE, 4), "float16", offset_factor=1, scope="warp")
    B = T.match_buffer(b, (WAVE, 4), "float16", offset_factor=1, scope="warp")
    C = T.match_buffer(c, (WAVE, 4), "float32", offset_factor=1, scope="warp")
    with T.sblock("root"):
        T.reads(C[0:WAVE, 0:4], A[0:WAVE, 0:4], B[0:WAVE, 0:4])
        T.writes(C[0:WAVE, 0:4])
        for i, j, k in T.grid(TILE, TILE, TILE):
            with T.sblock("C"):
                vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                lane_c, reg_c = T.meta_var(lane_of(vj, vi))
                lane_a, reg_a = T.meta_var(lane_of(vi, vk))
                lane_b, reg_b = T.meta_var(lane_of(vj, vk))
                T.reads(C[lane_c, reg_c], A[lane_a, reg_a], B[lane_b, reg_b])
                T.writes(C[lane_c, reg_c])
                C[lane_c, reg_c] = C[lane_c, reg_c] + T.Cast("float32", A[lane_a, reg_a]) * T.Cast("float32", B[lane_b, reg_b])


# TVM's own B-transposed MFMA description indexes B as if it were not transposed; ours pairs with
# TVM's implementation (one llvm.amdgcn.mfma.f32.16x16x16f16 per wave) and its loaders.
INTRINSICS = {
    "load_a": amd.ROCM_MFMA_LOAD_16x16_A_SHARED_f16_INTRIN,
    "load_b": "mlcgen_mfma_load_16x16_bt_shared_f16",
    "compute": "mlcgen_mfma_f32_16x16x16_f16_bt",
    "store": "mlcgen_mfma_store_16x16_f32_shared",
    "init": amd.ROCM_MFMA_fill_16x16_f32_INTRIN,
}
TensorIntrin.register(INTRINSICS["load_b"], *amd.get_mfma_load_intrin(16, "float16", "shared", is_b=True, transposed=True), override=True)
TensorIntrin.register(INTRINSICS["compute"], _mfma_bt_description, amd.get_mfma_intrin(16, "float16", "float32", b_transposed=True)[1],
                      override=True)
TensorIntrin.register(INTRINSICS["store"], *amd.get_mfma_store_intrin(4, "float32", "shared"), override=True)


def _fragment(b, i, j):
    """[b, i, j] of a wave-held operand -> [b, tile i, tile j, lane, element]."""
    return (b, i // TILE, j // TILE, *lane_of(i % TILE, j % TILE))


def _accumulator(b, i, j):
    return (b, i // TILE, j // TILE, *lane_of(j % TILE, i % TILE))


class MfmaDequantMatmul(ScheduleRule):
    def __init__(self, matrix_cores: bool = True):
        # False: the same tiles, LDS staging and epilogue with each wave's operands and sums as
        # per-thread arrays and scalar FMAs instead of the MFMA intrinsics, so that the schedule
        # runs where there are no matrix cores (tests: lavapipe against numpy)
        self.matrix_cores = matrix_cores

    def apply(self, func, target, tunable):
        from tvm.s_tir.dlight.gpu.matmul import (auto_inline_consumer_chain, auto_inline_producers, get_index_map,
                                                 get_reduction_blocks)

        q4 = q4_schedule(func)
        if q4 is None:
            return None
        sch, dequantize = q4
        for block in dequantize:
            sch.unsafe_set_dtype(block, 0, "float16")  # MFMA takes fp16 operands
        reductions = get_reduction_blocks(sch, sch.get_child_blocks(sch.get_sblock("root")))
        if not reductions or len(reductions) != 1:
            return None
        main = reductions[0]
        index_maps = get_index_map(sch.get(main))
        if index_maps is None:
            return None

        # C[b, i, j] += A[b, i, k] * B[b, j, k], padded to whole block tiles
        matmul_map, a_map, b_map, c_map = index_maps
        reindexed = [sch.reindex(main, ("read", 0)), sch.reindex(main, ("read", 1)), sch.reindex(main, ("write", 0))]
        sch.transform_layout(reindexed[0], ("write", 0), a_map)
        sch.transform_layout(reindexed[1], ("write", 0), b_map)
        sch.transform_layout(reindexed[2], ("read", 0), c_map)
        sch.transform_block_layout(main, matmul_map)
        sch.pad_einsum(main, [1, TILE * TILES_I[0] * TILES_I[1], TILE * TILES_J[0] * TILES_J[1], TILE * K_TILES])

        batch, i, j, k = sch.get_loops(main)
        i, i_tile = sch.split(i, [None, TILE])
        j, j_tile = sch.split(j, [None, TILE])
        k, k_tile = sch.split(k, [None, TILE])
        sch.reorder(i, j, k, i_tile, j_tile, k_tile)
        inner = main
        outer = sch.blockize(i_tile)
        i_block, i_wave, i_own = sch.split(i, [None, *TILES_I])
        j_block, j_wave, j_own = sch.split(j, [None, *TILES_J])
        k_stage, k_inner = sch.split(k, [None, K_TILES])
        sch.reorder(i_block, j_block, j_wave, i_wave, k_stage, k_inner, i_own, j_own)
        sch.bind(sch.fuse(batch, i_block), "blockIdx.x")  # batch 1; WebGPU has no blockIdx.z
        sch.bind(j_block, "blockIdx.y")
        wave = sch.fuse(j_wave, i_wave)
        sch.bind(wave, "threadIdx.y")

        waves = TILES_I[0] * TILES_J[0]
        for operand in (0, 1):  # A and the weight into LDS, every thread storing VECTOR values
            staged = sch.cache_read(outer, operand, "shared")
            sch.compute_at(staged, k_stage)
            _, wave_id, lane, vector = sch.split(sch.fuse(*sch.get_loops(staged)[-2:]), [None, waves, WAVE, VECTOR])
            sch.bind(wave_id, "threadIdx.y")
            sch.bind(lane, "threadIdx.x")
            if self.matrix_cores or operand == 0:  # WGSL's lowering cannot vectorize the dequantize's shifts
                sch.vectorize(vector)
            sch.storage_align(staged, 0, axis=-2, factor=16, offset=8)  # pad rows against bank conflicts
            auto_inline_producers(sch, staged)  # the dequantize, into the weight's LDS store
        registers = "warp" if self.matrix_cores else "local"
        operands = [sch.cache_read(outer, 0, registers), sch.cache_read(outer, 1, registers)]
        for fragment in operands:
            sch.compute_at(fragment, k_inner)
        out_staged = sch.cache_write(outer, 0, "shared")
        accumulator = sch.cache_write(outer, 0, registers)
        sch.reverse_compute_at(accumulator, wave)
        sch.reverse_compute_at(out_staged, wave)
        init = sch.get_child_blocks(sch.decompose_reduction(outer, k_stage))[0]
        if self.matrix_cores:
            self._tensorize(sch, operands, accumulator, init, inner)

        auto_inline_consumer_chain(sch, out_staged)  # cast, residual add: from LDS to the output
        _, lane, vector = sch.split(sch.fuse(*sch.get_loops(out_staged)[-2:]), [None, WAVE, VECTOR])
        sch.bind(lane, "threadIdx.x")
        sch.vectorize(vector)
        return sch

    @staticmethod
    def _tensorize(sch, operands, accumulator, init, inner):
        """The wave-held operands and sums in MFMA register layout, loaded, multiplied, zeroed and
        stored by the intrinsics, one 16 x 16 tile at a time."""
        for fragment in operands:
            sch.transform_layout(fragment, ("write", 0), _fragment)
        sch.transform_layout(accumulator, ("read", 0), _accumulator)
        for block in (*operands, accumulator):
            row, col = sch.get_loops(block)[-2:]
            row_tile, row = sch.split(row, [None, TILE])
            col_tile, col = sch.split(col, [None, TILE])
            sch.reorder(row_tile, col_tile, row, col)
        sch.tensorize(sch.get_loops(operands[0])[-2], INTRINSICS["load_a"])
        sch.tensorize(sch.get_loops(operands[1])[-2], INTRINSICS["load_b"])
        sch.tensorize(sch.get_loops(init)[-2], INTRINSICS["init"])
        sch.tensorize(sch.get_loops(accumulator)[-2], INTRINSICS["store"])
        sch.tensorize(sch.get_loops(inner)[-3], INTRINSICS["compute"])
