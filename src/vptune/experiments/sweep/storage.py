"""Where a study lives: a journal file in the sweep folder (the default), or an RDB URL shared by many machines,
checked (dialect, driver) before anything runs."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import ConfigError

if TYPE_CHECKING:  # type hints only: config.py imports this file
    from .config import SweepConfig


JOURNAL = "optuna-journal.log"
# the PyPI package that provides the module SQLAlchemy's dialects import
DRIVER_PACKAGES = {"psycopg2": "psycopg2-binary", "psycopg": "psycopg[binary]", "pymysql": "PyMySQL",
                   "MySQLdb": "mysqlclient", "asyncpg": "asyncpg", "pg8000": "pg8000", "oracledb": "oracledb"}


def storage_of(config: SweepConfig):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    if config.storage:
        return config.storage  # an RDB URL: Optuna connects, many machines can share it
    return optuna.storages.JournalStorage(JournalFileBackend(str(Path(config.output) / JOURNAL)))


def check_storage(url: str) -> None:
    """A database URL that SQLAlchemy can parse and whose driver is installed; before anything is created."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        dialect = make_url(url).get_dialect()
    except NoSuchModuleError as err:  # before ArgumentError, its base class
        raise ConfigError(f"--storage {hide_password(url)}: SQLAlchemy knows no such database ({err})") from None
    except (ArgumentError, ValueError):
        raise ConfigError(f"--storage {url!r} is not a database URL: write DIALECT[+DRIVER]://USER:PASS@HOST/DB (e.g. "
                          f"postgresql://user:pass@host/db, or sqlite:///sweep.db); leave it out for a journal file "
                          f"in the sweep folder") from None
    try:
        dialect.import_dbapi()
    except ImportError as err:
        module = (err.name or "").split(".")[0]
        package = DRIVER_PACKAGES.get(module, module)
        raise ConfigError(f"--storage {hide_password(url)} needs the database driver {module!r}, which is not "
                          f"installed: pip install '{package}'") from None


def hide_password(url: str | None) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return repr(url)
