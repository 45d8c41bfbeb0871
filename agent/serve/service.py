"""The gRPC service's full name, read from the compiled contract so it is spelled once."""

from __future__ import annotations

from migwatch.v1 import migwatch_pb2 as pb

SERVICE_NAME: str = pb.DESCRIPTOR.services_by_name["MigrationService"].full_name
