"""A site the forecaster knows: where it is, its PV and its yearly consumption, and who may
ask for its forecast."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from homeflex.agents.messages import ID


class Site(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    latitude: float = Field(ge=-90, le=90, allow_inf_nan=False)
    longitude: float = Field(ge=-180, le=180, allow_inf_nan=False)
    kwp: float = Field(
        ge=0, le=1e5, allow_inf_nan=False, description="PV peak power (kW at STC); 0 for none"
    )
    annual_kwh: float = Field(ge=0, le=1e8, allow_inf_nan=False, description="use over a year")
    utc_offset_h: float = Field(
        0.0,
        ge=-12,
        le=14,
        multiple_of=0.25,
        description="local time = UTC + this: the household's day follows the local clock",
    )
    readers: frozenset[ID] = Field(
        frozenset(),
        description="who besides the party named like the site may ask for it (its aggregator)",
    )

    def readable_by(self, site_id: str, party: str) -> bool:
        """A home's forecast is its own data: only the home (the site of its name) and the
        readers configured may have it, so no home learns another's (seed 004 C.1.3)."""
        return party == site_id or party in self.readers
