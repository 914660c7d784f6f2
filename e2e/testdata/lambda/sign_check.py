"""Sends Lambda API requests signed by botocore's SigV4 signer, spoilt on
purpose: argv endpoint, function, then one of wrong-secret, tampered-body,
stale-date, good. Prints "STATUS <code> <x-amzn-ErrorType>"."""
import datetime
import http.client
import sys
import urllib.parse

import botocore.auth
import botocore.awsrequest
import botocore.credentials

endpoint, fn, mode, key, secret = sys.argv[1:6]
url = endpoint + "/2015-03-31/functions/" + fn + "/invocations"
body = b'{"signed": true}'
if mode == "wrong-secret":
    secret = secret + "x"
req = botocore.awsrequest.AWSRequest(method="POST", url=url, data=body,
                                     headers={"Content-Type": "application/json"})
shift = datetime.timedelta(minutes=-20 if mode == "stale-date" else 0)
real = botocore.auth.datetime.datetime


class Shifted(real):
    @classmethod
    def utcnow(cls):
        return real.utcnow() + shift

    @classmethod
    def now(cls, tz=None):
        return real.now(tz) + shift


botocore.auth.datetime.datetime = Shifted
try:
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(key, secret), "lambda", "us-east-1").add_auth(req)
finally:
    botocore.auth.datetime.datetime = real
p = req.prepare()
if mode == "tampered-body":
    p.body = b'{"signed": false}'
u = urllib.parse.urlsplit(p.url)
conn = http.client.HTTPConnection(u.netloc, timeout=60)
headers = dict(p.headers)
headers["Content-Length"] = str(len(p.body))
conn.request("POST", u.path, body=p.body, headers=headers)
resp = conn.getresponse()
resp.read()
print("STATUS", resp.status, resp.getheader("x-amzn-ErrorType") or "-")
