"""The store contract and the machinery every backend shares: calls, retries,
rows, codec, encryption."""
