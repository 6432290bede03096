"""A real S3 client (boto3, as an application would use it) for tests/s3.rs.

Usage: s3_client.py ENDPOINT BUCKET OP [ARGS...], with the credentials in the
environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY). Prints one line: the HTTP status
of the operation (or the keys, for `list`), and never a traceback for an S3 error.

OPs: mkbucket | put KEY FILE | mpu KEY FILE (multipart upload, 5 MiB parts, 4 in
parallel, as `upload_file` does; it aborts the upload itself if completing fails) |
mpu-raw KEY FILE (the same with the low-level calls, one part after another, and no abort
on failure) | get KEY OUT | list
"""

import os
import sys

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError


def main():
    endpoint, bucket, op, *args = sys.argv[1:]
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1, "mode": "standard"},
        ),
    )
    try:
        if op == "mkbucket":
            s3.create_bucket(Bucket=bucket)
            print(200)
        elif op == "put":
            key, path = args
            sent = {}
            s3.meta.events.register(
                "before-send.s3.PutObject",
                lambda request, **_: sent.update(request.headers),
            )
            with open(path, "rb") as f:
                s3.put_object(Bucket=bucket, Key=key, Body=f.read())
            # With HG_SHOW_ENCODING set, also say how the body was framed on the wire.
            if os.environ.get("HG_SHOW_ENCODING"):
                print(200, sent.get("Content-Encoding", b"identity").decode())
            else:
                print(200)
        elif op == "mpu":
            key, path = args
            mib = 1024 * 1024
            config = TransferConfig(
                multipart_threshold=5 * mib, multipart_chunksize=5 * mib, max_concurrency=4
            )
            s3.upload_file(path, bucket, key, Config=config)
            print(200)
        elif op == "mpu-raw":
            key, path = args
            upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
            parts = []
            with open(path, "rb") as f:
                while chunk := f.read(5 * 1024 * 1024):
                    n = len(parts) + 1
                    r = s3.upload_part(
                        Bucket=bucket, Key=key, UploadId=upload, PartNumber=n, Body=chunk
                    )
                    parts.append({"PartNumber": n, "ETag": r["ETag"]})
            s3.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
            )
            print(200)
        elif op == "get":
            key, out = args
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            with open(out, "wb") as f:
                f.write(body)
            print(200)
        elif op == "list":
            listed = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
            print(" ".join(sorted(o["Key"] for o in listed)))
        else:
            raise SystemExit(f"unknown op {op}")
    except ClientError as e:
        print(e.response["ResponseMetadata"]["HTTPStatusCode"])
    except Exception as e:  # boto3.s3.transfer wraps ClientError
        cause = e
        while cause is not None and not isinstance(cause, ClientError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        print(cause.response["ResponseMetadata"]["HTTPStatusCode"])


if __name__ == "__main__":
    main()
