"""Export of the networks to ONNX (:mod:`attnmesh.export.onnx`) and INT8 quantization
(:mod:`attnmesh.eval.quantize`). Command line: ``python -m attnmesh.export --help``."""
