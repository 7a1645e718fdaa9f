"""Structured output: AetherGraph's ``output_format=`` / ``json_schema=`` (and a pydantic model)
translated to the chat API's ``response_format``, and the answer validated on the way back.

AetherGraph 0.1.0a15 (``generic_client.py`` ``chat``): ``output_format`` is ``"text"``,
``"json_object"`` (``"json"`` is its deprecated alias), ``"json_schema"`` or ``"raw"``; a
JSON answer is parsed (code fences and surrounding prose stripped), checked against
``json_schema`` when ``strict_schema``, and returned as canonical JSON text. Here a
``json_schema`` (a dict, or a pydantic model class) means schema mode whatever
``output_format`` says (a15 sends a schema only with ``output_format="json_schema"``; a user
giving a schema wants it enforced), sent as ``response_format={"type": "json_schema",
"json_schema": {"name", "schema", "strict"}}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ...errors import LLMOutputError

OUTPUT_FORMATS = ("text", "json", "json_object", "json_schema", "raw")
JSON_DIRECTIVE = "Return ONLY valid JSON. No markdown, no commentary."
"""a15's system directive for JSON answers (``utils._ensure_system_json_directive``); added
only when no message mentions JSON already (the OpenAI API requires that word)."""


def _is_model_class(value: Any) -> bool:
    return (
        isinstance(value, type)
        and hasattr(value, "model_json_schema")
        and hasattr(value, "model_validate")
    )


@dataclass(frozen=True)
class OutputSpec:
    """What a request asked for and how its answer is checked."""

    fmt: str = "text"
    schema: dict[str, Any] | None = None
    model_class: Any = None
    strict: bool = True
    validate: bool = True

    @property
    def is_json(self) -> bool:
        return self.fmt in ("json_object", "json_schema")


def output_spec(
    *,
    output_format: Any = "text",
    json_schema: Any = None,
    response_format: Any = None,
    schema_name: str = "output",
    strict_schema: bool = True,
    validate_json: bool = True,
) -> tuple[OutputSpec, dict[str, Any] | None]:
    """``(spec, response_format)`` for a request (``response_format`` None: send none).

    Raises:
      ValueError: for an unknown ``output_format``. TypeError: for a ``json_schema`` that
        is neither a dict nor a pydantic model class.
    """
    model_class = None
    for candidate in (output_format, json_schema, response_format):
        if _is_model_class(candidate):
            model_class = candidate
    if model_class is not None:
        if _is_model_class(output_format):
            output_format = "json_schema"
        if _is_model_class(response_format):
            response_format = None
        json_schema = model_class
    if not isinstance(output_format, str) or output_format not in OUTPUT_FORMATS:
        raise ValueError(
            f"output_format must be one of {', '.join(OUTPUT_FORMATS)} (or a pydantic model "
            f"class), got {output_format!r}"
        )
    fmt = "json_object" if output_format == "json" else output_format
    if response_format is not None:  # the chat API's own parameter, given as is
        if not isinstance(response_format, dict):
            raise TypeError(
                f"response_format must be a dict or a pydantic model class, got "
                f"{type(response_format).__name__}"
            )
        kind = response_format.get("type")
        fmt = "json_schema" if kind == "json_schema" else "json_object" if kind else fmt
        schema = (response_format.get("json_schema") or {}).get("schema")
        return OutputSpec(fmt, schema, None, strict_schema, validate_json), response_format
    schema: dict[str, Any] | None = None
    if json_schema is not None and fmt != "raw":
        fmt = "json_schema"
        if model_class is not None:
            schema = _model_schema(model_class, strict_schema)
        elif isinstance(json_schema, dict):
            schema = json_schema
        else:
            raise TypeError(
                f"json_schema must be a JSON Schema dict or a pydantic model class, got "
                f"{type(json_schema).__name__}"
            )
    spec = OutputSpec(fmt, schema, model_class, bool(strict_schema), bool(validate_json))
    if fmt == "json_object":
        return spec, {"type": "json_object"}
    if fmt == "json_schema":
        return spec, {
            "type": "json_schema",
            "json_schema": {
                "name": re.sub(r"[^A-Za-z0-9_-]", "_", schema_name or "output")[:64],
                "schema": schema or {"type": "object"},
                "strict": bool(strict_schema),
            },
        }
    return spec, None


def _model_schema(model_class: Any, strict: bool) -> dict[str, Any]:
    if strict:
        try:  # the schema shape the OpenAI API's strict mode accepts
            from openai.lib._pydantic import to_strict_json_schema

            return to_strict_json_schema(model_class)
        except Exception:
            pass
    return model_class.model_json_schema()


def with_json_directive(messages: list[dict[str, Any]], spec: OutputSpec) -> list[dict[str, Any]]:
    """``messages`` with a15's JSON directive first, unless one already mentions JSON."""
    if not spec.is_json:
        return messages
    for msg in messages:
        content = msg.get("content")
        text = content if isinstance(content, str) else json.dumps(content, default=str)
        if "json" in text.lower():
            return messages
    return [{"role": "system", "content": JSON_DIRECTIVE}, *messages]


def _extract_json_text(text: str) -> str:
    """The JSON inside ``text``: a fenced block's content, else the text from its first
    ``{`` / ``[`` to the end of that value (as a15's ``_extract_json_text``)."""
    t = text.strip()
    fence = re.match(r"^```(?:json)?\s*([\s\S]*?)\s*```$", t, flags=re.IGNORECASE)
    if fence:
        t = fence.group(1).strip()
    if t[:1] in "{[":
        try:
            json.loads(t)
            return t
        except ValueError:
            try:
                _, end = json.JSONDecoder().raw_decode(t)
                return t[:end]
            except ValueError:
                return t
    match = re.search(r"(\{.*\}|\[.*\])", t, flags=re.DOTALL)
    return match.group(1) if match else t


def _check(obj: Any, schema: dict[str, Any], path: str) -> str | None:
    """The first way ``obj`` fails ``schema`` (a subset of JSON Schema), or None."""
    types = schema.get("type")
    checks = {
        "object": lambda o: isinstance(o, dict),
        "array": lambda o: isinstance(o, list),
        "string": lambda o: isinstance(o, str),
        "number": lambda o: isinstance(o, int | float) and not isinstance(o, bool),
        "integer": lambda o: isinstance(o, int) and not isinstance(o, bool),
        "boolean": lambda o: isinstance(o, bool),
        "null": lambda o: o is None,
    }
    if types is not None:
        allowed = types if isinstance(types, list) else [types]
        if not any(checks.get(t, lambda o: True)(obj) for t in allowed):
            return f"{path}: expected {' or '.join(allowed)}, got {type(obj).__name__}"
    if "enum" in schema and obj not in schema["enum"]:
        return f"{path}: expected one of {schema['enum']}, got {obj!r}"
    for key in ("anyOf", "oneOf"):
        if key in schema and not any(_check(obj, s, path) is None for s in schema[key]):
            return f"{path}: matches none of the {key} schemas"
    if isinstance(obj, dict):
        props = schema.get("properties") or {}
        for name in schema.get("required") or []:
            if name not in obj:
                return f"{path}: missing required key {name!r}"
        if schema.get("additionalProperties") is False:
            extra = sorted(set(obj) - set(props))
            if extra:
                return f"{path}: unexpected keys {extra}"
        for name, value in obj.items():
            if name in props and isinstance(props[name], dict):
                found = _check(value, props[name], f"{path}.{name}")
                if found:
                    return found
    if isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            found = _check(item, schema["items"], f"{path}[{i}]")
            if found:
                return found
    return None


def validate_answer(text: str, spec: OutputSpec, **error_fields: Any) -> str:
    """The answer ``text`` as canonical JSON text when ``spec`` asks for JSON (checked
    against the pydantic model or the schema), else unchanged.

    Raises:
      LLMOutputError: if the answer is not JSON or does not fit (the message quotes it).
    """
    if not spec.is_json or not spec.validate:
        return text
    candidate = _extract_json_text(text)
    try:
        obj = json.loads(candidate)
    except ValueError:
        raise LLMOutputError(
            f"the model did not answer with valid JSON (asked with output_format / "
            f"json_schema); its answer: {text[:500]!r}",
            text=text,
            **error_fields,
        ) from None
    if spec.model_class is not None:
        try:
            obj = spec.model_class.model_validate(obj).model_dump(mode="json")
        except Exception as exc:
            raise LLMOutputError(
                f"the model's JSON does not fit {spec.model_class.__name__}: {exc}; its "
                f"answer: {text[:500]!r}",
                text=text,
                **error_fields,
            ) from None
    elif spec.schema is not None and spec.strict:
        problem = None
        try:
            import jsonschema  # type: ignore[import-untyped]
        except ImportError:
            problem = _check(obj, spec.schema, "$")
        else:
            try:
                jsonschema.validate(instance=obj, schema=spec.schema)
            except jsonschema.ValidationError as exc:
                problem = exc.message
        if problem:
            raise LLMOutputError(
                f"the model's JSON does not fit the schema ({problem}); its answer: {text[:500]!r}",
                text=text,
                **error_fields,
            )
    return json.dumps(obj, ensure_ascii=False)
