"""Redis repositories, one per noun. Key names come from app/redis.py only."""

from app.stores.base import Repository
from app.stores.certificates import CertificateStore
from app.stores.challenges import ChallengeStore
from app.stores.ports import PortStore
from app.stores.routes import RouteStore
from app.stores.services import ServiceStore
from app.stores.tokens import TokenStore

__all__ = ["CertificateStore", "ChallengeStore", "PortStore", "Repository", "RouteStore",
           "ServiceStore", "TokenStore"]
