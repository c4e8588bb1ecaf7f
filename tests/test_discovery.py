"""How a command finds the running server of its data dir, and ignores an announcement it cannot trust."""

import subprocess
import sys

from chatbot.server.discovery import (
    SERVER_FILE,
    ServerRecord,
    local_url,
    read_record,
    remove_record,
    running_server,
    write_record,
)


def test_a_wildcard_bind_is_reached_on_loopback():
    assert local_url("0.0.0.0", 7860) == "http://127.0.0.1:7860"
    assert local_url("::", 7860) == "http://[::1]:7860"
    assert local_url("[::1]", 80) == "http://[::1]:80"
    assert local_url("192.168.1.5", 8000) == "http://192.168.1.5:8000"


def test_an_announcement_of_a_dead_process_or_an_unreadable_file_is_ignored(tmp_path):
    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    write_record(tmp_path, ServerRecord("http://127.0.0.1:9", int(exited.stdout), "ab" * 8))
    assert read_record(tmp_path) is not None and running_server(tmp_path) is None
    (tmp_path / SERVER_FILE).write_text("{not json")
    assert read_record(tmp_path) is None and running_server(tmp_path) is None


def test_a_live_process_that_does_not_answer_as_that_instance_is_ignored(tmp_path):
    import os

    write_record(tmp_path, ServerRecord("http://127.0.0.1:9", os.getpid(), "ab" * 8))  # alive, nothing listens
    assert running_server(tmp_path) is None


def test_a_server_removes_only_its_own_announcement(tmp_path):
    mine, newer = ServerRecord("http://127.0.0.1:1", 1, "a" * 16), ServerRecord("http://127.0.0.1:2", 2, "b" * 16)
    write_record(tmp_path, mine)
    write_record(tmp_path, newer)  # another server of the data dir started since
    remove_record(tmp_path, mine)
    assert read_record(tmp_path) == newer
    remove_record(tmp_path, newer)
    assert not (tmp_path / SERVER_FILE).exists()
