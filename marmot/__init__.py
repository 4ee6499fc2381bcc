"""Marmot: Prefect automations as a standalone, actor-based rules engine."""
