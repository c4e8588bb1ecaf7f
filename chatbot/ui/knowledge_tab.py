"""The Knowledge tab: the indexed documents, upload, delete, re-sync and live sync status."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr
from gradio.utils import get_upload_folder

from chatbot.knowledge.documents import DocumentError, check_uploaded, delete_document, save_upload
from chatbot.knowledge.loaders import LOADERS

if TYPE_CHECKING:
    from chatbot.app.service import Chatbot

COLUMNS = ["Document", "Type", "Pages", "Chunks", "Last indexed", "Error"]


def _when(timestamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp)) if timestamp else "—"


def document_rows(bot: Chatbot) -> list[list]:
    """One row per file the last sync saw, errors included."""
    return [
        [r.path, Path(r.path).suffix.lstrip(".").lower(), r.pages or "", r.chunks, _when(r.indexed_at), r.error or ""]
        for r in bot.knowledge.files().values()
    ]


def status_markdown(bot: Chatbot) -> str:
    """Watcher state, the running sync's progress, and the last sync's result."""
    status = bot.status()
    activity = status.sync
    lines = []
    if status.watcher == "off":
        lines.append("**Watcher:** off (use *Re-sync* after changing files)")
    else:
        error = f" · error: {status.watcher_error}" if status.watcher_error else ""
        lines.append(f"**Watcher:** {status.watcher} · {status.watcher_syncs} syncs{error}")
    if activity.running:
        share = f" {activity.done}/{activity.total}" if activity.total else ""
        lines.append(f"**Sync running:** {activity.stage}{share}")
    report = activity.last_report
    if report is not None:
        lines.append(
            f"**Last sync:** {len(report.added)} added, {len(report.updated)} updated, {len(report.deleted)} deleted, "
            f"{report.chunks_added} chunks written in {report.seconds:.1f} s"
        )
        if report.rebuilt:
            lines.append(f"**Re-indexed every file:** {report.rebuilt}")
    if activity.last_error:
        lines.append(f"**Last sync failed:** {activity.last_error}")
    lines.append(f"**Index:** {status.documents} documents, {status.chunks} chunks, synced {_when(status.last_sync)}")
    return "  \n".join(lines)


def build_knowledge_tab(bot: Chatbot) -> None:
    """Lay out the tab inside the current Blocks."""
    root = bot.settings.knowledge_dir
    status = gr.Markdown(status_markdown(bot), elem_id="kb-status")
    table = gr.Dataframe(
        value=document_rows(bot), headers=COLUMNS, interactive=False, elem_id="kb-table", wrap=True, max_height=380
    )
    with gr.Row():
        upload = gr.File(
            label=f"Add documents ({', '.join(sorted(LOADERS))})",
            file_count="multiple",
            file_types=sorted(LOADERS),
            elem_id="kb-upload",
            scale=3,
        )
        with gr.Column(scale=2):
            folder = gr.Textbox(label="Into sub-folder (optional)", placeholder="e.g. finance", elem_id="kb-folder")
            resync = gr.Button("Re-sync now", elem_id="kb-resync")
    with gr.Row():
        doomed = gr.Dropdown(
            choices=[row[0] for row in document_rows(bot)], label="Document", scale=3, elem_id="kb-doc"
        )
        delete = gr.Button("Delete from the knowledge folder", variant="stop", scale=1, elem_id="kb-delete")
    message = gr.Markdown(elem_id="kb-message")
    timer = gr.Timer(2.0)

    def refreshed(note: str = "") -> tuple:
        rows = document_rows(bot)
        return status_markdown(bot), rows, gr.Dropdown(choices=[row[0] for row in rows], value=None), note

    def sync_and_refresh(note: list[str]) -> tuple:
        try:
            report = bot.sync()  # the same path as a file dropped on disk; the watcher's sync then finds nothing
            note.extend(f"⚠️ `{path}`: {reason}" for path, reason in sorted(report.errors.items()))
        except Exception as exc:
            note.append(f"⚠️ sync failed: {exc}")
        return refreshed("  \n".join(note))

    def add(files: list[str] | None, subfolder: str) -> tuple:
        note: list[str] = []
        uploads = Path(get_upload_folder())
        for file in files or []:
            path = Path(file)
            try:
                source = check_uploaded(path, uploads)
                saved = save_upload(root, source, path.name, subfolder, int(bot.settings.max_upload_mb * 1_000_000))
                note.append(f"added `{saved}`")
            except (DocumentError, OSError) as exc:
                note.append(f"⚠️ {exc}")
        return (*sync_and_refresh(note), None)

    def remove(relative: str | None) -> tuple:
        if not relative:
            return refreshed("Choose a document first.")
        try:
            delete_document(root, relative)
        except (DocumentError, OSError) as exc:
            return refreshed(f"⚠️ {exc}")
        return sync_and_refresh([f"deleted `{relative}`"])

    outputs = [status, table, doomed, message]
    upload.upload(add, [upload, folder], [*outputs, upload], api_name=False)
    delete.click(remove, doomed, outputs, api_name=False)
    resync.click(lambda: sync_and_refresh([]), outputs=outputs, api_name=False)
    timer.tick(lambda: status_markdown(bot), outputs=status, api_name=False, show_progress="hidden")
