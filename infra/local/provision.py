"""Create template.yaml's tables, buckets and queues on the local AWS stack, and write the
functions' environment (Globals.Function.Environment.Variables) to a shell env file.

DynamoDB and SQS go to awsd (moto), S3 to s3s-fs. Secrets are not served: a generated
secret's value is made once and kept in the state dir. Other resource types are ignored.
Idempotent: existing resources are left as they are.
"""

import argparse
import json
import logging
import os
import re
import secrets
import string
import sys

import boto3
import yaml
from botocore.config import Config
from botocore.exceptions import ClientError, ParamValidationError

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
log = logging.getLogger("provision")


# ------------------------------------------------------------------ template loading
class CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns CloudFormation short-form tags (!Ref, !Sub, ...) into the
    long form ({"Ref": ...}, {"Fn::Sub": ...})."""


def _short_form(loader, tag_suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix in ("Ref", "Condition"):
        return {tag_suffix: value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {"Fn::" + tag_suffix: value}


CfnLoader.add_multi_constructor("!", _short_form)


def load_template(path):
    with open(path) as f:
        return yaml.load(f, Loader=CfnLoader)


# ------------------------------------------------------------------ provisioning
class Stack:
    def __init__(self, args, template):
        self.stack = args.stack
        self.template = template
        self.resources = template.get("Resources") or {}
        self.params = {k: v.get("Default") for k, v in (template.get("Parameters") or {}).items()}
        self.params.update(dict(p.split("=", 1) for p in args.parameter))
        self.state_dir = args.state_dir
        self.done = {}  # logical id -> dict of attributes ("Ref", "Arn", ...)
        self.counts = {}
        self.created = 0
        creds = dict(
            region_name=REGION,
            aws_access_key_id=args.access_key_id,
            aws_secret_access_key=args.secret_access_key,
        )
        cfg = Config(retries={"max_attempts": 3}, connect_timeout=5, read_timeout=30)
        self.ddb = boto3.client("dynamodb", endpoint_url=args.aws_endpoint, config=cfg, **creds)
        self.sqs = boto3.client("sqs", endpoint_url=args.aws_endpoint, config=cfg, **creds)
        # s3s-fs serves path-style only.
        s3cfg = cfg.merge(Config(s3={"addressing_style": "path"}))
        self.s3 = boto3.client("s3", endpoint_url=args.s3_endpoint, config=s3cfg, **creds)

    def name(self, logical_id):
        return f"{self.stack}-{logical_id}"

    def provision_all(self):
        for logical_id in self.resources:
            self.ensure(logical_id)

    def ensure(self, logical_id):
        """Create the resource (once) and return its attributes; dependencies such as a
        queue's dead-letter target are created on demand when first referenced."""
        if self.done.get(logical_id) == "in progress":
            raise SystemExit(f"circular reference through {logical_id}")
        if logical_id in self.done:
            return self.done[logical_id]
        res = self.resources.get(logical_id)
        if res is None:
            raise SystemExit(f"template references unknown resource {logical_id}")
        kind = res.get("Type")
        create = {
            "AWS::DynamoDB::Table": self.table,
            "AWS::S3::Bucket": self.bucket,
            "AWS::SQS::Queue": self.queue,
            "AWS::SecretsManager::Secret": self.secret,
        }.get(kind)
        if create is None:
            self.done[logical_id] = None
            return None
        self.done[logical_id] = "in progress"
        attrs = create(logical_id, res.get("Properties") or {})
        self.done[logical_id] = attrs
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return attrs

    # -- intrinsic functions
    def resolve(self, value):
        if isinstance(value, str) and "{{resolve:" in value:
            return self.dynamic_references(value)
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) != 1:
            return {k: self.resolve(v) for k, v in value.items()}
        (fn, arg), = value.items()
        if fn == "Ref":
            return self.ref(arg)
        if fn == "Fn::GetAtt":
            return self.attr(*arg)
        if fn == "Fn::Sub":
            text, variables = (arg, {}) if isinstance(arg, str) else arg
            variables = {k: self.resolve(v) for k, v in variables.items()}
            text = re.sub(r"\$\{(!?)([^}]+)\}",  # ${!Literal} stays as ${Literal}
                          lambda m: "${" + m[2] + "}" if m[1] else str(self.sub_var(m[2], variables)),
                          text)
            return self.dynamic_references(text)
        if fn == "Fn::Join":
            sep, items = arg
            return sep.join(str(x) for x in self.resolve(items))
        if fn.startswith("Fn::"):
            raise ValueError(f"unsupported intrinsic {fn}")
        return {fn: self.resolve(arg)}

    def sub_var(self, name, variables):
        if name in variables:
            return variables[name]
        if "." in name:
            return self.attr(*name.split(".", 1))
        return self.ref(name)

    def ref(self, name):
        pseudo = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::StackName": self.stack,
                  "AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com"}
        if name in pseudo:
            return pseudo[name]
        if name in self.params:
            if self.params[name] is None:
                raise ValueError(f"parameter {name} has no Default (pass --parameter {name}=...)")
            return self.params[name]
        return self.attr(name, "Ref")

    def attr(self, logical_id, attribute):
        attrs = self.ensure(logical_id)
        if not attrs or attribute not in attrs:
            raise ValueError(f"{logical_id}.{attribute} has no local value")
        return attrs[attribute]

    def dynamic_references(self, text):
        """{{resolve:secretsmanager:<arn or name>:SecretString}} -> the local secret value."""
        values = {}
        for attrs in self.done.values():
            if isinstance(attrs, dict) and "SecretValue" in attrs:
                values[attrs["Ref"]] = values[attrs["Name"]] = attrs["SecretValue"]

        def lookup(m):
            if m[1] not in values:
                raise ValueError(f"unknown secret {m[1]}")
            return values[m[1]]

        return re.sub(r"\{\{resolve:secretsmanager:(.+?):SecretString\}\}", lookup, text)

    # -- DynamoDB
    def table(self, logical_id, props):
        name = self.name(logical_id)
        params = {
            "TableName": name,
            "KeySchema": props["KeySchema"],
            "AttributeDefinitions": props["AttributeDefinitions"],
            "BillingMode": props.get("BillingMode", "PROVISIONED"),
        }
        for key in ("ProvisionedThroughput", "GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
            if key in props:
                params[key] = self.resolve(props[key])
        if "StreamSpecification" in props:
            view = props["StreamSpecification"]["StreamViewType"]
            params["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": view}
        # PointInTimeRecovery and SSE: not supported by moto, and irrelevant locally.
        try:
            desc = self.ddb.create_table(**params)["TableDescription"]
            self.created += 1
            log.info("created table %s", name)
        except ClientError as e:
            if e.response["Error"]["Code"] != "ResourceInUseException":
                raise
            desc = self.ddb.describe_table(TableName=name)["Table"]
        ttl = props.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled"):
            current = self.ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
            if current.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
                self.ddb.update_time_to_live(
                    TableName=name,
                    TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
                )
        return {"Ref": name, "Arn": desc["TableArn"], "StreamArn": desc.get("LatestStreamArn")}

    # -- S3
    def bucket(self, logical_id, props):
        name = self.name(logical_id).lower()
        try:
            self.s3.create_bucket(Bucket=name)
            self.created += 1
            log.info("created bucket %s", name)
        except ClientError as e:
            if e.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
        settings = {
            "BucketEncryption": lambda p: self.s3.put_bucket_encryption(
                Bucket=name, ServerSideEncryptionConfiguration={
                    "Rules": [sse_rule(r) for r in p["ServerSideEncryptionConfiguration"]]}),
            "PublicAccessBlockConfiguration": lambda p: self.s3.put_public_access_block(
                Bucket=name, PublicAccessBlockConfiguration=p),
            "OwnershipControls": lambda p: self.s3.put_bucket_ownership_controls(
                Bucket=name, OwnershipControls=p),
            "VersioningConfiguration": lambda p: self.s3.put_bucket_versioning(
                Bucket=name, VersioningConfiguration=p),
            "LifecycleConfiguration": lambda p: self.s3.put_bucket_lifecycle_configuration(
                Bucket=name, LifecycleConfiguration={"Rules": [lifecycle_rule(r) for r in p["Rules"]]}),
        }
        # The local S3 server may implement only a subset: try each, never fail on one.
        for key, apply in settings.items():
            if key in props:
                try:
                    apply(self.resolve(props[key]))
                except ClientError as e:
                    log.debug("bucket %s: %s not applied: %s", name, key, e.response["Error"].get("Code"))
                except ParamValidationError as e:  # our translation from CloudFormation's shape
                    log.warning("bucket %s: %s not applied: %s", name, key, e)
        return {"Ref": name, "Arn": f"arn:aws:s3:::{name}", "DomainName": f"{name}.s3.amazonaws.com"}

    # -- SQS
    QUEUE_ATTRIBUTES = ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds",
                        "ReceiveMessageWaitTimeSeconds", "MaximumMessageSize", "FifoQueue",
                        "ContentBasedDeduplication", "DeduplicationScope", "FifoThroughputLimit",
                        "RedrivePolicy", "RedriveAllowPolicy")

    def queue(self, logical_id, props):
        name = self.name(logical_id)
        attrs = {}
        for key in self.QUEUE_ATTRIBUTES:  # SSE settings (SqsManagedSseEnabled, Kms*): skipped
            if key in props:
                value = self.resolve(props[key])
                if isinstance(value, dict):
                    value = json.dumps(value)
                elif isinstance(value, bool):
                    value = str(value).lower()
                attrs[key] = str(value)
        if attrs.get("FifoQueue") == "true":
            name += ".fifo"
        try:
            url = self.sqs.get_queue_url(QueueName=name)["QueueUrl"]  # exists: leave it
        except ClientError as e:
            code = e.response["Error"]["Code"]
            if "NonExistentQueue" not in code and code != "QueueDoesNotExist":
                raise
            url = self.sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]
            self.created += 1
            log.info("created queue %s", name)
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return {"Ref": url, "Arn": arn["Attributes"]["QueueArn"], "QueueName": name, "QueueUrl": url}

    # -- Secrets Manager (not served locally: the value lives in the state dir)
    def secret(self, logical_id, props):
        name = self.name(logical_id)
        path = os.path.join(self.state_dir, "secrets.json")
        stored = {}
        if os.path.exists(path):
            with open(path) as f:
                stored = json.load(f)
        if name not in stored:
            stored[name] = generate_secret(self.resolve(props))
            write_private(path, json.dumps(stored, indent=2) + "\n")
            self.created += 1
        arn = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}"
        return {"Ref": arn, "Id": arn, "Name": name, "SecretValue": stored[name]}


def generate_secret(props):
    if "SecretString" in props:
        return props["SecretString"]
    gen = props.get("GenerateSecretString") or {}
    length = int(gen.get("PasswordLength", 32))
    value = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(length))
    if "SecretStringTemplate" in gen:
        doc = json.loads(gen["SecretStringTemplate"])
        doc[gen["GenerateStringKey"]] = value
        return json.dumps(doc)
    return value


def sse_rule(rule):
    """CloudFormation's encryption rule shape -> the S3 API's."""
    out = dict(rule)
    if "ServerSideEncryptionByDefault" in out:
        out["ApplyServerSideEncryptionByDefault"] = out.pop("ServerSideEncryptionByDefault")
    return out


def lifecycle_rule(rule):
    """CloudFormation's lifecycle rule shape -> the S3 API's."""
    out = {"Status": rule["Status"], "Filter": {"Prefix": rule.get("Prefix", "")}}
    if "Id" in rule:
        out["ID"] = rule["Id"]
    exp = {}
    if "ExpirationInDays" in rule:
        exp["Days"] = int(rule["ExpirationInDays"])
    if "ExpiredObjectDeleteMarker" in rule:
        exp["ExpiredObjectDeleteMarker"] = rule["ExpiredObjectDeleteMarker"]
    if exp:
        out["Expiration"] = exp
    nve = dict(rule.get("NoncurrentVersionExpiration") or {})
    if "NoncurrentVersionExpirationInDays" in rule:
        nve["NoncurrentDays"] = rule["NoncurrentVersionExpirationInDays"]
    if nve:
        out["NoncurrentVersionExpiration"] = {k: int(v) for k, v in nve.items()}
    if "AbortIncompleteMultipartUpload" in rule:
        out["AbortIncompleteMultipartUpload"] = {
            "DaysAfterInitiation": int(rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])}
    if "Transitions" in rule:
        out["Transitions"] = [{"Days": int(t["TransitionInDays"]), "StorageClass": t["StorageClass"]}
                              for t in rule["Transitions"]]
    return out


def write_private(path, text):
    """Atomic write, readable by the owner only (the files hold secrets)."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def shell_quote(value):
    if isinstance(value, bool):
        value = str(value).lower()  # as CloudFormation renders YAML booleans
    return "'" + str(value).replace("'", "'\"'\"'") + "'"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--template", required=True)
    p.add_argument("--stack", required=True, help="stack name, e.g. switchboard-dev")
    p.add_argument("--aws-endpoint", required=True, help="DynamoDB + SQS endpoint (awsd)")
    p.add_argument("--s3-endpoint", required=True, help="S3 endpoint (s3s-fs)")
    p.add_argument("--state-dir", required=True)
    p.add_argument("--env-out", required=True)
    p.add_argument("--access-key-id", default=os.environ.get("AWS_ACCESS_KEY_ID", "switchboard-local"))
    p.add_argument("--secret-access-key",
                   default=os.environ.get("AWS_SECRET_ACCESS_KEY", "switchboard-local-secret"))
    p.add_argument("--parameter", action="append", default=[], metavar="NAME=VALUE",
                   help="override a template parameter's Default")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="provision: %(message)s")
    for noisy in ("botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.makedirs(args.state_dir, exist_ok=True)

    stack = Stack(args, load_template(args.template))
    stack.provision_all()

    env = {
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCESS_KEY_ID": args.access_key_id,
        "AWS_SECRET_ACCESS_KEY": args.secret_access_key,
        "AWS_ENDPOINT_URL": args.aws_endpoint,
        "AWS_ENDPOINT_URL_S3": args.s3_endpoint,
        "SWITCHBOARD_LOCAL": "1",
        "SWITCHBOARD_STACK": args.stack,
    }
    function_env = (((stack.template.get("Globals") or {}).get("Function") or {})
                    .get("Environment") or {}).get("Variables") or {}
    for name, value in function_env.items():
        try:
            env[name] = stack.resolve(value)
        except ValueError as e:  # e.g. a reference to a function, which has no local twin
            log.warning("%s not set: %s", name, e)
    os.makedirs(os.path.dirname(os.path.abspath(args.env_out)), exist_ok=True)
    write_private(args.env_out, "".join(f"export {k}={shell_quote(v)}\n" for k, v in env.items()))

    counts = ", ".join(f"{n} {kind.split('::')[-1].lower()}{'s' * (n != 1)}"
                       for kind, n in stack.counts.items())
    print(f"provisioned {args.stack}: {counts} ({stack.created} new); env in {args.env_out}")


if __name__ == "__main__":
    sys.exit(main())
