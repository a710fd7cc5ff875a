"""The three fedcast services: key service, aggregator, edge client (asyncio shells over ``shared``)."""
