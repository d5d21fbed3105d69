"""Bad input: each case gets a clear message naming the file/field, and loses nothing."""

import json
import shutil

import pytest
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

import torch

from conftest import engine, make_checkpoint
from mlcgen.cli import main
from mlcgen.compiler import build as build_module
from mlcgen.compiler.build import build
from mlcgen.errors import CheckpointError, ConfigError, ParamsError


@pytest.fixture()
def ckpt(tmp_path):
    return make_checkpoint(tmp_path / "model")


def edit_config(path, **changes):
    cfg = json.loads((path / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key)
        else:
            cfg[key] = value
    (path / "config.json").write_text(json.dumps(cfg))


def edit_weights(path, fn):
    state = load_file(path / "model.safetensors")
    fn(state)
    save_file(state, path / "model.safetensors", metadata={"format": "pt"})


def no_output(tmp_path):
    out = tmp_path / "out"
    return not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_unknown_architecture_lists_supported(tmp_path, ckpt):
    edit_config(ckpt, architectures=["GPT2LMHeadModel"])
    with pytest.raises(ConfigError, match=r"config\.json: architectures=\['GPT2LMHeadModel'\] is not supported; supported: LlamaForCausalLM, MistralForCausalLM, Phi3ForCausalLM, Qwen2ForCausalLM"):
        build(ckpt, "q0f32", output=tmp_path / "out", log=None)
    assert no_output(tmp_path)


@pytest.mark.parametrize("changes,message", [
    ({"rms_norm_eps": None}, "missing required key 'rms_norm_eps'"),
    ({"hidden_act": "gelu"}, "hidden_act='gelu' is not supported"),
    ({"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}}, "rope_type='yarn' is not supported"),
    ({"num_key_value_heads": 3}, "not a multiple of num_key_value_heads=3"),
])
def test_bad_config_values(tmp_path, ckpt, changes, message):
    edit_config(ckpt, **changes)
    with pytest.raises(ConfigError, match=message) as e:
        build(ckpt, "q0f32", output=tmp_path / "out", log=None)
    assert str(ckpt / "config.json") in str(e.value)
    assert no_output(tmp_path)


def test_missing_config(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="config.json: not found"):
        build(tmp_path / "empty", "q0f32", output=tmp_path / "out", log=None)


@pytest.mark.parametrize("case,message", [
    ("missing", r"missing tensors: \['model.layers.1.mlp.up_proj.weight'\]"),
    ("extra", r"unexpected tensors \(not used by the model\): \['model.layers.0.mlp.extra.weight'\]"),
    ("misshaped", r"model.layers.0.self_attn.qkv_proj.weight: expected shape \[128, 64\], got .*k_proj.weight \[16, 64\]"),
])
def test_checkpoint_tensor_problems_are_named(tmp_path, ckpt, case, message):
    def change(state):
        if case == "missing":
            del state["model.layers.1.mlp.up_proj.weight"]
        elif case == "extra":
            state["model.layers.0.mlp.extra.weight"] = torch.zeros(4)
        else:
            state["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(16, 64)

    edit_weights(ckpt, change)
    with pytest.raises(CheckpointError, match=message):
        build(ckpt, "q4f16_1", output=tmp_path / "out", log=None)
    assert no_output(tmp_path)


def test_truncated_safetensors(tmp_path, ckpt):
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors: tensor .* past the end of the file .* truncated"):
        build(ckpt, "q0f32", output=tmp_path / "out", log=None)


@pytest.mark.parametrize("args,message", [
    (["-q", "q3f16_0"], "unknown quantization 'q3f16_0'; choose one of: q0f32, q0f16, q4f16_1, q4f32_1"),
    (["-t", "tpu"], "unknown target 'tpu'; choose one of: cpu"),
    (["-t", "cpu:avx9"], "unknown preset 'avx9' for target 'cpu'; choose one of: generic"),
])
def test_cli_rejects_unknown_names(tmp_path, ckpt, args, message):
    result = CliRunner().invoke(main, ["build", str(ckpt), "-o", str(tmp_path / "out"), *args])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert no_output(tmp_path)


def test_interrupted_build_leaves_nothing(tmp_path, ckpt, monkeypatch):
    real_convert = build_module.convert.convert

    def convert_then_interrupt(model_dir, manifest, out_dir, log=print, checkpoint=None):
        real_convert(model_dir, manifest, out_dir, log, checkpoint)
        assert (out_dir / "lib.so").exists()  # midway: library and params already written
        raise KeyboardInterrupt

    monkeypatch.setattr(build_module.convert, "convert", convert_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        build(ckpt, "q0f32", output=tmp_path / "out", log=None)
    assert no_output(tmp_path)


def test_rebuild_replaces_previous_output(tmp_path, ckpt):
    out = build(ckpt, "q0f32", output=tmp_path / "out", log=None)
    (out / "stale-file").write_text("x")
    build(ckpt, "q0f32", output=out, log=None)
    assert not (out / "stale-file").exists() and (out / "lib.so").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out"]


@pytest.fixture()
def dist_copy(tmp_path, tiny_dist):
    return shutil.copytree(tiny_dist, tmp_path / "dist")


def test_corrupt_shard_is_named(dist_copy):
    shard = dist_copy / "params_shard_0.bin"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ParamsError, match=r"params_shard_0.bin: md5 .* the shard is corrupt"):
        engine(dist_copy)


def test_truncated_shard_is_named(dist_copy):
    shard = dist_copy / "params_shard_0.bin"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(ParamsError, match=r"params_shard_0.bin: \d+ bytes, but tensor-cache.json says \d+"):
        engine(dist_copy)


def test_library_from_another_model_is_refused(dist_copy, builds):
    other = builds.dist("mha_untied", "q4f16_1")
    shutil.copy(other / "lib.so", dist_copy / "lib.so")
    with pytest.raises(ParamsError, match=r"lib.so does not belong to the params in .*: 'model' differs \(library: .*mha_untied.*; manifest.json: .*gqa_tied"):
        engine(dist_copy)


def test_params_that_disagree_with_the_manifest_are_refused(dist_copy):
    index = json.loads((dist_copy / "tensor-cache.json").read_text())
    record = index["records"][0]["records"][0]
    record["shape"] = [record["shape"][0] + 1, *record["shape"][1:]]
    (dist_copy / "tensor-cache.json").write_text(json.dumps(index))
    with pytest.raises(ParamsError, match=rf"param {record['name']} is .*, the manifest says"):
        engine(dist_copy)


def test_wrong_device_is_refused(tiny_dist):
    with pytest.raises(ParamsError, match=r"built for target cpu:generic \(device 'cpu'\), cannot run on device 'cuda'"):
        type(engine(tiny_dist))(tiny_dist, device="cuda")


def test_token_ids_outside_the_vocabulary_are_refused(tiny_dist):
    eng = engine(tiny_dist)  # gqa_tied: vocabulary of 100
    with pytest.raises(ValueError, match=r"token id 100 is outside the vocabulary \(0..99\)"):
        eng.prefill([1, 2, 100])
    with pytest.raises(ValueError, match="token id -1 is outside"):
        eng.decode(-1)
    assert eng.length == 0 and eng.prefill([1, 99]).shape == (100,)  # nothing was appended; valid ids still run
