// Verifies one delivery with the `standardwebhooks` npm package, as a Node receiver would:
//   node verify.js <secret> <file holding {"body": "...", "headers": {...}}>
// Prints "verified" and exits 0, or prints the library's error and exits 1.
const fs = require("node:fs");
const { Webhook } = require("standardwebhooks");

const [secret, file] = process.argv.slice(2);
const { body, headers } = JSON.parse(fs.readFileSync(file, "utf8"));
try {
  new Webhook(secret).verify(body, headers);
  console.log("verified");
} catch (error) {
  console.log(`refused: ${error.message}`);
  process.exit(1);
}
