"""Transport layer: the client HTTP API (a lean HTTP/1.1 server) and the binary peer protocol."""
