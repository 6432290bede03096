// A real tus client for tests/tus.rs: tus-js-client (npm, from HG_TUS_MODULES).
// Prints one line: the outcome ("done URL", or "failed STATUS URL").
// HG_TUS_WITH_CREATION=1 sends the first chunk with the creation request.
//
// Usage: node client.mjs ENDPOINT FILE CHUNK_BYTES [STOP_AFTER_BYTES | resume URL]
//   STOP_AFTER_BYTES: abort the upload once this many bytes are acknowledged (as a
//   dropped connection would), printing "stopped URL"; `resume URL` goes on with it.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const require = createRequire(path.join(process.env.HG_TUS_MODULES, "x.js"));
const tus = require("tus-js-client");

const [endpoint, file, chunk, mode, url] = process.argv.slice(2);
const data = fs.readFileSync(file);
const options = {
  endpoint,
  chunkSize: Number(chunk),
  retryDelays: [],
  uploadSize: data.length,
  metadata: { filename: path.basename(file) },
  // HG_TUS_WITH_CREATION=1: the first chunk rides on the creation (creation-with-upload).
  uploadDataDuringCreation: process.env.HG_TUS_WITH_CREATION === "1",
};
if (mode === "resume") options.uploadUrl = url;
const stopAfter = mode && mode !== "resume" ? Number(mode) : null;

const upload = new tus.Upload(data, {
  ...options,
  onChunkComplete(_size, accepted) {
    if (stopAfter !== null && accepted >= stopAfter) {
      upload.abort();
      console.log(`stopped ${upload.url}`);
      process.exit(0);
    }
  },
  onSuccess() {
    console.log(`done ${upload.url}`);
  },
  onError(error) {
    const status = error.originalResponse ? error.originalResponse.getStatus() : 0;
    console.log(`failed ${status} ${upload.url}`);
  },
});
upload.start();
