"""Test-wide environment, loaded as a pytest plugin (``-p tests.environment`` in
pyproject.toml) so that it runs before pytest-django loads the settings: a root
conftest.py comes too late, and its values never reached the settings."""

import os
import tempfile
import uuid

# Every run gets its own Redis key space, so runs (and CI's two passes) never mix.
os.environ.setdefault("REDIS_PREFIX", f"colloquy-test-{uuid.uuid4().hex[:8]}")
os.environ["RECOVER_ON_START"] = "0"  # the tests call recovery themselves
os.environ["RECOVERY_INTERVAL_SECONDS"] = "0"  # (and start the sweep where they test it)
os.environ.setdefault("MESSAGES_PER_MINUTE", "0")
# A reply's title is asked of the task model after the reply (chat/generation/titles.py):
# an extra request to a test's model server and an extra event after `done`. The tests
# of titles turn them on (tests/test_titles.py).
os.environ["SESSION_TITLES"] = "0"
# Likewise compaction (chat/agents/compaction.py) after a reply whose prompt was long:
# on in tests/test_compaction.py.
os.environ["COMPACT_AT"] = "0"
# Uploaded files go to a folder of this run's own (server processes and workers started
# by the tests get it through live_env()), never into var/uploads.
os.environ.setdefault("UPLOADS_DIR", tempfile.mkdtemp(prefix="colloquy-uploads-"))
