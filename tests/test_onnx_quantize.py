"""The converter's own int8/int4 pass writes the builder's quantised weights, one weight at a time."""

import numpy as np
import onnx
import pytest

from chatbot.engine.onnx import convert
from chatbot.engine.onnx.quantize import quantize_matmuls
from chatbot.engine.onnx.runtime import Decoder
from chatbot.models.base import load_base_model
from tests.models import tiny_model
from tests.test_onnx_engine import decoder_logits

pytest.importorskip("onnxruntime_genai")


def _initializers(path):
    return {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer}


@pytest.mark.parametrize(("architecture", "precision"), [("llama", "int8"), ("phi3", "int4")])
def test_streamed_quantisation_equals_the_builders_own(architecture, precision, embedded_tokenizer, tmp_path):
    """Llama here ties its output layer to the embeddings; Phi-3 has fused projections."""
    folder = tiny_model(architecture, tmp_path / architecture, embedded_tokenizer)
    skeleton = load_base_model(str(folder), tmp_path, "cpu", "float32", weights=False)
    targets = convert.linear_targets(skeleton.model)
    convert._stand_in_adapter(tmp_path / "stand-in", folder, targets)
    builders, ours = tmp_path / "builder", tmp_path / "ours"
    convert._run_builder(folder, tmp_path / "stand-in", builders, precision, tmp_path)
    convert._run_builder(folder, tmp_path / "stand-in", tmp_path / "fp32", "fp32", tmp_path)
    ours.mkdir()
    bits = int(precision[3:])
    count = quantize_matmuls(tmp_path / "fp32" / "model.onnx", ours / "model.onnx", bits, convert._LORA_NODE)
    assert count == 2 * 7 + 1  # q, k, v, o, gate, up, down of both blocks (Phi-3's split), the output layer

    theirs, mine = _initializers(builders / "model.onnx"), _initializers(ours / "model.onnx")
    quantised = [name for name in theirs if name.endswith(("_Q4", "_Q8", "_scales")) and "lora_" not in name]
    assert len(quantised) == 2 * count
    assert all(np.array_equal(theirs[name], mine[name]) for name in quantised)
    if architecture == "llama":  # the embeddings: the builder's untied copy, ours from the same matrix
        assert np.array_equal(theirs["model.embed_tokens.weight"], mine["lm_head.MatMul.weight_transposed"])

    (ours / "genai_config.json").write_bytes((builders / "genai_config.json").read_bytes())
    for path in (builders, ours):  # the same logits from both, as the app runs them
        convert._free_lora_weights(path / "model.onnx")
    ids = embedded_tokenizer("The balance sheet of a company shows its assets", add_special_tokens=False)["input_ids"]
    logits = [decoder_logits(Decoder(path, threads=2, max_rows=2), [(ids, "base")])[0] for path in (builders, ours)]
    assert np.array_equal(logits[0], logits[1])
