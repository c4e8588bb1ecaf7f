"""Saved conversations and the users' feedback on answers (SQLite, per owner)."""

from chatbot.chats.records import (
    ChatStoreError,
    ConversationInfo,
    ConversationNotFoundError,
    Feedback,
    FeedbackRecord,
    SavedTurn,
    source_changes,
)
from chatbot.chats.store import ChatStore

__all__ = [
    "ChatStore",
    "ChatStoreError",
    "ConversationInfo",
    "ConversationNotFoundError",
    "Feedback",
    "FeedbackRecord",
    "SavedTurn",
    "source_changes",
]
