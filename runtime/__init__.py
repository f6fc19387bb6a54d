"""The platform every FleetSight process runs on: settings, metrics and
health, the stall watchdog, MQTT and Kafka clients, retry and waiting.

Imports only the contract (``schemas``); the stages (``edge``, ``streams``,
``sinks``) build on it.
"""
