"""The `mlcgen` command: a thin click layer over the Python API."""

from __future__ import annotations

import functools

import click

from .errors import MlcgenError


def _user_errors(command):
    """Errors the user can act on print as one message, without a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except MlcgenError as e:
            raise click.ClickException(str(e)) from None

    return wrapper


@click.group()
@click.version_option(package_name="mlcgen")
def main():
    """Compile Llama-family LLMs into a library + quantized weights, and run them."""


@main.command()
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--quantization", "-q", default="q4f16_1", show_default=True, help="q0f32, q0f16, q4f16_1 or q4f32_1")
@click.option("--target", "-t", default="cpu", show_default=True, help="compilation target, e.g. cpu")
@click.option("--output", "-o", type=click.Path(file_okay=False), help="output folder [default: dist/<model>-<quant>-<target>]")
@click.option("--context-window", type=int, help="max tokens in the KV cache [default: the model's max_position_embeddings]")
@click.option("--prefill-chunk", type=int, help="max tokens per prefill call [default: 2048]")
@click.option("--dump-ir", type=click.Path(file_okay=False), help="write the IR before and after each pipeline phase here")
@click.option("--int8-activations", is_flag=True,
              help="cuda, rocm, vulkan: decode matmuls after each RMSNorm on int8 activations (integer dot products; faster "
                   "on Vulkan, less exact: see the README)")
@_user_errors
def build(model_dir, quantization, target, output, context_window, prefill_chunk, dump_ir, int8_activations):
    """Compile MODEL_DIR (a Hugging Face checkpoint folder) for one target."""
    from .compiler.build import build as run_build

    run_build(model_dir, quantization, target, output, context_window, prefill_chunk, dump_ir, log=click.echo,
              int8_activations=int8_activations)


@main.command()
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("dist_dir", type=click.Path(exists=True, file_okay=False))
@_user_errors
def convert(model_dir, dist_dir):
    """Convert MODEL_DIR's weights into the built folder DIST_DIR (needs no TVM compiler)."""
    from .compiler.convert import replace_params

    stats = replace_params(model_dir, dist_dir, log=click.echo)
    click.echo(f"converted weights into {dist_dir}: {stats.summary()}")


DEVICES = ["auto", "cpu", "cuda", "rocm", "vulkan"]


@main.command()
@click.argument("model", required=False, type=click.Path(exists=True, file_okay=False))
@click.option("--device", default="auto", show_default=True, type=click.Choice(DEVICES))
@click.option("--template", help="conversation template [default: the model's own, else raw]")
@click.option("--system", help="system message")
@_user_errors
def chat(model, device, template, system):
    """Chat with a built model folder MODEL (default: the shipped demo model, on the CPU)."""
    from . import chat as chat_loop
    from .runtime.chat_module import ChatConfig, ChatModule

    chat_loop.run(ChatModule(model, device, ChatConfig(conv_template=template, system_message=system)))


@main.command()
@click.argument("model", type=click.Path(exists=True, file_okay=False))
@click.option("--prompt-len", default=128, show_default=True, type=click.IntRange(min=1))
@click.option("--gen-len", default=128, show_default=True, type=click.IntRange(min=1))
@click.option("--repeat", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--device", default="auto", show_default=True, type=click.Choice(DEVICES))
@click.option("--random-weights", is_flag=True, help="generate params of the right shapes instead of loading them")
@click.option("--sample", is_flag=True, help="decode as a sampling chat does (temperature 0.7, top-p 0.95, drawn on the device)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@_user_errors
def bench(model, prompt_len, gen_len, repeat, device, random_weights, sample, as_json):
    """Prefill and decode speed as llama-bench measures them (token ids in, no tokenizer)."""
    import json

    from .runtime.bench import bench_engine
    from .runtime.engine import Engine

    engine = Engine(model, device, random_weights=random_weights)
    result = bench_engine(engine, prompt_len, gen_len, repeat, sample)
    result["random_weights"] = random_weights
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"{result['model']} {result['quantization']} on {result['device']}:")
        click.echo(f"  pp{prompt_len}: {result['prefill_tok_s']:.1f} ± {result['prefill_tok_s_std']:.1f} tok/s "
                   f"({result['prefill_entry']})")
        click.echo(f"  tg{gen_len}: {result['decode_tok_s']:.1f} ± {result['decode_tok_s_std']:.1f} tok/s ({result['decode']})")


@main.command("vulkan-info")
@_user_errors
def vulkan_info():
    """Build (once) the Vulkan device plugin and print what the Vulkan adapter offers."""
    from .runtime import vulkan

    facts = vulkan.adapter()
    click.echo(f"plugin: {vulkan.plugin_path()}")
    for key, value in facts.items():
        if key != "error":
            click.echo(f"{key}: {value}")
    click.echo(f"runs vulkan:nvidia (subgroup) libraries: {vulkan.subgroups_are(facts, 32)}")


@main.command()
@click.argument("dist_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@_user_errors
def inspect(dist_dir, as_json):
    """Per-kernel resources and instruction mix of an AMD (ROCm) build, and a decode projection."""
    import json

    from .targets.amdgpu_inspect import format_report, inspect as inspect_build

    report = inspect_build(dist_dir)
    click.echo(json.dumps(report) if as_json else format_report(report))
