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
@_user_errors
def build(model_dir, quantization, target, output, context_window, prefill_chunk, dump_ir):
    """Compile MODEL_DIR (a Hugging Face checkpoint folder) for one target."""
    from .compiler.build import build as run_build

    run_build(model_dir, quantization, target, output, context_window, prefill_chunk, dump_ir, log=click.echo)


@main.command()
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("dist_dir", type=click.Path(exists=True, file_okay=False))
@_user_errors
def convert(model_dir, dist_dir):
    """Convert MODEL_DIR's weights into the built folder DIST_DIR (needs no TVM compiler)."""
    from .compiler.convert import replace_params

    stats = replace_params(model_dir, dist_dir, log=click.echo)
    click.echo(f"converted weights into {dist_dir}: {stats.summary()}")
