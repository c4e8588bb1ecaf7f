"""Saved conversations and the users' feedback on answers (SQLite or the shared database, per owner)."""

from chatbot.chats.records import (
    ChatStoreError,
    ConversationInfo,
    ConversationNotFoundError,
    Feedback,
    FeedbackRecord,
    SavedTurn,
    source_changes,
)
from chatbot.chats.store import ChatStore, open_chats

__all__ = [
    "ChatStore",
    "ChatStoreError",
    "ConversationInfo",
    "ConversationNotFoundError",
    "Feedback",
    "FeedbackRecord",
    "SavedTurn",
    "open_chats",
    "source_changes",
]
