"""A running server fed hostile files: no 5xx, other requests answered meanwhile, its memory back."""

import json
import shutil
import threading
import time
import zipfile

import httpx
import psutil

from tests.conftest import REPO
from tests.servers import server_process

HOSTILE = ["bomb.docx", "tiny-objects.json", "deep.json", "broken.pdf"]  # refused by name; wide.xlsx is read


def _rewrite(path, member: str, data: bytes) -> None:
    """Replace one member of a zip-based Office file (the rest stays valid)."""
    with zipfile.ZipFile(path) as source:
        parts = {name: source.read(name) for name in source.namelist()}
    parts[member] = data
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for name, content in parts.items():
            target.writestr(name, content)


def _hostile_set(folder) -> None:
    import docx
    import openpyxl

    docx.Document().save(folder / "bomb.docx")  # a valid document whose one paragraph inflates to 300 MB
    body = b"a" * 300_000_000
    _rewrite(
        folder / "bomb.docx",
        "word/document.xml",
        b'<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body><w:p><w:r><w:t>'
        + body
        + b"</w:t></w:r></w:p></w:body></w:document>",
    )
    with (folder / "tiny-objects.json").open("w") as handle:  # gigabytes once parsed
        handle.write("[" + ",".join(['{"a":1}'] * 4_000_000) + "]")
    (folder / "deep.json").write_text("[" * 200_000 + "]" * 200_000)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 4000 + b"\n%%EOF")
    book = openpyxl.Workbook()
    book.active.append(["sku", "price"])
    book.active.append(["A-1", 9.5])
    book.save(folder / "wide.xlsx")  # a real sheet that declares a million rows by 16,384 columns
    with zipfile.ZipFile(folder / "wide.xlsx") as source:
        sheet = source.read("xl/worksheets/sheet1.xml")
    _rewrite(folder / "wide.xlsx", "xl/worksheets/sheet1.xml", sheet.replace(b'ref="A1:B2"', b'ref="A1:XFD1048576"'))


def test_hostile_files_cost_the_server_no_5xx_no_pause_and_no_memory(tmp_path):
    shutil.copytree(REPO / "knowledge", tmp_path / "knowledge")
    (tmp_path / "adapters").mkdir()
    settings = {"max_file_chars": "100000000", "load_memory_mb": "768", "max_unzipped_mb": "400"}
    with server_process(tmp_path, tmp_path / "knowledge", tmp_path / "adapters", **settings) as (url, process):
        server = psutil.Process(process.pid)
        answered = httpx.post(
            url + "/v1/chat/completions",
            json={"model": "base", "messages": [{"role": "user", "content": "How do I refresh the knowledge base?"}]},
            timeout=120,
        )
        assert answered.status_code == 200
        before = server.memory_info().rss
        statuses: list[int] = []
        slowest = [0.0]
        stop = threading.Event()

        def poll() -> None:
            with httpx.Client(timeout=30) as client:
                while not stop.is_set():
                    started = time.monotonic()
                    statuses.append(client.get(url + "/health").status_code)
                    slowest[0] = max(slowest[0], time.monotonic() - started)
                    time.sleep(0.2)

        poller = threading.Thread(target=poll)
        poller.start()
        try:
            _hostile_set(tmp_path / "knowledge")
            log = next(tmp_path.glob("serve-*.log"))
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                refused = [name for name in HOSTILE if f"not indexed: {name}" in log.read_text()]
                if len(refused) == len(HOSTILE):
                    break
                time.sleep(1)
            assert sorted(refused) == sorted(HOSTILE), log.read_text()[-3000:]
        finally:
            stop.set()
            poller.join()
        after = server.memory_info().rss
        assert statuses and all(status == 200 for status in statuses), statuses
        assert slowest[0] < 5.0, f"/health took {slowest[0]:.1f} s while the files were read"
        assert after - before < 100 * 2**20, f"the server grew by {(after - before) / 2**20:.0f} MB"
        assert httpx.get(url + "/health", timeout=30).json()["documents"] == 6  # the guide's 5 and the sheet
        models = httpx.get(url + "/v1/models", timeout=30)
        assert models.status_code == 200 and json.loads(models.text)["data"]
