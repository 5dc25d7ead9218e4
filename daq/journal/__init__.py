"""The local journal: durable, append-only, hash-chained SQLite; the record of origin.

- :mod:`daq.journal.journal`: :class:`Journal`, the writer with group commit.
- :mod:`daq.journal.feed`: committed readings fanned out to live consumers (bounded, gaps by id).
- :mod:`daq.journal.reader`: read-only queries (status, exports, forwarders).
- :mod:`daq.journal.verify`: re-check the hash chains and the append-only guards.
- :mod:`daq.journal.schema` and :mod:`daq.journal.chain`: the tables and the hash encoding.
"""

from daq.journal.feed import Feed, FeedSubscription, Gap
from daq.journal.journal import JOURNAL_FILE, Journal
from daq.journal.reader import JournalReader
from daq.journal.verify import VerifyReport, verify_journal

__all__ = [
    "JOURNAL_FILE",
    "Feed",
    "FeedSubscription",
    "Gap",
    "Journal",
    "JournalReader",
    "VerifyReport",
    "verify_journal",
]
