"""Test-wide set-up. Runs before Django is configured, so these reach the settings."""

import os
import uuid

# Every run gets its own Redis key space, so runs (and CI's two passes) never mix.
os.environ.setdefault("REDIS_PREFIX", f"colloquy-test-{uuid.uuid4().hex[:8]}")
os.environ["RECOVER_ON_START"] = "0"  # the tests call recovery themselves
os.environ["RECOVERY_INTERVAL_SECONDS"] = "0"  # (and start the sweep where they test it)
os.environ.setdefault("DEMO_TOKEN_DELAY", "0.002")
os.environ.setdefault("MESSAGES_PER_MINUTE", "0")
