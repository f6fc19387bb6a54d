"""FleetSight's application layer: the ``fleetsight`` command and the operator features around the pipeline
(model rollout, the HTML report, ``audit``, MQTT and Kafka users). Settings live in ``runtime.settings``,
the local services in ``devtools``."""
