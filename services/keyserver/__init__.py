"""The keyserver service (asyncio shell over ``shared``); built in the services issue.

* :mod:`.store`: the registry in sqlite (devices, tokens as hashes, the aggregator);
* :mod:`.handlers`: request logic, a decoded request in and a reply body out;
* :mod:`.service`: configuration (``FEDCAST_*``), state directory, the RPC loop;
* :mod:`.client`: what edge clients, the aggregator and operators call.
"""
