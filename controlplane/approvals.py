"""Risky tool calls held for a person's decision: filing them, deciding them, and running an
approved one exactly once.

A held call is identified by who asked (API key or member), the tool and the digest of its
raw arguments, so the raw arguments are never stored: the assistant calls again with the same
arguments, and that call runs if, and only if, it claims the approval (one conditional UPDATE:
whichever worker gets there first runs it, any other is told it already ran). Decisions are
conditional UPDATEs too, so two operators clicking at once record one decision.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from controlplane import audit
from controlplane.errors import InvalidInput
from controlplane.models import Approval

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Asker:
    """Who a held call is for: an API key or a member, in a tenant."""

    tenant_id: int
    api_key_id: int | None
    key_prefix: str
    membership_id: int | None
    person: str
    oauth_client: str


@dataclass(frozen=True)
class Gate:
    """What the pipeline does with a call that needs approval: `run` it (the approval was
    claimed for this call), or answer with the approval's state."""

    approval: Approval
    run: bool
    filed: bool = False


def _expiry(now: datetime) -> datetime:
    return now + timedelta(minutes=settings.APPROVAL_EXPIRY_MINUTES)


def _matching(asker: Asker, tool: str, digest: str) -> QuerySet[Approval]:
    return Approval.objects.filter(
        tenant_id=asker.tenant_id,
        api_key_id=asker.api_key_id,
        membership_id=asker.membership_id,
        tool=tool,
        arguments_digest=digest,
    ).order_by("-created_at", "-pk")


def claim(approval_id: int) -> bool:
    """Mark an approved call as run; True for exactly one caller."""
    now = timezone.now()
    return (
        Approval.objects.filter(pk=approval_id, status=Approval.Status.APPROVED).update(
            status=Approval.Status.EXECUTED, executed_at=now
        )
        == 1
    )


def gate(*, asker: Asker, tool: str, arguments: dict[str, Any]) -> Gate:
    """The approval this call waits for or runs under, filing one when there is none.
    Blocking (database)."""
    digest = audit.arguments_digest(arguments)
    now = timezone.now()
    latest = _matching(asker, tool, digest).first()
    if latest is not None:
        if latest.status == Approval.Status.PENDING and not latest.is_expired(now):
            return Gate(latest, run=False)
        if latest.status == Approval.Status.APPROVED:
            if claim(latest.pk):
                latest.refresh_from_db()
                return Gate(latest, run=True)
            latest.refresh_from_db()
            return Gate(latest, run=False)
        recent = latest.decided_at is not None and latest.decided_at > now - timedelta(
            minutes=settings.APPROVAL_EXPIRY_MINUTES
        )
        if latest.status == Approval.Status.REJECTED and recent:
            return Gate(latest, run=False)
    approval = Approval.objects.create(
        tenant_id=asker.tenant_id,
        api_key_id=asker.api_key_id,
        key_prefix=asker.key_prefix,
        membership_id=asker.membership_id,
        person=asker.person,
        oauth_client=asker.oauth_client,
        tool=tool,
        arguments=audit.stored_arguments(tool, arguments),
        arguments_digest=digest,
        created_at=now,
        expires_at=_expiry(now),
    )
    logger.info(
        "approval_requested",
        extra={"event": "approval_requested", "approval_id": approval.pk, "tool": tool},
    )
    transaction.on_commit(lambda: _announce(approval))
    return Gate(approval, run=False, filed=True)


def decide(*, approval_id: int, approve: bool, decided_by: str, reason: str = "") -> Approval:
    """Record a person's decision on a pending call; raises InvalidInput when there is no such
    call, it was decided already (by whom) or it expired."""
    now = timezone.now()
    status = Approval.Status.APPROVED if approve else Approval.Status.REJECTED
    decided = Approval.objects.filter(
        pk=approval_id, status=Approval.Status.PENDING, expires_at__gt=now
    ).update(status=status, decided_by=decided_by[:150], decided_at=now, reason=reason[:500])
    approval = Approval.objects.filter(pk=approval_id).select_related("tenant").first()
    if approval is None:
        raise InvalidInput(f"no approval #{approval_id}: list them with list_approvals")
    if not decided:
        if approval.is_expired(now):
            raise InvalidInput(
                f"approval #{approval_id} expired at {approval.expires_at:%Y-%m-%d %H:%M:%S} UTC; "
                "the assistant must ask again"
            )
        raise InvalidInput(
            f"approval #{approval_id} was already {approval.get_status_display().lower()} "
            f"by {approval.decided_by or 'someone'}"
        )
    logger.info(
        "approval_decided",
        extra={
            "event": "approval_decided",
            "approval_id": approval.pk,
            "status": approval.status,
            "decided_by": approval.decided_by,
        },
    )
    transaction.on_commit(lambda: _announce(approval))
    return approval


def status_for(*, approval_id: int, asker: Asker) -> Approval:
    """The asker's own approval; raises InvalidInput for anyone else's."""
    approval = (
        Approval.objects.select_related("tenant")
        .filter(
            pk=approval_id,
            tenant_id=asker.tenant_id,
            api_key_id=asker.api_key_id,
            membership_id=asker.membership_id,
        )
        .first()
    )
    if approval is None:
        raise InvalidInput(f"no approval #{approval_id} for this connection or API key")
    return approval


def approvals_list(
    *, tenant_slug: str | None = None, pending_only: bool = False
) -> QuerySet[Approval]:
    approvals = Approval.objects.select_related("tenant").order_by("-created_at", "-pk")
    if tenant_slug:
        approvals = approvals.filter(tenant__slug=tenant_slug)
    if pending_only:
        approvals = approvals.filter(status=Approval.Status.PENDING, expires_at__gt=timezone.now())
    return approvals


def approval_summary(approval: Approval) -> dict[str, Any]:
    """One approval as list_approvals --json and the live feed show it."""
    return {
        "id": approval.pk,
        "tenant": approval.tenant.slug,
        "tool": approval.tool,
        "arguments": approval.arguments,
        "status": approval.shown_status,
        "asked_by": approval.asked_by,
        "person": approval.person,
        "key_prefix": approval.key_prefix,
        "oauth_client": approval.oauth_client,
        "created_at": approval.created_at.isoformat(),
        "expires_at": approval.expires_at.isoformat(),
        "decided_by": approval.decided_by,
        "decided_at": approval.decided_at.isoformat() if approval.decided_at else None,
        "reason": approval.reason,
        "executed_at": approval.executed_at.isoformat() if approval.executed_at else None,
    }


def _announce(approval: Approval) -> None:
    """Tell the operators' live feed (best effort: the admin list is the record)."""
    from controlplane.operator.live import publish_approval

    try:
        publish_approval(approval)
    except Exception:
        logger.warning("approval not shown on the live feed", exc_info=True)
