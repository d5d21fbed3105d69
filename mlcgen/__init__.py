"""mlcgen: compile Llama-family LLMs with TVM Relax into a library + quantized weights, and run them.

Subpackages: mlcgen.models (model families), mlcgen.compiler (quantization, passes, build),
mlcgen.targets (cpu, ...), mlcgen.runtime (needs only the TVM runtime).
"""

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy, so that `import mlcgen` (and the CLI's start) does not load TVM.
    if name in ("ChatModule", "ChatConfig"):
        from .runtime import chat_module

        return getattr(chat_module, name)
    if name == "GenerationConfig":
        from .runtime.sampling import GenerationConfig

        return GenerationConfig
    raise AttributeError(f"module 'mlcgen' has no attribute {name!r}")
