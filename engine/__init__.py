"""Marmot's pure rules engine: models, matching, buckets, composite triggers, replay.

Nothing in this package performs I/O or reads the wall clock; time is always
passed in. The daemon (``marmot.actors``) and transports wrap it.
"""
