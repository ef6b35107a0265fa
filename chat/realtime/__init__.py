"""The real-time plumbing: events built, numbered and published (events, store); the
per-process fan-out to local connections (fanout); what a (re)connecting client gets
(history, frames); the loop replies run on (background); ORM calls from async code
(async_db)."""
