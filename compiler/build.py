"""`mlcgen build`: HF checkpoint folder -> dist/<model>-<quant>-<target>/.

Everything is written into a temporary sibling folder that is renamed into place at the end, so an
interrupted or failed build leaves no output folder behind.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..runtime import dist
from ..runtime.conversation import checkpoint_template
from . import convert
from .quantization import GroupQuant4, get_quantization

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "generation_config.json", "added_tokens.json", "chat_template.jinja")
DEFAULT_PREFILL_CHUNK = 2048
# Tokens per KV-cache page. A CUDA decode graph is captured again whenever the page count grows
# (runtime/cuda_graph.py: ~1 ms of host time, the GPU idle), so larger pages mean fewer captures;
# the decode attention splits by rows, not pages (schedules/split_kv_decode.py).
PAGE_SIZE = 64


@dataclass
class BuildPlan:
    family: object  # the models/<family>.py module
    cfg: object
    scheme: object
    target_module: object  # the targets/<kind>.py module
    preset: str
    manifest: dict
    hf_config: dict


def read_hf_config(model_dir: Path) -> dict:
    path = model_dir / "config.json"
    if not path.is_file():
        raise ConfigError(f"{path}: not found; expected a Hugging Face model folder with config.json")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None


def plan(model_dir: Path, quantization: str, target: str, context_window: int | None = None, prefill_chunk: int | None = None,
         int8_activations: bool = False) -> BuildPlan:
    """Everything decided before compiling; the manifest lacks only the conversion results."""
    from ..models import family_for  # imports the TVM compiler
    from ..targets import get_target

    model_dir = Path(model_dir)
    source = str(model_dir / "config.json")
    hf_config = read_hf_config(model_dir)
    family, arch = family_for(hf_config, source)
    cfg = family.Config.from_hf(hf_config, source)
    target_module, preset, why = get_target(target)
    max_param_bytes = getattr(target_module, "MAX_PARAM_BYTES", None)
    scheme = get_quantization(quantization, max_param_bytes)
    if scheme.name not in target_module.QUANTIZATIONS:
        raise ConfigError(f"--quantization {quantization} is not supported on target {target} ({target_module.QUANTIZATION_NOTE}); "
                          f"choose one of: {', '.join(target_module.QUANTIZATIONS)}")
    if int8_activations and not getattr(target_module, "INT8_ACTIVATIONS", False):
        raise ConfigError(f"--int8-activations is implemented for the cuda, rocm and vulkan targets, not for {target}")
    if int8_activations and not (isinstance(scheme, GroupQuant4) and scheme.model_dtype == "float16"):
        raise ConfigError(f"--int8-activations applies to the q4 matmuls of q4f16_1, not to --quantization {quantization}")
    context_window = cfg.max_position_embeddings if context_window is None else context_window
    prefill_chunk = min(DEFAULT_PREFILL_CHUNK if prefill_chunk is None else prefill_chunk, context_window)
    if context_window <= 0 or prefill_chunk <= 0:
        raise ConfigError(f"--context-window and --prefill-chunk must be positive (got {context_window}, {prefill_chunk})")
    # Our (fused, unquantized) weight shapes, read off the same model built without quantization.
    shapes = {n: tuple(int(d) for d in p.shape) for n, p in family.Model(cfg, get_quantization("q0f32")).named_parameters()}
    weights, stored = [], set()
    for name, (sources, quantized) in family.hf_weight_map(cfg).items():
        weights.append({"name": name, "hf": list(sources), "quantized": quantized, "shape": list(shapes[name])})
        stored |= {(p.name, p.shape, p.dtype) for p in scheme.stored_params(name, shapes[name], quantized)}
    # Params in the order the compiled entry points take them.
    params = [{"name": n, "shape": [int(d) for d in p.shape], "dtype": str(p.dtype)} for n, p in family.Model(cfg, scheme).named_parameters()]
    if {(p["name"], tuple(p["shape"]), p["dtype"]) for p in params} != stored:
        raise RuntimeError(f"internal: {family.__name__}'s modules and its weight map disagree under {scheme.name}")
    manifest = {
        "format_version": dist.FORMAT_VERSION,
        "model": {"name": model_dir.resolve().name, "family": family.__name__.rsplit(".", 1)[-1], "architecture": arch, "config": cfg.to_dict()},
        "quantization": scheme.name,
        "max_param_bytes": max_param_bytes,  # larger weights are stored in row chunks (quantization.py)
        "int8_activations": int8_activations,  # decode matmuls on int8 activations (compiler/int8_activations.py)
        "model_dtype": scheme.model_dtype,
        # runtime_facts: what the runtime must check on the device (the Vulkan subgroup width)
        "target": {"name": f"{target.partition(':')[0]}:{preset}", "device": target_module.DEVICE, "preset_reason": why,
                   **getattr(target_module, "runtime_facts", lambda *_: {})(preset, scheme)},
        "context_window": context_window,
        "prefill_chunk": prefill_chunk,
        "page_size": PAGE_SIZE,
        "params": params,
        "weights": weights,
        "hf_ignored": sorted(family.hf_ignored(cfg)),
    }
    return BuildPlan(family, cfg, scheme, target_module, preset, manifest, hf_config)


def export_ir(p: BuildPlan, target):
    """The model's Relax IRModule (entry points + `_metadata`), checked against the manifest."""
    import tvm
    from tvm import relax

    with target:
        model = p.family.Model(p.cfg, p.scheme)
        mod, named_params = model.export_tvm(spec=model.export_spec())
    exported = [{"name": n, "shape": [int(d) for d in t.shape], "dtype": str(t.dtype)} for n, t in named_params]
    if exported != p.manifest["params"]:
        diff = [(a, b) for a, b in zip(exported, p.manifest["params"]) if a != b][:3]
        raise RuntimeError(f"internal: the model's params disagree with its weight map, e.g. {diff}")
    bounds = {"seq_len": p.manifest["prefill_chunk"]}  # lets memory planning size buffers statically
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mod[gvar] = func.with_attr("tir_var_upper_bound", bounds)
    bb = relax.BlockBuilder(mod)
    with bb.function("_metadata", params=[]):
        bb.emit_func_output(tvm.ir.StringImm(json.dumps(dist.library_manifest(p.manifest))))
    return bb.finalize()


def compile_library(p: BuildPlan, lib_path: Path, dump_ir: Path | None, log) -> tuple[int, list[dict]]:
    """Compile to `lib_path`; returns the planned temporary memory in bytes and the kernels one
    decode step calls with their memory traffic (for `mlcgen inspect`'s projection)."""
    from tvm import relax

    from . import pipeline

    target = p.target_module.tvm_target(p.preset)
    mod = export_ir(p, target)
    mod = pipeline.run(mod, p.target_module, target, dump_ir, p.manifest["int8_activations"])
    temporaries = pipeline.temporary_bytes(mod)
    with p.target_module.device_code() as device_code:  # e.g. the AMD code object, for inspection
        executable = relax.build(mod, target, relax_pipeline=None, tir_pipeline=p.target_module.TIR_PIPELINE)
    executable.export_library(str(lib_path))
    for name, data in device_code.items():
        (lib_path.parent / name).write_bytes(data)
    return temporaries, pipeline.entry_kernel_traffic(mod, "decode")


def default_output(model_dir: Path, quantization: str, target: str) -> Path:
    return Path("dist") / f"{Path(model_dir).resolve().name}-{quantization}-{target.replace(':', '-')}"


def build(model_dir, quantization: str, target: str = "cpu", output=None, context_window: int | None = None,
          prefill_chunk: int | None = None, dump_ir=None, log=print, int8_activations: bool = False) -> Path:
    model_dir = Path(model_dir)
    log = log or (lambda message: None)
    p = plan(model_dir, quantization, target, context_window, prefill_chunk, int8_activations)
    checkpoint = convert.open_checkpoint(model_dir, p.manifest)  # fail on a bad checkpoint before compiling
    out = Path(output) if output else default_output(model_dir, quantization, target)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        built_for = p.manifest["target"]
        log(f"compiling {model_dir.name} for {built_for['name']} ({built_for['preset_reason']}) ...")
        start = time.time()
        temporaries, decode_kernels = compile_library(p, tmp / dist.LIBRARY, Path(dump_ir) if dump_ir else None, log)
        log(f"compiled {dist.LIBRARY} for {built_for['name']} in {time.time() - start:.1f} s")
        log(f"converting weights to {p.scheme.name} ...")
        stats = convert.convert(model_dir, p.manifest, tmp, log, checkpoint)
        log(f"converted weights to {p.scheme.name}: {stats.summary()}")
        memory = _memory_estimate(p.manifest, temporaries)
        log("estimated memory: " + ", ".join(f"{k.removesuffix('_bytes')} {v / 2**20:.1f} MiB" for k, v in memory.items()))
        p.manifest["memory"] = memory
        p.manifest["decode_kernels"] = decode_kernels
        p.manifest["conversion"] = stats.to_manifest()
        _copy_tokenizer(model_dir, tmp, p.manifest)
        (tmp / dist.CHAT_CONFIG).write_text(json.dumps(chat_config(model_dir, p.hf_config), indent=1))
        (tmp / dist.MANIFEST).write_text(json.dumps(p.manifest, indent=1))
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"wrote {out}")
    return out


def _memory_estimate(manifest: dict, temporaries: int) -> dict:
    params, kv = dist.params_bytes(manifest), dist.kv_cache_bytes(manifest)
    return {"params_bytes": params, "kv_cache_bytes": kv, "temporary_bytes": temporaries, "total_bytes": params + kv + temporaries}


def _copy_tokenizer(model_dir: Path, out: Path, manifest: dict) -> None:
    copied = [name for name in TOKENIZER_FILES if (model_dir / name).is_file()]
    for name in copied:
        shutil.copy2(model_dir / name, out / name)
    manifest["tokenizer_files"] = copied


def chat_config(model_dir: Path, hf_config: dict) -> dict:
    """Defaults for the chat runtime, taken from the checkpoint's own files where it has them."""
    def read(name):
        path = model_dir / name
        return json.loads(path.read_text()) if path.is_file() else {}

    generation = read("generation_config.json")
    eos = generation.get("eos_token_id", hf_config.get("eos_token_id"))
    return {
        "conversation_template": checkpoint_template(model_dir) or "raw",
        "bos_token_id": generation.get("bos_token_id", hf_config.get("bos_token_id")),
        "eos_token_ids": eos if isinstance(eos, list) else [eos] if eos is not None else [],
        "temperature": generation.get("temperature", 0.7),
        "top_p": generation.get("top_p", 0.95),
    }


def _replace(tmp: Path, out: Path) -> None:
    """Move the finished build into place; an older build at `out` is removed only after."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
