"""Zigbee devices through zigpy: the radio, the gateway's manager of it, and capability drivers."""

from homeflex.edge.devices.zigbee.gateway import ZigbeeGateway

__all__ = ["ZigbeeGateway"]
