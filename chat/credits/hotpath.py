"""The credit statements on the path to the first token (issue 18's goal: the hold adds
under 1 ms to it), run as plain SQL on Django's connection.

Why not the ORM here: building a query (QuerySet, Query, compiler) costs ~0.3 ms of CPU
on a small machine, fifteen times the statement itself on SQLite (measured: 327 µs
against 22 µs for the same SELECT), and a hold is five statements (and its claim, which
runs as the first tokens are delivered, two more). The statements are
the same as the ORM's would be: table and column names come from the models' _meta,
values go through each field's own conversion to the database, so both backends
(SQLite, PostgreSQL) and later columns with defaults keep working. Everything else in
chat.credits uses the ORM."""

from __future__ import annotations

import functools
import json
from typing import Any

from django.db import connection, models
from django.utils import timezone

from chat.models import Balance, CreditHold, Session, Turn


def _table(model: type[models.Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _column(model: type[models.Model], name: str) -> str:
    field = model._meta.get_field(name)
    assert isinstance(field, models.Field) and field.column
    return connection.ops.quote_name(field.column)


@functools.cache
def _insert_sql(model: type[models.Model], vendor: str) -> tuple[str, tuple[models.Field[Any, Any], ...]]:
    """INSERT of every concrete column of ``model`` but an auto-incremented id, per
    database vendor (quoting differs)."""
    fields = tuple(
        field
        for field in model._meta.concrete_fields
        if not (field.primary_key and isinstance(field, models.AutoField))
    )
    # A default the database computes would need the ORM's handling: none here yet.
    assert all(field.db_default is models.NOT_PROVIDED for field in fields), f"{model.__name__}: a db_default"
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    marks = ", ".join(["%s"] * len(fields))
    return f"INSERT INTO {_table(model)} ({columns}) VALUES ({marks})", fields


def insert(into: type[models.Model], /, **values: Any) -> Any:
    """Insert one row: ``values`` by field name (``user_id`` or ``user``), every other
    field its default (``auto_now_add``: now). Returns the primary key when it is one
    of ours (a UUID), else None. No signals are sent: the credit rows have none."""
    sql, fields = _insert_sql(into, connection.vendor)
    known = {name for field in fields for name in (field.name, field.attname)}
    assert known >= set(values), f"not fields of {into.__name__}: {set(values) - known}"
    row: list[Any] = []
    key = None
    now = timezone.now()
    for field in fields:
        if field.attname in values:
            value = values[field.attname]
        elif field.name in values:
            value = values[field.name]
            value = value.pk if isinstance(value, models.Model) else value
        elif getattr(field, "auto_now_add", False) or getattr(field, "auto_now", False):
            value = now
        else:
            value = field.get_default()
        if field.primary_key:
            key = value
        row.append(field.get_db_prep_save(value, connection))
    with connection.cursor() as cursor:
        cursor.execute(sql, row)
    return key


def move_to_held(user_id: int, amount: int) -> int:
    """The conditional UPDATE of a hold: ``amount`` from available to held, only if it
    is there. 1 when taken, 0 when not."""
    available, held, user = (_column(Balance, name) for name in ("available", "held", "user"))
    sql = (
        f"UPDATE {_table(Balance)} SET {available} = {available} - %s, {held} = {held} + %s "
        f"WHERE {user} = %s AND {available} >= %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [amount, amount, user_id, amount])
        return int(cursor.rowcount)


def last_reply_usage(channel_id: int) -> dict[str, Any] | None:
    """The usage of the newest visible bot turn of the channel's active session."""
    t, s = _table(Turn), _table(Session)
    usage, session, role, hidden, turn_id = (
        _column(Turn, name) for name in ("usage", "session", "role", "hidden", "id")
    )
    session_id, channel, status = (_column(Session, name) for name in ("id", "channel", "status"))
    sql = (
        f"SELECT t.{usage} FROM {t} t JOIN {s} s ON t.{session} = s.{session_id} "
        f"WHERE s.{channel} = %s AND s.{status} = %s AND t.{role} = %s AND t.{hidden} = %s "
        f"ORDER BY t.{turn_id} DESC LIMIT 1"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [channel_id, "active", Turn.Role.BOT.value, False])
        found = cursor.fetchone()
    value = found[0] if found else None
    if isinstance(value, (str, bytes)):  # JSON as text (SQLite; psycopg as Django sets it up)
        value = json.loads(value)
    return value if isinstance(value, dict) else None


def claim_holds(channel_id: int, turn_id: int, upto_hold_id: Any) -> int:
    """Mark as the reply ``turn_id``'s the channel's open unclaimed holds made no later
    than ``upto_hold_id`` (newer ones are the next reply's), in one conditional UPDATE:
    one the sweep released meanwhile is not taken. How many were."""
    table = _table(CreditHold)
    key, channel, status, reply, created = (
        _column(CreditHold, name) for name in ("id", "channel", "status", "reply", "created_at")
    )
    sql = (
        f"UPDATE {table} SET {reply} = %s WHERE {channel} = %s AND {status} = %s AND {reply} IS NULL "
        f"AND {created} <= (SELECT {created} FROM {table} WHERE {key} = %s)"
    )
    upto = CreditHold._meta.pk.get_db_prep_value(upto_hold_id, connection)
    with connection.cursor() as cursor:
        cursor.execute(sql, [turn_id, channel_id, CreditHold.Status.OPEN.value, upto])
        return int(cursor.rowcount)


def open_holds_of_reply(turn_id: int) -> list[tuple[Any, int, int, str, str]]:
    """(id, user id, amount, provider, model) of the reply's open holds, newest first."""
    return _open_holds(reply=turn_id)


def newest_open_hold(channel_id: int) -> tuple[Any, int, int, str, str] | None:
    """(id, user id, amount, provider, model) of the channel's newest open hold no reply
    has claimed."""
    found = _open_holds(limit=1, channel=channel_id, reply=None)
    return found[0] if found else None


def _open_holds(limit: int | None = None, **equal: Any) -> list[tuple[Any, int, int, str, str]]:
    """The open holds whose fields equal ``equal`` (None: is null), newest first."""
    columns = ", ".join(_column(CreditHold, name) for name in ("id", "user", "amount", "provider", "model"))
    tests, params = [f"{_column(CreditHold, 'status')} = %s"], [CreditHold.Status.OPEN.value]
    for name, value in equal.items():
        tests.append(f"{_column(CreditHold, name)} {'IS NULL' if value is None else '= %s'}")
        params += [] if value is None else [value]
    sql = (
        f"SELECT {columns} FROM {_table(CreditHold)} WHERE {' AND '.join(tests)} "
        f"ORDER BY {_column(CreditHold, 'created_at')} DESC{f' LIMIT {int(limit)}' if limit else ''}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return [
        (CreditHold._meta.pk.to_python(hold_id), int(user_id), int(amount), provider, model)
        for hold_id, user_id, amount, provider, model in rows
    ]
