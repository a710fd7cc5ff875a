"""The keyserver service (asyncio shell over ``shared``); built in the services issue."""
