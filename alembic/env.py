"""Alembic environment for taskvec's own tables (configured in code by `registry.db.alembic_config`).

The version table is `taskvec_alembic_version`: Optuna's RDB storage owns `alembic_version` in the same
database. Importing the ORM modules puts the registry's and search's tables on the one metadata that
autogenerate compares with.
"""

from __future__ import annotations

from sqlalchemy import create_engine

import registry.models  # noqa: F401  (registers base_models, checkpoints on Base.metadata)
import search.tables  # noqa: F401  (registers screenings, leaderboard on Base.metadata)
from alembic import context
from registry.constants import ALEMBIC_VERSION_TABLE
from registry.db import Base

config = context.config
target_metadata = Base.metadata
version_table = config.get_main_option("version_table") or ALEMBIC_VERSION_TABLE


def run_migrations_offline() -> None:
    """Emit SQL to stdout (`alembic upgrade --sql`)."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        version_table=version_table,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Migrate through the caller's connection (registry.db passes one, holding the migration lock)."""
    connection = config.attributes.get("connection")
    if connection is None:
        engine = create_engine(config.get_main_option("sqlalchemy.url"))
        with engine.begin() as conn:
            _run(conn)
        engine.dispose()
    else:
        _run(connection)


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=version_table,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
