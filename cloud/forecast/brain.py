"""The forecaster's brain: answers a ForecastRequest from a home or an aggregator with the
Forecast of the series asked for, for the whole UTC day asked for.

The site is the request's `site`, or the sender's name: a home's site is configured under the
home's name. A site is answered only to the party of its name and to the readers configured for
it; any other site, and one that does not exist, is refused with the same words, so nobody
learns which other homes are known (seed 004 C.1.3). The forecast is a pure function of the
site and the day (clear sky, standard profile), so the same request always gets the same
answer, and a request that comes again (its acknowledgement was lost) is answered alike; while
the first answer still awaits its acknowledgement, the repeat adds nothing to send.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from homeflex.agents.messages import TYPE_OF, Ack, Forecast, ForecastRequest, Payload
from homeflex.agents.node import Outgoing, Reporting
from homeflex.cloud.forecast.load_profile import load_kw
from homeflex.cloud.forecast.pv import pv_kw
from homeflex.cloud.forecast.site import Site

log = logging.getLogger(__name__)


def forecast(site: Site, request: ForecastRequest) -> Forecast:
    """The forecast `request` asks for at `site`, every PTU of its day."""
    return Forecast(
        day=request.day,
        pv_kw=pv_kw(site, request.day) if "pv" in request.series else None,
        load_kw=load_kw(site, request.day) if "load" in request.series else None,
    )


class ForecasterBrain(Reporting):
    def __init__(self, name: str, sites: Mapping[str, Site], *, ttl_s: float = 900.0) -> None:
        self.name = name
        self.sites = dict(sites)
        self.ttl_s = ttl_s  # how long an answer is delivered to a requester that is away

    def on_message(self, sender: str, message: Payload, now: float) -> tuple[Ack, list[Outgoing]]:
        if not isinstance(message, ForecastRequest):
            detail = f"{self.name} answers forecast requests only, not {TYPE_OF[type(message)]}"
            return Ack(status="refused", detail=detail), []
        site_id = message.site or sender
        site = self.sites.get(site_id)
        if site is None or not site.readable_by(site_id, sender):
            log.info("%s: %s asked for site %r: unknown to it", self.name, sender, site_id)
            detail = (
                f"unknown site {site_id!r} for {sender}: {self.name} forecasts the sites "
                "configured under `forecaster: sites:`, each for the party of its name and the "
                "readers listed with it"
            )
            return Ack(status="refused", detail=detail), []
        series = "+".join(sorted(set(message.series)))
        key = f"forecast:{sender}:{site_id}:{message.day.isoformat()}:{series}"
        answer = Outgoing(sender, forecast(site, message), key=key, ttl_s=self.ttl_s)
        return Ack(status="ok"), [answer]
