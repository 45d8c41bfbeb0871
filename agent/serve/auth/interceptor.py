"""The gRPC interceptor that enforces ``decisions.decide`` on every call."""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from migwatch.agent.serve.auth.decisions import (
    Decision,
    RoleRules,
    Verdict,
    cert_names,
    decide,
    required_role,
)
from migwatch.agent.serve.auth.roles import Role
from migwatch.agent.serve.auth.tokens import TokenFile

log = logging.getLogger(__name__)

Check = Callable[[Any], Awaitable[None]]  # aborts the call (given its context) when refused

_CODES = {
    Verdict.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    Verdict.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
}


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses calls whose caller lacks the method's role (see ``decide``).

    Decided before the handler runs when possible (open methods, calls with a token):
    then an allowed call runs the service's own handler, unwrapped. Certificate
    callers are decided inside a wrapper, where the peer certificate can be read.
    """

    def __init__(self, tokens: TokenFile | None, rules: RoleRules, client_certs: bool) -> None:
        self._tokens = tokens
        self._rules = rules
        self._client_certs = client_certs

    def _decide(self, method: str, authorization: Sequence[str], names: Sequence[str]) -> Decision:
        return decide(
            method,
            authorization=authorization,
            cert_names=names,
            tokens=None if self._tokens is None else self._tokens.entries(),
            rules=self._rules,
            client_certs=self._client_certs,
        )

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or required_role(method) is None:
            return handler
        authorization = [
            v if isinstance(v, str) else v.decode(errors="replace")
            for k, v in handler_call_details.invocation_metadata or ()
            if k == "authorization"
        ]
        if authorization or not self._client_certs:
            decision = self._decide(method, authorization, ())
            if decision.verdict is Verdict.ALLOW:
                _log_allowed(method, decision)
                return handler

            async def refuse(context: Any) -> None:
                await _abort(context, method, decision)

            return _guarded(handler, refuse)

        async def check_certificate(context: Any) -> None:
            names = cert_names(context.auth_context())
            decision = self._decide(method, (), names)
            if decision.verdict is Verdict.ALLOW:
                _log_allowed(method, decision)
            else:
                await _abort(context, method, decision)

        return _guarded(handler, check_certificate)


def _log_allowed(method: str, decision: Decision) -> None:
    if required_role(method) is Role.OPERATOR:
        log.info("%s by %s", method.rpartition("/")[2], decision.caller)


async def _abort(context: Any, method: str, decision: Decision) -> None:
    log.info("refused %s: %s", method, decision.message)
    await context.abort(_CODES[decision.verdict], decision.message)


def _guarded(handler: Any, check: Check) -> Any:
    """``handler`` with ``check(context)`` awaited before its behaviour runs.

    Serializers stay as they were (WatchMigrations streams pre-serialized bytes).
    """
    kw = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        inner = handler.unary_unary

        async def unary_unary(request: Any, context: Any) -> Any:
            await check(context)
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **kw)
    if handler.stream_unary is not None:
        inner = handler.stream_unary

        async def stream_unary(requests: Any, context: Any) -> Any:
            await check(context)
            return await inner(requests, context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, **kw)
    streaming = handler.unary_stream or handler.stream_stream
    wrapped = _guarded_stream(streaming, check)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(wrapped, **kw)
    return grpc.stream_stream_rpc_method_handler(wrapped, **kw)


def _guarded_stream(inner: Any, check: Check) -> Any:
    """grpc.aio runs a streaming behaviour by its kind: a coroutine function writes with
    ``context.write``, an async generator function yields. The wrapper keeps the kind."""
    if not inspect.isasyncgenfunction(inner):

        async def writer(request: Any, context: Any) -> None:
            await check(context)
            await inner(request, context)

        return writer

    async def generator(request: Any, context: Any) -> Any:
        await check(context)
        # aclosing: the service's generator runs its finally (unsubscribe) when the
        # call ends, not whenever it is garbage-collected.
        async with contextlib.aclosing(inner(request, context)) as responses:
            async for response in responses:
                yield response

    return generator
