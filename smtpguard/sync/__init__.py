"""Unsubscribes that arrive by themselves: webhook receivers, pull connectors, source sync.

- `webhooks`: verify a provider's webhook request and read its events (pure, no I/O);
- `connectors`: fetch a source's full current list from a provider's API (httpx);
- `sync`: apply webhook events, or make a source's entries exactly a fetched set.
"""
