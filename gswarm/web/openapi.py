"""The OpenAPI 3 document of the JSON API (served at /api/openapi.json)."""

from __future__ import annotations

from typing import Any

from gswarm.config import Settings
from gswarm.core import alpha
from gswarm.core.facts import ATTRIBUTES
from gswarm.web import access

_ERROR = {"type": "object", "properties": {"error": {"type": "string"}},
          "required": ["error"]}
_MARKET = {"name": "market", "in": "path", "required": True,
           "schema": {"type": "string", "minLength": 1, "maxLength": 200}}
_ATTR = {"name": "attr", "in": "query", "schema": {
    "type": "string", "enum": list(ATTRIBUTES)}}
_TIME = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}


def _q(name: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema}


def _get(summary: str, params: list[dict[str, Any]], errors: tuple[int, ...] = (400,)
         ) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {
        "description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}}
    for code in errors:
        responses[str(code)] = {"description": "Error", "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return {"get": {"summary": summary, "parameters": params, "responses": responses}}


def document(settings: Settings) -> dict[str, Any]:
    limit = _q("limit", {"type": "integer", "minimum": 1, "maximum": 10_000})
    k = _q("k", {"type": "integer", "minimum": 1, "maximum": 1000})
    market_errors = (400, 404, 503)
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {"title": "Gswarm API", "version": "1",
                 "description": "Read-only JSON API of a Gswarm worker. Requests about one "
                                "market are routed to the worker owning its partition."},
        "servers": [{"url": settings.web_url}],
        "components": {"schemas": {"Error": _ERROR}},
        "paths": {
            "/api/health": _get("Liveness and served partitions", [], ()),
            "/api/stats": _get("Counters, unique markets and traders", [], (503,)),
            "/api/cluster": _get("Partitions, standbys, leader, lag, workers", [], ()),
            "/api/storage": _get("Keys held per partition", [], ()),
            "/api/markets": _get("Market ids by prefix", [
                _q("prefix", {"type": "string", "maxLength": 200}), limit], (400, 503)),
            "/api/markets/{market}": _get("Latest state of a market", [_MARKET],
                                          market_errors),
            "/api/markets/{market}/history": _get("A page of one attribute's series", [
                _MARKET, _ATTR, _q("from", _TIME), _q("to", _TIME), limit,
                _q("after_seq", {"type": "integer", "minimum": 0})], market_errors),
            "/api/markets/{market}/asof": _get("Value of an attribute at time t", [
                _MARKET, _ATTR, _q("t", _TIME, required=True)], market_errors),
            "/api/markets/{market}/since": _get("Datoms after a tx", [
                _MARKET, _q("ts", _TIME, required=True),
                _q("seq", {"type": "integer", "minimum": 0}), limit], market_errors),
            "/api/similar/{market}": _get("Most similar markets (cosine of alpha)", [
                _MARKET, k, _q("min", {"type": "number", "minimum": -1, "maximum": 1})],
                market_errors),
            "/api/similar": _get("Most similar markets to a vector", [
                _q("vector", {"type": "string"}, required=True), k,
                _q("min", {"type": "number", "minimum": -1, "maximum": 1})], (400, 503)),
            "/api/screen": _get(
                "Markets whose alpha components pass every condition (where=rsi14:gt:0.7, "
                "repeated; or one component/op/value), sorted by a component", [
                    {**_q("where", {"type": "array", "maxItems": 20, "items": {
                        "type": "string", "pattern": r"^[a-z0-9_]+:(gt|ge|lt|le):[^:]+$",
                        "example": "rsi14:gt:0.7"}}), "style": "form", "explode": True},
                    _q("component", {"type": "string", "enum": list(alpha.COMPONENTS)}),
                    _q("op", {"type": "string", "enum": ["gt", "ge", "lt", "le"]}),
                    _q("value", {"type": "number"}),
                    _q("sort", {"type": "string", "enum": list(alpha.COMPONENTS)}),
                    _q("order", {"type": "string", "enum": ["asc", "desc"]}), limit],
                (400, 503)),
            "/api/signals": _get("Signals fired, newest first, cluster-wide", [
                _q("market", {"type": "string", "maxLength": 200}),
                _q("rule", {"type": "string", "maxLength": 64}), _q("since", _TIME), limit,
                _q("before", {"type": "string", "example": "1700000000000:65536:jump"})],
                (400, 503)),
            "/api/hot": _get("Hot markets, overall or in a window of event time", [
                k, _q("window", {"type": "number", "exclusiveMinimum": True, "minimum": 0,
                                 "maximum": 3600})], (400, 503)),
        },
    }
    return _with_token(doc) if settings.api_token else doc


def _with_token(doc: dict[str, Any]) -> dict[str, Any]:
    """The document of a worker that requires its bearer token (gswarm/web/access.py)."""
    doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    doc["security"] = [{"bearer": []}]
    for path, item in doc["paths"].items():
        if access.is_public(path):
            item["get"]["security"] = []
        else:
            item["get"]["responses"]["401"] = {"description": "No or wrong token", "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return doc
