"""The interaction store: SQLAlchemy tables, the Store API and content-addressed image files."""

from .blobs import BlobStore, is_sha256
from .store import Store, StoreUnavailable, UnknownInteraction, to_dict

__all__ = ["BlobStore", "Store", "StoreUnavailable", "UnknownInteraction", "is_sha256", "to_dict"]
