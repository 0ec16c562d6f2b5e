"""The long-running service: REST, gRPC, stream consumer, registration."""
