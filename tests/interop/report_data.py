"""Independent re-implementation of tvm's canonical claims, report_data,
device nonce and runtime events (docs/protocol.md), from the JSON claims alone. Used by the interop test to
check the Rust crate against a second implementation."""
import hashlib
import struct


def _bytes(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


def _opt(b):
    return b"\x00" if b is None else b"\x01" + _bytes(b)


def canonical_claims(c: dict) -> bytes:
    rt = c.get("runtime") or {}
    out = _bytes(b"tvm-claims-v3")
    out += bytes.fromhex(c["cvm_id"])
    out += _bytes(c["node_type"].encode())
    out += _bytes(c["agent_version"].encode())
    out += b"\x01" if c["simulated"] else b"\x00"
    for key in ("gpu_reports_sha256", "switch_reports_sha256"):
        hashes = c.get(key) or []
        out += struct.pack(">I", len(hashes)) + b"".join(bytes.fromhex(h) for h in hashes)
    for key in ("image_digest", "upstream"):
        v = rt.get(key)
        out += _opt(None if v is None else v.encode())
    models = rt.get("models") or []
    out += struct.pack(">I", len(models)) + b"".join(_bytes(m.encode()) for m in models)
    ac = rt.get("agent_config")
    out += _opt(None if ac is None else bytes.fromhex(ac))
    return out


def runtime_events(claims: dict) -> list:
    """The RTMR3 events an agent extends at start: config, image, models."""
    rt = claims.get("runtime") or {}
    out = []
    if rt.get("agent_config") is not None:
        out.append({"kind": "agent-config", "value": rt["agent_config"]})
    if rt.get("image_digest") is not None:
        out.append({"kind": "runtime-image", "value": rt["image_digest"]})
    out += [{"kind": "model", "value": m} for m in rt.get("models") or []]
    return out


def rtmr3(events: list) -> bytes:
    """RTMR3 after the events, from zero: SHA-384(RTMR || SHA-384(tag || kind || value))."""
    r = bytes(48)
    for e in events:
        d = hashlib.sha384(b"tvm-runtime-event-v1" + _bytes(e["kind"].encode()) + _bytes(e["value"].encode())).digest()
        r = hashlib.sha384(r + d).digest()
    return r


def report_data(nonce_hex: str, claims: dict) -> bytes:
    claims_hash = hashlib.sha256(canonical_claims(claims)).digest()
    return hashlib.sha512(b"tvm-report-data-v3" + bytes.fromhex(nonce_hex) + claims_hash).digest()


def device_nonce(nonce_hex: str, cvm_id_hex: str) -> bytes:
    return hashlib.sha256(b"tvm-device-nonce-v1" + bytes.fromhex(nonce_hex) + bytes.fromhex(cvm_id_hex)).digest()


if __name__ == "__main__":
    h = lambda b: hashlib.sha256(b).hexdigest()
    example = {
        "cvm_id": h(b"example spki"),
        "node_type": "gpu",
        "agent_version": "0.1.0",
        "simulated": False,
        "gpu_reports_sha256": [h(b"gpu0"), h(b"gpu1")],
        "switch_reports_sha256": [],
        "runtime": {"image_digest": "sha256:" + "0" * 64, "upstream": None,
                    "models": ["meta-llama/Llama-3.1-8B-Instruct"],
                    "agent_config": h(b"example agent config")},
    }
    nonce = bytes(range(32)).hex()
    print("claims_sha256", hashlib.sha256(canonical_claims(example)).hexdigest())
    print("report_data", report_data(nonce, example).hex())
    print("canonical", canonical_claims(example).hex(), len(canonical_claims(example)))
    print("device_nonce", device_nonce(nonce, example["cvm_id"]).hex())
    print("rtmr3", rtmr3(runtime_events(example)).hex())
