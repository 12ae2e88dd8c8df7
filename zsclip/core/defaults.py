"""Defaults shared by the API and the CLI, in a module that imports nothing heavy, so that `zsclip --help` and
usage errors answer without loading torch."""

DEFAULT_MODEL = "ViT-B-32:openai"
PRECISIONS = ("fp32", "bf16", "fp16")
FORMATS = ("table", "csv", "json", "jsonl")
BACKENDS = ("torch", "onnx", "onnx-int8", "auto")  # where vectors are computed (zsclip.backends)
