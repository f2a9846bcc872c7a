"""Gateway API keys: format and hashing, storage, who may call which route, and the request guard."""
