"""The Knowledge tab: the indexed documents as they are now, upload, trash and restore, re-sync, live sync status."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import gradio as gr
from gradio.utils import get_upload_folder

from chatbot.knowledge.documents import DocumentError, check_uploaded, save_upload
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


def trash_choices(bot: Chatbot) -> list[tuple[str, str]]:
    """(label, id) of every file in the trash, newest first."""
    return [(entry.label, entry.id) for entry in bot.trash.entries()]


def _signature(bot: Chatbot) -> str:
    """Changes whenever the table or one of the lists would (a sync, a trashed or restored file)."""
    files = bot.knowledge.files()
    rows = sorted((r.path, r.chunks, r.indexed_at, r.error) for r in files.values())
    return repr((rows, [entry.id for entry in bot.trash.entries()]))


def build_knowledge_tab(bot: Chatbot) -> tuple[Callable[[], tuple], list]:
    """Lay out the tab inside the current Blocks; returns the page-load refresh, wired by the caller."""
    root = bot.settings.knowledge_dir
    status = gr.Markdown(status_markdown(bot), elem_id="kb-status")
    table = gr.Dataframe(headers=COLUMNS, interactive=False, elem_id="kb-table", wrap=True, max_height=380)
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
        doomed = gr.Dropdown(choices=[], value=None, label="Document", scale=3, elem_id="kb-doc")
        delete = gr.Button("Move to the trash…", variant="stop", scale=1, elem_id="kb-delete")
    with gr.Group(visible=False, elem_id="kb-confirm") as confirm_box:
        confirm_text = gr.Markdown(elem_id="kb-confirm-text")
        with gr.Row():
            confirm = gr.Button("Yes, move it to the trash", variant="stop", elem_id="kb-confirm-delete")
            cancel = gr.Button("Cancel", elem_id="kb-cancel-delete")
    message = gr.Markdown(elem_id="kb-message")
    with gr.Accordion("Trash: deleted and replaced documents", open=False, elem_id="kb-trash-box"):
        gr.Markdown(
            "Files moved here left the index; restore one to put it back in the knowledge folder "
            "(never over a file of the same name) and the index."
        )
        with gr.Row():
            trashed = gr.Dropdown(choices=[], value=None, label="In the trash", scale=3, elem_id="kb-trash")
            restore = gr.Button("Restore", scale=1, elem_id="kb-restore")
            empty = gr.Button("Empty the trash…", variant="stop", scale=1, elem_id="kb-empty")
        with gr.Group(visible=False, elem_id="kb-confirm-empty-box") as empty_box:
            empty_text = gr.Markdown()
            with gr.Row():
                empty_yes = gr.Button("Yes, delete them for good", variant="stop", elem_id="kb-confirm-empty")
                empty_no = gr.Button("Cancel", elem_id="kb-cancel-empty")
    pending = gr.State(None)  # the document the confirmation names
    seen = gr.State("")  # the signature of what the table and lists show
    timer = gr.Timer(2.0)

    def lists(document: str | None = None, trash_id: str | None = None) -> tuple:
        """The table and both lists as they are now, keeping a choice that is still there."""
        rows = document_rows(bot)
        names = [row[0] for row in rows]
        trash = trash_choices(bot)
        return (
            rows,
            gr.Dropdown(choices=names, value=document if document in names else None),
            gr.Dropdown(choices=trash, value=trash_id if trash_id in {i for _, i in trash} else None),
            _signature(bot),
        )

    def refreshed(note: str = "") -> tuple:
        return (status_markdown(bot), *lists(), note, gr.Group(visible=False), gr.Group(visible=False))

    def sync_and_refresh(note: list[str], mine: set[str] | None = None) -> tuple:
        """Sync now; report the errors of ``mine`` only (the files this action touched), all when None."""
        try:
            report = bot.sync()  # the same path as a file dropped on disk; the watcher's sync then finds nothing
            errors = sorted(report.errors.items())
            note.extend(f"⚠️ `{path}`: {reason}" for path, reason in errors if mine is None or path in mine)
        except Exception as exc:
            note.append(f"⚠️ sync failed: {exc}")
        return refreshed("  \n".join(note))

    def add(files: list[str] | None, subfolder: str) -> tuple:
        note: list[str] = []
        saved_paths: set[str] = set()
        uploads = Path(get_upload_folder())

        def keep_old(relative: str) -> None:
            bot.trash.put(relative, "replaced by an upload")
            note.append(f"the previous `{relative}` is in the trash")

        for file in files or []:
            path = Path(file)
            try:
                source = check_uploaded(path, uploads)
                limit = int(bot.settings.max_upload_mb * 1_000_000)
                saved = save_upload(root, source, path.name, subfolder, limit, keep_old=keep_old)
                saved_paths.add(saved)
                note.append(f"added `{saved}`")
            except (DocumentError, OSError) as exc:
                note.append(f"⚠️ {exc}")
        return (*sync_and_refresh(note, saved_paths), None)

    def ask_to_delete(relative: str | None) -> tuple:
        if not relative:
            return None, gr.Group(visible=False), "", "Choose a document first."
        question = (
            f"Move **{relative}** to the trash? It leaves the knowledge folder and the index now; "
            "you can restore it from the trash below until the trash is emptied."
        )
        return relative, gr.Group(visible=True), question, ""

    def remove(relative: str | None) -> tuple:
        if not relative:
            return refreshed("Choose a document first.")
        try:
            bot.trash.put(relative, "deleted")
        except (DocumentError, OSError) as exc:
            return refreshed(f"⚠️ {exc}")
        return sync_and_refresh([f"moved `{relative}` to the trash (restore it below)"], {relative})

    def put_back(trash_id: str | None) -> tuple:
        if not trash_id:
            return refreshed("Choose a file in the trash first.")
        try:
            restored = bot.trash.restore(trash_id)
        except (DocumentError, OSError) as exc:
            return refreshed(f"⚠️ {exc}")
        return sync_and_refresh([f"restored `{restored}`"], {restored})

    def ask_to_empty() -> tuple:
        count = len(bot.trash.entries())
        if not count:
            return gr.Group(visible=False), "", "The trash is empty."
        question = f"Delete the **{count}** file(s) in the trash for good? This cannot be undone."
        return gr.Group(visible=True), question, ""

    def empty_trash() -> tuple:
        return refreshed(f"deleted {bot.trash.empty()} file(s) from the trash for good")

    def tick(shown: str, document: str | None, trash_id: str | None) -> tuple:
        if _signature(bot) == shown:
            return status_markdown(bot), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        return status_markdown(bot), *lists(document, trash_id)

    page = [status, table, doomed, trashed, seen, message, confirm_box, empty_box]
    upload.upload(add, [upload, folder], [*page, upload], api_name=False)
    delete.click(ask_to_delete, doomed, [pending, confirm_box, confirm_text, message], api_name=False)
    confirm.click(remove, pending, page, api_name=False)
    cancel.click(lambda: (None, gr.Group(visible=False), ""), outputs=[pending, confirm_box, message], api_name=False)
    restore.click(put_back, trashed, page, api_name=False)
    empty.click(ask_to_empty, outputs=[empty_box, empty_text, message], api_name=False)
    empty_yes.click(empty_trash, outputs=page, api_name=False)
    empty_no.click(lambda: gr.Group(visible=False), outputs=empty_box, api_name=False)
    resync.click(lambda: sync_and_refresh([]), outputs=page, api_name=False)
    timer.tick(
        tick, [seen, doomed, trashed], [status, table, doomed, trashed, seen], api_name=False, show_progress="hidden"
    )
    return lambda: (status_markdown(bot), *lists()), [status, table, doomed, trashed, seen]
