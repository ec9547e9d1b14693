"""Issuing and managing tokens: one set of flows, a sync and an async manager.

The flows (:class:`ManagerFlows`) hold every rule: policy at issue time,
ownership, rotation with grace, reuse detection, invalidation after each
write (store first, then caches). ``TokenManager`` and ``AsyncTokenManager``
only run them through a driver.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from pat_middleware.core.events import Event, emit
from pat_middleware.core.flow import Flow, perform
from pat_middleware.core.hashing import Hasher
from pat_middleware.core.models import NewToken, TokenRecord, from_timestamp
from pat_middleware.core.oversight import OversightFlows
from pat_middleware.core.policy import Policy, check_user_id
from pat_middleware.core.query import STATE_FILTERS, StateFilter, in_state
from pat_middleware.core.resources import normalize_resources, within
from pat_middleware.core.tokens import generate, is_key_id
from pat_middleware.core.verifier import Verifier
from pat_middleware.errors import PolicyViolation, TokenNotFound, TokenRevoked
from pat_middleware.stores.base import Store

if TYPE_CHECKING:
    from pat_middleware.core.drivers import AsyncDriver, SyncDriver

__all__ = ["AsyncTokenManager", "ManagerFlows", "NoticeHook", "NoticeReport", "TokenManager"]

logger = logging.getLogger("pat_middleware")

P = ParamSpec("P")
T = TypeVar("T")
_UNSET: Any = object()


class ManagerFlows(OversightFlows):
    """The management rules as flows (see :mod:`pat_middleware.core.verifier`);
    administration, the sweep, notices and the log come from :class:`OversightFlows`."""

    def __init__(self, verifier: Verifier, policy: Policy) -> None:
        self.verifier = verifier
        self.policy = policy

    def _now(self) -> datetime:
        return from_timestamp(self.verifier.clock())

    def _emit(self, kind: Any, record: TokenRecord, at: datetime, **details: Any) -> None:
        emit(self.verifier.on_event, Event(kind, at, record.id, record.user_id, details=details))

    def _owned(self, token_id: str, user_id: str | None) -> Flow[TokenRecord]:
        if not is_key_id(token_id):  # never a store call for what cannot be an id
            raise TokenNotFound(str(token_id))
        record = yield from self.verifier.store_call(Store.get, token_id)
        if record is None or (user_id is not None and record.user_id != user_id):
            raise TokenNotFound(token_id)
        return record

    def _live(self, token_id: str, user_id: str | None, at: datetime) -> Flow[TokenRecord]:
        record = yield from self._owned(token_id, user_id)
        if record.revoked_at is not None and record.revoked_at <= at:
            raise TokenRevoked(token_id)
        return record

    def _new_record(
        self,
        user_id: str,
        name: str,
        scopes: tuple[str, ...],
        expires_at: datetime | None,
        description: str,
        allowed_cidrs: tuple[str, ...],
        resources: tuple[str, ...] | None,
        now: datetime,
        **lineage: Any,
    ) -> Flow[tuple[str, TokenRecord]]:
        plaintext, parts = generate(self.verifier.prefix)
        verifier_hash = yield from perform(Hasher.hash, parts.secret)
        record = TokenRecord(
            id=parts.key_id,
            user_id=user_id,
            name=name,
            hash=verifier_hash,
            scopes=scopes,
            description=description,
            created_at=now,
            expires_at=expires_at,
            allowed_cidrs=allowed_cidrs,
            resources=resources,
            **lineage,
        )
        return plaintext, record

    def create(
        self,
        user_id: str,
        name: str,
        scopes: Iterable[str] | str = (),
        *,
        expires_in: timedelta | None = None,
        expires_at: datetime | None = None,
        never_expires: bool = False,
        description: str = "",
        allowed_cidrs: Iterable[str] | None = None,
        resources: Iterable[str] | None = None,
    ) -> Flow[NewToken]:
        """Mint a token. The plaintext is in the returned ``NewToken`` only.

        ``resources``: ``None`` for every resource the user can reach, or the
        resource ids (``acme/web``, ``acme/*``) the token is limited to, within
        ``Policy.allowed_resources``."""
        user_id = check_user_id(user_id)
        now = self._now()
        policy = self.policy
        name = policy.name(name)
        checked_scopes = policy.scopes(user_id, scopes)
        expiry = policy.expiry(now, expires_in, expires_at, never_expires)
        description = policy.description(description)
        cidrs = policy.cidrs(allowed_cidrs)
        checked_resources = policy.resources(user_id, resources)
        existing = yield from self.verifier.store_call(Store.list_user, user_id)
        policy.room_for_another(sum(r.is_active(now, policy.revoke_unused_after) for r in existing))
        plaintext, record = yield from self._new_record(
            user_id, name, checked_scopes, expiry, description, cidrs, checked_resources, now
        )
        yield from self.verifier.store_call(Store.insert, record)
        self._emit("created", record, now)
        return NewToken(plaintext, record)

    def get(self, token_id: str, user_id: str | None = None) -> Flow[TokenRecord]:
        """The record (``TokenNotFound`` if missing or, with ``user_id``, not theirs)."""
        return (yield from self._owned(token_id, user_id))

    def list(self, user_id: str, state: StateFilter = "active") -> Flow[builtins.list[TokenRecord]]:
        """A user's tokens, oldest first, filtered by state (``"all"``, ``"inactive"``...)."""
        user_id = check_user_id(user_id)
        now = self._now()
        if state not in STATE_FILTERS:
            raise PolicyViolation(f"unknown state filter {state!r}", "state")
        records = yield from self.verifier.store_call(Store.list_user, user_id)
        unused_after = self.policy.revoke_unused_after
        return [r for r in records if in_state(r, state, now, unused_after)]

    def rename(self, token_id: str, name: str, user_id: str | None = None) -> Flow[TokenRecord]:
        """Give a live token a new name (unique among the user's live tokens)."""
        return (yield from self.update(token_id, user_id=user_id, name=name))

    def update(
        self,
        token_id: str,
        *,
        user_id: str | None = None,
        name: str = _UNSET,
        description: str = _UNSET,
        expires_in: timedelta | None = None,
        expires_at: datetime | None = None,
        never_expires: bool = False,
        allowed_cidrs: Iterable[str] | None = _UNSET,
        resources: Iterable[str] | None = _UNSET,
    ) -> Flow[TokenRecord]:
        """Change an unrevoked token's name, description, expiry, allowed networks
        or resources.

        Every change is checked first and then written at once: one refused
        change leaves the token as it was. An expired token cannot be given a
        new expiry (rotate it, or create a new one), and ``max_lifetime``
        counts from the token's creation. Narrowing the resources is always
        allowed; any other new resources must be within ``Policy.allowed_resources``
        (who may widen a token through the API: :func:`~pat_middleware.management.bodies.check_handing_out`).
        """
        policy = self.policy
        checked: dict[str, Any] = {}  # what does not depend on the record, checked before any I/O
        if name is not _UNSET:
            checked["name"] = policy.name(name)
        if description is not _UNSET:
            checked["description"] = policy.description(description)
        if allowed_cidrs is not _UNSET:
            checked["allowed_cidrs"] = policy.cidrs(allowed_cidrs)
        new_expiry = expires_in is not None or expires_at is not None or never_expires
        wanted: tuple[str, ...] | None = None
        if resources is not _UNSET:
            try:
                wanted = normalize_resources(resources)
            except (ValueError, TypeError) as exc:
                raise PolicyViolation(str(exc), "resources") from None

        def changes_for(record: TokenRecord, now: datetime) -> dict[str, Any]:
            changes = dict(checked)
            if resources is not _UNSET and wanted != record.resources:
                narrowing = within(record.resources, wanted)
                changes["resources"] = wanted if narrowing else policy.resources(record.user_id, wanted)
            if new_expiry:
                if record.state(now) == "expired":
                    raise PolicyViolation(
                        "an expired token cannot be extended: rotate it or create a new one", "expires_at"
                    )
                changes["expires_at"] = policy.expiry(
                    now, expires_in, expires_at, never_expires, issued_at=record.created_at
                )
            return changes

        return (yield from self._change(token_id, user_id, changes_for))

    def _change(
        self,
        token_id: str,
        user_id: str | None,
        changes_for: Callable[[TokenRecord, datetime], dict[str, Any]],
    ) -> Flow[TokenRecord]:
        """Write the changes to a live token in one store update; emit ``renamed``
        (only the name changed) or ``updated``."""
        now = self._now()
        record = yield from self._live(token_id, user_id, now)
        changes = changes_for(record, now)
        if not changes:
            return record
        updated = yield from self.verifier.store_call(Store.update, token_id, changes)
        if updated is None:  # revoked between our read and the write
            raise TokenRevoked(token_id)
        yield from self.verifier.invalidate_flow([token_id])
        kind = "renamed" if changes.keys() == {"name"} else "updated"
        self._emit(kind, updated, now, fields=sorted(changes))
        return updated

    def revoke(self, token_id: str, user_id: str | None = None, *, actor: str | None = None) -> Flow[TokenRecord]:
        """Revoke a token now (idempotent). Returns the record as it is afterwards.
        ``actor`` (``admin:<id>``) names an administrator revoking someone's token:
        the events say so, and an ``admin_action`` is logged.

        Tokens this one replaced and that are still inside a rotation grace
        period are revoked with it, in the same atomic store operation: the
        credential they stand for is withdrawn. Revoking an already revoked
        token again still ends any grace its predecessors hold (the repair
        after an earlier revoke that crashed half-way in an older version).
        """
        now = self._now()
        record = yield from self._owned(token_id, user_id)
        revoked = yield from self.verifier.store_call(Store.revoke, token_id, now)
        # Invalidate even when it was revoked already: revoking again re-sends
        # an invalidation that an earlier, failed publish may have lost.
        yield from self.verifier.invalidate_flow(list(dict.fromkeys([token_id, *revoked])))
        reason = None if actor is None else "admin"
        for revoked_id in revoked:
            emit(self.verifier.on_event, Event("revoked", now, revoked_id, record.user_id, reason, actor=actor))
        if actor is not None:
            self._admin_event(now, actor, "revoke", token_id=token_id, revoked=revoked)
        return record.evolve(revoked_at=now) if token_id in revoked else record

    def revoke_all(self, user_id: str) -> Flow[builtins.list[str]]:
        """Revoke every token of a user; returns the ids that were live."""
        user_id = check_user_id(user_id)
        now = self._now()
        ids = yield from self.verifier.store_call(Store.revoke_user, user_id, now)
        yield from self.verifier.invalidate_flow(ids)
        for token_id in ids:
            emit(self.verifier.on_event, Event("revoked", now, token_id, user_id))
        return ids

    def rotate(
        self,
        token_id: str,
        *,
        user_id: str | None = None,
        expires_in: timedelta | None = None,
        grace: timedelta | None = None,
    ) -> Flow[NewToken]:
        """A new secret with the same name, scopes, networks and resources; the old token is revoked
        now or after ``grace``. Rotating a revoked (or already rotated) token is
        treated as reuse of a leaked token: its whole family is revoked and
        ``TokenRevoked(family_revoked=True)`` is raised, as GitLab does.

        Without ``expires_in`` the new token lives as long as the old one did.
        """
        now = self._now()
        grace = self.policy.grace(grace)
        old = yield from self._owned(token_id, user_id)
        if old.revoked_at is None:
            if expires_in is None and old.expires_at is not None:
                expires_in = old.expires_at - old.created_at
            policy = self.policy
            keep_never = old.expires_at is None and not policy.require_expiry and policy.max_lifetime is None
            expiry = policy.expiry(now, expires_in, None, expires_in is None and keep_never)
            plaintext, new = yield from self._new_record(
                old.user_id,
                old.name,
                old.scopes,
                expiry,
                old.description,
                old.allowed_cidrs,
                old.resources,
                now,
                family_id=old.family_id,
                rotated_from=old.id,
            )
            rotated = yield from self.verifier.store_call(Store.rotate, old.id, new, now + grace)
            if rotated:
                yield from self.verifier.invalidate_flow([old.id])
                self._emit("rotated", old, now, new_id=new.id, grace_seconds=grace.total_seconds())
                return NewToken(plaintext, new)
        # Reuse: the token was already rotated or revoked (perhaps a moment ago, by a racing worker).
        ids = yield from self.verifier.store_call(Store.revoke_family, old.family_id, now)
        yield from self.verifier.invalidate_flow(ids)
        self._emit("family_revoked", old, now, revoked=ids)
        raise TokenRevoked(token_id, family_revoked=True)

    def expiring(self, within: timedelta, user_id: str | None = None) -> Flow[builtins.list[TokenRecord]]:
        """Active tokens that expire within ``within`` from now (for reminder e-mails);
        tokens already replaced by a rotation (``rotated``) or ``inactive`` are left out."""
        now = self._now()
        end = _shifted(now, within, "within")
        records = yield from self.verifier.store_call(Store.list_expiring, now, end)
        unused_after = self.policy.revoke_unused_after
        return [r for r in records if r.state(now, unused_after) == "active" and user_id in (None, r.user_id)]

    def purge(self, older_than: timedelta = timedelta(0), dry_run: bool = False) -> Flow[builtins.list[str]]:
        """Delete tokens revoked or expired more than ``older_than`` ago; returns their ids.

        With ``dry_run``, delete nothing: return the ids a purge would delete now
        (:meth:`Store.purgeable`), with no invalidation and no events.
        """
        now = self._now()
        before = _shifted(now, -older_than, "older_than")
        if dry_run:
            return (yield from self.verifier.store_call(Store.purgeable, before))
        ids = yield from self.verifier.store_call(Store.purge, before)
        yield from self.verifier.invalidate_flow(ids)
        for token_id in ids:
            emit(self.verifier.on_event, Event("purged", now, token_id))
        return ids


def _shifted(moment: datetime, delta: timedelta, field: str) -> datetime:
    """``moment + delta``, or ``PolicyViolation`` when that leaves the calendar."""
    try:
        return moment + delta
    except OverflowError:
        raise PolicyViolation(f"{field} is out of range", field) from None


#: ``hook(user_id, records)``: tell one owner about their tokens (a reminder e-mail).
NoticeHook = Callable[[str, "builtins.list[TokenRecord]"], object]


@dataclass(frozen=True, slots=True)
class NoticeReport:
    """What ``notify`` did: the token ids each owner was told about, and the owners
    whose hook call failed (their notices for this window are spent: at most once)."""

    notified: dict[str, builtins.list[str]]
    failed: builtins.list[str]


def _notified(owners: dict[str, builtins.list[TokenRecord]], hook: NoticeHook) -> NoticeReport:
    report = NoticeReport({}, [])
    for user_id, records in owners.items():
        try:
            hook(user_id, records)
        except Exception:
            logger.exception("notice hook failed for user %r (%d tokens)", user_id, len(records))
            report.failed.append(user_id)
            continue
        report.notified[user_id] = [r.id for r in records]
    return report


def _sync(flow: Callable[Concatenate[ManagerFlows, P], Flow[T]]) -> Callable[Concatenate[TokenManager, P], T]:
    def method(self: TokenManager, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._driver.run(flow(self._flows, *args, **kwargs))

    method.__name__, method.__doc__ = flow.__name__, flow.__doc__
    return method


def _async(
    flow: Callable[Concatenate[ManagerFlows, P], Flow[T]],
) -> Callable[Concatenate[AsyncTokenManager, P], Coroutine[Any, Any, T]]:
    async def method(self: AsyncTokenManager, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._driver.run(flow(self._flows, *args, **kwargs))

    method.__name__, method.__doc__ = flow.__name__, flow.__doc__
    return method


class TokenManager:
    """Manage tokens from sync code: ``auth.manager.create(...)`` and friends.

    Every method is :class:`ManagerFlows`' method of the same name, run by the
    sync driver.
    """

    def __init__(self, flows: ManagerFlows, driver: SyncDriver) -> None:
        self._flows = flows
        self._driver = driver

    create = _sync(ManagerFlows.create)
    get = _sync(ManagerFlows.get)
    list = _sync(ManagerFlows.list)
    rename = _sync(ManagerFlows.rename)
    update = _sync(ManagerFlows.update)
    revoke = _sync(ManagerFlows.revoke)
    revoke_all = _sync(ManagerFlows.revoke_all)
    rotate = _sync(ManagerFlows.rotate)
    expiring = _sync(ManagerFlows.expiring)
    purge = _sync(ManagerFlows.purge)
    search = _sync(ManagerFlows.search)
    revoke_matching = _sync(ManagerFlows.revoke_matching)
    sweep = _sync(ManagerFlows.sweep)
    claim_expiry_notices = _sync(ManagerFlows.claim_expiry_notices)

    security_log = _sync(ManagerFlows.security_log)

    def notify(self, within: timedelta, hook: NoticeHook) -> NoticeReport:
        """Call ``hook(user_id, records)`` once per owner with their active tokens
        expiring within ``within`` that no earlier call gave (at most once per
        token, window and expiry: a daily cron job sends no duplicates). A hook
        that raises loses that owner's notices for this window (at most once), is
        logged and reported in ``failed``; the other owners are still told."""
        owners = self._driver.run(self._flows.claim_expiry_notices(within))
        return _notified(owners, hook)


class AsyncTokenManager:
    """Manage tokens from async code: ``await auth.async_manager.create(...)``.

    Same methods, same rules as :class:`TokenManager`.
    """

    def __init__(self, flows: ManagerFlows, driver: AsyncDriver) -> None:
        self._flows = flows
        self._driver = driver

    create = _async(ManagerFlows.create)
    get = _async(ManagerFlows.get)
    list = _async(ManagerFlows.list)
    rename = _async(ManagerFlows.rename)
    update = _async(ManagerFlows.update)
    revoke = _async(ManagerFlows.revoke)
    revoke_all = _async(ManagerFlows.revoke_all)
    rotate = _async(ManagerFlows.rotate)
    expiring = _async(ManagerFlows.expiring)
    purge = _async(ManagerFlows.purge)
    search = _async(ManagerFlows.search)
    revoke_matching = _async(ManagerFlows.revoke_matching)
    sweep = _async(ManagerFlows.sweep)
    claim_expiry_notices = _async(ManagerFlows.claim_expiry_notices)

    security_log = _async(ManagerFlows.security_log)

    async def notify(self, within: timedelta, hook: NoticeHook) -> NoticeReport:
        """:meth:`TokenManager.notify` for async code (the hook runs in a worker thread)."""
        owners = await self._driver.run(self._flows.claim_expiry_notices(within))
        return await asyncio.to_thread(_notified, owners, hook)
