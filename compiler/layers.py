"""nn layers that the quantization schemes hand to model files. All matmuls accumulate in float32.

Group-quantized layers (layout in quantization.GroupQuant4): the dequantize expression sits inside
the matmul's reduction and the embedding's gather, so each is one kernel that reads the packed
weight; no full-precision weight is ever materialized.
"""

from __future__ import annotations

from tvm import te, tirx
from tvm.relax.frontend import nn


def group_quant_matmul(scheme, x: nn.Tensor, q_weight: nn.Tensor, q_scale: nn.Tensor, out_dtype: str) -> nn.Tensor:
    """x[..., K] @ dequantize(q_weight, q_scale)[N, K].T -> [..., N], accumulated in float32. The
    kernel is tagged with the scheme's name, by which a target can offload it (compiler/passes.py
    offload_prefill_matmuls)."""
    return nn.op.tensor_expr_op(lambda x, w, s: q4_matmul_te(scheme, x, w, s, out_dtype), "q4_matmul", [x, q_weight, q_scale],
                                attrs={Q4_MATMUL_ATTR: scheme.name})


def placeholder(shape, dtype: str, name: str):
    """A TE placeholder with int64 dimensions, as Relax gives the kernels it fuses: a kernel of ours
    on int32 dimensions would not fuse with the op after it (FuseTIR: inconsistent buffers)."""
    return te.placeholder([index(d) for d in shape], dtype, name)


def index(value: int):
    """An int64 constant for the shapes and axes of a kernel on `placeholder`s."""
    return tirx.const(value, "int64")


def q4_matmul_te(scheme, x, q_weight, q_scale, out_dtype: str):
    """The TE of group_quant_matmul (also what schedule tests compile on their own).

    Written as a dequantize block feeding the matmul block so that GPU matmul schedules can place
    the dequantize where they load the weight (shared memory for prefill GEMMs); every schedule
    inlines it (compiler/passes.py inline_dequantize where nothing else does), so the float
    weight is never materialized."""
    k_total = x.shape[-1]
    n_total = q_weight.shape[0]
    w = te.compute((n_total, k_total), lambda n, k: scheme.dequantize(q_weight, q_scale, n, k, "float32"), name=DEQUANTIZE)
    k = te.reduce_axis((0, k_total), name="k")
    acc = te.compute((*x.shape[:-1], n_total), lambda *i: te.sum(x[(*i[:-1], k)].astype("float32") * w[i[-1], k], axis=k), name="matmul")
    if out_dtype == "float32":
        return acc
    return te.compute(acc.shape, lambda *i: acc[i].astype(out_dtype), name="cast")


Q4_MATMUL_ATTR = "mlcgen.q4_matmul"  # PrimFunc attr: the quantization scheme of a q4 matmul
EPILOGUE_ATTR = "mlcgen.q4_matmul_epilogue"  # PrimFunc attr of a q4 matmul with an epilogue: its name (SWIGLU)
DEQUANTIZE = "dequantize"  # block name: schedules find the weight's dequantize by it
SWIGLU = "swiglu"  # block name: the decode GEMV pairs row r of the matmul with row r + N/2 for it


def q4_matmul_swiglu_te(scheme, x, q_weight, q_scale, out_dtype: str):
    """silu(gate) * up of a gate/up projection whose weight stacks the gate rows over the up rows,
    as the matmul's epilogue (swiglu_te)."""
    return swiglu_te(q4_matmul_te(scheme, x, q_weight, q_scale, "float32"), out_dtype)


def swiglu_te(acc, out_dtype: str):
    """silu(gate) * up of a float32 matmul output whose gate rows are stacked over its up rows:
    gate and up rounded to out_dtype as the unfused layers store them, silu and the product in
    float32, the result rounded once. Written as a product over the pair (silu(gate), up) so that
    each output reads its two matmul rows through a reduction axis: TVM's reverse_compute_at places
    no block that reads two fixed rows of a buffer."""
    half = acc.shape[-1] // 2
    product = te.comm_reducer(lambda a, b: a * b, lambda dtype: tirx.const(1.0, dtype), name="product")
    pair = te.reduce_axis((0, tirx.const(2, str(half.ty))), name="pair")  # the rows' index type: no cast in the read

    def factor(*i):  # pair 0: silu(gate); pair 1: up
        value = acc[(*i[:-1], pair * half + i[-1])].astype(out_dtype).astype("float32")
        return tirx.if_then_else(pair == 0, value / (tirx.const(1.0, "float32") + tirx.exp(-value)), value)

    y = te.compute((*acc.shape[:-1], half), lambda *i: product(factor(*i), axis=pair), name=SWIGLU)
    return te.compute(y.shape, lambda *i: y[i].astype(out_dtype), name="cast")


def gate_up_silu(gate_up, x: nn.Tensor) -> nn.Tensor:
    """silu(gate) * up for a stacked gate/up projection. For one token (decode) through a q4 weight
    in one piece without bias, a single kernel (the SiLU and product as the GEMV's epilogue: one
    kernel launch less per layer); otherwise the projection, a split, silu and a multiply."""
    single_token = all(isinstance(d, int) and d == 1 for d in x.shape[:-1])
    if isinstance(gate_up, GroupQuantLinear) and gate_up.bias is None and single_token and len(gate_up.chunks()) == 1:
        (w, s), = gate_up.chunks()
        return nn.op.tensor_expr_op(lambda x, w, s: q4_matmul_swiglu_te(gate_up.scheme, x, w, s, gate_up.out_dtype),
                                    "q4_matmul_swiglu", [x, w, s], attrs={Q4_MATMUL_ATTR: gate_up.scheme.name, EPILOGUE_ATTR: SWIGLU})
    gate, up = nn.op.split(gate_up(x), 2, axis=-1)
    return nn.op.silu(gate) * up


class FloatLinear(nn.Module):
    """y = x @ weight.T (+ bias), accumulated in float32 and cast to out_dtype."""

    def __init__(self, in_features: int, out_features: int, bias: bool, dtype: str, out_dtype: str):
        self.out_dtype = out_dtype
        self.weight = nn.Parameter((out_features, in_features), dtype)
        self.bias = nn.Parameter((out_features,), dtype) if bias else None

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        y = nn.op.matmul(x, nn.op.permute_dims(self.weight), out_dtype="float32")
        if self.bias is not None:
            y = y + self.bias.astype("float32")
        return y if self.out_dtype == "float32" else y.astype(self.out_dtype)


class GroupQuantLinear(nn.Module):
    def __init__(self, scheme, in_features: int, out_features: int, bias: bool, out_dtype: str):
        self.scheme = scheme
        self.out_dtype = out_dtype
        self.q_weight, self.q_scale = _quantized_params(scheme, out_features, in_features)
        self.bias = nn.Parameter((out_features,), scheme.model_dtype) if bias else None

    def chunks(self) -> list[tuple[nn.Tensor, nn.Tensor]]:
        return _chunks(self.q_weight, self.q_scale)

    def forward(self, x: nn.Tensor) -> nn.Tensor:
        y = chunked_matmul(self.scheme, x, self.chunks(), self.out_dtype)
        return y + self.bias if self.bias is not None else y


class GroupQuantEmbedding(nn.Module):
    def __init__(self, scheme, vocab_size: int, dim: int):
        self.scheme = scheme
        self.q_weight, self.q_scale = _quantized_params(scheme, vocab_size, dim)

    def chunks(self) -> list[tuple[nn.Tensor, nn.Tensor]]:
        return _chunks(self.q_weight, self.q_scale)

    def forward(self, ids: nn.Tensor) -> nn.Tensor:
        chunks = self.chunks()
        rows = [int(w.shape[0]) for w, _ in chunks]

        def gather(ids, *params):
            words, scales = params[0::2], params[1::2]
            dim = words[0].shape[1] * self.scheme.PACK

            def value(*i):
                row = ids[i[:-1]]
                # the last chunk holds every row past the others; each earlier one is tried first
                start = sum(rows[:-1])
                out = self.scheme.dequantize(words[-1], scales[-1], row - start, i[-1])
                for c in reversed(range(len(rows) - 1)):
                    start -= rows[c]
                    inside = self.scheme.dequantize(words[c], scales[c], row - start, i[-1])
                    out = tirx.if_then_else(row < start + rows[c], inside, out)  # reads one chunk only
                return out

            return te.compute((*ids.shape, dim), value, name="embedding")

        return nn.op.tensor_expr_op(gather, "q4_embedding", [ids, *[t for chunk in chunks for t in chunk]])


def chunked_matmul(scheme, x: nn.Tensor, chunks: list[tuple[nn.Tensor, nn.Tensor]], out_dtype: str) -> nn.Tensor:
    """group_quant_matmul over a weight stored as row chunks: one matmul per chunk, outputs joined."""
    ys = [group_quant_matmul(scheme, x, w, s, out_dtype) for w, s in chunks]
    return ys[0] if len(ys) == 1 else nn.op.concat(ys, dim=-1)


def _quantized_params(scheme, n: int, k: int):
    """q_weight and q_scale of an [n, k] weight: Parameters, or ParameterLists of row chunks (named
    `q_weight.0`, ... as scheme.stored_params names them) where the target limits tensor size."""
    pairs = [scheme.stored_params("weight", (rows, k), quantized=True) for rows in scheme.row_chunks(n, k)]
    weights = [nn.Parameter(w.shape, w.dtype) for w, _ in pairs]
    scales = [nn.Parameter(s.shape, s.dtype) for _, s in pairs]
    if len(pairs) == 1:
        return weights[0], scales[0]
    return nn.ParameterList(weights), nn.ParameterList(scales)


def _chunks(q_weight, q_scale) -> list[tuple[nn.Tensor, nn.Tensor]]:
    if isinstance(q_weight, nn.ParameterList):
        return list(zip(q_weight, q_scale))
    return [(q_weight, q_scale)]
