"""The MD-Signature scheme: the service's signer, the repository's test vectors, and the
receiver snippets the README shows (Python, JavaScript on node, openssl), all agreeing."""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deliveries import signature

RECEIVERS = Path(__file__).resolve().parent.parent / "docs" / "receivers"
VECTORS = json.loads((RECEIVERS / "vectors.json").read_text())["vectors"]
IDS = [v["name"] for v in VECTORS]


def load_python_snippet():
    spec = importlib.util.spec_from_file_location("verify_snippet", RECEIVERS / "verify.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vectors_file_is_what_the_generator_makes(tmp_path):
    """The committed vectors are reproducible from the signer (no hand-edited file)."""
    made = tmp_path / "vectors.json"
    result = subprocess.run(
        [sys.executable, str(RECEIVERS / "make_vectors.py"), str(made)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert made.read_text() == (RECEIVERS / "vectors.json").read_text()
    assert len(VECTORS) >= 15
    assert {v["valid"] for v in VECTORS} == {True, False}


@pytest.mark.parametrize("vector", VECTORS, ids=IDS)
def test_service_verifier(vector):
    payload = vector["payload"].encode()
    if vector["valid"]:
        assert signature.verify(
            payload, vector["header"], vector["secrets"], vector["tolerance"], now=vector["now"]
        )
    else:
        with pytest.raises(signature.SignatureVerificationError):
            signature.verify(
                payload, vector["header"], vector["secrets"], vector["tolerance"], now=vector["now"]
            )


@pytest.mark.parametrize("vector", VECTORS, ids=IDS)
def test_python_snippet(vector):
    verify = load_python_snippet().verify
    args = (vector["payload"].encode(), vector["header"], vector["secrets"], vector["tolerance"])
    if vector["valid"]:
        assert verify(*args, now=vector["now"])
    else:
        with pytest.raises(ValueError):
            verify(*args, now=vector["now"])


def test_javascript_snippet_on_node():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    script = f"""
      const {{ verify }} = require({json.dumps(str(RECEIVERS / "verify.js"))});
      const vectors = require({json.dumps(str(RECEIVERS / "vectors.json"))}).vectors;
      const results = vectors.map((v) => {{
        try {{ verify(Buffer.from(v.payload, "utf8"), v.header, v.secrets, v.tolerance, v.now);
               return true; }} catch (e) {{ return false; }}
      }});
      console.log(JSON.stringify(results));
    """
    out = subprocess.run([node, "-e", script], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [v["valid"] for v in VECTORS]


@pytest.mark.parametrize("vector", VECTORS, ids=IDS)
def test_openssl_snippet(vector, tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    body = tmp_path / "body.json"
    body.write_bytes(vector["payload"].encode())
    results = [
        subprocess.run(
            ["bash", str(RECEIVERS / "verify.sh"), str(body), vector["header"], secret,
             str(vector["tolerance"])],
            capture_output=True, text=True, check=False,
            env={"NOW": str(vector["now"]), "PATH": "/usr/bin:/bin"},
        ).returncode == 0
        for secret in vector["secrets"]
    ]  # fmt: skip
    assert any(results) == vector["valid"]


def test_sign_puts_one_v1_per_secret_newest_first():
    header = signature.sign(b"{}", ["whsec_new", "whsec_old"], timestamp=1_700_000_000)
    t, v1s = signature.parse(header)
    assert t == 1_700_000_000
    assert v1s == [
        signature.compute("whsec_new", t, b"{}"),
        signature.compute("whsec_old", t, b"{}"),
    ]
    with pytest.raises(ValueError):
        signature.sign(b"{}", [])


def test_the_readme_shows_the_snippets_that_are_tested():
    readme = (RECEIVERS.parent.parent / "README.md").read_text()
    for name in ("verify.py", "verify.js"):
        assert (RECEIVERS / name).read_text().rstrip() in readme, name


def test_the_clock_is_skipped_only_when_asked():
    """tolerance=0 is the same second, as in the snippets; only None skips the clock."""
    header = signature.sign(b"{}", ["whsec_k"], timestamp=1_000)
    with pytest.raises(signature.SignatureVerificationError):
        signature.verify(b"{}", header, "whsec_k", tolerance=0, now=1_000 + 10 * 365 * 86400)
    assert signature.verify(b"{}", header, "whsec_k", tolerance=None, now=10**10) == 1_000
