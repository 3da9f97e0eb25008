/*
 * A model of NVIDIA's NSCQ attestation API (libnvidia-nscq.so.2, API 2.0.0,
 * as nscq_attestation.h in NVIDIA/nvtrust declares it) for tvm-agent's
 * tests: the same symbols, struct layouts and callback conventions (structs
 * passed by value, user data last), serving each switch's report and PEM
 * chain from MODEL_DIR/report_<i>.bin and MODEL_DIR/chain_<i>.pem, with the
 * session's nonce written into the report's request (bytes 4..36).
 *
 * Built by agent/tests/nscq.rs with -DMODEL_DIR="..." and, to model one
 * failure, -DMODEL_FAIL="<what>". Sessions opened and destroyed are logged
 * to MODEL_DIR/sessions.log ("+" and "-").
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int8_t nscq_rc_t;
typedef struct nscq_session_st *nscq_session_t;
typedef void (*nscq_fn_t)(void);
typedef struct { uint8_t bytes[16]; } nscq_uuid_t;
typedef struct { char data[64]; } nscq_label_t;
typedef struct { uint32_t report_size; uint8_t report[0x2000]; } nscq_attestation_report_t;
typedef struct { uint8_t cert_chain[0x1400]; uint32_t cert_chain_size; } nscq_attestation_certificate_t;
typedef struct { nscq_rc_t rc; nscq_session_t session; } nscq_session_result_t;

typedef void (*uuid_cb_t)(const nscq_uuid_t *, nscq_rc_t, const nscq_uuid_t *, void *);
typedef void (*report_cb_t)(const nscq_uuid_t *, nscq_rc_t, nscq_attestation_report_t, void *);
typedef void (*cert_cb_t)(const nscq_uuid_t *, nscq_rc_t, nscq_attestation_certificate_t, void *);
typedef void (*mode_cb_t)(const nscq_uuid_t *, nscq_rc_t, int8_t, void *);

#ifndef MODEL_VERSION
#define MODEL_VERSION ((2u << 24) | (0u << 12) | 0u)
#endif
#ifndef MODEL_SWITCHES
#define MODEL_SWITCHES 4
#endif
#ifndef MODEL_FAIL
#define MODEL_FAIL ""
#endif

const uint32_t nscq_api_version = MODEL_VERSION;

struct nscq_session_st {
    uint8_t nonce[32];
    int have_nonce;
};

static int fails(const char *what) { return strcmp(MODEL_FAIL, what) == 0; }

static void log_session(const char *mark) {
    FILE *f = fopen(MODEL_DIR "/sessions.log", "a");
    if (f) {
        fputs(mark, f);
        fclose(f);
    }
}

static size_t read_file(const char *name, int index, uint8_t *buf, size_t cap) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s_%d.%s", MODEL_DIR, name, index,
             strcmp(name, "report") == 0 ? "bin" : "pem");
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

nscq_session_result_t nscq_session_create(uint32_t flags) {
    nscq_session_result_t r = {0, NULL};
    if (fails("create")) {
        r.rc = -3; /* NSCQ_RC_ERROR_RESOURCE_NOT_MOUNTABLE */
        return r;
    }
    if (flags != 1) { /* NSCQ_SESSION_CREATE_MOUNT_DEVICES */
        r.rc = -5;
        return r;
    }
    r.session = calloc(1, sizeof(struct nscq_session_st));
    r.rc = fails("create_warning") ? 1 : 0; /* NSCQ_RC_WARNING_RDT_INIT_FAILURE */
    log_session("+");
    return r;
}

void nscq_session_destroy(nscq_session_t s) {
    free(s);
    log_session("-");
}

nscq_rc_t nscq_uuid_to_label(const nscq_uuid_t *uuid, nscq_label_t *label, uint32_t flags) {
    if (fails("label") || flags != 0) return -2; /* NSCQ_RC_ERROR_INVALID_UUID */
    memset(label->data, 0, sizeof label->data);
    if (fails("label_unterminated")) {
        memset(label->data, 'A', sizeof label->data);
        return 0;
    }
    snprintf(label->data, sizeof label->data, "SWX-MODEL-%d", uuid->bytes[0]);
    return 0;
}

nscq_rc_t nscq_session_set_input(nscq_session_t s, uint32_t flags, void *input, uint32_t size) {
    if (fails("input")) return -4; /* NSCQ_RC_ERROR_OVERFLOW */
    if (flags != 0 || size != 32) return -5;
    memcpy(s->nonce, input, 32);
    s->have_nonce = 1;
    return 0;
}

nscq_rc_t nscq_session_path_observe(nscq_session_t s, const char *path, nscq_fn_t cb, void *user,
                                    uint32_t flags) {
    int index;
    char rest[64];
    if (flags != 0) return -5;
    if (fails("observe")) return -7; /* NSCQ_RC_ERROR_DRV */
        if (strcmp(path, "/drv/nvswitch/{device}/uuid") == 0) {
        if (fails("slow")) sleep(2); /* a library call that takes its time */
        for (int i = 0; i < MODEL_SWITCHES; i++) {
            nscq_uuid_t device = {{0}}, uuid = {{0}};
            device.bytes[0] = uuid.bytes[0] = (uint8_t)i;
            ((uuid_cb_t)cb)(&device, fails("uuid") ? -7 : 0, &uuid, user);
        }
        return 0;
    }
    if (sscanf(path, "/SWX-MODEL-%d/config/%63s", &index, rest) != 2) return -1;
    nscq_uuid_t device = {{0}};
    device.bytes[0] = (uint8_t)index;
    if (strcmp(rest, "attestation_report") == 0) {
        static nscq_attestation_report_t r;
        memset(&r, 0, sizeof r);
        r.report_size = (uint32_t)read_file("report", index, r.report, sizeof r.report);
        if (s->have_nonce && !fails("stale") && r.report_size >= 36)
            memcpy(r.report + 4, s->nonce, 32);
        if (fails("report_size")) r.report_size = 0x3000;
        if (fails("no_report")) return 0;
        ((report_cb_t)cb)(&device, fails("report") ? -8 : 0, r, user);
        if (fails("two_reports")) ((report_cb_t)cb)(&device, 0, r, user);
        return 0;
    }
        if (strcmp(rest, "pcie_mode") == 0) {
        /* nscq_tnvl_status_t: 3 LOCKED, 1 ENABLED (not locked) */
        ((mode_cb_t)cb)(&device, fails("mode") ? -6 : 0, fails("unlocked") ? 1 : 3, user);
        return 0;
    }
    if (strcmp(rest, "certificate") == 0) {
        static nscq_attestation_certificate_t c;
        memset(&c, 0, sizeof c);
        c.cert_chain_size = (uint32_t)read_file("chain", index, c.cert_chain, sizeof c.cert_chain);
        ((cert_cb_t)cb)(&device, fails("cert") ? -128 : 0, c, user);
        return 0;
    }
    return -1; /* NSCQ_RC_ERROR_NOT_IMPLEMENTED */
}
