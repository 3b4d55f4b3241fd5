"""The interaction store: SQLAlchemy tables, the Store API and content-addressed image files."""

from .blobs import BlobStore, is_sha256
from .schema import SCHEMA_VERSION, SchemaMismatch
from .store import Store, StoreUnavailable, UnknownInteraction, to_dict

__all__ = ["BlobStore", "SCHEMA_VERSION", "SchemaMismatch", "Store", "StoreUnavailable", "UnknownInteraction", "is_sha256", "to_dict"]
