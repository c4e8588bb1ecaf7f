"""Generation engines: continuous batching on transformers and on onnxruntime (``onnx``)."""
