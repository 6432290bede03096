// A real tus 1.0 server for tests/tus.rs: @tus/server with @tus/file-store (npm,
// installed by scripts/test.sh into the directory HG_TUS_MODULES names), serving
// /files/ on 127.0.0.1 and a free port. Prints one line when it listens:
// ready {"server":"tus","listen":"127.0.0.1:PORT"}
//
// Usage: node server.mjs DIRECTORY
import http from "node:http";
import path from "node:path";

const modules = process.env.HG_TUS_MODULES;
const { Server } = await import(path.join(modules, "@tus/server/dist/index.js"));
const { FileStore } = await import(path.join(modules, "@tus/file-store/dist/index.js"));

const server = new Server({
  path: "/files",
  datastore: new FileStore({ directory: process.argv[2] }),
});
const listener = http.createServer((req, res) => server.handle(req, res));
listener.listen(0, "127.0.0.1", () => {
  const { port } = listener.address();
  process.stderr.write(`ready ${JSON.stringify({ server: "tus", listen: `127.0.0.1:${port}` })}\n`);
});
