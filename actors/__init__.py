"""Ray actors that host the engine: automations, timers, action executors."""
