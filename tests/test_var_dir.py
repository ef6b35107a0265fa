"""The var directory holds the database, the secret key and the embedded Redis's socket:
only the account that runs Colloquy may read it."""

import stat

from tests.processes import clean_env, manage


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_fresh_var_dir_and_the_database_and_key_in_it_are_private(tmp_path):
    var = tmp_path / "var"
    result = manage("migrate", env=clean_env(COLLOQUY_VAR_DIR=str(var)))
    assert result.returncode == 0, result.stderr
    assert mode(var) == 0o700  # the embedded Redis's socket is in there too
    assert mode(var / "db.sqlite3") == 0o600
    assert mode(var / "secret_key") == 0o600
    leftovers = [p.name for p in var.iterdir() if p.name.startswith("db.sqlite3-")]
    assert all(mode(var / name) == 0o600 for name in leftovers), leftovers
