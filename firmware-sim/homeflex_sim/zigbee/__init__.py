"""A simulated Zigbee network (smart plugs, smart appliances) behind a simulated radio on TCP.

The gateway's zigpy stack talks to the radio with the frames of `wire`; devices encode and decode
ZCL/ZDO with zigpy's types. `ZigbeeNetwork` is what the home runtime drives.
"""

from homeflex_sim.zigbee.network import ZigbeeNetwork
from homeflex_sim.zigbee.spec import ZigbeeSpec

__all__ = ["ZigbeeNetwork", "ZigbeeSpec"]
