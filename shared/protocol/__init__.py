"""Sans-I/O protocol state machines: stages, aggregator round, edge client, key service."""
