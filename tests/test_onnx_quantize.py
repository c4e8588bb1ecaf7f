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


@pytest.mark.parametrize("architecture", ["llama", "phi3"])
def test_a_large_embedding_table_is_stored_at_int8_and_reads_the_same_words(architecture, embedded_tokenizer, tmp_path):
    """Llama's table is its tied output layer's matrix, Phi-3's its own: both become int8 rows."""
    folder = tiny_model(architecture, tmp_path / architecture, embedded_tokenizer)
    skeleton = load_base_model(str(folder), tmp_path, "cpu", "float32", weights=False)
    convert._stand_in_adapter(tmp_path / "stand-in", folder, convert.linear_targets(skeleton.model))
    convert._run_builder(folder, tmp_path / "stand-in", tmp_path / "fp32", "fp32", tmp_path)
    table = skeleton.model.get_input_embeddings().weight.numel() * 4
    runs = {}
    for name, threshold in (("kept", table + 1), ("int8", table)):  # the threshold is inclusive
        (tmp_path / name).mkdir()
        quantize_matmuls(
            tmp_path / "fp32" / "model.onnx", tmp_path / name / "model.onnx", 8, convert._LORA_NODE, threshold
        )
        (tmp_path / name / "genai_config.json").write_bytes((tmp_path / "fp32" / "genai_config.json").read_bytes())
        convert._free_lora_weights(tmp_path / name / "model.onnx")
        runs[name] = tmp_path / name
    graphs = {name: onnx.load(str(path / "model.onnx"), load_external_data=False).graph for name, path in runs.items()}
    shape = list(skeleton.model.get_input_embeddings().weight.shape)
    for name, graph in graphs.items():
        quantized = [node for node in graph.node if node.op_type == "GatherBlockQuantized"]
        tables = [i.name for i in graph.initializer if list(i.dims) == shape and i.data_type == onnx.TensorProto.FLOAT]
        assert (len(quantized), len(tables)) == ((1, 0) if name == "int8" else (0, 1)), (name, tables)
    sizes = {name: (path / "model.onnx.data").stat().st_size for name, path in runs.items()}
    assert sizes["kept"] - sizes["int8"] > 0.7 * table  # fp32 rows -> one byte per weight and a scale per 32

    ids = embedded_tokenizer("The balance sheet of a company shows its assets", add_special_tokens=False)["input_ids"]
    logits = {
        name: decoder_logits(Decoder(path, threads=2, max_rows=2), [(ids, "base")])[0] for name, path in runs.items()
    }
    assert not np.array_equal(logits["kept"], logits["int8"])  # the rows did change ...
    assert np.abs(logits["kept"] - logits["int8"]).max() < 0.02 * np.abs(logits["kept"]).max()  # ... by int8's rounding
    assert np.argmax(logits["kept"]) == np.argmax(logits["int8"])
