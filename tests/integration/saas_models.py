"""A realistic SaaS schema in thirteen versions: each step is one typical model change.

``build(step)`` declares the models as they are after ``step`` changes (0 is the initial
schema); ``CHANGES`` names them. ``seed`` fills the initial schema with rows.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Computed,
    Enum,
    ForeignKey,
    Index,
    MetaData,
    Numeric,
    String,
    Text,
    Uuid,
    insert,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from underlay import SoftDeleteMixin, TimestampMixin, UTCDateTime, VersionedMixin
from underlay.migrations import index_foreign_keys
from underlay.models import NAMING_CONVENTION, live_unique_index

#: The typical changes, in order; step ``n`` applies the first ``n``.
CHANGES = (
    "add a nullable column",
    "add a NOT NULL column with a server default",
    "rename a column",
    "widen a column type",
    "add tables with foreign keys",
    "add an enum value",
    "change a server default",
    "change a partial index predicate",
    "add a CHECK constraint",
    "index the foreign keys",
    "make a column NOT NULL",
    "alter a table that has a generated column",
)
LAST = len(CHANGES)
#: The rename of step 3, as ``revision(renames=...)`` takes it.
RENAMES = {"tasks.title": "summary"}

Payload = JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql")
Tags = JSON().with_variant(postgresql.ARRAY(String(40)), "postgresql")


def build(step: int) -> MetaData:
    """Declare the schema as it is after the first ``step`` changes."""
    tiers = ["free", "pro", "enterprise"] if step >= 6 else ["free", "pro"]
    plan_tier = Enum(*tiers, name="plan_tier")
    active = "status = 'active'" if step < 8 else "status IN ('active', 'paused')"

    class Model(DeclarativeBase):
        metadata = MetaData(naming_convention=NAMING_CONVENTION)
        type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}

    class Org(TimestampMixin, SoftDeleteMixin, VersionedMixin, Model):
        __tablename__ = "orgs"
        __table_args__ = (live_unique_index("slug"),)
        id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
        name: Mapped[str] = mapped_column(String(160 if step >= 4 else 80))
        slug: Mapped[str] = mapped_column(String(40))
        plan: Mapped[str] = mapped_column(plan_tier, server_default="free")
        settings: Mapped[dict[str, Any]] = mapped_column(Payload, server_default=text("'{}'"))

    class User(TimestampMixin, SoftDeleteMixin, Model):
        __tablename__ = "users"
        __table_args__ = (live_unique_index("org_id", "email"),)
        id: Mapped[int] = mapped_column(primary_key=True)
        org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey(Org.id, ondelete="CASCADE"))
        email: Mapped[str] = mapped_column(String(120))
        full_name: Mapped[str | None] = mapped_column(String(80))
        tags: Mapped[list[str] | None] = mapped_column(Tags)
        if step >= 1:
            phone: Mapped[str | None] = mapped_column(String(30))

    class Team(Model):
        __tablename__ = "teams"
        id: Mapped[int] = mapped_column(primary_key=True)
        org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey(Org.id, ondelete="CASCADE"))
        parent_id: Mapped[int | None] = mapped_column(ForeignKey("teams.id"))
        name: Mapped[str] = mapped_column(String(80))

    class Membership(Model):
        __tablename__ = "memberships"
        __table_args__ = (CheckConstraint("role IN ('owner', 'member', 'viewer')", name="role"),)
        team_id: Mapped[int] = mapped_column(
            ForeignKey(Team.id, ondelete="CASCADE"), primary_key=True
        )
        user_id: Mapped[int] = mapped_column(
            ForeignKey(User.id, ondelete="CASCADE"), primary_key=True
        )
        role: Mapped[str] = mapped_column(
            String(20), server_default="viewer" if step >= 7 else "member"
        )

    class Project(VersionedMixin, Model):
        __tablename__ = "projects"
        __table_args__ = (
            Index(
                "ix_projects_org_id_active",
                "org_id",
                postgresql_where=text(active),
                sqlite_where=text(active),
            ),
        )
        id: Mapped[int] = mapped_column(primary_key=True)
        org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey(Org.id, ondelete="CASCADE"))
        name: Mapped[str] = mapped_column(String(80))
        status: Mapped[str] = mapped_column(String(20), server_default="active")
        if step >= 2:
            archived: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))

    class Task(TimestampMixin, Model):
        __tablename__ = "tasks"
        __table_args__ = (CheckConstraint("priority BETWEEN 1 AND 5", name="priority"),)
        id: Mapped[int] = mapped_column(primary_key=True)
        project_id: Mapped[int] = mapped_column(ForeignKey(Project.id, ondelete="CASCADE"))
        assignee_id: Mapped[int | None] = mapped_column(ForeignKey(User.id, ondelete="SET NULL"))
        if step >= 3:
            summary: Mapped[str] = mapped_column(String(200))
        else:
            title: Mapped[str] = mapped_column(String(200))
        done: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
        priority: Mapped[int] = mapped_column(server_default=text("3"))
        due_at: Mapped[datetime | None]

    class Comment(TimestampMixin, SoftDeleteMixin, Model):
        __tablename__ = "comments"
        id: Mapped[int] = mapped_column(primary_key=True)
        task_id: Mapped[int] = mapped_column(ForeignKey(Task.id, ondelete="CASCADE"))
        if step >= 11:
            author_id: Mapped[int] = mapped_column(ForeignKey(User.id))
        else:
            author_id: Mapped[int | None] = mapped_column(ForeignKey(User.id))  # type: ignore[no-redef]
        body: Mapped[str] = mapped_column(Text)

    class Invoice(TimestampMixin, Model):
        __tablename__ = "invoices"
        __table_args__ = (CheckConstraint("amount >= 0", name="amount"),)
        id: Mapped[int] = mapped_column(primary_key=True)
        org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey(Org.id))
        number: Mapped[str] = mapped_column(String(32 if step >= 12 else 20), unique=True)
        amount: Mapped[Decimal] = mapped_column(Numeric(12, 2))
        tax_rate: Mapped[Decimal] = mapped_column(Numeric(6, 2), server_default=text("0"))
        tax: Mapped[Decimal] = mapped_column(
            Numeric(6, 2), Computed("amount * tax_rate / 100", persisted=True)
        )

    class InvoiceLine(Model):
        __tablename__ = "invoice_lines"
        __table_args__ = (CheckConstraint("quantity > 0", name="quantity"),) if step >= 9 else ()
        id: Mapped[int] = mapped_column(primary_key=True)
        invoice_id: Mapped[int] = mapped_column(ForeignKey(Invoice.id, ondelete="CASCADE"))
        description: Mapped[str] = mapped_column(String(200))
        quantity: Mapped[int]
        unit_price: Mapped[Decimal] = mapped_column(Numeric(12, 2))

    class ApiKey(TimestampMixin, Model):
        __tablename__ = "api_keys"
        id: Mapped[int] = mapped_column(primary_key=True)
        user_id: Mapped[int] = mapped_column(ForeignKey(User.id, ondelete="CASCADE"))
        prefix: Mapped[str] = mapped_column(String(12), unique=True)
        hashed: Mapped[str] = mapped_column(String(128))
        last_used_at: Mapped[datetime | None]

    class AuditEvent(Model):
        __tablename__ = "audit_events"
        id: Mapped[int] = mapped_column(primary_key=True)
        org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey(Org.id, ondelete="CASCADE"))
        actor_id: Mapped[int | None] = mapped_column(ForeignKey(User.id, ondelete="SET NULL"))
        action: Mapped[str] = mapped_column(String(40))
        payload: Mapped[dict[str, Any]] = mapped_column(Payload)

    class Subscription(Model):
        __tablename__ = "subscriptions"
        id: Mapped[int] = mapped_column(primary_key=True)
        org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey(Org.id), unique=True)
        plan: Mapped[str] = mapped_column(plan_tier)
        seats: Mapped[int] = mapped_column(server_default=text("1"))
        renews_at: Mapped[datetime | None]

    if step >= 5:

        class Label(Model):
            __tablename__ = "labels"
            id: Mapped[int] = mapped_column(primary_key=True)
            org_id: Mapped[uuid.UUID] = mapped_column(ForeignKey(Org.id, ondelete="CASCADE"))
            name: Mapped[str] = mapped_column(String(40))

        class TaskLabel(Model):
            __tablename__ = "task_labels"
            task_id: Mapped[int] = mapped_column(
                ForeignKey(Task.id, ondelete="CASCADE"), primary_key=True
            )
            label_id: Mapped[int] = mapped_column(
                ForeignKey(Label.id, ondelete="CASCADE"), primary_key=True
            )

    if step >= 10:
        index_foreign_keys(Model.metadata)
    return Model.metadata


async def seed(conn: AsyncConnection, *, orgs: int = 6) -> int:
    """Insert rows into every table of the initial schema; return how many."""
    metadata = build(0)
    tables = metadata.tables
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in tables}
    user_id = team_id = project_id = task_id = invoice_id = 0
    for o in range(orgs):
        org = uuid.UUID(int=o + 1)
        plan = "pro" if o % 2 else "free"
        rows["orgs"].append(
            {
                "id": org,
                "name": f"Org {o}",
                "slug": f"org-{o}",
                "plan": plan,
                "settings": {"theme": "dark", "n": o},
            }
        )
        rows["subscriptions"].append(
            {
                "id": o + 1,
                "org_id": org,
                "plan": plan,
                "seats": o + 1,
                "renews_at": start + timedelta(days=30 + o),
            }
        )
        users = []
        for u in range(8):
            user_id += 1
            users.append(user_id)
            rows["users"].append(
                {
                    "id": user_id,
                    "org_id": org,
                    "email": f"u{u}@org{o}.test",
                    "full_name": f"User {o}-{u}" if u % 3 else None,
                    "tags": ["admin", "beta"] if u == 0 else [],
                }
            )
            rows["api_keys"].append(
                {
                    "id": user_id,
                    "user_id": user_id,
                    "prefix": f"k{user_id:06d}",
                    "hashed": f"h{user_id:040d}",
                }
            )
        parent = None
        for t in range(3):
            team_id += 1
            rows["teams"].append(
                {"id": team_id, "org_id": org, "parent_id": parent, "name": f"Team {t}"}
            )
            parent = team_id
            for u in users[t::3]:
                rows["memberships"].append(
                    {
                        "team_id": team_id,
                        "user_id": u,
                        "role": "owner" if u == users[0] else "member",
                    }
                )
        for p in range(3):
            project_id += 1
            rows["projects"].append(
                {
                    "id": project_id,
                    "org_id": org,
                    "name": f"Project {p}",
                    "status": ("active", "paused", "done")[p],
                }
            )
            for k in range(6):
                task_id += 1
                rows["tasks"].append(
                    {
                        "id": task_id,
                        "project_id": project_id,
                        "assignee_id": users[k % len(users)] if k % 4 else None,
                        "title": f"Task {task_id}",
                        "priority": 1 + k % 5,
                        "due_at": start + timedelta(days=k) if k % 2 else None,
                    }
                )
                rows["comments"].append(
                    {
                        "id": task_id,
                        "task_id": task_id,
                        "author_id": users[k % len(users)],
                        "body": f"Comment on {task_id}, with 'quotes' and ünïcode",
                    }
                )
        for i in range(4):
            invoice_id += 1
            rows["invoices"].append(
                {
                    "id": invoice_id,
                    "org_id": org,
                    "number": f"INV-{invoice_id:05d}",
                    "amount": Decimal(f"{100 + i * 17}.50"),
                    "tax_rate": Decimal("19.00"),
                }
            )
            for n in range(3):
                rows["invoice_lines"].append(
                    {
                        "id": invoice_id * 10 + n,
                        "invoice_id": invoice_id,
                        "description": f"Line {n}",
                        "quantity": n + 1,
                        "unit_price": Decimal(f"{n + 1}.25"),
                    }
                )
        for e in range(10):
            rows["audit_events"].append(
                {
                    "id": o * 10 + e + 1,
                    "org_id": org,
                    "actor_id": users[e % len(users)],
                    "action": "login",
                    "payload": {"ip": f"10.0.0.{e}", "ok": True},
                }
            )
    for table in metadata.sorted_tables:
        if rows[table.name]:
            await conn.execute(insert(table), rows[table.name])
    return sum(len(batch) for batch in rows.values())
