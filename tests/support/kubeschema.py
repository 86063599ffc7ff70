"""Check Kubernetes objects against the API's schema as the official Python client
carries it (pydantic models generated from the Kubernetes OpenAPI document), offline:
unknown fields anywhere, then types and required fields through the models themselves."""

from __future__ import annotations

import types
import typing
from typing import Any

from kubernetes import client
from pydantic import BaseModel, ValidationError

from tests.support.kubevalidation import Invalid, validate

_GROUPS = {
    "v1": "V1",
    "apps/v1": "V1",
    "policy/v1": "V1",
    "networking.k8s.io/v1": "V1",
    "rbac.authorization.k8s.io/v1": "V1",
    "apiextensions.k8s.io/v1": "V1",
}


def model_for(obj: dict[str, Any]) -> type[BaseModel]:
    prefix = _GROUPS.get(obj.get("apiVersion", ""))
    if prefix is None:
        raise AssertionError(f"no schema for apiVersion {obj.get('apiVersion')!r}")
    model: type[BaseModel] = getattr(client, prefix + obj["kind"])
    return model


def _inner(annotation: Any) -> list[Any]:
    """The types a value of ``annotation`` may be (unwrapping Optional, Annotated, Union)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _inner(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in _inner(arg)]
    return [annotation]


def unknown_fields(obj: Any, model: type[BaseModel], path: str) -> list[str]:
    if not isinstance(obj, dict):
        return []
    attribute_map: dict[str, str] = getattr(model, "attribute_map", {})
    # Field names that are Python keywords carry an alias (field var_exec, alias _exec).
    fields = {info.alias or name: name for name, info in model.model_fields.items()}
    by_json = {json_name: fields[attr] for attr, json_name in attribute_map.items()}
    found = []
    for key, value in obj.items():
        attribute = by_json.get(key)
        if attribute is None:
            found.append(f"{path}.{key}: unknown field of {model.__name__}")
            continue
        for kind in _inner(model.model_fields[attribute].annotation):
            found.extend(_walk(value, kind, f"{path}.{key}"))
    return found


def _walk(value: Any, kind: Any, path: str) -> list[str]:
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return unknown_fields(value, kind, path)
    if origin is list and isinstance(value, list):
        return [
            p
            for i, item in enumerate(value)
            for inner in _inner(args[0])
            for p in _walk(item, inner, f"{path}[{i}]")
        ]
    if origin is dict and isinstance(value, dict):
        return [
            p
            for k, item in value.items()
            for inner in _inner(args[1])
            for p in _walk(item, inner, f"{path}.{k}")
        ]
    return []


def problems(obj: dict[str, Any]) -> list[str]:
    """Everything wrong with one object, as the Kubernetes API would see it."""
    if str(obj.get("apiVersion", "")).startswith("gateway.networking.k8s.io/"):
        # Custom resources: their CRDs' validation (the client carries no models for them).
        try:
            validate(obj)
        except Invalid as exc:
            return exc.errors
        return []
    model = model_for(obj)
    path = f"{obj['kind']}/{obj.get('metadata', {}).get('name', '?')}"
    found = unknown_fields(obj, model, path)
    try:
        model.from_dict(obj)  # type: ignore[attr-defined]
    except ValidationError as exc:
        found.extend(
            f"{path}: {'.'.join(map(str, error['loc']))}: {error['msg']}" for error in exc.errors()
        )
    return found
