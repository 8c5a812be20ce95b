"""Transport layer: the client HTTP API (aiohttp) and the binary peer protocol."""
