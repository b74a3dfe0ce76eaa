"""The bundled 双11 example: campaigns, carts to price under them (``promoguard price``) and the
catalogue they sell from (``promoguard lint --catalogue``)."""

from __future__ import annotations

from datetime import datetime
from importlib.resources import files

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from promoguard.promotions.model import Cart, Customer

__all__ = ["Scenario", "ScenarioFile", "campaigns_json", "catalogue_json", "scenarios_json"]


class Scenario(BaseModel):
    """One cart to price, for one customer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    customer: Customer
    cart: Cart


class ScenarioFile(BaseModel):
    """A file of carts to price; ``at`` is the pricing instant unless the caller gives one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    at: AwareDatetime | None = None
    scenarios: list[Scenario] = Field(min_length=1)

    def instant(self, override: datetime | None, default: datetime) -> datetime:
        """The instant to price at: the caller's, else the file's, else ``default``."""
        return override or self.at or default


def campaigns_json() -> str:
    """The bundled example campaigns, as JSON text."""
    return files(__package__).joinpath("campaigns.json").read_text(encoding="utf-8")


def catalogue_json() -> str:
    """The bundled example catalogue (SKUs with floor prices and costs), as JSON text."""
    return files(__package__).joinpath("catalogue.json").read_text(encoding="utf-8")


def scenarios_json() -> str:
    """The bundled example carts, as JSON text."""
    return files(__package__).joinpath("carts.json").read_text(encoding="utf-8")
