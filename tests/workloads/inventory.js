// A Node.js service in the test chain (event loop: one thread, many requests).
//   node inventory.js PORT [DOWNSTREAM_URL ...]
// Each request calls every downstream URL in turn over a keep-alive agent, then answers.
const http = require("http");

const port = Number(process.argv[2]);
const downstream = process.argv.slice(3);
const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });

function call(url) {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent }, (res) => {
        let bytes = 0;
        res.on("data", (chunk) => (bytes += chunk.length));
        res.on("end", () => resolve({ url, status: res.statusCode, bytes }));
      })
      .on("error", reject);
  });
}

http
  .createServer(async (req, res) => {
    const calls = [];
    for (const url of downstream) {
      calls.push(await call(url));
    }
    const body = JSON.stringify({ path: req.url, calls });
    res.writeHead(200, {
      "Content-Type": "application/json",
      "Content-Length": Buffer.byteLength(body),
    });
    res.end(body);
  })
  .listen(port, "127.0.0.1");
