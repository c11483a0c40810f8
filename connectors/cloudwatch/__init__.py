"""CloudWatch sources (metrics, logs, alarms, EventBridge via SQS) published into Kafka."""
