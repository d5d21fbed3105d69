"""The compiler: checkpoint reading, quantization, the Relax pipeline and `mlcgen build`."""
