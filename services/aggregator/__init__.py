"""The aggregator service (asyncio shell over ``shared``); built in the services issue."""
