"""Saved conversations and the users' feedback on answers (SQLite, per owner)."""

from chatbot.chats.store import (
    ChatStore,
    ChatStoreError,
    ConversationInfo,
    ConversationNotFoundError,
    Feedback,
    FeedbackRecord,
    SavedTurn,
    source_changes,
)

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
