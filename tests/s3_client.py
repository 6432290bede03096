"""A real S3 client (boto3, as an application would use it) for tests/s3.rs.

Usage: s3_client.py ENDPOINT BUCKET OP [ARGS...], with the credentials in the
environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY). Prints one line: the HTTP status
of the operation (or the keys, for `list`), and never a traceback for an S3 error.

OPs: mkbucket | put KEY FILE | mpu KEY FILE (multipart upload, 5 MiB parts, 4 in
parallel, as `upload_file` does; it aborts the upload itself if completing fails) |
mpu-raw KEY FILE (the same with the low-level calls, one part after another, and no abort
on failure) | get KEY OUT | list | copy KEY SOURCE_KEY (CopyObject) |
delete KEY... (DeleteObjects) |
script KEY STEP... (one multipart upload, step by step, printing each step's status):
  up:N:FILE (UploadPart), cp:N:SOURCE_KEY[:FIRST-LAST] (UploadPartCopy), done (complete
  with the latest ETag of every part, ascending), done-odd (the same completion sent as
  POST ?partNumber=1&uploadId=...), badetag:N (complete naming another ETag for part N),
  overlap:N:SLOW:FAST (part N sent twice at once, SLOW trickling, FAST while it does) |
raw METHOD KEY QUERY [HEADER:VALUE...] (a signed request with an empty body) |
create KEY (prints the upload id) | part KEY UPLOAD N FILE (prints the status and ETag) |
complete KEY UPLOAD N=ETAG...

HG_THREADS sets mpu's parallel parts (default 8).

With HG_ADDRESSING=virtual, buckets are addressed virtual-hosted style
(bucket.localhost; localhost and its subdomains resolve to 127.0.0.1 here).
"""

import os
import socket
import sys

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError


def status(call):
    """The HTTP status of one call: 200, or the error's."""
    try:
        call()
        return 200
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"]


def script(s3, bucket, key, steps):
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    etags = {}
    out = []

    def complete(parts):
        s3.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
        )

    def listed(swap=None):
        return [
            {"PartNumber": n, "ETag": '"%032x"' % 0 if n == swap else etags[n]}
            for n in sorted(etags)
        ]

    for step in steps:
        kind, _, rest = step.partition(":")
        if kind == "up":
            n, path = rest.split(":", 1)

            def up(n=int(n), path=path):
                with open(path, "rb") as f:
                    r = s3.upload_part(
                        Bucket=bucket, Key=key, UploadId=upload, PartNumber=n, Body=f.read()
                    )
                etags[n] = r["ETag"]

            out.append(status(up))
        elif kind == "cp":
            n, source, *span = rest.split(":")
            extra = {"CopySourceRange": "bytes=" + span[0]} if span else {}

            def cp(n=int(n), source=source, extra=extra):
                r = s3.upload_part_copy(
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload,
                    PartNumber=n,
                    CopySource={"Bucket": bucket, "Key": source},
                    **extra,
                )
                etags[n] = r["CopyPartResult"]["ETag"]

            out.append(status(cp))
        elif kind == "overlap":
            n, slow, fast = rest.split(":")
            out.extend(overlap(s3, bucket, key, upload, int(n), slow, fast, etags))
        elif kind == "done":
            out.append(status(lambda: complete(listed())))
        elif kind == "done-odd":

            def odd(request, **_):
                request.url = request.url.replace("?uploadId=", "?partNumber=1&uploadId=")

            s3.meta.events.register("before-sign.s3.CompleteMultipartUpload", odd)
            out.append(status(lambda: complete(listed())))
            s3.meta.events.unregister("before-sign.s3.CompleteMultipartUpload", odd)
        elif kind == "badetag":
            out.append(status(lambda: complete(listed(swap=int(rest)))))
        else:
            raise SystemExit(f"unknown step {step}")
    print(" ".join(map(str, out)))


def overlap(s3, bucket, key, upload, n, slow, fast, etags):
    """Part n sent twice at once: `slow` trickling in first, `fast` while it does. The
    statuses of the fast one and then the slow one; the part's ETag is the slow one's."""
    import http.client
    import threading
    import time
    from urllib.parse import urlsplit

    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest

    with open(slow, "rb") as f:
        body = f.read()
    url = s3.meta.endpoint_url + f"/{bucket}/{key}?partNumber={n}&uploadId={upload}"
    request = AWSRequest(
        method="PUT",
        url=url,
        data=body,
        headers={"Content-Length": str(len(body))},
    )
    S3SigV4Auth(s3._request_signer._credentials, "s3", "us-east-1").add_auth(request)
    target = urlsplit(url)
    started = threading.Event()
    answer = {}

    def send():
        connection = http.client.HTTPConnection(target.hostname, target.port)
        connection.putrequest("PUT", f"{target.path}?{target.query}", skip_host=True)
        for name, value in request.headers.items():
            connection.putheader(name, value)
        connection.putheader("Host", target.netloc)
        connection.endheaders()
        step = 256 * 1024
        for i in range(0, len(body), step):
            connection.send(body[i : i + step])
            started.set()
            time.sleep(0.05)
        response = connection.getresponse()
        answer["status"] = response.status
        answer["etag"] = response.getheader("ETag")

    thread = threading.Thread(target=send)
    thread.start()
    started.wait()
    time.sleep(0.2)

    def up():
        with open(fast, "rb") as f:
            s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=n, Body=f.read())

    first = status(up)
    thread.join()
    etags[n] = answer.get("etag")
    return [first, answer.get("status")]


def raw(s3, endpoint, bucket, method, key, query, headers):
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest

    request = AWSRequest(
        method=method,
        url=f"{endpoint}/{bucket}/{key}?{query}",
        data=b"",
        headers=dict(h.split(":", 1) for h in headers),
    )
    S3SigV4Auth(s3._request_signer._credentials, "s3", "us-east-1").add_auth(request)
    response = s3._endpoint.http_session.send(request.prepare())
    print(response.status_code)


def main():
    endpoint, bucket, op, *args = sys.argv[1:]
    addressing = os.environ.get("HG_ADDRESSING", "path")
    # localhost and its subdomains (virtual-hosted buckets) are the servers' 127.0.0.1.
    resolve = socket.getaddrinfo

    def local(host, *rest, **kw):
        if isinstance(host, str) and (host == "localhost" or host.endswith(".localhost")):
            host = "127.0.0.1"
        return resolve(host, *rest, **kw)

    socket.getaddrinfo = local
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(
            s3={"addressing_style": addressing},
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
                multipart_threshold=5 * mib,
                multipart_chunksize=5 * mib,
                max_concurrency=int(os.environ.get("HG_THREADS", "8")),
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
        elif op == "copy":
            key, source = args
            s3.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": source})
            print(200)
        elif op == "script":
            script(s3, bucket, args[0], args[1:])
        elif op == "create":
            print(s3.create_multipart_upload(Bucket=bucket, Key=args[0])["UploadId"])
        elif op == "part":
            key, upload, n, path = args
            with open(path, "rb") as f:
                r = s3.upload_part(
                    Bucket=bucket, Key=key, UploadId=upload, PartNumber=int(n), Body=f.read()
                )
            print(200, r["ETag"])
        elif op == "complete":
            key, upload, *parts = args
            parts = [
                {"PartNumber": int(n), "ETag": e} for n, e in (p.split("=", 1) for p in parts)
            ]
            s3.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
            )
            print(200)
        elif op == "raw":
            method, key, query, *headers = args
            raw(s3, endpoint, bucket, method, key, query, headers)
        elif op == "delete":
            objects = [{"Key": k} for k in args]
            s3.delete_objects(Bucket=bucket, Delete={"Objects": objects})
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
