"""The resumable results store of a run folder (embedded SQLite, WAL mode)."""

from picbench.database import STORE_SCHEMA_VERSION, IncompatibleStoreError, StoreError
from picbench.store.lock import RunLock, RunLockedError
from picbench.store.sqlite import IMAGES_DIR, STORE_FILE, RunStore

__all__ = [
    "IMAGES_DIR",
    "STORE_FILE",
    "STORE_SCHEMA_VERSION",
    "IncompatibleStoreError",
    "RunLock",
    "RunLockedError",
    "RunStore",
    "StoreError",
]
