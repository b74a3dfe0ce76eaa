"""Every table, imported in one place so the metadata (and Alembic) sees them all."""

from promoguard import audit
from promoguard.campaigns import models as campaigns
from promoguard.claims import models as claims
from promoguard.coupons import models as coupons
from promoguard.incidents import models as incidents
from promoguard.monitoring import models as monitoring
from promoguard.notify import models as notify
from promoguard.orders import models as orders
from promoguard.payments import models as payments
from promoguard.plans import models as plans
from promoguard.security import models as security
from promoguard.store.db import Base

__all__ = [
    "audit",
    "campaigns",
    "claims",
    "coupons",
    "incidents",
    "metadata",
    "monitoring",
    "notify",
    "orders",
    "payments",
    "plans",
    "security",
]

metadata = Base.metadata
