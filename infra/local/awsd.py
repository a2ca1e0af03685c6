"""The local AWS-compatible server for DynamoDB (+ Streams) and SQS: moto's server app,
bound to loopback, with one change that matters for correctness.

Real DynamoDB applies each conditional write and transaction atomically. moto's
in-memory backend does not: under concurrent requests two conditional updates can both
pass their condition (measured: 301 admissions against a limit of 300). Rate limiting,
agent reservation and idempotency all rely on that atomicity, so every DynamoDB request
is serialized here. SQS and S3 requests are not held by the lock, so a long-polling
consumer never stalls the store.

Serialized, a transaction no longer needs moto's rollback by deep copy of every table it
touches (O(table size) per TransactWriteItems, which made a few thousand items crawl):
it checks every condition first, then applies, snapshotting only the items it writes.

SQS: moto checks each received message's retention by computing every queue attribute,
ApproximateNumberOfMessages* included (a pass over the queue each), and deletes a
message with two passes over the queue. Measured with 1,000 messages queued: 470 ms
per ReceiveMessage of 10. Here retention reads the one attribute it needs, and a delete
stops at its message.
"""

import argparse
import copy
import os
import signal
import sys
import threading

from werkzeug.serving import run_simple
from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    ConditionalCheckFailed,
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.core.utils import unix_time
from moto.sqs.exceptions import ReceiptHandleIsInvalid
from moto.sqs.models import Queue, SQSBackend
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)

OPERATIONS = {"ConditionCheck", "Put", "Delete", "Update"}


def transact_write_items(self, transact_items):
    """DynamoDB's all-or-nothing TransactWriteItems, relying on the request lock."""
    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    seen, errors, plan = set(), [], []
    for entry in transact_items:
        if len(entry) > 1:
            raise TransactWriteSingleOpException
        op_type, op = next(iter(entry.items()))
        if op_type not in OPERATIONS:
            raise ValueError("Unsupported transaction operation")
        table = self.get_table(op["TableName"])
        if op_type == "Put":
            key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
            if table.range_key_attr is not None:
                key[table.range_key_attr] = op["Item"][table.range_key_attr]
        else:
            key = op["Key"]
        identity = (op["TableName"], str(dict(sorted(key.items()))))
        if identity in seen:
            raise MultipleTransactionsException()
        seen.add(identity)
        original = None
        try:
            current = self.get_item(op["TableName"], key)
            condition = op.get("ConditionExpression")
            if condition is not None:
                expression = get_filter_expression(
                    condition, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
                )
                if not expression.expr(current):
                    if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current:
                        original = current.to_json()["Attributes"]
                    raise ConditionalCheckFailed(item=original)
            errors.append((None, None, None))
        except ConditionalCheckFailed as e:
            errors.append(("ConditionalCheckFailed", str(e.message), original))
        plan.append((op_type, op, table, key))
    if any(code is not None for code, _, _ in errors):
        raise TransactionCanceledException(errors)

    snapshot = []
    for _, op, table, key in plan:
        hash_key = DynamoType(key[table.hash_key_attr])
        range_key = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
        old = table.get_item(hash_key, range_key)
        snapshot.append((table, hash_key, range_key, copy.deepcopy(old) if old else None))
    try:
        for op_type, op, _, key in plan:
            common = dict(
                condition_expression=op.get("ConditionExpression"),
                expression_attribute_names=op.get("ExpressionAttributeNames"),
                expression_attribute_values=op.get("ExpressionAttributeValues"),
            )
            if op_type == "Put":
                self.put_item(op["TableName"], op["Item"], **common)
            elif op_type == "Delete":
                self.delete_item(op["TableName"], key, **common)
            elif op_type == "Update":
                self.update_item(op["TableName"], key, update_expression=op["UpdateExpression"], **common)
    except Exception:
        # Only reachable through an invalid expression: put back what was touched.
        for table, hash_key, range_key, old in reversed(snapshot):
            if range_key is None:
                table.items.pop(hash_key, None) if old is None else table.items.__setitem__(hash_key, old)
            elif old is None:
                table.items[hash_key].pop(range_key, None)
            else:
                table.items[hash_key][range_key] = old
        raise


DynamoDBBackend.transact_write_items = transact_write_items


def is_message_valid_based_on_retention_period(self, queue_name, message):
    queue = self.get_queue(queue_name)
    return int(queue.message_retention_period) + message.sent_timestamp / 1000 > unix_time()


def delete_message(self, receipt_handle):
    if receipt_handle in self.deleted_messages:
        return  # deleting twice is allowed
    for index, message in enumerate(self._messages):
        if message.had_receipt_handle(receipt_handle):
            self.pending_messages.discard(message)
            self.deleted_messages.update(message.all_receipt_handles)
            del self._messages[index]
            return
    raise ReceiptHandleIsInvalid()


SQSBackend.is_message_valid_based_on_retention_period = is_message_valid_based_on_retention_period
Queue.delete_message = delete_message


class SerializedDynamoDB:
    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB"):
            with self.lock:
                # Materialise the body inside the lock: the backend runs while iterating.
                body = list(self.app(environ, start_response))
            return body
        return self.app(environ, start_response)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("awsd binds loopback only")
    # moto builds SQS queue URLs from MOTO_PORT.
    os.environ.setdefault("MOTO_PORT", str(args.port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        args.host,
        args.port,
        SerializedDynamoDB(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
