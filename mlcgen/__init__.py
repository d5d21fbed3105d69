"""mlcgen: compile Llama-family LLMs with TVM Relax into a library + quantized weights, and run them.

Subpackages: mlcgen.models (model families), mlcgen.compiler (quantization, passes, build),
mlcgen.targets (cpu, ...), mlcgen.runtime (needs only the TVM runtime).
"""

__version__ = "0.1.0"
