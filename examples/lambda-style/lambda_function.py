# AWS Lambda-style handler: lambda_handler(event, context).
import json

calls = 0  # survives between calls in a warm sandbox


def lambda_handler(event, context):
    global calls
    calls += 1
    print(f"request {context.aws_request_id}: {json.dumps(event)}")
    return {
        "statusCode": 200,
        "function": context.function_name,
        "request_id": context.aws_request_id,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "calls_in_this_sandbox": calls,
        "echo": event,
    }
