"""AWS::S3::Bucket as the local stack creates it in moto: a CloudFormation-like physical name, the
attributes !GetAtt returns, and the bucket's CloudFormation properties translated into the S3 API
calls that configure it (CloudFormation's property shapes differ from the API's in many small ways)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Final

from local.stack.cfn import TemplateError

_VALID_NAME: Final = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IP_LIKE: Final = re.compile(r"^\d+\.\d+\.\d+\.\d+$")

#: Properties that have no observable local effect; applying them is skipped with a warning.
NOT_APPLIED: Final[dict[str, str]] = {
    "AccessControl": "canned ACLs are not applied locally",
    "AccelerateConfiguration": "transfer acceleration has no local meaning",
    "AnalyticsConfigurations": "no storage analytics locally",
    "IntelligentTieringConfigurations": "no storage classes locally",
    "InventoryConfigurations": "no inventory reports locally",
    "LoggingConfiguration": "no server access logs locally",
    "MetadataTableConfiguration": "no S3 metadata tables locally",
    "MetricsConfigurations": "no metrics locally",
    "ReplicationConfiguration": "no replication locally",
    "WebsiteConfiguration": "no website endpoint locally",
}

#: Properties whose absence locally would mislead: the start fails instead.
REFUSED: Final[dict[str, str]] = {
    "NotificationConfiguration": "S3 event notifications are not emulated (nothing would reach the targets)",
}


@dataclass
class BucketPlan:
    """How to create and configure one bucket: create_bucket's extra arguments, then API calls."""

    create: dict[str, Any] = field(default_factory=dict)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def bucket_name(stack_name: str, logical_id: str) -> str:
    """CloudFormation's `<stack>-<logicalid>-<random>` in lower case, without the random part."""
    name = re.sub(r"[^a-z0-9.-]+", "-", f"{stack_name}-{logical_id}".lower()).strip("-.")
    if len(name) > 63:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]  # noqa: S324 - a name, not security
        name = f"{name[:54].rstrip('-.')}-{digest}"
    return name if len(name) >= 3 else f"{name}-bucket".lstrip("-")


def check_bucket_name(name: str) -> None:
    """S3's general-purpose bucket naming rules (a template's explicit BucketName)."""
    if not _VALID_NAME.match(name) or ".." in name or _IP_LIKE.match(name) or name.startswith("xn--"):
        raise TemplateError(
            f"BucketName {name!r} is not a valid S3 bucket name "
            "(3-63 characters of a-z, 0-9, '.' and '-', starting and ending with a letter or digit)"
        )


def bucket_attributes(name: str, *, region: str, partition: str, url_suffix: str) -> dict[str, str]:
    """What !GetAtt gives on AWS (the domain names do not resolve locally: use the S3 API)."""
    return {
        "Arn": f"arn:{partition}:s3:::{name}",
        "DomainName": f"{name}.s3.{url_suffix}",
        "RegionalDomainName": f"{name}.s3.{region}.{url_suffix}",
        "DualStackDomainName": f"{name}.s3.dualstack.{region}.{url_suffix}",
        "WebsiteURL": f"http://{name}.s3-website-{region}.{url_suffix}",
    }


def _flag(value: Any) -> bool:
    return value in (True, "true", "True")


def plan_bucket(props: dict[str, Any]) -> BucketPlan:
    """Translates the resolved properties; raises TemplateError for a property that must not be
    silently dropped (see REFUSED)."""
    plan = BucketPlan()
    for key, reason in REFUSED.items():
        if key in props:
            raise TemplateError(f"{key}: {reason}")
    for key, value in props.items():
        if key == "BucketName":
            continue
        if key == "ObjectLockEnabled":
            if _flag(value):
                plan.create["ObjectLockEnabledForBucket"] = True
        elif key == "BucketEncryption":
            rules = [_encryption_rule(r) for r in value.get("ServerSideEncryptionConfiguration") or []]
            plan.calls.append(
                ("put_bucket_encryption", {"ServerSideEncryptionConfiguration": {"Rules": rules}})
            )
        elif key == "PublicAccessBlockConfiguration":
            block = {k: _flag(v) for k, v in value.items()}
            plan.calls.append(("put_public_access_block", {"PublicAccessBlockConfiguration": block}))
        elif key == "OwnershipControls":
            plan.calls.append(
                ("put_bucket_ownership_controls", {"OwnershipControls": {"Rules": value["Rules"]}})
            )
        elif key == "VersioningConfiguration":
            status = str(value.get("Status", "Suspended"))
            plan.calls.append(("put_bucket_versioning", {"VersioningConfiguration": {"Status": status}}))
        elif key == "LifecycleConfiguration":
            rules = [lifecycle_rule(rule) for rule in value.get("Rules") or []]
            plan.calls.append(
                ("put_bucket_lifecycle_configuration", {"LifecycleConfiguration": {"Rules": rules}})
            )
        elif key == "CorsConfiguration":
            cors = [_cors_rule(rule) for rule in value.get("CorsRules") or []]
            plan.calls.append(("put_bucket_cors", {"CORSConfiguration": {"CORSRules": cors}}))
        elif key == "ObjectLockConfiguration":
            plan.calls.append(("put_object_lock_configuration", {"ObjectLockConfiguration": value}))
        elif key == "Tags":
            tags = [{"Key": str(t["Key"]), "Value": str(t["Value"])} for t in value or []]
            if tags:
                plan.calls.append(("put_bucket_tagging", {"Tagging": {"TagSet": tags}}))
        elif key in NOT_APPLIED:
            plan.warnings.append(f"{key} not applied locally: {NOT_APPLIED[key]}")
        else:
            plan.warnings.append(f"{key} is not known to the local stack; not applied")
    return plan


def lifecycle_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """One CloudFormation lifecycle rule as the PutBucketLifecycleConfiguration API wants it."""
    out: dict[str, Any] = {"Status": str(rule.get("Status", "Enabled"))}
    if "Id" in rule:
        out["ID"] = str(rule["Id"])
    conditions: dict[str, Any] = {}
    if "Prefix" in rule:
        conditions["Prefix"] = str(rule["Prefix"])
    tags = [{"Key": str(t["Key"]), "Value": str(t["Value"])} for t in rule.get("TagFilters") or []]
    for size in ("ObjectSizeGreaterThan", "ObjectSizeLessThan"):
        if size in rule:
            conditions[size] = int(rule[size])
    if len(conditions) + len(tags) > 1:
        out["Filter"] = {"And": conditions | ({"Tags": tags} if tags else {})}
    elif tags:
        out["Filter"] = {"Tag": tags[0]}
    else:
        out["Filter"] = conditions or {"Prefix": ""}
    expiration: dict[str, Any] = {}
    if "ExpirationInDays" in rule:
        expiration["Days"] = int(rule["ExpirationInDays"])
    if "ExpirationDate" in rule:
        expiration["Date"] = str(rule["ExpirationDate"])
    if "ExpiredObjectDeleteMarker" in rule:
        expiration["ExpiredObjectDeleteMarker"] = _flag(rule["ExpiredObjectDeleteMarker"])
    if expiration:
        out["Expiration"] = expiration
    transitions = list(rule.get("Transitions") or []) + ([rule["Transition"]] if "Transition" in rule else [])
    if transitions:
        out["Transitions"] = [_transition(t) for t in transitions]
    noncurrent = list(rule.get("NoncurrentVersionTransitions") or [])
    if "NoncurrentVersionTransition" in rule:
        noncurrent.append(rule["NoncurrentVersionTransition"])
    if noncurrent:
        out["NoncurrentVersionTransitions"] = [
            {"NoncurrentDays": int(t["TransitionInDays"]), "StorageClass": str(t["StorageClass"])}
            | (
                {"NewerNoncurrentVersions": int(t["NewerNoncurrentVersions"])}
                if "NewerNoncurrentVersions" in t
                else {}
            )
            for t in noncurrent
        ]
    version_expiration = dict(rule.get("NoncurrentVersionExpiration") or {})
    if "NoncurrentVersionExpirationInDays" in rule:
        version_expiration.setdefault("NoncurrentDays", rule["NoncurrentVersionExpirationInDays"])
    if version_expiration:
        out["NoncurrentVersionExpiration"] = {k: int(v) for k, v in version_expiration.items()}
    abort = rule.get("AbortIncompleteMultipartUpload")
    if abort:
        out["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": int(abort["DaysAfterInitiation"])}
    return out


def _encryption_rule(rule: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ApplyServerSideEncryptionByDefault": dict(rule.get("ServerSideEncryptionByDefault") or {})
    }
    if "BucketKeyEnabled" in rule:
        out["BucketKeyEnabled"] = _flag(rule["BucketKeyEnabled"])
    return out


def _transition(transition: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"StorageClass": str(transition["StorageClass"])}
    if "TransitionInDays" in transition:
        out["Days"] = int(transition["TransitionInDays"])
    if "TransitionDate" in transition:
        out["Date"] = str(transition["TransitionDate"])
    return out


def _cors_rule(rule: dict[str, Any]) -> dict[str, Any]:
    renamed = {"ExposedHeaders": "ExposeHeaders", "Id": "ID", "MaxAge": "MaxAgeSeconds"}
    out = {renamed.get(k, k): v for k, v in rule.items()}
    if "MaxAgeSeconds" in out:
        out["MaxAgeSeconds"] = int(out["MaxAgeSeconds"])
    return out
