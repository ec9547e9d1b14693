"""``DjangoStore``: the token store through Django's ORM, on any database Django supports.

The table is the app's model (:class:`~pat_middleware.django.models.Token`),
created by ``manage.py migrate``. Each operation that must be atomic runs in
one ``transaction.atomic`` block on the store's database alias, with
``SELECT ... FOR UPDATE`` where the database has it; the live-name rule is the
model's partial unique constraint. ``changed_at`` (the revocation feed's
stamp) comes from the database's clock.

Datetimes need ``USE_TZ = True`` (checked at start-up). On SQLite, give the
database ``"OPTIONS": {"transaction_mode": "IMMEDIATE"}`` (Django 5.1+) when
several threads or processes write: Django's default (``DEFERRED``) lets two
writers deadlock on the lock upgrade and fail with "database is locked".

``store.async_store`` is the :class:`~pat_middleware.stores.base.AsyncStore`
face: each call is the sync operation run through ``sync_to_async`` (Django's
way to reach the ORM from async code: one transaction, one thread).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.db import IntegrityError, connections, transaction
from django.db.models import Q, QuerySet
from django.db.models.functions import Now

from pat_middleware.core.audit import LogEntry, LogQuery
from pat_middleware.core.models import TokenRecord, utc
from pat_middleware.core.query import TokenQuery
from pat_middleware.django.models import Notice, SecurityLogEntry, Token
from pat_middleware.django.queries import LOG_FIELDS, entry_columns, log_entry, log_search, token_search
from pat_middleware.errors import NameTaken
from pat_middleware.stores._common import check_changes, merge_ips, normalize_record, record_from_row
from pat_middleware.stores.base import VALIDITY_FIELDS

__all__ = ["AsyncDjangoStore", "DjangoStore"]

P = ParamSpec("P")
T = TypeVar("T")

_FIELDS = (
    "id", "user_id", "name", "description", "scopes", "hash", "created_at", "expires_at", "last_used_at",
    "last_used_ips", "revoked_at", "family_id", "rotated_from", "allowed_cidrs", "resources",
)  # fmt: skip


class _Stamp(Now):
    """The database's clock, to the microsecond where it has one. On SQLite (milliseconds),
    written with six fraction digits as Django writes datetimes, so a stamp read back
    compares equal to itself (SQLite compares datetimes as text)."""

    def as_sqlite(self, compiler: Any, connection: Any, **extra_context: Any) -> Any:
        template = "STRFTIME('%%%%Y-%%%%m-%%%%d %%%%H:%%%%M:%%%%f', 'NOW') || '000'"
        return self.as_sql(compiler, connection, template=template, **extra_context)


def _columns(record: TokenRecord) -> dict[str, Any]:
    values = {field: getattr(record, field) for field in _FIELDS}
    for field in ("scopes", "last_used_ips", "allowed_cidrs"):
        values[field] = list(values[field])
    if record.resources is not None:
        values["resources"] = list(record.resources)
    return values


def _revocable(at: datetime) -> Q:
    return Q(revoked_at__isnull=True) | Q(revoked_at__gt=at)


class DjangoStore:
    """A :class:`~pat_middleware.stores.base.Store` over the app's ``Token`` model.

    :param using: the database alias (``settings.DATABASES``) holding the table.
    """

    def __init__(self, using: str = "default") -> None:
        self.using = using
        self._async_store: AsyncDjangoStore | None = None

    def __repr__(self) -> str:
        return f"DjangoStore(using={self.using!r})"

    @property
    def async_store(self) -> AsyncDjangoStore:
        """The async face of this store (``sync_to_async`` around each operation)."""
        if self._async_store is None:
            self._async_store = AsyncDjangoStore(self)
        return self._async_store

    # -- helpers ---------------------------------------------------------------
    def _rows(self) -> QuerySet[Token]:
        return Token._default_manager.using(self.using)

    def _locked(self, query: QuerySet[Token]) -> QuerySet[Token]:
        """``query`` with ``FOR UPDATE`` where the database supports it (SQLite locks the file)."""
        return query.select_for_update()

    def _records(self, query: QuerySet[Token]) -> list[TokenRecord]:
        return [record_from_row(row) for row in query.values(*_FIELDS)]

    def _insert(self, record: TokenRecord) -> None:
        """Insert in a savepoint; an integrity error becomes ``ValueError`` (the id) or ``NameTaken``."""
        try:
            with transaction.atomic(using=self.using):
                self._rows().create(**_columns(record))
        except IntegrityError:
            if self._rows().filter(pk=record.id).exists():
                raise ValueError(f"a token with id {record.id!r} already exists") from None
            raise NameTaken(record.name) from None

    def _revoke_ids(self, query: QuerySet[Token], at: datetime) -> list[str]:
        """Revoke the rows of ``query`` revocable at ``at``, locked first; their ids."""
        ids = list(self._locked(query.filter(_revocable(at))).values_list("id", flat=True))
        if ids:
            self._rows().filter(pk__in=ids).update(revoked_at=at, changed_at=_Stamp())
        return ids

    def _purge_query(self, before: datetime) -> QuerySet[Token]:
        """What ``purge`` deletes: revoked or expired at or before ``before`` (one predicate)."""
        return self._rows().filter(Q(revoked_at__lte=before) | Q(expires_at__lte=before))

    # -- Store protocol ------------------------------------------------------------
    def get(self, token_id: str) -> TokenRecord | None:
        """The record with that id, or ``None``."""
        found = self._records(self._rows().filter(pk=token_id))
        return found[0] if found else None

    def list_user(self, user_id: str) -> list[TokenRecord]:
        """All of a user's records, oldest first."""
        return self._records(self._rows().filter(user_id=user_id).order_by("created_at", "id"))

    def list_family(self, family_id: str) -> list[TokenRecord]:
        """All records of a rotation family, oldest first."""
        return self._records(self._rows().filter(family_id=family_id).order_by("created_at", "id"))

    def list_expiring(self, start: datetime, end: datetime) -> list[TokenRecord]:
        """Records with ``start < expires_at <= end`` not revoked at ``start``, soonest first."""
        start, end = utc(start), utc(end)
        query = self._rows().filter(_revocable(start), expires_at__gt=start, expires_at__lte=end)
        return self._records(query.order_by("expires_at", "id"))

    def insert(self, record: TokenRecord) -> None:
        """Add a record; ``NameTaken`` on a live-name clash, ValueError on a duplicate id."""
        self._insert(normalize_record(record))

    def update(self, token_id: str, changes: Mapping[str, Any]) -> TokenRecord | None:
        """Apply ``changes`` to a live record; ``None`` if unknown or not live."""
        clean = check_changes(changes)
        with transaction.atomic(using=self.using):
            if clean:
                values = {k: list(v) if isinstance(v, tuple) else v for k, v in clean.items()}
                if not VALIDITY_FIELDS.isdisjoint(clean):
                    values["changed_at"] = _Stamp()
                try:
                    with transaction.atomic(using=self.using):
                        count = self._rows().filter(pk=token_id, revoked_at__isnull=True).update(**values)
                except IntegrityError:
                    raise NameTaken(clean.get("name", "")) from None
                if count != 1:
                    return None
            record = self.get(token_id)
        return record if record is not None and record.revoked_at is None else None

    def changes_since(self, since: datetime) -> list[tuple[str, datetime]]:
        """``(id, changed_at)`` of records whose validity changed at or after ``since``."""
        rows = self._rows().filter(changed_at__gte=utc(since)).values_list("id", "changed_at")
        return [(token_id, utc(stamp)) for token_id, stamp in rows]

    def revoke(self, token_id: str, at: datetime) -> list[str]:
        """Revoke the record and its predecessors revocable at ``at``, in one transaction."""
        at = utc(at)
        with transaction.atomic(using=self.using):
            me = self._locked(self._rows().filter(pk=token_id)).values("family_id", "created_at", "rotated_from")
            first = next(iter(me), None)
            if first is None:
                return []
            chain, previous = {token_id}, first["rotated_from"]
            while previous is not None and previous not in chain:  # follow the links (see stores.base)
                chain.add(previous)
                previous = self._rows().filter(pk=previous).values_list("rotated_from", flat=True).first()
            lineage = Q(pk__in=chain) | Q(created_at__lt=first["created_at"])
            return self._revoke_ids(self._rows().filter(lineage, family_id=first["family_id"]), at)

    def revoke_family(self, family_id: str, at: datetime) -> list[str]:
        """Revoke the family's records revocable at ``at``; their ids."""
        with transaction.atomic(using=self.using):
            return self._revoke_ids(self._rows().filter(family_id=family_id), utc(at))

    def revoke_user(self, user_id: str, at: datetime) -> list[str]:
        """Revoke the user's records revocable at ``at``; their ids."""
        with transaction.atomic(using=self.using):
            return self._revoke_ids(self._rows().filter(user_id=user_id), utc(at))

    def rotate(self, old_id: str, new: TokenRecord, revoke_at: datetime) -> bool:
        """Revoke live ``old_id`` at ``revoke_at`` and insert ``new``, in one transaction."""
        new = normalize_record(new)
        with transaction.atomic(using=self.using):
            live = self._rows().filter(pk=old_id, revoked_at__isnull=True)
            if live.update(revoked_at=utc(revoke_at), changed_at=_Stamp()) != 1:
                return False
            self._insert(new)  # raises (and so rolls the revocation back) on a clash
        return True

    def touch(self, token_id: str, at: datetime, ip: str | None, keep_ips: int) -> bool:
        """Record a use at ``at`` from ``ip``; True when ``ip`` was not among the record's addresses."""
        with transaction.atomic(using=self.using):
            query = self._rows().filter(pk=token_id)
            found = self._locked(query).values_list("last_used_ips", flat=True).first()
            if found is None:
                return False
            current = tuple(found or ())
            query.update(last_used_at=utc(at), last_used_ips=list(merge_ips(current, ip, keep_ips)))
        return ip is not None and ip not in current

    def purge(self, before: datetime) -> list[str]:
        """Delete records revoked or expired at or before ``before``; their ids."""
        with transaction.atomic(using=self.using):
            ids = list(self._locked(self._purge_query(utc(before))).values_list("id", flat=True))
            if ids:
                self._rows().filter(pk__in=ids).delete()
        return ids

    def purgeable(self, before: datetime) -> list[str]:
        """The ids :meth:`purge` would delete now; deletes nothing."""
        return list(self._purge_query(utc(before)).values_list("id", flat=True))

    # -- administration and the security log ---------------------------------------
    def search(self, query: TokenQuery) -> list[TokenRecord]:
        """Every user's records answering ``query``, in its order (one indexed query)."""
        connection = connections[self.using]
        containment = connection.features.supports_json_field_contains
        return self._records(token_search(self._rows(), query, connection.vendor, containment))

    def _log(self) -> QuerySet[SecurityLogEntry]:
        return SecurityLogEntry._default_manager.using(self.using)

    def _notices(self) -> QuerySet[Notice]:
        return Notice._default_manager.using(self.using)

    def append_log(self, entries: list[LogEntry]) -> None:
        """Keep log entries; an id already kept is ignored."""
        if entries:
            rows = [SecurityLogEntry(**entry_columns(entry)) for entry in entries]
            self._log().bulk_create(rows, ignore_conflicts=True)

    def read_log(self, query: LogQuery) -> list[LogEntry]:
        """Entries answering ``query``, newest first."""
        return [log_entry(row) for row in log_search(self._log(), query).values(*LOG_FIELDS)]

    def prune_log(self, before: datetime) -> int:
        """Delete entries dated before ``before`` and notices kept until before it; the entries' count."""
        before = utc(before)
        with transaction.atomic(using=self.using):
            self._notices().filter(until__lt=before).delete()
            return self._log().filter(at__lt=before).delete()[0]

    def claim_notice(self, token_id: str, key: str, until: datetime) -> bool:
        """True the first time ``key`` is claimed for ``token_id`` (the unique constraint decides)."""
        try:
            with transaction.atomic(using=self.using):
                self._notices().create(token_id=token_id, key=key, until=utc(until))
        except IntegrityError:
            return False
        return True

    def close(self) -> None:
        """Nothing to release: Django owns the connections."""


def _in_thread(method: Callable[P, T]) -> Callable[P, Any]:
    """``method`` run by ``sync_to_async`` (thread-sensitive, as Django runs the ORM)."""
    return sync_to_async(method, thread_sensitive=True)


class AsyncDjangoStore:
    """The :class:`~pat_middleware.stores.base.AsyncStore` face of a :class:`DjangoStore`."""

    def __init__(self, store: DjangoStore) -> None:
        self.sync = store

    def __repr__(self) -> str:
        return f"AsyncDjangoStore(using={self.sync.using!r})"

    async def get(self, token_id: str) -> TokenRecord | None:
        """See :meth:`DjangoStore.get`."""
        result: TokenRecord | None = await _in_thread(self.sync.get)(token_id)
        return result

    async def list_user(self, user_id: str) -> list[TokenRecord]:
        """See :meth:`DjangoStore.list_user`."""
        result: list[TokenRecord] = await _in_thread(self.sync.list_user)(user_id)
        return result

    async def list_family(self, family_id: str) -> list[TokenRecord]:
        """See :meth:`DjangoStore.list_family`."""
        result: list[TokenRecord] = await _in_thread(self.sync.list_family)(family_id)
        return result

    async def list_expiring(self, start: datetime, end: datetime) -> list[TokenRecord]:
        """See :meth:`DjangoStore.list_expiring`."""
        result: list[TokenRecord] = await _in_thread(self.sync.list_expiring)(start, end)
        return result

    async def insert(self, record: TokenRecord) -> None:
        """See :meth:`DjangoStore.insert`."""
        await _in_thread(self.sync.insert)(record)

    async def update(self, token_id: str, changes: Mapping[str, Any]) -> TokenRecord | None:
        """See :meth:`DjangoStore.update`."""
        result: TokenRecord | None = await _in_thread(self.sync.update)(token_id, changes)
        return result

    async def changes_since(self, since: datetime) -> list[tuple[str, datetime]]:
        """See :meth:`DjangoStore.changes_since`."""
        result: list[tuple[str, datetime]] = await _in_thread(self.sync.changes_since)(since)
        return result

    async def revoke(self, token_id: str, at: datetime) -> list[str]:
        """See :meth:`DjangoStore.revoke`."""
        return await self._ids(self.sync.revoke, token_id, at)

    async def revoke_family(self, family_id: str, at: datetime) -> list[str]:
        """See :meth:`DjangoStore.revoke_family`."""
        return await self._ids(self.sync.revoke_family, family_id, at)

    async def revoke_user(self, user_id: str, at: datetime) -> list[str]:
        """See :meth:`DjangoStore.revoke_user`."""
        return await self._ids(self.sync.revoke_user, user_id, at)

    async def rotate(self, old_id: str, new: TokenRecord, revoke_at: datetime) -> bool:
        """See :meth:`DjangoStore.rotate`."""
        result: bool = await _in_thread(self.sync.rotate)(old_id, new, revoke_at)
        return result

    async def touch(self, token_id: str, at: datetime, ip: str | None, keep_ips: int) -> bool:
        """See :meth:`DjangoStore.touch`."""
        result: bool = await _in_thread(self.sync.touch)(token_id, at, ip, keep_ips)
        return result

    async def purge(self, before: datetime) -> list[str]:
        """See :meth:`DjangoStore.purge`."""
        return await self._ids(self.sync.purge, before)

    async def purgeable(self, before: datetime) -> list[str]:
        """See :meth:`DjangoStore.purgeable`."""
        return await self._ids(self.sync.purgeable, before)

    async def search(self, query: TokenQuery) -> list[TokenRecord]:
        """See :meth:`DjangoStore.search`."""
        result: list[TokenRecord] = await _in_thread(self.sync.search)(query)
        return result

    async def append_log(self, entries: list[LogEntry]) -> None:
        """See :meth:`DjangoStore.append_log`."""
        await _in_thread(self.sync.append_log)(entries)

    async def read_log(self, query: LogQuery) -> list[LogEntry]:
        """See :meth:`DjangoStore.read_log`."""
        result: list[LogEntry] = await _in_thread(self.sync.read_log)(query)
        return result

    async def prune_log(self, before: datetime) -> int:
        """See :meth:`DjangoStore.prune_log`."""
        result: int = await _in_thread(self.sync.prune_log)(before)
        return result

    async def claim_notice(self, token_id: str, key: str, until: datetime) -> bool:
        """See :meth:`DjangoStore.claim_notice`."""
        result: bool = await _in_thread(self.sync.claim_notice)(token_id, key, until)
        return result

    async def close(self) -> None:
        """Nothing to release: Django owns the connections."""

    async def _ids(self, method: Callable[..., Iterable[str]], *args: Any) -> list[str]:
        return list(await _in_thread(method)(*args))
