"""CloudFormation template reading: a YAML loader that keeps the short tags (!Ref, !Sub, ...) and
an evaluator for the intrinsic functions and conditions, independent of any AWS API."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import yaml


class TemplateError(Exception):
    """The template asks for something the local stack cannot do faithfully; start-up must stop."""


class _NoValue:
    """What `!Ref AWS::NoValue` resolves to: the enclosing property or list item disappears."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE: Final = _NoValue()

_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns `!Tag value` into the long JSON form (`{"Fn::Tag": value}`)."""


# Unquoted dates stay strings, as CloudFormation reads them (a date object would not survive !Sub).
CfnLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_short_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "Condition":
        return {"Condition": value}
    if suffix == "GetAtt" and isinstance(value, str):
        # `!GetAtt Res.Attr.Sub` splits at the first dot only (attribute names may contain dots).
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CfnLoader.add_multi_constructor("!", _construct_short_tag)


def load_template(path: Path) -> dict[str, Any]:
    """Reads a CloudFormation/SAM template (YAML or JSON, JSON being YAML)."""
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=CfnLoader)  # noqa: S506 - SafeLoader
    except yaml.YAMLError as exc:
        raise TemplateError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("Resources"), dict):
        raise TemplateError(f"{path}: no Resources section")
    return document


def is_intrinsic(node: Any) -> bool:
    """A one-key mapping whose key is Ref, Condition or Fn::*: a value to compute, not a structure."""
    if not isinstance(node, dict) or len(node) != 1:
        return False
    key = next(iter(node))
    return key in ("Ref", "Condition") or key.startswith("Fn::")


_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


def sub_variables(text: str) -> list[str]:
    """The `${...}` names of a Fn::Sub string, without the `${!Literal}` escapes."""
    return [name.strip() for name in _SUB_VARIABLE.findall(text) if not name.startswith("!")]


def references(node: Any) -> set[str]:
    """Every logical id or parameter name a node mentions via Ref, GetAtt or Sub."""
    found: set[str] = set()
    if isinstance(node, list):
        for item in node:
            found |= references(item)
    elif isinstance(node, dict):
        if is_intrinsic(node):
            key, value = next(iter(node.items()))
            if key == "Ref" and isinstance(value, str):
                return {value}
            if key == "Fn::GetAtt":
                target = value[0] if isinstance(value, list) else str(value).split(".", 1)[0]
                return {target} if isinstance(target, str) else references(target)
            if key == "Fn::Sub":
                text, variables = (value, {}) if isinstance(value, str) else (value[0], value[1])
                local = set(variables) if isinstance(variables, dict) else set()
                for name in sub_variables(text) if isinstance(text, str) else []:
                    if name not in local:
                        found.add(name.split(".", 1)[0])
                return found | references(variables)
        for value in node.values():
            found |= references(value)
    return found


RefLookup = Callable[[str], Any]
GetAttLookup = Callable[[str, str], Any]


class Intrinsics:
    """Evaluates intrinsic functions against parameters, pseudo parameters, conditions and resources.

    Resource values come from the callbacks, so the same evaluator serves before and during
    provisioning (a resource that is not provisioned yet raises TemplateError via the callback).
    """

    def __init__(
        self,
        *,
        parameters: Mapping[str, Any],
        pseudo: Mapping[str, Any],
        conditions: Mapping[str, Any],
        mappings: Mapping[str, Any],
        ref: RefLookup,
        get_att: GetAttLookup,
    ) -> None:
        self.parameters = parameters
        self.pseudo = pseudo
        self._condition_nodes = conditions
        self._mappings = mappings
        self._ref = ref
        self._get_att = get_att
        self._condition_values: dict[str, bool] = {}
        self._evaluating: set[str] = set()

    # -- conditions -------------------------------------------------------------------------------

    def condition(self, name: str) -> bool:
        if name in self._condition_values:
            return self._condition_values[name]
        if name not in self._condition_nodes:
            raise TemplateError(f"unknown condition {name!r}")
        if name in self._evaluating:
            raise TemplateError(f"condition {name!r} refers to itself")
        self._evaluating.add(name)
        try:
            value = self.evaluate_condition(self._condition_nodes[name])
        finally:
            self._evaluating.discard(name)
        self._condition_values[name] = value
        return value

    def evaluate_condition(self, node: Any) -> bool:
        if isinstance(node, bool):
            return node
        if isinstance(node, str) and node.lower() in ("true", "false"):
            return node.lower() == "true"
        if not is_intrinsic(node):
            raise TemplateError(f"not a condition: {node!r}")
        key, value = next(iter(node.items()))
        if key == "Condition":
            return self.condition(value)
        if key == "Fn::Equals":
            left, right = (self.resolve(item) for item in value)
            return _scalar_text(left) == _scalar_text(right)
        if key == "Fn::And":
            return all(self.evaluate_condition(item) for item in value)
        if key == "Fn::Or":
            return any(self.evaluate_condition(item) for item in value)
        if key == "Fn::Not":
            return not self.evaluate_condition(value[0])
        raise TemplateError(f"{key} cannot be used as a condition")

    # -- values -----------------------------------------------------------------------------------

    def resolve(self, node: Any) -> Any:
        """The node with every intrinsic evaluated; AWS::NoValue entries are dropped."""
        if isinstance(node, list):
            return [item for item in (self.resolve(i) for i in node) if item is not NO_VALUE]
        if isinstance(node, dict):
            if is_intrinsic(node):
                key, value = next(iter(node.items()))
                if key != "Condition":  # a key named Condition in a policy statement is data
                    return self._function(key, value)
            resolved = {key: self.resolve(value) for key, value in node.items()}
            return {key: value for key, value in resolved.items() if value is not NO_VALUE}
        return node

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        return self._ref(name)

    def _function(self, key: str, value: Any) -> Any:
        handler = _FUNCTIONS.get(key)
        if handler is None:
            raise TemplateError(f"intrinsic function {key} is not supported by the local stack")
        return handler(self, value)

    def _get_att_node(self, value: Any) -> Any:
        if isinstance(value, str):
            value = value.split(".", 1)
        if not isinstance(value, list) or len(value) != 2:
            raise TemplateError(f"malformed Fn::GetAtt: {value!r}")
        logical_id, attribute = value[0], self.resolve(value[1])
        return self._get_att(logical_id, str(attribute))

    def _sub(self, value: Any) -> str:
        if isinstance(value, str):
            text, variables = value, {}
        elif isinstance(value, list) and len(value) == 2 and isinstance(value[1], dict):
            text, variables = value[0], {k: self.resolve(v) for k, v in value[1].items()}
        else:
            raise TemplateError(f"malformed Fn::Sub: {value!r}")
        if not isinstance(text, str):
            raise TemplateError(f"Fn::Sub needs a string, got {text!r}")

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"  # ${!Literal} is an escape for a literal ${Literal}
            name = name.strip()
            if name in variables:
                return _scalar_text(variables[name])
            if "." in name and not name.startswith("AWS::"):
                logical_id, attribute = name.split(".", 1)
                return _scalar_text(self._get_att(logical_id, attribute))
            return _scalar_text(self.ref(name))

        return _SUB_VARIABLE.sub(replace, text)

    def _join(self, value: Any) -> str:
        delimiter, items = value[0], self.resolve(value[1])
        if not isinstance(items, list):
            raise TemplateError(f"Fn::Join needs a list, got {items!r}")
        return str(delimiter).join(_scalar_text(item) for item in items)

    def _select(self, value: Any) -> Any:
        index, items = int(self.resolve(value[0])), self.resolve(value[1])
        if not isinstance(items, list) or not 0 <= index < len(items):
            raise TemplateError(f"Fn::Select index {index} out of range of {items!r}")
        return items[index]

    def _if(self, value: Any) -> Any:
        name, when_true, when_false = value
        return self.resolve(when_true if self.condition(name) else when_false)

    def _find_in_map(self, value: Any) -> Any:
        map_name, top, second = (_scalar_text(self.resolve(item)) for item in value[:3])
        try:
            return self._mappings[map_name][top][second]
        except (KeyError, TypeError) as exc:
            raise TemplateError(f"Fn::FindInMap: no {map_name}/{top}/{second}") from exc

    def _split(self, value: Any) -> list[str]:
        return _scalar_text(self.resolve(value[1])).split(str(value[0]))

    def _get_azs(self, value: Any) -> list[str]:
        region = _scalar_text(self.resolve(value)) or _scalar_text(self.pseudo["AWS::Region"])
        return [f"{region}{zone}" for zone in "abc"]


def _scalar_text(value: Any) -> str:
    """How CloudFormation renders a scalar inside strings (booleans lower-case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is NO_VALUE or value is None:
        return ""
    if isinstance(value, (dict, list)):
        raise TemplateError(f"expected a scalar, got {value!r}")
    return str(value)


_FUNCTIONS: dict[str, Callable[[Intrinsics, Any], Any]] = {
    "Ref": lambda ev, v: ev.ref(v),
    "Fn::GetAtt": Intrinsics._get_att_node,
    "Fn::Sub": Intrinsics._sub,
    "Fn::Join": Intrinsics._join,
    "Fn::Select": Intrinsics._select,
    "Fn::If": Intrinsics._if,
    "Fn::Equals": lambda ev, v: ev.evaluate_condition({"Fn::Equals": v}),
    "Fn::And": lambda ev, v: ev.evaluate_condition({"Fn::And": v}),
    "Fn::Or": lambda ev, v: ev.evaluate_condition({"Fn::Or": v}),
    "Fn::Not": lambda ev, v: ev.evaluate_condition({"Fn::Not": v}),
    "Fn::FindInMap": Intrinsics._find_in_map,
    "Fn::Split": Intrinsics._split,
    "Fn::GetAZs": Intrinsics._get_azs,
    "Fn::Base64": lambda ev, v: base64.b64encode(_scalar_text(ev.resolve(v)).encode()).decode(),
    "Fn::ToJsonString": lambda ev, v: json.dumps(ev.resolve(v), separators=(",", ":")),
    "Fn::Length": lambda ev, v: len(ev.resolve(v)),
}


def resolve_parameters(
    declared: Mapping[str, Any], overrides: Mapping[str, str], *, where: str
) -> dict[str, Any]:
    """Parameter values: overrides, else Default; validated like CloudFormation validates them."""
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise TemplateError(
            f"{where}: parameter override(s) for undeclared parameter(s): {', '.join(unknown)}"
        )
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        spec = spec or {}
        if name in overrides:
            raw: Any = overrides[name]
        elif "Default" in spec:
            raw = spec["Default"]
        else:
            raise TemplateError(f"{where}: parameter {name} has no Default; pass it as an override")
        kind = str(spec.get("Type", "String"))
        text = _scalar_text(raw) if not isinstance(raw, list) else ",".join(map(str, raw))
        allowed = spec.get("AllowedValues")
        if allowed is not None and text not in [_scalar_text(a) for a in allowed]:
            raise TemplateError(f"{where}: parameter {name}={text!r} is not one of {allowed}")
        pattern = spec.get("AllowedPattern")
        if pattern is not None and kind == "String" and not re.fullmatch(str(pattern), text):
            raise TemplateError(f"{where}: parameter {name}={text!r} does not match {pattern}")
        if kind == "Number":
            try:
                number = float(text)
            except ValueError as exc:
                raise TemplateError(f"{where}: parameter {name}={text!r} is not a number") from exc
            if "MinValue" in spec and number < float(spec["MinValue"]):
                raise TemplateError(f"{where}: parameter {name}={text} is below MinValue {spec['MinValue']}")
            if "MaxValue" in spec and number > float(spec["MaxValue"]):
                raise TemplateError(f"{where}: parameter {name}={text} is above MaxValue {spec['MaxValue']}")
        # Ref of a parameter is a string (a list for list types), whatever its declared type.
        values[name] = text.split(",") if kind.startswith("List<") or kind == "CommaDelimitedList" else text
    return values
