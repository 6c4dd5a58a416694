"""What provisioning hands to the runtime parts. Standard library only: FunctionSpec is pickled into
worker processes, which must not import boto3/moto before the handler's own imports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Resource:
    """A provisioned (or deliberately ignored) resource: what !Ref and !GetAtt return for it."""

    logical_id: str
    type: str
    emulation: str  # "moto" | "local" | "ignored"
    ref: Any
    attributes: dict[str, Any] = field(default_factory=dict)
    origin: str = "template"

    @property
    def arn(self) -> str | None:
        return self.attributes.get("Arn")

    @property
    def url(self) -> str | None:
        return self.attributes.get("QueueUrl")

    @property
    def name(self) -> str:
        for key in ("QueueName", "TopicName", "Name"):
            if key in self.attributes:
                return str(self.attributes[key])
        return str(self.ref)

    def describe(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "emulation": self.emulation,
            "origin": self.origin,
            "ref": self.ref,
            "name": self.name,
            "arn": self.arn,
            "url": self.url,
            "attributes": self.attributes,
        }


@dataclass(frozen=True)
class FunctionSpec:
    logical_id: str
    name: str
    arn: str
    handler: str
    code_dir: str
    layer_dirs: tuple[str, ...]
    runtime: str
    timeout: float
    memory_size: int
    environment: dict[str, str]
    log_path: str = ""
    echo: bool = True  # copy the function's output to the stack's console (always to log_path)


@dataclass(frozen=True)
class RouteSpec:
    method: str  # upper case, or ANY
    path: str  # API Gateway resource path, e.g. /accounts/{appid}
    function: str  # logical id
    event: str
    api: str  # logical id of the AWS::Serverless::Api
    api_id: str
    stage: str
    iam_auth: bool  # AWS_IAM authorizer: guarded by the local API key
    api_key_required: bool

    @property
    def needs_api_key(self) -> bool:
        return self.iam_auth or self.api_key_required


@dataclass(frozen=True)
class SqsSourceSpec:
    """An SQS event source mapping (a function's SQS event or an AWS::Lambda::EventSourceMapping)."""

    logical_id: str
    function: str
    queue_arn: str
    queue_url: str
    batch_size: int
    batching_window_seconds: float
    report_batch_item_failures: bool
    filter_patterns: tuple[str, ...] = ()


@dataclass(frozen=True)
class RuleTargetSpec:
    """An EventBridge rule target that is one of our functions (delivered through a bridge queue)
    or, for scheduled rules, a function or queue fired by the stack's own rate timer."""

    rule: str  # logical id
    rule_name: str
    rule_arn: str
    target_id: str
    function: str | None
    queue_url: str | None  # bridge queue (pattern rules) or target queue (scheduled rules)
    schedule_expression: str | None
    input: str | None = None
    input_path: str | None = None
    input_transformer: dict[str, Any] | None = None
