"""The generated migwatch.v1 gRPC contract (see migwatch.proto beside this file)."""
