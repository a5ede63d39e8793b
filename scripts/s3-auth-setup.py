"""Sets up the S3 server that checks keys (scripts/start-s3.sh): IAM users and a bucket.

moto's server enforces IAM authentication after its first few requests
(INITIAL_NO_AUTH_ACTION_COUNT); those are used here to create a user that may
do everything, one that may only read, and a bucket. Their keys are written
to the JSON file named by the first argument, for the tests.
"""

import json
import sys

import boto3

ENDPOINT, OUT = sys.argv[1], sys.argv[2]
ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*",
                                                "Resource": "*"}]}
READ = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                                                 "Action": ["s3:Get*", "s3:List*"],
                                                 "Resource": "*"}]}

iam = boto3.client("iam", endpoint_url=ENDPOINT, region_name="us-east-1",
                   aws_access_key_id="setup", aws_secret_access_key="setup")  # noqa: S106
keys = {}
for user, policy in (("berth", ALL), ("reader", READ)):
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    keys[user] = {"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
s3 = boto3.client("s3", endpoint_url=ENDPOINT, region_name="us-east-1",
                  aws_access_key_id=keys["berth"]["id"],
                  aws_secret_access_key=keys["berth"]["secret"])
s3.create_bucket(Bucket="berth-auth")
with open(OUT, "w") as fh:
    json.dump({"endpoint": ENDPOINT, "bucket": "berth-auth", **keys}, fh)
