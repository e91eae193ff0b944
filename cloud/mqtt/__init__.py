"""The platform's MQTT broker: Mosquitto behind mutually authenticated TLS.

Topics (the layout is written down, with the client, in `homeflex.mqtt_client`):
`homeflex/box/<box name>/...` for what a box publishes (telemetry, security events), readable by
the cloud services named in the ACL and writable only by the box whose certificate CN is that
name; `homeflex/cloud/...` for the services. `broker` writes the configuration and runs
mosquitto; `logwatch` turns its log into security events."""
