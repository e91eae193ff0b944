"""The neighbourhood demo (`homeflex demo`, the README's main job): N simulated homes, each with
its own firmware-sim and its own gateway process, the embedded XMPP server with TLS, the MQTT
broker, and the aggregator and DSO agents, through one simulated day of the USEF cycle; then a
report.

`scenario` says what the neighbourhood is (homes, prices, the transformer, the PKI and every
configuration file), `run` starts and stops the processes and follows the day, `report` turns
what they left behind into KPIs, charts and an HTML page.
"""
