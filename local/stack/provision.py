"""Creates the template's resources in moto, in dependency order, the way CloudFormation would,
and computes what !Ref / !GetAtt return for every resource (moto-created, local or ignored)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from local.stack.aws import Arn, MotoEndpoint, error_code
from local.stack.cfn import TemplateError, _scalar_text, references
from local.stack.model import IGNORED_TYPES, ResourceDecl, SamTemplate
from local.stack.s3 import bucket_attributes, bucket_name, check_bucket_name, plan_bucket
from local.stack.specs import FunctionSpec, Resource, RouteSpec, RuleTargetSpec, SqsSourceSpec

log = logging.getLogger("local.stack")

_QUEUE_ATTRIBUTES = (
    "DelaySeconds",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout",
    "RedrivePolicy",
    "RedriveAllowPolicy",
    "FifoQueue",
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "FifoThroughputLimit",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "SqsManagedSseEnabled",
)
_SCHEDULE_FIELDS = (
    "GroupName",
    "ScheduleExpression",
    "ScheduleExpressionTimezone",
    "FlexibleTimeWindow",
    "State",
    "Description",
    "KmsKeyArn",
    "ActionAfterCompletion",
)


@dataclass
class Provisioned:
    resources: dict[str, Resource] = field(default_factory=dict)
    functions: dict[str, FunctionSpec] = field(default_factory=dict)
    routes: list[RouteSpec] = field(default_factory=list)
    sqs_sources: list[SqsSourceSpec] = field(default_factory=list)
    rule_targets: list[RuleTargetSpec] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def physical_name(stack_name: str, logical_id: str, limit: int) -> str:
    """A deterministic stand-in for CloudFormation's `<stack>-<logical>-<RANDOM>` names."""
    name = f"{stack_name}-{logical_id}"
    if len(name) <= limit:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]  # noqa: S324 - a name, not security
    return f"{name[: limit - 9]}-{digest}"


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (dict, list)) else _scalar_text(value)


def _tags(value: Any) -> list[dict[str, str]]:
    if isinstance(value, dict):
        return [{"Key": str(k), "Value": _text(v)} for k, v in value.items()]
    return [{"Key": str(t["Key"]), "Value": _text(t["Value"])} for t in value or []]


class Provisioner:
    def __init__(
        self, template: SamTemplate, endpoint: MotoEndpoint, *, logs_dir: Path, echo_output: bool = True
    ) -> None:
        self.template = template
        self.endpoint = endpoint
        self.logs_dir = logs_dir
        self.echo_output = echo_output
        self.stack_name = str(template.pseudo["AWS::StackName"])
        self.partition = str(template.pseudo["AWS::Partition"])
        self.out = Provisioned()
        self._layer_dirs: dict[str, str] = {}
        self._apis: dict[str, dict[str, Any]] = {}
        self._clients: dict[str, Any] = {}
        self.intrinsics = template.intrinsics(ref=self._ref, get_att=self._get_att)

    # -- reference lookups ------------------------------------------------------------------------

    def _resource(self, logical_id: str) -> Resource:
        found = self.out.resources.get(logical_id)
        if found is not None:
            return found
        decl = self.template.resources.get(logical_id)
        if decl is None:
            raise TemplateError(f"reference to unknown resource or parameter {logical_id!r}")
        if decl.emulation == "ignored":
            resource = self._ignored(decl)
            self.out.resources[logical_id] = resource
            return resource
        raise TemplateError(f"{logical_id} is referenced before it exists (circular dependency?)")

    def _ref(self, logical_id: str) -> Any:
        return self._resource(logical_id).ref

    def _get_att(self, logical_id: str, attribute: str) -> Any:
        resource = self._resource(logical_id)
        if attribute not in resource.attributes:
            raise TemplateError(f"!GetAtt {logical_id}.{attribute}: not available locally ({resource.type})")
        return resource.attributes[attribute]

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.endpoint.client(service)
        return self._clients[service]

    def _arn(self, service: str, resource: str, *, regional: bool = True) -> str:
        region = self.endpoint.region if regional else ""
        return f"arn:{self.partition}:{service}:{region}:{self.endpoint.account_id}:{resource}"

    # -- orchestration ----------------------------------------------------------------------------

    def run(self) -> Provisioned:
        for decl in self._ordered():
            creator: Callable[[ResourceDecl], Resource] = getattr(
                self, "_create_" + decl.type.replace("::", "_")
            )
            try:
                resource = creator(decl)
            except TemplateError as exc:
                raise TemplateError(f"{decl.logical_id} ({decl.type}): {exc}") from exc
            self.out.resources[decl.logical_id] = resource
            log.debug("created %s %s -> %s", decl.type, decl.logical_id, resource.ref)
        for decl in self.template.resources.values():
            if decl.emulation == "ignored" and decl.logical_id not in self.out.resources:
                self.out.resources[decl.logical_id] = self._ignored(decl)
        self._build_routes()
        self._resolve_outputs()
        return self.out

    def _resolve_outputs(self) -> None:
        """The template's Outputs as CloudFormation would compute them (an ApiUrl stays an AWS URL)."""
        for name, output in (self.template.document.get("Outputs") or {}).items():
            condition = (output or {}).get("Condition")
            if condition is not None and not self.intrinsics.condition(condition):
                continue
            try:
                self.out.outputs[name] = self.intrinsics.resolve((output or {}).get("Value"))
            except TemplateError as exc:
                self.out.warnings.append(f"output {name} not resolved locally: {exc}")

    def _ordered(self) -> list[ResourceDecl]:
        """Non-ignored resources in dependency order (declaration order among equals)."""
        decls = {k: d for k, d in self.template.resources.items() if d.emulation != "ignored"}
        deps: dict[str, set[str]] = {}
        for logical_id, decl in decls.items():
            props = decl.properties
            if decl.type == "AWS::Serverless::Function":
                # Policies and Events only matter to other (generated or ignored) resources.
                props = {k: v for k, v in props.items() if k not in ("Policies", "Events")}
            wanted = references(props) | set(decl.depends_on)
            deps[logical_id] = {d for d in wanted if d in decls and d != logical_id}
        ordered: list[ResourceDecl] = []
        done: set[str] = set()
        while len(done) < len(decls):
            ready = [k for k in decls if k not in done and deps[k] <= done]
            if not ready:
                stuck = sorted(k for k in decls if k not in done)
                raise TemplateError(f"circular dependency between {', '.join(stuck)}")
            for logical_id in ready:
                ordered.append(decls[logical_id])
                done.add(logical_id)
        return ordered

    def _ignored(self, decl: ResourceDecl) -> Resource:
        name = physical_name(self.stack_name, decl.logical_id, 64)
        if decl.type == "AWS::IAM::Role":
            role_name = decl.properties.get("RoleName")
            name = role_name if isinstance(role_name, str) else name
            attributes = {
                "Arn": self._arn("iam", f"role/{name}", regional=False),
                "RoleId": f"AROA{name.upper()[:16]}",
            }
        else:
            _, service, kind = [*decl.type.split("::"), "", ""][:3]
            attributes = {"Arn": self._arn(service.lower(), f"{kind.lower()}/{name}")}
        return Resource(decl.logical_id, decl.type, "ignored", name, attributes, decl.origin)

    def _resolve(self, decl: ResourceDecl, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
        props = {k: v for k, v in decl.properties.items() if k not in skip}
        resolved = self.intrinsics.resolve(props)
        assert isinstance(resolved, dict)
        return resolved

    # -- DynamoDB ---------------------------------------------------------------------------------

    def _create_AWS_DynamoDB_Table(self, decl: ResourceDecl) -> Resource:
        props = self._resolve(decl)
        name = props.get("TableName") or physical_name(self.stack_name, decl.logical_id, 255)
        billing = props.get("BillingMode", "PROVISIONED")
        kwargs: dict[str, Any] = {
            "TableName": name,
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": billing,
        }
        if billing == "PROVISIONED":
            kwargs["ProvisionedThroughput"] = _throughput(props.get("ProvisionedThroughput"))
        indexes = []
        for gsi in props.get("GlobalSecondaryIndexes") or []:
            index = {
                k: gsi[k] for k in ("IndexName", "KeySchema", "Projection", "OnDemandThroughput") if k in gsi
            }
            if billing == "PROVISIONED":
                index["ProvisionedThroughput"] = _throughput(gsi.get("ProvisionedThroughput"))
            indexes.append(index)
        if indexes:
            kwargs["GlobalSecondaryIndexes"] = indexes
        if props.get("LocalSecondaryIndexes"):
            kwargs["LocalSecondaryIndexes"] = [
                {k: lsi[k] for k in ("IndexName", "KeySchema", "Projection") if k in lsi}
                for lsi in props["LocalSecondaryIndexes"]
            ]
        stream = props.get("StreamSpecification")
        if stream:
            kwargs["StreamSpecification"] = {
                "StreamEnabled": True,
                "StreamViewType": stream["StreamViewType"],
            }
        sse = props.get("SSESpecification")
        if sse:
            kwargs["SSESpecification"] = {"Enabled": sse.get("SSEEnabled") in (True, "true")} | {
                k: sse[k] for k in ("SSEType", "KMSMasterKeyId") if k in sse
            }
        for key in ("TableClass", "DeletionProtectionEnabled"):
            if key in props:
                kwargs[key] = props[key]
        if props.get("Tags"):
            kwargs["Tags"] = _tags(props["Tags"])
        ddb = self.client("dynamodb")
        try:
            description = ddb.create_table(**kwargs)["TableDescription"]
        except Exception as exc:
            if error_code(exc) != "ResourceInUseException":
                raise
            description = ddb.describe_table(TableName=name)["Table"]  # an external moto kept it
        ttl = props.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled") in (True, "true"):
            try:
                ddb.update_time_to_live(
                    TableName=name,
                    TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
                )
            except Exception as exc:
                if error_code(exc) != "ValidationException":  # already enabled on a reused table
                    raise
        attributes = {"Arn": description["TableArn"]}
        if description.get("LatestStreamArn"):
            attributes["StreamArn"] = description["LatestStreamArn"]
        return Resource(decl.logical_id, decl.type, "moto", name, attributes, decl.origin)

    # -- SQS / SNS --------------------------------------------------------------------------------

    def _create_AWS_SQS_Queue(self, decl: ResourceDecl) -> Resource:
        props = self._resolve(decl)
        fifo = props.get("FifoQueue") in (True, "true")
        name = props.get("QueueName") or physical_name(
            self.stack_name, decl.logical_id, 75 if fifo else 80
        ) + (".fifo" if fifo else "")
        attributes = {key: _text(props[key]) for key in _QUEUE_ATTRIBUTES if key in props}
        url, arn = self.create_queue(
            name, attributes, {t["Key"]: t["Value"] for t in _tags(props.get("Tags"))}
        )
        return Resource(
            decl.logical_id,
            decl.type,
            "moto",
            url,
            {"Arn": arn, "QueueName": name, "QueueUrl": url},
            decl.origin,
        )

    def create_queue(
        self, name: str, attributes: dict[str, str], tags: dict[str, str] | None = None
    ) -> tuple[str, str]:
        sqs = self.client("sqs")
        kwargs: dict[str, Any] = {"QueueName": name, "Attributes": attributes}
        if tags:
            kwargs["tags"] = tags
        try:
            url = sqs.create_queue(**kwargs)["QueueUrl"]
        except Exception as exc:
            if error_code(exc) not in ("QueueAlreadyExists", "QueueNameExists"):
                raise
            url = sqs.get_queue_url(QueueName=name)["QueueUrl"]  # reused from an external moto: realign
            settable = {k: v for k, v in attributes.items() if k != "FifoQueue"}
            if settable:
                sqs.set_queue_attributes(QueueUrl=url, Attributes=settable)
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        return url, arn

    def _create_AWS_SNS_Topic(self, decl: ResourceDecl) -> Resource:
        props = self._resolve(decl)
        fifo = props.get("FifoTopic") in (True, "true")
        name = props.get("TopicName") or physical_name(
            self.stack_name, decl.logical_id, 251 if fifo else 256
        ) + (".fifo" if fifo else "")
        attributes = {
            key: _text(props[key])
            for key in ("DisplayName", "FifoTopic", "ContentBasedDeduplication", "KmsMasterKeyId")
            if key in props
        }
        kwargs: dict[str, Any] = {"Name": name, "Attributes": attributes}
        if props.get("Tags"):
            kwargs["Tags"] = _tags(props["Tags"])
        arn = self.client("sns").create_topic(**kwargs)["TopicArn"]
        for subscription in props.get("Subscription") or []:
            self._subscribe(arn, subscription)
        return Resource(
            decl.logical_id, decl.type, "moto", arn, {"TopicArn": arn, "TopicName": name}, decl.origin
        )

    def _create_AWS_SNS_Subscription(self, decl: ResourceDecl) -> Resource:
        props = self._resolve(decl)
        arn = self._subscribe(props["TopicArn"], props)
        return Resource(decl.logical_id, decl.type, "moto", arn, {"Arn": arn}, decl.origin)

    def _subscribe(self, topic_arn: str, props: dict[str, Any]) -> str:
        if str(props.get("Protocol")).lower() != "sqs":
            raise TemplateError(
                f"SNS subscriptions with protocol {props.get('Protocol')} are not supported locally"
            )
        attributes = {
            key: _text(props[key])
            for key in ("RawMessageDelivery", "FilterPolicy", "FilterPolicyScope")
            if key in props
        }
        response = self.client("sns").subscribe(
            TopicArn=topic_arn, Protocol="sqs", Endpoint=props["Endpoint"], Attributes=attributes
        )
        return str(response["SubscriptionArn"])

    # -- S3 -------------------------------------------------------------------------------------

    def _create_AWS_S3_Bucket(self, decl: ResourceDecl) -> Resource:
        props = self._resolve(decl)
        explicit = props.get("BucketName")
        if explicit is not None:
            check_bucket_name(str(explicit))
        name = str(explicit) if explicit is not None else bucket_name(self.stack_name, decl.logical_id)
        plan = plan_bucket(props)
        kwargs: dict[str, Any] = {"Bucket": name, **plan.create}
        if self.endpoint.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.endpoint.region}
        s3 = self.client("s3")
        try:
            s3.create_bucket(**kwargs)
        except Exception as exc:
            if error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
            # reused from an external moto: the configuration below is applied again
        for operation, arguments in plan.calls:
            getattr(s3, operation)(Bucket=name, **arguments)
        self.out.warnings.extend(f"{decl.logical_id}: {warning}" for warning in plan.warnings)
        attributes = bucket_attributes(
            name,
            region=self.endpoint.region,
            partition=self.partition,
            url_suffix=str(self.template.pseudo["AWS::URLSuffix"]),
        )
        return Resource(decl.logical_id, decl.type, "moto", name, attributes, decl.origin)

    # -- EventBridge ------------------------------------------------------------------------------

    def _create_AWS_Events_EventBus(self, decl: ResourceDecl) -> Resource:
        props = self._resolve(decl)
        name = props["Name"]
        events = self.client("events")
        try:
            arn = events.create_event_bus(Name=name)["EventBusArn"]
        except Exception as exc:
            if error_code(exc) != "ResourceAlreadyExistsException":
                raise
            arn = events.describe_event_bus(Name=name)["Arn"]
        return Resource(decl.logical_id, decl.type, "moto", name, {"Arn": arn, "Name": name}, decl.origin)

    def _create_AWS_Events_Rule(self, decl: ResourceDecl) -> Resource:
        props = self._resolve(decl)
        name = props.get("Name") or physical_name(self.stack_name, decl.logical_id, 64)
        bus = str(props.get("EventBusName") or "default")
        bus = bus.split("event-bus/", 1)[1] if bus.startswith("arn:") else bus
        pattern = props.get("EventPattern")
        schedule = props.get("ScheduleExpression")
        if not pattern and not schedule:
            raise TemplateError("a rule needs EventPattern or ScheduleExpression")
        state = str(props.get("State") or "ENABLED")
        kwargs: dict[str, Any] = {"Name": name, "EventBusName": bus, "State": state}
        if pattern:
            kwargs["EventPattern"] = pattern if isinstance(pattern, str) else json.dumps(pattern)
        if schedule:
            kwargs["ScheduleExpression"] = schedule
        if props.get("Description"):
            kwargs["Description"] = props["Description"]
        events = self.client("events")
        rule_arn = events.put_rule(**kwargs)["RuleArn"]
        passthrough: list[dict[str, Any]] = []
        for target in props.get("Targets") or []:
            passthrough.extend(self._rule_target(decl, name, rule_arn, schedule, state, target))
        if passthrough:
            events.put_targets(Rule=name, EventBusName=bus, Targets=passthrough)
        ref = name if bus == "default" else f"{bus}|{name}"
        return Resource(decl.logical_id, decl.type, "moto", ref, {"Arn": rule_arn}, decl.origin)

    def _rule_target(
        self,
        decl: ResourceDecl,
        rule_name: str,
        rule_arn: str,
        schedule: str | None,
        state: str,
        target: dict[str, Any],
    ) -> list[dict[str, Any]]:
        """Targets moto delivers itself are returned; our functions get a bridge queue instead."""
        arn = Arn.parse(str(target.get("Arn")))
        target_id = str(target.get("Id"))
        function = self.function_for(str(target.get("Arn"))) if arn and arn.service == "lambda" else None
        if arn is None or (arn.service == "lambda" and function is None):
            raise TemplateError(f"target {target_id}: {target.get('Arn')} is not a function of this template")
        transform = {
            "input": target.get("Input"),
            "input_path": target.get("InputPath"),
            "input_transformer": target.get("InputTransformer"),
        }
        if state != "ENABLED":
            return []
        if schedule:
            if arn.service not in ("lambda", "sqs"):
                raise TemplateError(
                    f"scheduled rule target {target_id}: only functions and queues are supported"
                )
            queue_url = None if function else self.queue_url_of(arn)
            self.out.rule_targets.append(
                RuleTargetSpec(
                    decl.logical_id,
                    rule_name,
                    rule_arn,
                    target_id,
                    function,
                    queue_url,
                    schedule,
                    **transform,
                )
            )
            return []
        if function is None:
            if arn.service not in ("sqs", "sns", "events"):
                raise TemplateError(f"target {target_id}: {arn.service} targets are not supported locally")
            return [target]
        # moto cannot invoke our functions: it delivers matching events to a stack-owned queue instead,
        # which the stack polls (pattern matching stays moto's).
        bridge_name = physical_name(self.stack_name, f"bridge-{decl.logical_id}-{target_id}", 80)
        queue_url, queue_arn = self.create_queue(bridge_name, {"VisibilityTimeout": "60"})
        self.out.rule_targets.append(
            RuleTargetSpec(
                decl.logical_id, rule_name, rule_arn, target_id, function, queue_url, None, **transform
            )
        )
        return [{"Id": f"local-bridge-{target_id}"[:64], "Arn": queue_arn}]

    def queue_url_of(self, arn: Arn) -> str:
        for resource in self.out.resources.values():
            if resource.type == "AWS::SQS::Queue" and resource.arn == str(arn_text(arn)):
                return str(resource.ref)
        return str(self.client("sqs").get_queue_url(QueueName=arn.resource_name)["QueueUrl"])

    # -- EventBridge Scheduler --------------------------------------------------------------------

    def _create_AWS_Scheduler_ScheduleGroup(self, decl: ResourceDecl) -> Resource:
        props = self._resolve(decl)
        name = props.get("Name") or physical_name(self.stack_name, decl.logical_id, 64)
        scheduler = self.client("scheduler")
        try:
            arn = scheduler.create_schedule_group(Name=name)["ScheduleGroupArn"]
        except Exception as exc:
            if error_code(exc) != "ConflictException":
                raise
            arn = scheduler.get_schedule_group(Name=name)["Arn"]
        return Resource(decl.logical_id, decl.type, "moto", name, {"Arn": arn}, decl.origin)

    def _create_AWS_Scheduler_Schedule(self, decl: ResourceDecl) -> Resource:
        props = self._resolve(decl)
        name = props.get("Name") or physical_name(self.stack_name, decl.logical_id, 64)
        target = dict(props.get("Target") or {})
        arn = Arn.parse(str(target.get("Arn")))
        if arn is None or arn.service not in ("lambda", "sqs", "events", "sns"):
            raise TemplateError(f"schedule target {target.get('Arn')} is not supported locally")
        if arn.service == "lambda" and self.function_for(str(target["Arn"])) is None:
            raise TemplateError(f"schedule target {target['Arn']} is not a function of this template")
        target.setdefault("RoleArn", self._arn("iam", f"role/{self.stack_name}-scheduler", regional=False))
        kwargs: dict[str, Any] = {"Name": name, "Target": target}
        kwargs |= {key: props[key] for key in _SCHEDULE_FIELDS if key in props}
        kwargs.setdefault("FlexibleTimeWindow", {"Mode": "OFF"})
        # The API's default; said explicitly because moto's update_schedule stores a missing State as
        # None, which list_schedules(State=ENABLED) skips: a restart on an external moto would mute it.
        kwargs.setdefault("State", "ENABLED")
        for key in ("StartDate", "EndDate"):
            if key in props:
                kwargs[key] = datetime.fromisoformat(str(props[key]).replace("Z", "+00:00"))
        scheduler = self.client("scheduler")
        try:
            schedule_arn = scheduler.create_schedule(**kwargs)["ScheduleArn"]
        except Exception as exc:
            if error_code(exc) != "ConflictException":
                raise
            schedule_arn = scheduler.update_schedule(**kwargs)["ScheduleArn"]
        return Resource(decl.logical_id, decl.type, "moto", name, {"Arn": schedule_arn}, decl.origin)

    # -- Lambda (local) ---------------------------------------------------------------------------

    def _create_AWS_Serverless_LayerVersion(self, decl: ResourceDecl) -> Resource:
        props = self._resolve(decl)
        content = props.get("ContentUri")
        if not isinstance(content, str):
            raise TemplateError("ContentUri must be a local folder")
        folder = (self.template.root / content).resolve()
        if not folder.is_dir():
            raise TemplateError(f"ContentUri {content} is not a folder")
        build = str((decl.metadata or {}).get("BuildMethod", ""))
        # With a python BuildMethod SAM installs the package itself under python/; a prebuilt layer has it.
        if not build.startswith("python") and (folder / "python").is_dir():
            folder = folder / "python"
        self._layer_dirs[decl.logical_id] = str(folder)
        name = props.get("LayerName") or decl.logical_id
        arn = self._arn("lambda", f"layer:{name}:1")
        self._layer_dirs[arn] = str(folder)
        return Resource(decl.logical_id, decl.type, "local", arn, {"Arn": arn}, decl.origin)

    def _create_AWS_Serverless_Api(self, decl: ResourceDecl) -> Resource:
        if "DefinitionBody" in decl.properties or "DefinitionUri" in decl.properties:
            raise TemplateError(
                "OpenAPI definitions (DefinitionBody/DefinitionUri) are not supported locally"
            )
        props = self._resolve(decl, skip=("MethodSettings",))
        auth = props.get("Auth") or {}
        default = auth.get("DefaultAuthorizer")
        if default not in (None, "NONE", "AWS_IAM"):
            raise TemplateError(f"authorizer {default} is not supported locally (only AWS_IAM and NONE)")
        api_id = hashlib.sha1(f"{self.stack_name}/{decl.logical_id}".encode()).hexdigest()[:10]  # noqa: S324
        self._apis[decl.logical_id] = {
            "id": api_id,
            "stage": str(props.get("StageName", "Prod")),
            "iam": default == "AWS_IAM",
            "api_key": auth.get("ApiKeyRequired") in (True, "true"),
        }
        return Resource(
            decl.logical_id, decl.type, "local", api_id, {"RootResourceId": f"{api_id}root"}, decl.origin
        )

    def _create_AWS_Serverless_Function(self, decl: ResourceDecl) -> Resource:
        used = ("Handler", "CodeUri", "Runtime", "Timeout", "MemorySize", "Environment", "FunctionName")
        props = self._resolve(decl, skip=tuple(k for k in decl.properties if k not in used))
        if decl.properties.get("PackageType", "Zip") != "Zip" or "InlineCode" in decl.properties:
            raise TemplateError("only Zip functions with a local CodeUri are supported")
        runtime = str(props.get("Runtime", ""))
        if not runtime.startswith("python"):
            raise TemplateError(f"runtime {runtime or '(none)'} is not supported locally (python only)")
        code_uri = props.get("CodeUri")
        if not isinstance(code_uri, str):
            raise TemplateError("CodeUri must be a local folder")
        code_dir = (self.template.root / code_uri).resolve()
        if not code_dir.is_dir():
            raise TemplateError(f"CodeUri {code_uri} is not a folder")
        handler = props.get("Handler")
        if not isinstance(handler, str) or "." not in handler:
            raise TemplateError(f"Handler {handler!r} is not module.function")
        name = props.get("FunctionName") or physical_name(self.stack_name, decl.logical_id, 64)
        arn = self._arn("lambda", f"function:{name}")
        layer_dirs = []
        for layer in decl.properties.get("Layers") or []:
            if isinstance(layer, dict) and set(layer) == {"Ref"} and layer["Ref"] in self._layer_dirs:
                layer_dirs.append(self._layer_dirs[layer["Ref"]])
                continue
            resolved = self.intrinsics.resolve(layer)
            if resolved in self._layer_dirs:
                layer_dirs.append(self._layer_dirs[resolved])
            else:
                # e.g. the public Powertools layer: its packages come from the stack's own venv.
                self.out.warnings.append(f"{decl.logical_id}: layer {resolved} is not local; ignored")
        variables = ((props.get("Environment") or {}).get("Variables")) or {}
        spec = FunctionSpec(
            logical_id=decl.logical_id,
            name=name,
            arn=arn,
            handler=handler,
            code_dir=str(code_dir),
            layer_dirs=tuple(layer_dirs),
            runtime=runtime,
            timeout=float(props.get("Timeout", 3)),
            memory_size=int(props.get("MemorySize", 128)),
            environment={str(k): _text(v) for k, v in variables.items()},
            log_path=str(self.logs_dir / f"{decl.logical_id}.log"),
            echo=self.echo_output,
        )
        self.out.functions[decl.logical_id] = spec
        return Resource(decl.logical_id, decl.type, "local", name, {"Arn": arn}, decl.origin)

    def _create_AWS_Lambda_EventSourceMapping(self, decl: ResourceDecl) -> Resource:
        props = self._resolve(decl)
        source = Arn.parse(str(props.get("EventSourceArn")))
        if source is None or source.service != "sqs":
            raise TemplateError(
                f"event source {props.get('EventSourceArn')} is not supported locally (SQS only)"
            )
        function = self.function_for(str(props.get("FunctionName")))
        if function is None:
            raise TemplateError(
                f"FunctionName {props.get('FunctionName')} is not a function of this template"
            )
        mapping_id = hashlib.sha1(f"{self.stack_name}/{decl.logical_id}".encode()).hexdigest()  # noqa: S324
        uuid = (
            f"{mapping_id[:8]}-{mapping_id[8:12]}-{mapping_id[12:16]}-{mapping_id[16:20]}-{mapping_id[20:32]}"
        )
        if props.get("Enabled", True) in (False, "false"):
            return Resource(decl.logical_id, decl.type, "local", uuid, {}, decl.origin)
        patterns = tuple(
            str(f["Pattern"]) if isinstance(f["Pattern"], str) else json.dumps(f["Pattern"])
            for f in (props.get("FilterCriteria") or {}).get("Filters", [])
        )
        queue_url = self.queue_url_of(source)
        self._check_visibility_timeout(decl.logical_id, queue_url, self.out.functions[function])
        self.out.sqs_sources.append(
            SqsSourceSpec(
                logical_id=decl.logical_id,
                function=function,
                queue_arn=arn_text(source),
                queue_url=queue_url,
                batch_size=int(props.get("BatchSize", 10)),
                batching_window_seconds=float(props.get("MaximumBatchingWindowInSeconds", 0)),
                report_batch_item_failures="ReportBatchItemFailures"
                in (props.get("FunctionResponseTypes") or []),
                filter_patterns=patterns,
            )
        )
        return Resource(decl.logical_id, decl.type, "local", uuid, {}, decl.origin)

    def _check_visibility_timeout(self, logical_id: str, queue_url: str, function: FunctionSpec) -> None:
        """Lambda refuses a mapping whose queue hides messages for less than the function's Timeout
        (a batch could come back while it still runs); locally it would work, so say so."""
        attributes = self.client("sqs").get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["VisibilityTimeout"]
        )["Attributes"]
        visibility = int(attributes.get("VisibilityTimeout", 30))
        if visibility < function.timeout:
            self.out.warnings.append(
                f"{logical_id}: queue {queue_url.rsplit('/', 1)[-1]} has VisibilityTimeout {visibility} s, "
                f"less than {function.logical_id}'s Timeout {function.timeout:g} s; AWS Lambda refuses this "
                "event source mapping (make VisibilityTimeout at least the Timeout; AWS advises 6x)"
            )

    def function_for(self, name_or_arn: str) -> str | None:
        if name_or_arn in self.out.functions:
            return name_or_arn
        for logical_id, spec in self.out.functions.items():
            if name_or_arn in (spec.name, spec.arn) or name_or_arn.startswith(spec.arn + ":"):
                return logical_id
        return None

    # -- API routes -------------------------------------------------------------------------------

    def _build_routes(self) -> None:
        for route in self.template.routes:
            where = f"{route.function}.Events.{route.event}"
            props = self.intrinsics.resolve(route.properties)
            api = self._apis[route.api]
            auth = props.get("Auth") or {}
            authorizer = auth.get("Authorizer")
            if authorizer not in (None, "NONE", "AWS_IAM"):
                raise TemplateError(f"{where}: authorizer {authorizer} is not supported locally")
            path, method = str(props.get("Path", "")), str(props.get("Method", "")).upper()
            if not path.startswith("/") or not method:
                raise TemplateError(f"{where}: an Api event needs Path and Method")
            self.out.routes.append(
                RouteSpec(
                    method="ANY" if method in ("ANY", "X-AMAZON-APIGATEWAY-ANY-METHOD") else method,
                    path=path,
                    function=route.function,
                    event=route.event,
                    api=route.api,
                    api_id=api["id"],
                    stage=api["stage"],
                    iam_auth=authorizer == "AWS_IAM" or (authorizer is None and api["iam"]),
                    api_key_required=auth.get("ApiKeyRequired", api["api_key"]) in (True, "true"),
                )
            )


def arn_text(arn: Arn) -> str:
    return f"arn:{arn.partition}:{arn.service}:{arn.region}:{arn.account}:{arn.resource}"


def _throughput(value: Any) -> dict[str, int]:
    value = value or {}
    return {
        "ReadCapacityUnits": int(value.get("ReadCapacityUnits", 5)),
        "WriteCapacityUnits": int(value.get("WriteCapacityUnits", 5)),
    }


def ignored_type_reasons() -> dict[str, str]:
    return dict(IGNORED_TYPES)
