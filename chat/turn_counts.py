"""Session.visible_turns, kept by the database: triggers on chat_turn follow every insert,
delete and change of `hidden` or `session_id`, whichever code makes it (a service, the
generation engine, the admin, a queryset update, a cascade), so the channel list shows
each active session's visible turns without counting them on every read (issue 13).

They are put in place after every `migrate` (the app's post_migrate), the count redone
whenever they had to be, and taken away on SQLite before a migrate that has migrations
to apply: SQLite rebuilds a table to alter it, which drops the triggers of chat_turn and
fails on those that name a chat_session being rebuilt.
On PostgreSQL inserts and deletes are counted once per statement (a purge of 10,000
turns is one UPDATE of its session); SQLite has row triggers only.
"""

from __future__ import annotations

from typing import Any

from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

TRIGGERS = ("chat_turn_visible_insert", "chat_turn_visible_delete", "chat_turn_visible_update")

SQLITE = [
    """
    CREATE TRIGGER chat_turn_visible_insert AFTER INSERT ON chat_turn
    WHEN NOT NEW.hidden
    BEGIN
        UPDATE chat_session SET visible_turns = visible_turns + 1 WHERE id = NEW.session_id;
    END
    """,
    """
    CREATE TRIGGER chat_turn_visible_delete AFTER DELETE ON chat_turn
    WHEN NOT OLD.hidden
    BEGIN
        UPDATE chat_session SET visible_turns = visible_turns - 1 WHERE id = OLD.session_id;
    END
    """,
    """
    CREATE TRIGGER chat_turn_visible_update AFTER UPDATE OF hidden, session_id ON chat_turn
    WHEN OLD.hidden IS NOT NEW.hidden OR OLD.session_id IS NOT NEW.session_id
    BEGIN
        UPDATE chat_session SET visible_turns = visible_turns - 1
        WHERE id = OLD.session_id AND NOT OLD.hidden;
        UPDATE chat_session SET visible_turns = visible_turns + 1
        WHERE id = NEW.session_id AND NOT NEW.hidden;
    END
    """,
]


def _per_statement(function: str, transition_table: str, sign: str) -> str:
    """A function that counts a statement's inserted (or deleted) turns, per session."""
    return f"""
    CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE chat_session AS s SET visible_turns = s.visible_turns {sign} turns.n
        FROM (SELECT session_id, count(*) AS n FROM {transition_table} WHERE NOT hidden GROUP BY session_id)
            AS turns
        WHERE s.id = turns.session_id;
        RETURN NULL;
    END $$
    """


POSTGRESQL = [
    _per_statement("chat_turn_visible_added", "new_turns", "+"),
    _per_statement("chat_turn_visible_removed", "old_turns", "-"),
    """
    CREATE OR REPLACE FUNCTION chat_turn_visible_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NOT OLD.hidden THEN
            UPDATE chat_session SET visible_turns = visible_turns - 1 WHERE id = OLD.session_id;
        END IF;
        IF NOT NEW.hidden THEN
            UPDATE chat_session SET visible_turns = visible_turns + 1 WHERE id = NEW.session_id;
        END IF;
        RETURN NULL;
    END $$
    """,
    """
    CREATE TRIGGER chat_turn_visible_insert AFTER INSERT ON chat_turn
    REFERENCING NEW TABLE AS new_turns
    FOR EACH STATEMENT EXECUTE FUNCTION chat_turn_visible_added()
    """,
    """
    CREATE TRIGGER chat_turn_visible_delete AFTER DELETE ON chat_turn
    REFERENCING OLD TABLE AS old_turns
    FOR EACH STATEMENT EXECUTE FUNCTION chat_turn_visible_removed()
    """,
    # (A trigger on chosen columns may have no transition table: row by row. Turns are
    # hidden and unhidden one at a time.)
    """
    CREATE TRIGGER chat_turn_visible_update AFTER UPDATE OF hidden, session_id ON chat_turn
    FOR EACH ROW
    WHEN (OLD.hidden IS DISTINCT FROM NEW.hidden OR OLD.session_id IS DISTINCT FROM NEW.session_id)
    EXECUTE FUNCTION chat_turn_visible_changed()
    """,
]

RECOUNT = """
    UPDATE chat_session SET visible_turns = (
        SELECT count(*) FROM chat_turn WHERE chat_turn.session_id = chat_session.id AND NOT chat_turn.hidden
    )
"""


def installed(connection: BaseDatabaseWrapper) -> int:
    """How many of the triggers the database has."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'chat_turn'"
                " AND name IN (%s, %s, %s)",
                TRIGGERS,
            )
        else:
            cursor.execute(
                "SELECT count(*) FROM pg_trigger"
                " WHERE tgrelid = 'chat_turn'::regclass AND tgname IN (%s, %s, %s)",
                TRIGGERS,
            )
        return int(cursor.fetchone()[0])


def uninstall(connection: BaseDatabaseWrapper) -> None:
    table = "" if connection.vendor == "sqlite" else " ON chat_turn"
    with connection.cursor() as cursor:
        for name in TRIGGERS:
            cursor.execute(f"DROP TRIGGER IF EXISTS {name}{table}")


def install(connection: BaseDatabaseWrapper) -> None:
    """The triggers, and every session's count made right (it was not kept meanwhile)."""
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        # On PostgreSQL, dropping a trigger holds writers to chat_turn off until the
        # commit: no turn is written between the count and the triggers.
        uninstall(connection)
        for sql in SQLITE if connection.vendor == "sqlite" else POSTGRESQL:
            cursor.execute(sql)
        cursor.execute(RECOUNT)


def _counted(apps: Any) -> bool:
    """Whether the database (as the migrations left it) has the column."""
    try:
        session = apps.get_model("chat", "Session")
    except LookupError:
        return False
    return any(field.name == "visible_turns" for field in session._meta.get_fields())


def before_migrations(sender: Any, using: str, plan: Any = None, **kwargs: Any) -> None:
    """pre_migrate: out of the way of SQLite's table rebuilds (put back afterwards)."""
    connection = connections[using]
    if plan and connection.vendor == "sqlite":
        uninstall(connection)


def after_migrations(sender: Any, using: str, apps: Any = None, **kwargs: Any) -> None:
    """post_migrate (also sent after a test database is flushed): the triggers in place."""
    connection = connections[using]
    if connection.vendor not in ("sqlite", "postgresql"):
        raise NotImplementedError(
            f"Session.visible_turns is kept on SQLite and PostgreSQL, not {connection.vendor}"
        )
    if apps is not None and not _counted(apps):  # migrated back before the column
        if "chat_turn" in connection.introspection.table_names():
            uninstall(connection)
        return
    if installed(connection) < len(TRIGGERS):
        install(connection)
