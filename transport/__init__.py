"""Bytes in and out: msgpack codec, ZeroMQ ingest and RPC, HTTP."""
