// Verify a Kinetic webhook in Node.js (no dependencies).
//
//   verify(rawBody, req.headers["md-signature"], ["whsec_…"]); // throws if invalid
//
// `rawBody` must be the exact bytes received (a Buffer), not JSON parsed and re-serialized.
const crypto = require("node:crypto");

function verify(payload, header, secrets, tolerance = 300, now = Date.now() / 1000) {
  const items = header.split(",").map((part) => part.trim().split(/=(.*)/s, 2));
  const timestamps = items.filter(([key]) => key === "t").map(([, value]) => value);
  // A v1 is 64 lower-case hex digits; anything else cannot match and is skipped.
  const signatures = items
    .filter(([key, value]) => key === "v1" && /^[0-9a-f]{64}$/.test(value))
    .map(([, value]) => value);
  if (timestamps.length !== 1 || !/^\d+$/.test(timestamps[0]) || signatures.length === 0) {
    throw new Error("malformed MD-Signature header");
  }
  const timestamp = Number(timestamps[0]);
  if (Math.abs(now - timestamp) > tolerance) {
    throw new Error("timestamp outside the tolerance window");
  }
  const message = Buffer.concat([Buffer.from(`${timestamps[0]}.`), Buffer.from(payload)]);
  for (const secret of secrets) {
    const expected = crypto.createHmac("sha256", secret).update(message).digest();
    for (const candidate of signatures) {
      const given = Buffer.from(candidate, "hex");
      if (given.length === expected.length && crypto.timingSafeEqual(given, expected)) {
        return timestamp;
      }
    }
  }
  throw new Error("no signature matches");
}

module.exports = { verify };
