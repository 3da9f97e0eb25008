"""Commit-reveal interop between tvm-chain (Rust) and the reference client,
PyPI bittensor-drand (Rust-backed, what the bittensor SDK commits with):

- the WeightsTlockPayload SCALE bytes, ours against an independent encoding here;
- a commit bittensor-drand encrypts to quicknet round 1000 opens in Rust with
  that round's real beacon signature, and one Rust encrypts opens in
  bittensor-drand, to the same payload; a wrong round's signature opens neither;
- the reveal round: bittensor-drand's get_encrypted_commit_v2 (the chain's
  stateful epoch counter) reads the clock, so ours is computed for the clock
  just before and just after its call and its round must be one of them, for
  several schedules.

Run by tests/interop/run.sh. Usage: python test_drand.py PATH_TO_DRAND_INTEROP_BINARY
"""
import json
import subprocess
import sys
import time
import traceback

import bittensor_drand as bd

# Quicknet round 1000, as https://api.drand.sh/52db9ba70e0cc0f6eaf7803dd07447a1f5477735fd3f661792ba94600c84e971/public/1000
# serves it (public beacon output).
ROUND_1000_SIG = "b44679b9a59af2ec876b1a6b1ad52ea9b1615fc3982b19576350f93447cb1125e342b73a8dd2bacbe47e4b6b63ed5e39"


class Rust:
    """The driver's answers as they are: errors are what some tests expect."""

    def __init__(self, binary):
        self.p = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def __call__(self, **cmd):
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        return json.loads(self.p.stdout.readline())


def compact(n):
    assert n < 1 << 14
    return bytes([n << 2]) if n < 64 else ((n << 2) | 1).to_bytes(2, "little")


def py_payload(hotkey, uids, values, version_key):
    """subtensor's WeightsTlockPayload, SCALE-encoded by hand."""
    out = compact(len(hotkey)) + hotkey
    for v in (uids, values):
        out += compact(len(v)) + b"".join(x.to_bytes(2, "little") for x in v)
    return out + version_key.to_bytes(8, "little")


def user_data(commit, round_):
    """bittensor-drand's UserData { encrypted_data: Vec<u8>, reveal_round: u64 }."""
    return compact(len(commit)) + commit + round_.to_bytes(8, "little")


def strip_user_data(blob):
    """The ciphertext inside bittensor-drand's UserData."""
    first = blob[0]
    if first & 3 == 0:
        n, off = first >> 2, 1
    elif first & 3 == 1:
        n, off = int.from_bytes(blob[:2], "little") >> 2, 2
    else:
        n, off = int.from_bytes(blob[:4], "little") >> 2, 4
    assert len(blob) == off + n + 8, "UserData layout"
    return blob[off:off + n], int.from_bytes(blob[off + n:], "little")


TESTS = []


def test(f):
    TESTS.append(f)
    return f


HOTKEY = bytes(range(32))
UIDS = [0, 1, 7, 300]
VALUES = [65535, 12, 0, 4095]


@test
def payload_layout_is_subtensors(rust):
    ours = bytes.fromhex(rust(op="payload", hotkey=HOTKEY.hex(), uids=UIDS, values=VALUES, version_key=4)["payload"])
    assert ours == py_payload(HOTKEY, UIDS, VALUES, 4), ours.hex()
    many = list(range(100))
    ours = bytes.fromhex(rust(op="payload", hotkey=HOTKEY.hex(), uids=many, values=many, version_key=2**40)["payload"])
    assert ours == py_payload(HOTKEY, many, many, 2**40)


@test
def their_commit_opens_in_rust(rust):
    plain = py_payload(HOTKEY, UIDS, VALUES, 4)
    blob, round_ = bd.encrypt_at_round(plain, 1000)
    assert round_ == 1000
    commit, r = strip_user_data(blob)
    assert r == 1000
    got = rust(op="decrypt", commit=commit.hex(), signature=ROUND_1000_SIG)
    assert got.get("plain") == plain.hex(), got
    # Another round's commit does not open with round 1000's signature.
    blob, _ = bd.encrypt_at_round(plain, 1001)
    commit, _ = strip_user_data(blob)
    got = rust(op="decrypt", commit=commit.hex(), signature=ROUND_1000_SIG)
    assert "error" in got, got


@test
def our_commit_opens_in_bittensor_drand(rust):
    plain = py_payload(HOTKEY, UIDS, VALUES, 4)
    commit = bytes.fromhex(rust(op="encrypt", round=1000, plain=plain.hex())["commit"])
    assert bd.decrypt_with_signature(user_data(commit, 1000), ROUND_1000_SIG) == plain
    commit = bytes.fromhex(rust(op="encrypt", round=999, plain=plain.hex())["commit"])
    try:
        bd.decrypt_with_signature(user_data(commit, 999), ROUND_1000_SIG)
    except Exception:
        pass
    else:
        raise AssertionError("a round-999 commit opened with round 1000's signature")


@test
def reveal_round_matches_get_encrypted_commit_v2(rust):
    cases = [
        # last_epoch_block, pending_epoch_at, subnet_epoch_index, tempo,
        # blocks_since_last_step, current_block, reveal period, block time
        (5_000_000, 0, 1200, 360, 100, 5_000_100, 1, 12.0),
        (5_000_000, 0, 1200, 360, 359, 5_000_359, 1, 12.0),  # an epoch runs in the next block
        (5_000_000, 0, 1200, 360, 358, 5_000_358, 1, 12.0),
        (5_000_000, 5_000_200, 1200, 360, 100, 5_000_100, 1, 12.0),  # owner-set pending epoch
        (123_400, 0, 7, 99, 56, 123_456, 3, 12.0),
        (900, 0, 3, 10, 2, 902, 2, 0.25),
        (1_000, 0, 5, 360, 50_401, 51_401, 1, 12.0),  # past MAX_TEMPO without a step
    ]
    for last, pending, index, tempo, since, block, period, block_time in cases:
        before = time.time()
        _, theirs = bd.get_encrypted_commit_v2(
            UIDS, VALUES, 4, last, pending, index, tempo, since, block, period, block_time, HOTKEY
        )
        after = time.time()
        ours = {
            rust(op="reveal_round", last_epoch_block=last, pending_epoch_at=pending,
                 subnet_epoch_index=index, tempo=tempo, blocks_since_last_step=since,
                 current_block=block, reveal_period=period, block_time=block_time, now=t)["round"]
            for t in (before, after)
        }
        assert theirs in ours, (last, pending, index, tempo, since, block, theirs, ours)


def main():
    rust = Rust(sys.argv[1])
    failed = 0
    for t in TESTS:
        try:
            t(rust)
            print(f"PASS {t.__name__}")
        except Exception:
            failed += 1
            print(f"FAIL {t.__name__}")
            traceback.print_exc()
    print(f"drand interop: {len(TESTS) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
