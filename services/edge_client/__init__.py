"""The edge_client service (asyncio shell over ``shared``); built in the services issue."""
