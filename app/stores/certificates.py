from __future__ import annotations

from app.models import Certificate
from app.stores.base import Repository


class CertificateStore(Repository):
    noun = "certificate"
    model = Certificate
