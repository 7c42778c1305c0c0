from __future__ import annotations

from app.models import Service
from app.stores.base import Repository


class ServiceStore(Repository):
    noun = "service"
    model = Service
    unique = {"hostname": lambda s: s.hostname or None}
