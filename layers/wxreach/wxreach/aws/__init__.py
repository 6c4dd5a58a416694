"""AWS adapters: DynamoDB stores, Secrets Manager, SQS and EventBridge, behind the reach ports."""
