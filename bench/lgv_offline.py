"""NVIDIA's Python local GPU verifier (nv-local-gpu-verifier 2.7.3) timed on
the same input as `cargo bench --bench gpu`: NV-1 (report + chain) with its
driver and VBIOS RIMs, at 2024-09-01, without network and without a GPU.

It cannot run offline as shipped, so, for this benchmark only:
- its OCSP walk is replaced by "good" (it has no switch to skip OCSP);
- OpenSSL's verification time is pinned inside the RIM signers' window;
- the GPU is its own test stand-in, pointed at our files.
Usage: lgv_offline.py REPO_ROOT [RUNS]"""
import datetime
import logging
import os
import statistics
import sys
import time

import OpenSSL.crypto as ossl
from verifier import cc_admin
from verifier.cc_admin_utils import CcAdminUtils
from verifier.config import HopperSettings, event_log, info_log

root = sys.argv[1]
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 30
data = os.path.join(root, "testdata", "nvidia")

CcAdminUtils.ocsp_certificate_chain_validation = staticmethod(
    lambda chain, settings, mode: (True, "", "good", None))


class PinnedTime(ossl.X509StoreContext):
    def __init__(self, store, cert, chain=None):
        store.set_time(datetime.datetime(2024, 9, 1))
        super().__init__(store, cert, chain)


ossl.X509StoreContext = PinnedTime
info_log.setLevel(logging.ERROR)
event_log.setLevel(logging.ERROR)

HopperSettings.set_attestation_report_path(os.path.join(data, "nvtrust_hopper_report.hex"))
HopperSettings.set_gpu_attestation_certificates_path(os.path.join(data, "nvtrust_hopper_cert_chain.pem"))
HopperSettings.set_driver_rim_path(os.path.join(data, "gonv_NV_GPU_DRIVER_GH100_550.90.07.xml"))
vbios = os.path.join(data, "gonv_NV_GPU_VBIOS_1010_0200_882_96009F0001.xml")
HopperSettings.set_vbios_rim_path(vbios)
args = dict(verbose=False, test_no_gpu=True, driver_rim=None, vbios_rim=vbios,
            user_mode=True, allow_hold_cert=False, service_key=None, nonce=None,
            rim_root_cert=None, rim_service_url=None, ocsp_url=None,
            ocsp_nonce_disabled=True, claims_version="2.0")
nonce = "931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb"
evidence = cc_admin.collect_gpu_evidence(nonce, no_gpu_mode=True)

times = []
for _ in range(runs):
    t0 = time.perf_counter()
    out = cc_admin.attest(args, nonce, evidence)
    times.append(time.perf_counter() - t0)
ok = bool(out and out[0])
print(f"nv-local-gpu-verifier 2.7.3, NV-1 + its RIMs: result={ok} runs={runs} "
      f"median={statistics.median(times) * 1e3:.2f} ms min={min(times) * 1e3:.2f} ms")
sys.exit(0 if ok else 1)
