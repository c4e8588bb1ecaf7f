"""Imports run one way: server/ui -> app -> rag/backends -> engine/adapters/knowledge/models -> database/config."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "chatbot"
LAYERS = {
    "config": 0,
    "vocabulary": 0,
    "text": 0,
    "digest": 0,
    "files": 0,
    "qa": 0,
    "database": 0,  # SQL engines, migrations and leases: every store's foundation
    "models": 1,
    "knowledge": 1,
    "engine": 1,
    "adapters": 1,
    "chats": 2,  # saved conversations hold answers and turns (rag types)
    "rag": 2,
    "backends": 2,
    "app": 3,
    "training": 4,
    "evaluation": 4,
    "server": 5,
    "ui": 5,
    "cli": 6,
}


def part(dotted: str) -> str:
    """The top-level part of ``chatbot.<part>...``."""
    return dotted.split(".")[1]


def imports(path: Path) -> set[str]:
    """Every ``chatbot.*`` module ``path`` imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("chatbot."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("chatbot."))
    return found


def test_every_part_of_the_package_has_a_layer():
    parts = {p.stem for p in PACKAGE.iterdir() if p.name != "__init__.py" and (p.suffix == ".py" or p.is_dir())}
    assert parts - {"__pycache__"} == set(LAYERS)


def test_no_import_runs_back_up():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for module in imports(path):
            if LAYERS[part(module)] > LAYERS[own]:
                upward.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert upward == []


def test_the_check_sees_an_upward_import(tmp_path):
    module = tmp_path / "engine.py"
    module.write_text("def f():\n    from chatbot.app.service import Chatbot\n")
    assert LAYERS[part(next(iter(imports(module))))] > LAYERS["engine"]


def test_the_chain_the_remote_backend_and_the_shared_words_do_not_load_torch():
    import subprocess
    import sys

    modules = ["chatbot.vocabulary", "chatbot.rag.chain", "chatbot.backends.remote", "chatbot.adapters.domains"]
    code = f"import sys\nfor m in {modules!r}:\n    __import__(m)\nprint('torch' in sys.modules, 'peft' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]
