"""Device drivers: one per protocol, each implementing the typed capabilities."""
