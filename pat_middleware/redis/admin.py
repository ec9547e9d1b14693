"""``RedisStore``'s administration: search across users, the security log, notices.

Pure, like :class:`~pat_middleware.stores.redis.StorePlans` (which inherits
:class:`AdminPlans`): one-round-trip operations are plans, the others
(:meth:`AdminPlans.search`, :meth:`~AdminPlans.read_log`,
:meth:`~AdminPlans.prune_log`) are :data:`~pat_middleware.redis.executor.Steps`,
generators of plans that the sync and the async store both drive. Keys (under
the store's prefix)::

    ids                 sorted set: every token id, score created_at (µs)
    act                 sorted set: every token id, score its last activity
                        (last_used_at, else created_at)
    indexed             "1" once ids and act hold every token (see below)
    log                 stream: the security log's entries, stream ids Redis's own
                        (arrival order: XREAD can tail it), the entry id a field
    log:all             sorted set, all scores 0: '<entry id>:<stream id>' of every
                        entry, so in entry id order (lexical)
    log:u:<user_id>     the same for the owner's entries
    log:t:<token_id>    the same for the token's entries
    nt:<token_id>:<key> a claimed notice: SET NX PXAT max(until, now + 1 day)
    nts                 sorted set: notice keys, score until (µs), for prune_log

``ids`` and ``act`` are written by the insert, rotate, touch and purge scripts.
Tokens an older release wrote are in neither: the first search finds them with
``SCAN`` (batches of 1000 keys, one indexing script per batch) and then sets
``indexed``.

Search answers with :func:`~pat_middleware.core.query.answer`'s rule
(:func:`~pat_middleware.core.query.matches`), over records read in the sort's
index order (``ids`` or ``act``) from the cursor, a batch (up to 1000 records)
per round trip, until a page is full; filters on the sort's own dimension
bound the stretch read. A user's search reads that user's tokens only.

The log is read from an index in entry id order (newest first from the
cursor, ``ZREVRANGEBYLEX``), each entry then fetched from the stream by its
stream id (``XRANGE id id``), a batch per round trip. Stream ids cannot be
made from entry ids: several processes flush batches that overlap in time,
and a stream only grows at its top. Pruning walks ``log:all`` from the
oldest id, checks each entry's ``at`` and deletes it (``XDEL``, ``ZREM``).
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from pat_middleware.core.audit import LogEntry, LogQuery, log_matches
from pat_middleware.core.models import TokenRecord
from pat_middleware.core.query import TokenQuery, after_cursor, answer, matches
from pat_middleware.redis.executor import Command, Plan, Script, Steps, lua
from pat_middleware.redis.records import decode_record, micros, moment, text

__all__ = ["BATCH", "AdminPlans"]

#: The most records or entries one round trip reads.
BATCH = 1000
#: An entry id's 14 first hex digits are its moment in µs (float rounding may take
#: one off): time bounds on ids are widened by this many µs, and log_matches decides.
_SLACK = 1000
_ENTRY_ID = re.compile(r"[0-9a-f]{22}")
_OPTIONAL = ("token_id", "user_id", "actor", "client_ip", "reason")


def _script(name: str) -> Script:
    return lua("store_common", name)


_SCAN = _script("store_scan")
_INDEX = _script("store_index")
_NOTICE = _script("store_notice")
_LOG_APPEND = _script("store_log_append")
_LOG_PAGE = _script("store_log_page")
_LOG_PRUNE = _script("store_log_prune")

#: A score bound: (µs, exclusive).
_Bound = tuple[int, bool]


def _first(replies: list[Any]) -> Any:
    return replies[0]


def _tighter(a: _Bound | None, b: _Bound | None, low: bool) -> _Bound | None:
    """The narrower of two lower (``low``) or upper bounds."""
    if a is None or b is None:
        return a or b
    if a[0] != b[0]:
        return max(a, b) if low else min(a, b)
    return (a[0], a[1] or b[1])


def _score(bound: _Bound | None, infinite: str) -> str:
    return infinite if bound is None else ("(" if bound[1] else "") + str(bound[0])


def _score_range(query: TokenQuery, by_created: bool) -> tuple[_Bound | None, _Bound | None]:
    """The scores of the sort's index that can hold answers (``matches`` still decides)."""

    def at(value: Any, exclusive: bool) -> _Bound | None:
        return None if value is None else (micros(value), exclusive)

    if by_created:
        low, high = at(query.created_after, True), at(query.created_before, True)
    else:  # activity is the last use when there is one: a bound on use bounds it
        low = at(query.last_used_after, True)
        high = _tighter(at(query.last_used_before, True), at(query.unused_since, False), low=False)
    if query.after is not None:
        if query.sort.startswith("-"):
            high = _tighter(high, (micros(query.after[0]), False), low=False)
        else:
            low = _tighter(low, (micros(query.after[0]), False), low=True)
    return low, high


def _encode_entry(entry: LogEntry) -> list[str]:
    fields = ["id", entry.id, "at", str(micros(entry.at)), "kind", entry.kind]
    for name in _OPTIONAL:
        value = getattr(entry, name)
        if value is not None:
            fields += [name, value]
    return [*fields, "details", json.dumps(entry.details, separators=(",", ":"))]


def _decode_entry(fields: Any) -> LogEntry | None:
    """An entry from a stream entry's fields (a dict, or a flat list from a script)."""
    if not isinstance(fields, dict):
        fields = dict(zip(fields[::2], fields[1::2], strict=True))
    if not fields:
        return None
    raw = {text(k): text(v) for k, v in fields.items()}
    optional = {name: raw.get(name) for name in _OPTIONAL}
    return LogEntry(raw["id"], moment(int(raw["at"])), raw["kind"], details=json.loads(raw["details"]), **optional)


class AdminPlans:
    """The administration operations of :class:`~pat_middleware.stores.redis.StorePlans`."""

    prefix: str

    def list_user(self, user_id: str) -> Plan[list[TokenRecord]]:
        """All of a user's records (defined by the store's plans)."""
        raise NotImplementedError

    def _call(self, script: Script, *args: str | int) -> Command:
        return script.call((), (self.prefix, *args))

    def _plan(self, script: Script, *args: str | int) -> Plan[Any]:
        return Plan((self._call(script, *args),), _first, (script,))

    # -- search ----------------------------------------------------------------

    def search(self, query: TokenQuery) -> Steps[list[TokenRecord]]:
        """Every user's records answering ``query``: read in the sort's index order,
        from the cursor, a batch per round trip, until the page is full."""
        if query.user_id is not None:
            return answer((yield self.list_user(query.user_id)), query)
        by_created, desc = query.sort.endswith("created_at"), query.sort.startswith("-")
        index = self.prefix + ("ids" if by_created else "act")
        low, high = _score_range(query, by_created)
        hits: dict[str, TokenRecord] = {}
        # A cursor's own record comes first again (its score is the bound): read one more.
        offset, count = 0, min(max(query.limit, 100) + (query.after is not None), BATCH)
        while True:
            args = (_score(low, "-inf"), _score(high, "+inf"), offset, count)
            batch = yield self._plan(_SCAN, index, "desc" if desc else "asc", *args)
            if isinstance(batch, bytes | str):  # 'unindexed'
                yield from self._build_indexes()
                continue
            for _, _, values in batch:
                record = decode_record(values)
                if record is not None and matches(record, query) and after_cursor(record, query):
                    hits.setdefault(record.id, record)
            if len(hits) >= query.limit or len(batch) < count:
                return answer(hits.values(), query)
            # Go on from the last score read, past the ids read at that score.
            scores = [round(float(text(score))) for _, score, _ in batch]
            edge = high if desc else low
            ties = len(scores) - next(i for i, s in enumerate(scores) if s == scores[-1])
            offset = offset + len(batch) if edge == (scores[-1], False) else ties
            if desc:
                high = (scores[-1], False)
            else:
                low = (scores[-1], False)
            count = min(count * 2, BATCH)

    def _build_indexes(self) -> Steps[None]:
        """Put every token in ``ids`` and ``act`` (tokens an older release wrote)."""
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", self.prefix) + "t:*"
        cursor = "0"
        while True:
            reply = yield Plan((("SCAN", cursor, "MATCH", pattern, "COUNT", BATCH),), _first)
            cursor = text(reply[0])
            ids = [text(key)[len(self.prefix) + 2 :] for key in reply[1]]
            if ids or cursor == "0":
                yield self._plan(_INDEX, "1" if cursor == "0" else "0", *ids)
            if cursor == "0":
                return

    # -- the security log ----------------------------------------------------------

    def append_log(self, entries: list[LogEntry]) -> Plan[None]:
        """Keep log entries (one script; ids kept already are ignored). Ids must be
        :func:`~pat_middleware.core.audit.entry_id`'s (22 hex digits)."""
        args: list[str] = []
        for entry in entries:
            if not _ENTRY_ID.fullmatch(entry.id):
                raise ValueError(f"a log entry id is 22 lowercase hex digits, not {entry.id!r}")
            fields = _encode_entry(entry)
            owner = "" if entry.user_id is None else f"{self.prefix}log:u:{entry.user_id}"
            token = "" if entry.token_id is None else f"{self.prefix}log:t:{entry.token_id}"
            args += [entry.id, owner, token, str(len(fields)), *fields]
        if not args:
            return Plan((), lambda replies: None)
        return Plan((self._call(_LOG_APPEND, len(entries), *args),), lambda replies: None, (_LOG_APPEND,))

    def read_log(self, query: LogQuery) -> Steps[list[LogEntry]]:
        """Entries answering ``query``, newest first, a batch per round trip from the
        token's index when the query names one, else the owner's, else the whole log's."""
        high = query.before
        if query.until is not None:
            until = f"{micros(query.until) + _SLACK:014x}"
            high = until if high is None else min(high, until)
        low = None if query.since is None else f"{max(micros(query.since) - _SLACK, 0):014x}"
        index = f"{self.prefix}log:all"
        if query.token_id is not None:
            index = f"{self.prefix}log:t:{query.token_id}"
        elif query.user_id is not None:
            index = f"{self.prefix}log:u:{query.user_id}"
        found: list[LogEntry] = []
        count = min(max(query.limit, 100), BATCH)
        while True:
            bounds = ("+" if high is None else "(" + high, "-" if low is None else "[" + low)
            batch = yield self._plan(_LOG_PAGE, index, *bounds, count)
            for _, fields in batch:
                entry = _decode_entry(fields)
                if entry is not None and log_matches(entry, query):
                    found.append(entry)
            if len(found) >= query.limit or len(batch) < count:
                return found[: query.limit]
            high = text(batch[-1][0])  # '<entry id>:<stream id>': go on below it
            count = min(count * 2, BATCH)

    def prune_log(self, before: datetime) -> Steps[int]:
        """Delete entries dated before ``before`` (oldest first, batches of 1000) and
        notices remembered until before it; return how many entries went."""
        cutoff = micros(before)
        start, total = "-", 0
        while True:
            reply = yield self._plan(_LOG_PRUNE, cutoff, start, f"{cutoff + _SLACK:014x}", BATCH)
            deleted, last, kept, notices_left = int(reply[0]), text(reply[1]), int(reply[2]), int(reply[3])
            total += deleted
            if kept and last:
                start = last
            if not last and not notices_left:
                return total

    def claim_notice(self, token_id: str, key: str, until: datetime) -> Plan[bool]:
        """``SET NX PXAT``: True the first time; the claim expires by itself after ``until``."""
        until_us = micros(until)
        until_ms = max(1, -(-until_us // 1000))
        plan = self._call(_NOTICE, f"nt:{token_id}:{key}", until_ms, until_us)
        return Plan((plan,), lambda replies: bool(int(replies[0])), (_NOTICE,))
