"""A throwaway SAM app that exercises every wiring the local stack supports; written into tmp dirs."""

from __future__ import annotations

import textwrap
from pathlib import Path

TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Greeting:
    Type: String
    Default: hello
  Stage:
    Type: String
    Default: test
Conditions:
  IsProd: !Equals [!Ref Greeting, prod]
Globals:
  Function:
    Runtime: python3.12
    Timeout: 5
    MemorySize: 256
    Layers:
      - !Ref SharedLayer
    Environment:
      Variables:
        RECORD_TABLE: !Ref RecordTable
        GREETING: !Ref Greeting
Resources:
  SharedLayer:
    Type: AWS::Serverless::LayerVersion
    Properties:
      ContentUri: layer
    Metadata:
      BuildMethod: python3.12
  TestApi:
    Type: AWS::Serverless::Api
    Properties:
      StageName: !Ref Stage
      Auth:
        DefaultAuthorizer: AWS_IAM
  RecordTable:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions:
        - {AttributeName: pk, AttributeType: S}
      KeySchema:
        - {AttributeName: pk, KeyType: HASH}
  ProdOnlyTable:
    Type: AWS::DynamoDB::Table
    Condition: IsProd
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions:
        - {AttributeName: pk, AttributeType: S}
      KeySchema:
        - {AttributeName: pk, KeyType: HASH}
  WorkQueue:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 2  # short, so retries come back quickly; not below WorkerFunction's Timeout
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt WorkDlq.Arn
        maxReceiveCount: 2
  WorkDlq:
    Type: AWS::SQS::Queue
  AuditQueue:
    Type: AWS::SQS::Queue
  Alerts:
    Type: AWS::SNS::Topic
    Properties:
      Subscription:
        - Protocol: sqs
          Endpoint: !GetAtt AuditQueue.Arn
  Bus:
    Type: AWS::Events::EventBus
    Properties:
      Name: !Sub "${AWS::StackName}-bus"
  ScheduleGroup:
    Type: AWS::Scheduler::ScheduleGroup
  SchedulerRole:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument: {}
  AuditRule:
    Type: AWS::Events::Rule
    Properties:
      EventBusName: !Ref Bus
      EventPattern:
        source: [test.audit]
      Targets:
        - Id: toQueue
          Arn: !GetAtt AuditQueue.Arn
        - Id: toRecorder
          Arn: !GetAtt RecorderFunction.Arn
  TemplateOnce:
    Type: AWS::Scheduler::Schedule
    Properties:
      ScheduleExpression: at(2020-01-01T00:00:00)
      FlexibleTimeWindow:
        Mode: "OFF"
      Target:
        Arn: !GetAtt RecorderFunction.Arn
        RoleArn: !GetAtt SchedulerRole.Arn
        Input: '{"marker": "template-schedule"}'
  HttpFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fns/http
      Handler: http_handler.handler
      Environment:
        Variables:
          WORK_QUEUE_URL: !Ref WorkQueue
          WORK_QUEUE_ARN: !GetAtt WorkQueue.Arn
          WORK_QUEUE_NAME: !GetAtt WorkQueue.QueueName
          BUS_NAME: !Ref Bus
          RECORDER_ARN: !GetAtt RecorderFunction.Arn
          SCHEDULE_GROUP: !Ref ScheduleGroup
          SCHEDULER_ROLE_ARN: !GetAtt SchedulerRole.Arn
          JOINED: !Join ["-", [a, !Ref Greeting, !Select [1, [x, y, z]]]]
          SUBBED: !Sub
            - "${Prefix}/${AWS::StackName}/${AWS::Region}/${AWS::AccountId}/${AWS::Partition}"
            - Prefix: !Ref Greeting
          CHOSEN: !If [IsProd, prod-value, dev-value]
          LITERAL: !Sub "${!NotAVar}"
          NUMBER: 42
          FLAG: true
      Events:
        Hello:
          Type: Api
          Properties: {RestApiId: !Ref TestApi, Path: "/hello/{name}", Method: GET, Auth: {Authorizer: NONE}}
        Echo:
          Type: Api
          Properties: {RestApiId: !Ref TestApi, Path: /echo, Method: POST, Auth: {Authorizer: NONE}}
        Files:
          Type: Api
          Properties: {RestApiId: !Ref TestApi, Path: "/files/{proxy+}", Method: ANY,
                       Auth: {Authorizer: NONE}}
        FilesReadme:
          Type: Api
          Properties: {RestApiId: !Ref TestApi, Path: /files/readme, Method: GET, Auth: {Authorizer: NONE}}
        Admin:
          Type: Api
          Properties: {RestApiId: !Ref TestApi, Path: /admin, Method: GET}
        Crash:
          Type: Api
          Properties: {RestApiId: !Ref TestApi, Path: /crash, Method: GET, Auth: {Authorizer: NONE}}
        Malformed:
          Type: Api
          Properties: {RestApiId: !Ref TestApi, Path: /malformed, Method: GET, Auth: {Authorizer: NONE}}
        Env:
          Type: Api
          Properties: {RestApiId: !Ref TestApi, Path: /env, Method: GET, Auth: {Authorizer: NONE}}
        Publish:
          Type: Api
          Properties: {RestApiId: !Ref TestApi, Path: /publish, Method: POST, Auth: {Authorizer: NONE}}
        Schedule:
          Type: Api
          Properties: {RestApiId: !Ref TestApi, Path: /schedule, Method: POST, Auth: {Authorizer: NONE}}
        Implicit:
          Type: Api
          Properties: {Path: /implicit, Method: GET}
        Wait:
          Type: Api
          Properties: {RestApiId: !Ref TestApi, Path: /wait, Method: GET, Auth: {Authorizer: NONE}}
  SlowFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fns/slow
      Handler: slow_handler.handler
      Timeout: 1
      Events:
        Slow:
          Type: Api
          Properties: {RestApiId: !Ref TestApi, Path: /slow, Method: GET, Auth: {Authorizer: NONE}}
  LateFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fns/late
      Handler: late_handler.handler
  WorkerFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fns/worker
      Handler: worker_handler.handler
      Timeout: 2  # Lambda requires the queue's VisibilityTimeout >= Timeout
      Events:
        Work:
          Type: SQS
          Properties:
            Queue: !GetAtt WorkQueue.Arn
            BatchSize: 5
            FunctionResponseTypes: [ReportBatchItemFailures]
  RecorderFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: fns/recorder
      Handler: recorder_handler.handler
      Events:
        Journey:
          Type: EventBridgeRule
          Properties:
            EventBusName: !Ref Bus
            Pattern:
              source: [test.app]
              detail-type: [Followed]
        Transformed:
          Type: EventBridgeRule
          Properties:
            EventBusName: !Ref Bus
            Pattern:
              source: [test.transform]
            InputTransformer:
              InputPathsMap:
                m: $.detail.marker
                src: $.source
              InputTemplate: '{"marker": "<m>-transformed", "source": "<src>"}'
        Tick:
          Type: ScheduleV2
          Properties:
            ScheduleExpression: rate(1 hour)
            Input: '{"marker": "tick"}'
Outputs:
  WorkQueueUrl:
    Value: !Ref WorkQueue
  AlertsTopic:
    Value: !Ref Alerts
  ProdOnly:
    Condition: IsProd
    Value: !Ref ProdOnlyTable
"""

SHARED_LAYER = '''\
"""Shared helper shipped as a layer: records what a handler saw into the record table."""
import json
import os
import time

import boto3

_table = None


def table():
    global _table
    if _table is None:  # created lazily: AWS_ENDPOINT_URL points at moto
        _table = boto3.resource("dynamodb").Table(os.environ["RECORD_TABLE"])
    return _table


def record(key, **data):
    table().put_item(Item={"pk": key, "data": json.dumps(data, default=str), "at": str(time.time())})
'''

HTTP_HANDLER = """\
import base64
import json
import os
import sys
import time
from datetime import datetime, timedelta, timezone

import boto3

WATCHED = [
    "WORK_QUEUE_URL", "WORK_QUEUE_ARN", "WORK_QUEUE_NAME", "BUS_NAME", "RECORDER_ARN", "SCHEDULE_GROUP",
    "JOINED", "SUBBED", "CHOSEN", "LITERAL", "NUMBER", "FLAG", "GREETING", "RECORD_TABLE",
    "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_DEFAULT_REGION", "POWERTOOLS_TRACE_DISABLED",
    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "WXREACH_WECHAT_API_BASE",
    "EXTRA_FOR_ALL", "FROM_FILE_ALL", "FROM_FILE_HTTP", "FROM_CLI", "AWS_PROFILE", "TZ",
]


def _json(status, body, headers=None):
    headers = {"Content-Type": "application/json", **(headers or {})}
    return {"statusCode": status, "headers": headers, "body": json.dumps(body)}


def handler(event, context):
    resource = event["resource"]
    if resource == "/hello/{name}":
        print("saying hello to", event["pathParameters"]["name"])
        return _json(200, {
            "greeting": os.environ["GREETING"] + " " + event["pathParameters"]["name"],
            "event": event,
            "context": {
                "function_name": context.function_name,
                "memory_limit_in_mb": context.memory_limit_in_mb,
                "invoked_function_arn": context.invoked_function_arn,
                "aws_request_id": context.aws_request_id,
                "remaining": context.get_remaining_time_in_millis(),
            },
        }, {"X-Custom": "yes"})
    if resource == "/echo":
        if (event.get("queryStringParameters") or {}).get("binary"):
            return {"statusCode": 201, "headers": {"Content-Type": "application/octet-stream"},
                    "body": base64.b64encode(b"\\x00\\x01binary").decode(), "isBase64Encoded": True}
        return {"statusCode": 201, "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]},
                "body": json.dumps({"body": event["body"], "isBase64Encoded": event["isBase64Encoded"]})}
    if resource in ("/files/{proxy+}", "/files/readme"):
        params = event["pathParameters"]
        return _json(200, {"resource": resource, "method": event["httpMethod"], "params": params})
    if resource == "/admin":
        return _json(200, {"userArn": event["requestContext"]["identity"]["userArn"]})
    if resource == "/crash":
        raise RuntimeError("boom")
    if resource == "/exit":
        os._exit(3)
    if resource == "/malformed":
        return {"statusCode": 200, "body": {"not": "a string"}}
    if resource == "/env":
        env = {k: os.environ.get(k) for k in WATCHED}
        return _json(200, {"env": env, "sys_path": sys.path, "cwd": os.getcwd()})
    if resource == "/implicit":
        return _json(200, {"stage": event["requestContext"]["stage"]})
    if resource == "/wait":  # runs until the test creates the file (at most 4 s)
        path = event["queryStringParameters"]["file"]
        deadline = time.monotonic() + 4
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.02)
        return _json(200, {"released": os.path.exists(path)})
    if resource == "/publish":
        body = json.loads(event["body"])
        boto3.client("events").put_events(Entries=[{
            "Source": body["source"], "DetailType": body["detail_type"],
            "Detail": json.dumps(body["detail"]), "EventBusName": os.environ["BUS_NAME"],
        }])
        return _json(200, {"published": True})
    if resource == "/schedule":
        body = json.loads(event["body"])
        now = datetime.now(timezone.utc).replace(microsecond=0)
        at = now + timedelta(seconds=body.get("in_seconds", 0))
        queue = body.get("target") == "queue"
        target_arn = os.environ["WORK_QUEUE_ARN"] if queue else os.environ["RECORDER_ARN"]
        boto3.client("scheduler").create_schedule(
            Name=body["name"],
            GroupName=os.environ["SCHEDULE_GROUP"],
            ScheduleExpression="at(" + at.strftime("%Y-%m-%dT%H:%M:%S") + ")",
            FlexibleTimeWindow={"Mode": "OFF"},
            Target={"Arn": target_arn, "RoleArn": "arn:aws:iam::123456789012:role/scheduler",
                    "Input": body["input"] if isinstance(body["input"], str) else json.dumps(body["input"])},
            ActionAfterCompletion=body.get("after", "DELETE"),
        )
        return _json(200, {"scheduled": body["name"], "at": at.timestamp()})
    return _json(500, {"unexpected": resource})
"""

SLOW_HANDLER = """\
import json
import time

CALLS = []


def handler(event, context):
    CALLS.append(1)  # a fresh worker after a timeout starts again from an empty list
    seconds = float((event.get("queryStringParameters") or {}).get("sleep", "0"))
    time.sleep(seconds)
    return {"statusCode": 200, "body": json.dumps({"calls": len(CALLS)})}
"""

WORKER_HANDLER = """\
from sharedlib import record


def handler(event, context):
    failures = []
    for r in event["Records"]:
        body = r["body"]
        count = int(r["attributes"]["ApproximateReceiveCount"])
        if body.startswith("crash") and count == 1:
            raise RuntimeError("crash the whole batch")
        if body.startswith("poison") or (body.startswith("flaky") and count == 1):
            failures.append({"itemIdentifier": r["messageId"]})
            continue
        record("sqs#" + body, count=count, record=r, batch_size=len(event["Records"]))
    return {"batchItemFailures": failures}
"""

RECORDER_HANDLER = """\
from sharedlib import record


def handler(event, context):
    marker = event.get("marker") or (event.get("detail") or {}).get("marker") or event.get("id")
    record("recorder#" + str(marker) + "#" + context.aws_request_id, marker=marker, event=event)
    return {"recorded": marker}
"""


def write_sample_app(root: Path) -> Path:
    """Writes the app under root; returns the template path."""
    files = {
        "template.yaml": TEMPLATE,
        "layer/sharedlib/__init__.py": SHARED_LAYER,
        "fns/http/http_handler.py": HTTP_HANDLER,
        "fns/slow/slow_handler.py": SLOW_HANDLER,
        "fns/late/README": "late_handler.py is written by a test, after the stack started\n",
        "fns/worker/worker_handler.py": WORKER_HANDLER,
        "fns/recorder/recorder_handler.py": RECORDER_HANDLER,
    }
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root / "template.yaml"
