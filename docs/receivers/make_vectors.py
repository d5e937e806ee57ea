"""Writes docs/receivers/vectors.json: signature test vectors any language can check.

    python docs/receivers/make_vectors.py [OUTPUT]   (default: vectors.json beside it)

Each vector: a payload (UTF-8 text), an MD-Signature header, the receiver's secrets, `now`
(the receiver's clock), `tolerance`, and whether verification must succeed. The valid ones are
made with the service's own signer (deliveries/signature.py).
"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from deliveries.signature import compute, sign

OUT = Path(__file__).with_name("vectors.json")
T = 1781289600  # 2026-06-12T18:40:00Z
OLD = "whsec_kkVbNz31qPe8RmT4cYxAhD2w"
NEW = "whsec_Q9mX2pLr7TzVb4NcYd8KsHf1"
BODY = (
    '{"id":"evt_3kTq9Zb2Lm8RvX1cWd4N","object":"event","type":"judgment.created",'
    '"api_version":"2026-06-11","environment":"sandbox","created_at":"2026-06-12T18:40:00Z",'
    '"data":{"judgment":{"id":"jdg_1","score":0.93,"note":"caf\\u00e9"}}}'
)


def vector(name: str, header: str, secrets: list[str], valid: bool, **extra: object) -> dict:
    return {
        "name": name,
        "payload": extra.pop("payload", BODY),
        "header": header,
        "secrets": secrets,
        "now": extra.pop("now", T + 12),
        "tolerance": extra.pop("tolerance", 300),
        "valid": valid,
    }


def main() -> None:
    one = sign(BODY.encode(), [OLD], T)
    both = sign(BODY.encode(), [NEW, OLD], T)
    vectors = [
        vector("one secret", one, [OLD], True),
        vector("rotation: header has both, receiver knows the new one", both, [NEW], True),
        vector("rotation: header has both, receiver knows the old one", both, [OLD], True),
        vector("receiver keeps two secrets, header has one", one, [NEW, OLD], True),
        vector("spaces after commas", one.replace(",", ", "), [OLD], True),
        vector("timestamp 299 s old", one, [OLD], True, now=T + 299),
        vector("timestamp 301 s old", one, [OLD], False, now=T + 301),
        vector("timestamp 301 s in the future", one, [OLD], False, now=T - 301),
        vector("wrong secret", one, [NEW], False),
        vector("payload changed by one byte", one, [OLD], False, payload=BODY.replace("93", "94")),
        vector(
            "payload re-serialized with spaces",
            one,
            [OLD],
            False,
            payload=json.dumps(json.loads(BODY)),
        ),
        vector("no v1", f"t={T}", [OLD], False),
        vector("no timestamp", one.split(",", 1)[1], [OLD], False),
        vector("v0 scheme only", one.replace("v1=", "v0="), [OLD], False),
        vector("signature of another timestamp", f"t={T + 1},{one.split(',', 1)[1]}", [OLD], False),
        vector("empty payload", f"t={T},v1={compute(OLD, T, b'')}", [OLD], True, payload=""),
        vector("timestamp written with a leading zero", one.replace("t=", "t=0"), [OLD], False),
        vector(
            "v1 in upper-case hex",
            f"t={T},v1={compute(OLD, T, BODY.encode()).upper()}",
            [OLD],
            False,
        ),
        vector("tolerance 0, the same second", one, [OLD], True, now=T, tolerance=0),
        vector("tolerance 0, a second later", one, [OLD], False, now=T + 1, tolerance=0),
    ]
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    out.write_text(json.dumps({"scheme": "MD-Signature v1", "vectors": vectors}, indent=2) + "\n")
    print(f"wrote {len(vectors)} vectors to {out}")


if __name__ == "__main__":
    main()
