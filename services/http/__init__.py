"""The OpenAI-compatible HTTP front: a stateless translation to the gateway's gRPC API."""
