"""A tus 1.0 origin for tests/tus.rs with the concatenation extension, which the real
tus server the tests use (@tus/server with @tus/file-store) does not implement, and
tusd (which does) cannot be installed here. It follows the protocol's text: POST
creates (Upload-Length, or Upload-Concat: partial / final;URL URL...; a body is the
upload's first bytes), HEAD says Upload-Offset and Upload-Length, PATCH appends at
Upload-Offset (409 elsewhere), DELETE terminates, GET serves a finished upload.
A final upload is the concatenation of its finished partial uploads, made at once.

Usage: tus_origin.py ROOT. Prints one line on stderr when it listens:
ready {"server":"tus","listen":"127.0.0.1:PORT"}
"""

import json
import os
import sys
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

ROOT = sys.argv[1]
BASE = "/files/"


def data(upload_id):
    return os.path.join(ROOT, upload_id)


def meta(upload_id):
    return os.path.join(ROOT, upload_id + ".json")


def load(path):
    upload_id = urlsplit(path).path[len(BASE):]
    if not upload_id or "/" in upload_id or not os.path.exists(meta(upload_id)):
        return None, None
    with open(meta(upload_id)) as f:
        return upload_id, json.load(f)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, headers=()):
        self.send_response(status)
        self.send_header("Tus-Resumable", "1.0.0")
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def body(self):
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self):
        concat = self.headers.get("Upload-Concat", "")
        upload_id = uuid.uuid4().hex
        state = {"concat": concat.split(";")[0] if concat else None}
        if concat.startswith("final;"):
            joined = b""
            for url in concat[len("final;"):].split():
                part_id, part = load(url)
                if part is None or part["concat"] != "partial" or part["length"] != os.path.getsize(data(part_id)):
                    return self.answer(400)
                with open(data(part_id), "rb") as f:
                    joined += f.read()
            state["length"] = len(joined)
            first = joined
        else:
            state["length"] = int(self.headers["Upload-Length"])
            first = self.body()
            if len(first) > state["length"]:
                return self.answer(413)
        with open(data(upload_id), "wb") as f:
            f.write(first)
        with open(meta(upload_id), "w") as f:
            json.dump(state, f)
        location = f"http://{self.headers['Host']}{BASE}{upload_id}"
        self.answer(201, [("Location", location), ("Upload-Offset", str(len(first)))])

    def do_HEAD(self):
        upload_id, state = load(self.path)
        if state is None:
            return self.answer(404)
        headers = [("Upload-Offset", str(os.path.getsize(data(upload_id)))),
                   ("Upload-Length", str(state["length"])), ("Cache-Control", "no-store")]
        if state["concat"]:
            headers.append(("Upload-Concat", state["concat"]))
        self.answer(200, headers)

    def do_PATCH(self):
        upload_id, state = load(self.path)
        if state is None:
            return self.answer(404)
        if state["concat"] == "final":
            return self.answer(403)
        offset = os.path.getsize(data(upload_id))
        if int(self.headers.get("Upload-Offset", -1)) != offset:
            return self.answer(409)
        chunk = self.body()
        if offset + len(chunk) > state["length"]:
            return self.answer(413)
        with open(data(upload_id), "ab") as f:
            f.write(chunk)
        self.answer(204, [("Upload-Offset", str(offset + len(chunk)))])

    def do_DELETE(self):
        upload_id, state = load(self.path)
        if state is None:
            return self.answer(404)
        os.remove(data(upload_id))
        os.remove(meta(upload_id))
        self.answer(204)

    def do_GET(self):
        upload_id, state = load(self.path)
        if state is None or os.path.getsize(data(upload_id)) != state["length"]:
            return self.answer(404)
        with open(data(upload_id), "rb") as f:
            content = f.read()
        self.send_response(200)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)


os.makedirs(ROOT, exist_ok=True)
server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
listen = "127.0.0.1:%d" % server.server_address[1]
print("ready " + json.dumps({"server": "tus", "listen": listen}), file=sys.stderr, flush=True)
server.serve_forever()
