"""Interop between tvm-protocol (Rust) and the real Python peer, bittensor-wallet
from PyPI: Epistula headers both ways, hotkey files, key derivation, and an
independent re-implementation of report_data; and `tvm image measure`'s
Authenticode hashes of PE images against LIEF's (PyPI), on setuptools'
launchers and, when run.sh could fetch it, Debian's signed cloud kernel.

Run by tests/interop/run.sh (which builds the Rust driver and the venv).
Usage: python test_interop.py PATH_TO_INTEROP_BINARY
"""
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import traceback
import uuid

from bittensor_wallet import Keyfile, Keypair, Wallet

from report_data import device_nonce as py_device_nonce
from report_data import report_data as py_report_data
from report_data import rtmr3 as py_rtmr3
from report_data import runtime_events as py_runtime_events

DEV_PHRASE = "bottom drive obey lake curtain smoke basket hold race lonely fit walk"
ALICE = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
BOB = "5FHneW46xGXgs5mUiveU4sbTyGBzmstUspZC92UhjJM694ty"


class Rust:
    def __init__(self, binary):
        self.p = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def __call__(self, **cmd):
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        reply = json.loads(self.p.stdout.readline())
        if "error" in reply and "ok" not in reply:
            raise RuntimeError(reply["error"])
        return reply


def py_sign(keypair, body: bytes, signed_for, ts_ms=None):
    """Epistula v2 headers the way Targon's Python peers build them."""
    ts = ts_ms if ts_ms is not None else round(time.time() * 1000)
    u = str(uuid.uuid4())
    msg = f"{hashlib.sha256(body).hexdigest()}.{u}.{ts}.{signed_for or ''}"
    h = {
        "Epistula-Version": "2",
        "Epistula-Timestamp": str(ts),
        "Epistula-Uuid": u,
        "Epistula-Signed-By": keypair.ss58_address,
        "Epistula-Request-Signature": "0x" + keypair.sign(msg).hex(),
    }
    if signed_for:
        h["Epistula-Signed-For"] = signed_for
    return h


def py_verify(headers, body: bytes, signed_for) -> bool:
    msg = ".".join([
        hashlib.sha256(body).hexdigest(),
        headers["Epistula-Uuid"],
        headers["Epistula-Timestamp"],
        signed_for or "",
    ])
    return Keypair(ss58_address=headers["Epistula-Signed-By"]).verify(msg, headers["Epistula-Request-Signature"])


def random_bodies(rng):
    yield b""
    yield b'{"nonce":"00112233"}'
    yield "ünïcödé ✓".encode()
    yield bytes(range(256))
    yield bytes(rng.getrandbits(8) for _ in range(70_000))
    for _ in range(20):
        yield bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 600)))


TESTS = []


def test(f):
    TESTS.append(f)
    return f


@test
def python_signed_verifies_in_rust(rust):
    rng = random.Random(1)
    for uri in ["//Alice", DEV_PHRASE, "//Bob//stash"]:
        kp = Keypair.create_from_uri(uri)
        for body in random_bodies(rng):
            h = py_sign(kp, body, BOB)
            now = int(h["Epistula-Timestamp"])
            r = rust(op="verify", recipient=BOB, headers=h, body_hex=body.hex(), now_ms=now)
            assert r["ok"] and r["signer"] == kp.ss58_address, r
            if body:
                bad = bytearray(body)
                bad[len(bad) // 2] ^= 0x01
                r = rust(op="verify", recipient=BOB, headers=h, body_hex=bytes(bad).hex(), now_ms=now)
                assert not r["ok"] and r["error"].startswith("BadSignature"), r
            # Stale by the window: the freshness check names it.
            r = rust(op="verify", recipient=BOB, headers=h, body_hex=body.hex(), now_ms=now + 8001)
            assert not r["ok"] and r["error"].startswith("Stale"), r


@test
def python_signed_without_recipient(rust):
    kp = Keypair.create_from_uri("//Alice")
    h = py_sign(kp, b"x", None)
    assert "Epistula-Signed-For" not in h
    now = int(h["Epistula-Timestamp"])
    r = rust(op="verify", recipient=None, headers=h, body_hex=b"x".hex(), now_ms=now)
    assert r["ok"], r
    r = rust(op="verify", recipient=BOB, headers=h, body_hex=b"x".hex(), now_ms=now)
    assert not r["ok"] and r["error"].startswith("WrongRecipient"), r


@test
def rust_signed_verifies_in_python(rust):
    rng = random.Random(2)
    for uri in ["//Alice", DEV_PHRASE, "0xe5be9a5092b81bca64be81d212e7f2f9eba183bb7a90954f7b76361f6edb5c0a"]:
        for body in random_bodies(rng):
            for to in (BOB, None):
                h = rust(op="sign", uri=uri, signed_for=to, body_hex=body.hex(),
                         timestamp_ms=int(time.time() * 1000))["headers"]
                assert h.get("Epistula-Signed-For") == to, h
                assert len(h["Epistula-Request-Signature"]) == 130
                assert py_verify(h, body, to), (uri, h)
                assert not py_verify(h, body + b"!", to)
                assert not py_verify(h, body, ALICE if to else BOB)


@test
def reference_vectors_verify_in_python(rust):
    base = {
        "Epistula-Version": "2",
        "Epistula-Timestamp": "1700000000000",
        "Epistula-Uuid": "2c1b7b1e-8f3a-4c7e-9d52-3f0a6b9e1c44",
        "Epistula-Signed-By": ALICE,
        "Epistula-Signed-For": BOB,
    }
    a = dict(base, **{"Epistula-Request-Signature": "0x96f03bd272d32c4ba940c0da3727abc1c39562cf560ba2b72136ad2266600877f7912fb3e554f95d04c8dbfa0198bd51a70f61c382ae3ad52bb1c1788b22c787"})
    b = dict(base, **{"Epistula-Request-Signature": "0x3e7fe353ebef97b1615abe3d45c9edf67e3eac1177f4401af30c72870c1a59280128d4618836e9e1815107768df2cd2066a726c91c85bccab75edc2b09749c8c"})
    assert py_verify(a, b'{"nonce":"00112233"}', BOB)
    assert py_verify(b, b"", BOB)
    for h, body in ((a, b'{"nonce":"00112233"}'), (b, b"")):
        r = rust(op="verify", recipient=BOB, headers=h, body_hex=body.hex(), now_ms=1700000001000)
        assert r["ok"], r


@test
def uris_derive_the_same_keys(rust):
    for uri in ["//Alice", "//Bob", DEV_PHRASE, DEV_PHRASE + "//hotkey//0", "//Alice/soft",
                "//Alice///password", DEV_PHRASE + "//a-very-long-junction-name-over-thirty-two-bytes",
                "0xe5be9a5092b81bca64be81d212e7f2f9eba183bb7a90954f7b76361f6edb5c0a//x"]:
        assert rust(op="uri", uri=uri)["ss58"] == Keypair.create_from_uri(uri).ss58_address, uri
    for words in (12, 15, 24):
        m = Keypair.generate_mnemonic(words)
        assert rust(op="uri", uri=m)["ss58"] == Keypair.create_from_mnemonic(m).ss58_address, m


@test
def python_hotkey_files_load_in_rust(rust):
    with tempfile.TemporaryDirectory() as root:
        w = Wallet(name="miner", hotkey="default", path=root)
        w.regenerate_hotkey(mnemonic=DEV_PHRASE, use_password=False, overwrite=True, suppress=True)
        path = os.path.join(root, "miner", "hotkeys", "default")
        r = rust(op="keyfile", path=path)
        assert r == {"ok": True, "ss58": "5DfhGyQdFobKM8NsWvEeAKk5EQQgYe9AydgJ7rMB6E1EqRzV"}, r
        for i in range(5):
            w = Wallet(name="miner", hotkey=f"h{i}", path=root)
            w.create_new_hotkey(n_words=12, use_password=False, overwrite=True, suppress=True)
            r = rust(op="keyfile", path=os.path.join(root, "miner", "hotkeys", f"h{i}"))
            assert r == {"ok": True, "ss58": w.hotkey.ss58_address}, r
        # A seed-only file (no phrase) as written from a seed.
        w = Wallet(name="miner", hotkey="seeded", path=root)
        w.regenerate_hotkey(seed="0xe5be9a5092b81bca64be81d212e7f2f9eba183bb7a90954f7b76361f6edb5c0a",
                            use_password=False, overwrite=True, suppress=True)
        r = rust(op="keyfile", path=os.path.join(root, "miner", "hotkeys", "seeded"))
        assert r == {"ok": True, "ss58": ALICE}, r
        # Encrypted keyfile: a clear refusal, not garbage.
        enc = os.path.join(root, "enc")
        Keyfile(enc).set_keypair(Keypair.create_from_uri("//Alice"), encrypt=True, overwrite=True, password="pw-123456")
        r = rust(op="keyfile", path=enc)
        assert not r["ok"] and r["error"].startswith("Encrypted"), r
        assert "regen-hotkey" in r["message"]


@test
def report_data_matches_independent_implementation(rust):
    rng = random.Random(3)
    h = lambda b: hashlib.sha256(b).hexdigest()
    for i in range(50):
        claims = {
            "cvm_id": h(bytes([i])),
            "node_type": rng.choice(["gpu", "cpu"]),
            "agent_version": rng.choice(["0.1.0", "", "1.2.3-ü"]),
            "simulated": rng.random() < 0.5,
            "gpu_reports_sha256": [h(b"g%d" % j) for j in range(rng.randint(0, 8))],
            "switch_reports_sha256": [h(b"s%d" % j) for j in range(rng.choice([0, 4]))],
            "runtime": {
                "image_digest": rng.choice([None, "sha256:" + h(b"img")]),
                "upstream": rng.choice([None, "http://127.0.0.1:8000"]),
                "models": rng.sample(["a", "b/c", "ünï"], rng.randint(0, 3)),
                "agent_config": rng.choice([None, h(b"config %d" % i)]),
            },
        }
        nonce = os.urandom(32).hex()
        r = rust(op="report_data", nonce=nonce, claims=claims)
        assert r["report_data"] == py_report_data(nonce, claims).hex(), claims
        assert r["device_nonce"] == py_device_nonce(nonce, claims["cvm_id"]).hex(), claims
        events = py_runtime_events(claims)
        assert r["runtime_events"] == events, claims
        assert r["rtmr3"] == py_rtmr3(events).hex(), claims


@test
def kernel_authenticode_matches_lief(rust):
    import glob
    import lief
    import setuptools
    tvm = os.environ["TVM_BIN"]
    files = sorted(glob.glob(os.path.join(os.path.dirname(setuptools.__file__), "cli-*.exe")))
    kernel = os.environ.get("TVM_INTEROP_KERNEL")
    if kernel:
        files.append(kernel)
    assert files, "no PE images to compare"
    for f in files:
        out = subprocess.run(
            [tvm, "image", "measure", "tdx", "--shape", "interop", "--mrtd", "01" * 48, "--rtmr0", "02" * 48,
             "--kernel", f, "--cmdline-sha384", "04" * 48, "--initrd-sha384", "05" * 48],
            check=True, capture_output=True, text=True).stdout
        ours = json.loads(out)["events"]["rtmr1"][0]
        pe = lief.PE.parse(f)
        assert pe is not None, f
        theirs = pe.authentihash(lief.PE.ALGORITHMS.SHA_384).hex()
        assert ours == theirs, (f, ours, theirs)
        print(f"     {os.path.basename(f)}: {ours[:16]}… ({'signed' if pe.has_signatures else 'unsigned'})")


def python_verify_rate():
    """The field's tool on Epistula vector A, for the closing note beside the criterion bench."""
    kp = Keypair(ss58_address=ALICE)
    msg = "115968080b8c20f18f5e771d7e58ce610c9fdeeed5c9010960527c2d799cf63c.2c1b7b1e-8f3a-4c7e-9d52-3f0a6b9e1c44.1700000000000." + BOB
    sig = "0x96f03bd272d32c4ba940c0da3727abc1c39562cf560ba2b72136ad2266600877f7912fb3e554f95d04c8dbfa0198bd51a70f61c382ae3ad52bb1c1788b22c787"
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 1.0:
        assert kp.verify(msg, sig)
        n += 1
    return n / (time.perf_counter() - t0)


def main():
    rust = Rust(sys.argv[1])
    passed = failed = 0
    for t in TESTS:
        try:
            t(rust)
            print(f"ok   {t.__name__}")
            passed += 1
        except Exception:
            print(f"FAIL {t.__name__}")
            traceback.print_exc()
            failed += 1
    print(f"bittensor-wallet Keypair.verify: {python_verify_rate():.0f} verifications/s (vector A)")
    print(f"interop: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
