"""What the relay and the edge both speak: identities, envelopes, signatures, sealed
payloads and the WebSocket link. Pure values in, values out: this package never does I/O
(no sockets, files, NATS or SQLite), so every rule here is testable without a network."""

PROTOCOL_VERSION = 1
