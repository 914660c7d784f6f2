"""Drives a Hearth worker's Lambda API with boto3, as a user would.

argv: endpoint, zip of a handler that echoes, zip of a handler that raises,
zip of the echo handler's second version. Prints what boto3 returned, and
one JSON line (RESULT ...) for the Go test to check.
"""
import base64
import json
import sys

import boto3
from botocore.config import Config

endpoint, echo_zip, raise_zip, echo2_zip = sys.argv[1:5]
lam = boto3.client("lambda", endpoint_url=endpoint, region_name="us-east-1",
                   config=Config(retries={"max_attempts": 1}))
role = "arn:aws:iam::000000000000:role/hearth"
out = {}
code = open(echo_zip, "rb").read()

names = ["boto-%02d" % i for i in range(60)]
for n in names:
    lam.create_function(FunctionName=n, Runtime="python3.11", Role=role,
                        Handler="lambda_function.lambda_handler", Code={"ZipFile": code},
                        Environment={"Variables": {"WHO": n}})
print("created", len(names), "functions")

pages, seen = 0, []
for page in lam.get_paginator("list_functions").paginate(PaginationConfig={"PageSize": 25}):
    pages += 1
    seen += [f["FunctionName"] for f in page["Functions"]]
print("list_functions: %d functions in %d pages" % (len(seen), pages))
out["listed"] = sorted(n for n in seen if n.startswith("boto-"))
out["pages"] = pages

r = lam.invoke(FunctionName="boto-07", Payload=json.dumps({"x": 7}), LogType="Tail")
payload = json.loads(r["Payload"].read())
log = base64.b64decode(r["LogResult"]).decode()
print("invoke:", r["StatusCode"], payload, "ExecutedVersion", r["ExecutedVersion"],
      "start path", r["ResponseMetadata"]["HTTPHeaders"].get("x-hearth-start-path"))
print("log tail:\n" + log)
out["invoke"] = {"status": r["StatusCode"], "payload": payload, "version": r["ExecutedVersion"],
                 "start_path": r["ResponseMetadata"]["HTTPHeaders"].get("x-hearth-start-path"),
                 "request_id": r["ResponseMetadata"]["RequestId"], "log": log}

lam.create_function(FunctionName="boto-raises", Runtime="python3.12", Role=role,
                    Handler="app.handler", Code={"ZipFile": open(raise_zip, "rb").read()})
r = lam.invoke(FunctionName="boto-raises", Payload=b"{}")
err = json.loads(r["Payload"].read())
print("handler exception:", r["StatusCode"], "FunctionError", r.get("FunctionError"), err["errorType"], err["errorMessage"])
out["raises"] = {"status": r["StatusCode"], "function_error": r.get("FunctionError"), "error": err}

r = lam.invoke(FunctionName="boto-07", InvocationType="DryRun")
out["dry_run"] = r["StatusCode"]
r = lam.invoke(FunctionName="boto-07", InvocationType="Event", Payload=b'{"async": true}')
out["event"] = {"status": r["StatusCode"], "request_id": r["ResponseMetadata"]["RequestId"]}
print("DryRun:", out["dry_run"], "Event:", r["StatusCode"], r["ResponseMetadata"]["RequestId"])

c = lam.update_function_code(FunctionName="boto-07", ZipFile=open(echo2_zip, "rb").read())
r = lam.invoke(FunctionName="boto-07", Payload=b'{"x": 8}')
out["updated"] = json.loads(r["Payload"].read())
print("after update_function_code:", out["updated"], "CodeSha256", c["CodeSha256"])

g = lam.get_function(FunctionName="boto-07")["Configuration"]
out["get"] = {"runtime": g["Runtime"], "handler": g["Handler"], "env": g["Environment"]["Variables"]}
print("get_function:", out["get"])

try:
    lam.get_function(FunctionName="boto-nope")
except lam.exceptions.ResourceNotFoundException as e:
    out["not_found"] = e.response["Error"]["Code"]
    print("get_function(missing):", e)
try:
    lam.create_function(FunctionName="boto-js", Runtime="nodejs18.x", Role=role,
                        Handler="index.handler", Code={"ZipFile": code})
except lam.exceptions.InvalidParameterValueException as e:
    out["nodejs"] = e.response["Error"]["Code"]
    print("create_function(nodejs18.x):", e)
try:
    lam.create_function(FunctionName="boto-07", Runtime="python3.11", Role=role,
                        Handler="lambda_function.lambda_handler", Code={"ZipFile": code})
except lam.exceptions.ResourceConflictException as e:
    out["conflict"] = e.response["Error"]["Code"]
    print("create_function(existing):", e)

for n in names + ["boto-raises"]:
    lam.delete_function(FunctionName=n)
left = [f["FunctionName"] for p in lam.get_paginator("list_functions").paginate() for f in p["Functions"]]
out["left"] = [n for n in left if n.startswith("boto-")]
print("deleted; boto- functions left:", out["left"])
print("RESULT " + json.dumps(out))
