"""The command line, run in-process so the loaded models are shared with other tests."""

import json

import pytest
from typer.testing import CliRunner

from chatbot.cli import app


@pytest.fixture
def cli_env(monkeypatch, make_settings, user_guide):
    settings = make_settings()
    for key in ("knowledge_dir", "adapters_dir", "data_dir", "cache_dir", "max_new_tokens"):
        monkeypatch.setenv(f"CHATBOT_{key.upper()}", str(getattr(settings, key)))
    return settings


def run(*args: str, input: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), input=input)
    return result.exit_code, result.output


def test_ask_json_contract_cites_a_file_of_the_knowledge_folder(cli_env):
    code, output = run("ask", "How do I refresh the knowledge base?", "--json")
    assert code == 0, output
    data = json.loads(output)
    assert set(data) >= {"answer", "adapter", "sources", "retrieved", "timings"}
    assert data["adapter"] == "base" and data["answer"]
    assert data["sources"], "at least one citation"
    for block in data["sources"] + data["retrieved"]:
        assert set(block) >= {"n", "source", "page", "snippet", "score"}
        assert (cli_env.knowledge_dir / block["source"]).is_file()  # relative to the knowledge folder
        assert isinstance(block["n"], int) and isinstance(block["score"], float)
    assert data["sources"][0]["source"] == "user-guide/02-knowledge-base.md"
    cited = {block["n"] for block in data["sources"]}
    assert cited <= {block["n"] for block in data["retrieved"]}
    assert all(f"[{n}]" in data["answer"] for n in cited)
    assert {"retrieval_s", "generation_s", "total_s"} <= set(data["timings"])


def test_ask_prints_the_final_answer_not_the_streamed_draft(cli_env):
    question = "How do I refresh the knowledge base?"
    data = json.loads(run("ask", question, "--json")[1])
    code, output = run("ask", question)
    assert code == 0 and output.startswith(data["answer"] + "\n")
    first = data["sources"][0]
    assert f"[{first['n']}] {first['source']}, {first['section']} (score" in output.split("Sources:")[1]


def test_ask_shows_a_withheld_answer_as_declined(cli_env, monkeypatch):
    from chatbot.rag.chain import QUOTE_OPENING

    monkeypatch.setenv("CHATBOT_ANSWERABILITY_THRESHOLD", "0.999")  # every answer the model gives is withheld
    question = "How do I refresh the knowledge base?"
    data = json.loads(run("ask", question, "--json")[1])
    assert data["answer"].startswith(QUOTE_OPENING) and data["withheld"] and data["quoted"]
    assert data["evidence"][0]["text"] in data["answer"]  # the passage that answers, quoted with its [n]
    code, output = run("ask", question)
    assert code == 0 and output.startswith(data["answer"] + "\n")
    assert "Quoted instead: the passages found look unlikely to answer it (estimated " in output
    assert data["decline_reason"].startswith("the passages are unlikely")  # the machine's reason stays
    assert "Passages considered:" in output and "Sources:" not in output
    assert data["withheld"][:40] not in output  # the model's text is not shown as an answer


def test_ask_names_the_block_of_a_nearest_passage_quote(cli_env, monkeypatch):
    from chatbot.rag.chain import NEAR_OPENING

    monkeypatch.setenv("CHATBOT_MIN_RELEVANCE", "0.95")  # no chunk reaches it: the nearest passage is quoted
    code, output = run("ask", "How do I refresh the knowledge base?")
    assert code == 0 and output.startswith(NEAR_OPENING)
    assert "the nearest one is quoted" in output and "Passages considered:" not in output
    block = output.split("Quoted from:")[1].strip().splitlines()[0]
    assert block.startswith("[1] ") and ".md" in block and "(score" in block


def test_the_terminal_view_returns_the_chains_answer(cli_env):
    from chatbot.app.service import Chatbot
    from chatbot.cli.answer_text import final_answer
    from chatbot.config import load_settings

    bot = Chatbot(load_settings())
    shown = final_answer(bot.stream("Say hello.", use_retrieval=False, max_new_tokens=16), terminal=True)
    assert shown.answer == bot.ask("Say hello.", use_retrieval=False, max_new_tokens=16).answer


def test_ask_no_retrieval_json_has_no_sources(cli_env):
    code, output = run("ask", "Say hello.", "--no-retrieval", "--json")
    data = json.loads(output)
    assert code == 0 and data["sources"] == [] and data["retrieved"] == [] and not data["used_retrieval"]


def test_ask_stop_temperature_and_seed_reach_the_model(cli_env):
    question = ("Describe the sea in two sentences.", "--no-retrieval", "--json", "--max-new-tokens", "40")
    text = json.loads(run("ask", *question)[1])["answer"]
    word = text.split()[len(text.split()) // 2]
    code, output = run("ask", *question, "--stop", word, "--stop", "never-written")
    assert code == 0 and json.loads(output)["answer"] == text[: text.index(word)].strip()
    sampled = [run("ask", *question, "--temperature", "1.2", "--seed", str(seed))[1] for seed in (5, 5, 6)]
    answers = [json.loads(output)["answer"] for output in sampled]
    assert answers[0] == answers[1] and answers[0] != text and answers[2] != answers[0]
    code, output = run("ask", "Say hello.", "--no-retrieval", "--temperature", "-1")
    assert code == 1 and "temperature must be" in output


def test_sync_json_then_noop(cli_env):
    code, output = run("sync", "--json")
    assert code == 0 and len(json.loads(output)["added"]) == 5
    code, output = run("sync", "--json")
    report = json.loads(output)
    assert code == 0 and report["chunks_added"] == 0 and report["unchanged"] == 5


def test_sync_says_when_a_new_chunk_size_re_indexed_every_file(cli_env, monkeypatch):
    assert run("sync")[0] == 0
    monkeypatch.setenv("CHATBOT_CHUNK_SIZE", "100")
    code, output = run("info")  # says what the next sync will do, and does not do it
    assert (
        code == 0
        and "the next sync reads every file again: the index's recipe changed: chunk_size 200 -> 100" in output
    )
    code, output = run("sync")
    assert code == 0 and "re-indexed every file: the index's recipe changed: chunk_size 200 -> 100" in output
    assert "5 updated" in output
    code, output = run("sync", "--json")
    assert code == 0 and json.loads(output)["rebuilt"] is None and json.loads(output)["unchanged"] == 5
    assert json.loads(run("info", "--json")[1])["knowledge"]["pending"] is None


def test_sync_exit_code_and_report_name_bad_files(cli_env):
    (cli_env.knowledge_dir / "junk.txt").write_bytes(bytes(range(256)) * 8)
    code, output = run("sync")
    assert code == 1
    assert "junk.txt: binary content" in output


def test_info_reports_models_paths_and_counts(cli_env):
    run("sync")
    code, output = run("info", "--json")
    data = json.loads(output)
    assert code == 0
    assert data["base_model"]["name"] == "SmolLM2-135M-Instruct"
    assert data["knowledge"]["documents"] == 5 and data["knowledge"]["chunks"] > 5
    assert data["adapters"][0]["name"] == "base"


def test_info_names_the_engine_serving_and_whether_batches_are_exact(cli_env, monkeypatch):
    code, output = run("info", "--load")
    assert code == 0 and "cpu, onnx engine (int8)" in output and "batching         fast:" in output
    data = json.loads(run("info", "--load", "--json")[1])["base_model"]
    assert (data["engine"], data["precision"], data["exact_batches"]) == ("onnx", "int8", False)
    monkeypatch.setenv("CHATBOT_ENGINE", "torch")
    monkeypatch.setenv("CHATBOT_EXACT_BATCHES", "true")
    code, output = run("info", "--load")
    assert code == 0 and ", torch engine (" in output
    assert "batching         exact: an answer never depends on the requests decoded beside it" in output


def test_info_and_adapters_list_answer_from_the_files_without_loading_a_model(
    cli_env, lora_folder, tmp_path, monkeypatch
):
    import shutil
    import subprocess
    import sys

    run("sync")
    adapters = tmp_path / "adapters"
    monkeypatch.setenv("CHATBOT_ADAPTERS_DIR", str(adapters))
    shutil.copytree(lora_folder, adapters / "demo")
    shutil.copytree(lora_folder, adapters / "broken")
    (adapters / "broken" / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 3}')
    script = (
        "import json, sys\n"
        "from chatbot.cli import app\n"
        "for args in (['info', '--json'], ['adapters', 'list', '--json']):\n"
        "    try:\n"
        "        app(args)\n"
        "    except SystemExit as exit:\n"
        "        assert not exit.code, exit.code\n"
        "print(json.dumps(sorted(m for m in ('torch', 'transformers', 'chromadb') if m in sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    info_text, _, rest = done.stdout.partition("\n}\n")
    info = json.loads(info_text + "\n}")
    rows_text, _, imported = rest.rpartition("\n]\n")
    rows = {row["name"]: row for row in json.loads(rows_text + "\n]")}
    assert json.loads(imported) == []  # nothing heavy was imported, so no model was loaded
    assert info["base_model"]["name"] == "SmolLM2-135M-Instruct" and info["base_model"]["engine"] is None
    assert info["served_by"] is None
    assert info["knowledge"]["documents"] == 5 and info["knowledge"]["chunks"] > 5
    assert [a["name"] for a in info["adapters"]] == ["base", "broken", "demo"]
    assert rows["demo"]["status"] == "ready" and rows["demo"]["rank"] == 8
    assert rows["broken"]["status"] == "refused" and "shape" in rows["broken"]["error"]


def test_trash_and_restore_bring_a_document_back_into_the_index(cli_env):
    from chatbot.knowledge.trash import Trash

    assert run("sync")[0] == 0
    guide = cli_env.knowledge_dir / "user-guide" / "02-knowledge-base.md"
    text = guide.read_text()
    assert run("trash")[1].strip() == "the trash is empty"
    entry = Trash(cli_env.data_dir / "trash", cli_env.knowledge_dir).put("user-guide/02-knowledge-base.md")
    assert "1 deleted" in run("sync")[1]
    code, output = run("trash")
    assert code == 0 and entry.id in output and "user-guide/02-knowledge-base.md (deleted" in output
    code, output = run("restore", "no/such.md")
    assert code == 1 and "nothing in the trash is 'no/such.md'" in output
    code, output = run("restore", "user-guide/02-knowledge-base.md")
    assert code == 0 and "restored user-guide/02-knowledge-base.md" in output and "1 added" in output
    assert guide.read_text() == text and json.loads(run("trash", "--json")[1]) == []
    Trash(cli_env.data_dir / "trash", cli_env.knowledge_dir).put("user-guide/02-knowledge-base.md")
    assert run("trash", "--empty", input="n\n")[0] == 1  # asked, and refused: nothing deleted
    assert len(json.loads(run("trash", "--json")[1])) == 1
    code, output = run("trash", "--empty", "--yes")
    assert code == 0 and "deleted 1 file(s) for good" in output and json.loads(run("trash", "--json")[1]) == []


def test_bad_configuration_exits_2_naming_the_key(cli_env, monkeypatch):
    monkeypatch.setenv("CHATBOT_TOP_K", "-3")
    code, output = run("ask", "anything")
    assert code == 2 and "top_k" in output


def test_unknown_adapter_exits_1_with_message(cli_env):
    code, output = run("ask", "anything", "--adapter", "nope", "--no-retrieval")
    assert code == 1 and "unknown adapter 'nope'" in output
