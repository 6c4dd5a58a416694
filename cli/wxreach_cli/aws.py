"""A deployed stack as a target: its API URL from the CloudFormation outputs, every request
SigV4-signed for API Gateway (`execute-api`) with the caller's AWS credentials."""

from __future__ import annotations

from collections.abc import Generator

import boto3
import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import BotoCoreError, ClientError

from wxreach_cli.client import Target, UsageProblem

API_URL_OUTPUT = "ApiUrl"  # template.yaml's Outputs
SERVICE = "execute-api"
# Only these are signed: a proxy may rewrite the others (connection, accept-encoding) in transit.
SIGNED_HEADERS = ("host", "content-type")
SIGNATURE_HEADERS = ("Authorization", "X-Amz-Date", "X-Amz-Security-Token")


class SigV4(httpx.Auth):
    requires_request_body = True

    def __init__(self, credentials: Credentials, region: str) -> None:
        self._credentials = credentials
        self._region = region

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        headers = {name: request.headers[name] for name in SIGNED_HEADERS if name in request.headers}
        signed = AWSRequest(
            method=request.method, url=str(request.url), data=request.content, headers=headers
        )
        # Frozen per request: refreshable credentials (SSO, assumed roles) renew in between.
        SigV4Auth(self._credentials.get_frozen_credentials(), SERVICE, self._region).add_auth(signed)
        for name in SIGNATURE_HEADERS:
            if name in signed.headers:
                request.headers[name] = signed.headers[name]
        yield request


def stack_target(name: str, region: str | None) -> Target:
    where = f"stack {name}" + (f" in {region}" if region else "")
    try:
        session = boto3.Session(region_name=region)
        if session.region_name is None:
            raise UsageProblem(f"no AWS region for {where}", hint="pass --region or set AWS_REGION")
        credentials = session.get_credentials()
        if credentials is None:
            raise UsageProblem(
                "no AWS credentials", hint="configure them (aws configure / AWS_PROFILE / aws sso login)"
            )
        stacks = session.client("cloudformation").describe_stacks(StackName=name)["Stacks"]
    except ClientError as exc:
        raise UsageProblem(
            f"{where}: {exc.response.get('Error', {}).get('Message', exc)}", hint="check --stack and --region"
        ) from None
    except BotoCoreError as exc:
        raise UsageProblem(f"{where}: {exc}", hint="check your AWS configuration") from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    if API_URL_OUTPUT not in outputs:
        raise UsageProblem(f"{where} has no {API_URL_OUTPUT} output", hint="is it a wxreach stack?")
    region = session.region_name
    return Target(
        api_url=outputs[API_URL_OUTPUT],
        auth=SigV4(credentials, region),
        local=False,
        unreachable_hint=f"check your network and that {where} is deployed",
        forbidden_hint="your AWS identity may not call this API (execute-api:Invoke), or no such route",
        failure_hint=f"the operator API failed: its CloudWatch logs in {region} say why",
    )
