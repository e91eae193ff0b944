"""A ControllerApplication layer, whatever the radio, that drops ZCL frames zigpy cannot decode.

zigpy would raise deep inside its message handling; here such a frame is logged with the device,
endpoint, cluster and the bytes, and dropped, so a misbehaving device costs one log line.
"""

# mypy: disable-error-code="no-untyped-call"
# (zigpy's int types and structs have unannotated constructors)

from __future__ import annotations

import logging

import zigpy.application
import zigpy.endpoint
import zigpy.types as t
from zigpy.device import ZigbeeDevice
from zigpy.profiles import zha
from zigpy.zcl import foundation

log = logging.getLogger(__name__)


class MalformedFrameFilter(zigpy.application.ControllerApplication):
    """Put in front of a radio's ControllerApplication (it stays abstract on its own)."""

    def packet_received(self, packet: t.ZigbeePacket) -> None:
        """Drop (and log) ZCL frames that cannot be decoded, before zigpy sees them."""
        problem = self._undecodable(packet)
        if problem is not None:
            device, reason = problem
            log.warning(
                "zigbee: malformed ZCL frame from %s (nwk 0x%04x) endpoint %s cluster 0x%04x "
                "dropped (%s): %s",
                device.ieee,
                device.nwk,
                packet.src_ep,
                packet.cluster_id,
                reason,
                packet.data.serialize().hex(),
            )
            return
        super().packet_received(packet)

    def _undecodable(self, packet: t.ZigbeePacket) -> tuple[ZigbeeDevice, str] | None:
        if packet.src_ep in (None, 0) or packet.profile_id != zha.PROFILE_ID or packet.src is None:
            return None
        try:
            device = self.get_device_with_address(packet.src)
        except (KeyError, ValueError):
            return None  # zigpy discovers unknown senders itself
        if not isinstance(device, ZigbeeDevice):
            return None
        endpoint = device.endpoints.get(packet.src_ep)
        if not isinstance(endpoint, zigpy.endpoint.Endpoint):
            return None
        data = packet.data.serialize()
        try:
            hdr, _ = foundation.ZCLHeader.deserialize(data)
            clusters = (
                endpoint.out_clusters
                if hdr.direction == foundation.Direction.Client_to_Server
                else endpoint.in_clusters
            )
            cluster = clusters.get(packet.cluster_id)
            if cluster is None:
                return None
            cluster.deserialize(data)
        except Exception as exc:  # any decoding failure: the frame is unusable
            return device, f"{type(exc).__name__}: {exc}"
        return None
