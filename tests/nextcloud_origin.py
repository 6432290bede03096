"""A WebDAV origin for tests/nextcloud.rs that assembles chunked uploads the way
Nextcloud's developer manual describes chunked upload v2 (Nextcloud itself cannot run
here): MKCOL makes a folder, PUT stores a file, MOVE of `<folder>/.file` concatenates
the folder's chunks in the order of their names into the Destination (refusing a total
other than OC-Total-Length) and removes the folder, MOVE of anything else renames,
DELETE removes, GET serves. No authentication.

Usage: nextcloud_origin.py ROOT. Prints one line on stderr when it listens:
ready {"server":"webdav","listen":"127.0.0.1:PORT"}
"""

import hashlib
import json
import os
import shutil
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

ROOT = sys.argv[1]


def local(path):
    return os.path.join(ROOT, unquote(urlsplit(path).path).lstrip("/"))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        length = int(self.headers.get("Content-Length", "0"))
        return self.rfile.read(length)

    def do_MKCOL(self):
        os.makedirs(local(self.path), exist_ok=True)
        self.answer(201)

    def do_PUT(self):
        data = self.body()
        if len(data) != int(self.headers.get("Content-Length", "0")):
            self.close_connection = True
            return
        path = local(self.path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        self.answer(201, headers=[("ETag", '"%s"' % hashlib.md5(data).hexdigest())])

    def do_MOVE(self):
        source = local(self.path)
        destination = local(self.headers["Destination"])
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        if os.path.basename(source) == ".file":
            folder = os.path.dirname(source)
            if not os.path.isdir(folder):
                return self.answer(404)
            chunks = sorted(os.listdir(folder))
            data = b"".join(open(os.path.join(folder, c), "rb").read() for c in chunks)
            if str(len(data)) != self.headers.get("OC-Total-Length"):
                return self.answer(400, b"OC-Total-Length does not match")
            with open(destination, "wb") as f:
                f.write(data)
            shutil.rmtree(folder)
            return self.answer(201)
        if not os.path.exists(source):
            return self.answer(404)
        os.replace(source, destination)
        self.answer(201)

    def do_COPY(self):
        source = local(self.path)
        destination = local(self.headers["Destination"])
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        shutil.copyfile(source, destination)
        self.answer(201)

    def do_DELETE(self):
        path = local(self.path)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
        else:
            return self.answer(404)
        self.answer(204)

    def do_GET(self):
        path = local(self.path)
        if not os.path.isfile(path):
            return self.answer(404)
        with open(path, "rb") as f:
            self.answer(200, f.read())


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
listen = "127.0.0.1:%d" % server.server_address[1]
print("ready " + json.dumps({"server": "webdav", "listen": listen}), file=sys.stderr, flush=True)
server.serve_forever()
