/*
 * c-checksum: an example native plugbay plugin written in plain C11 against
 * include/plugbay.h, with no SDK: the whole plugin table by hand.
 *
 * Capability checksum@1:
 *   crc32    CRC-32 (IEEE 802.3, as zlib and PNG) of the raw request bytes
 *            -> {"crc32":"cbf43926"}
 *   adler32  Adler-32 (as zlib) of the raw request bytes
 *            -> {"adler32":"091e01de"}
 * Checksums are 8 lowercase hex digits. The request is taken as raw bytes whatever its
 * content type, so "123456789" sent as text/plain sums the nine digits.
 *
 * Every buffer handed to the host is malloc'd here and released by free_buf below.
 * The plugin has no global state, so `call` is thread-safe and the library may be
 * unloaded once no call is in flight.
 *
 * Build (cargo xtask plugins does this):
 *   cc -std=c11 -Wall -Wextra -Werror -O2 -shared -fPIC -fvisibility=hidden \
 *      -I include -o libc_checksum.so examples/plugins/c-checksum/checksum.c
 * Only plugbay_plugin_v1 is exported: everything else is static, and
 * -fvisibility=hidden keeps anything that is not marked PLUGBAY_EXPORT out of the
 * dynamic symbol table.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugbay.h"

/* What describe returns; it must agree with plugin.toml. */
static const char DESCRIPTION[] =
    "{\"id\":\"c-checksum\",\"version\":\"0.1.0\",\"provides\":{\"checksum@1\":[\"crc32\",\"adler32\"]}}";

static const char JSON[] = "application/json";

/* One instance: only the host API, kept to log with. */
typedef struct instance {
    const plugbay_host_api_v1_t *host;
} instance_t;

/* ---- buffers -------------------------------------------------------------------- */

/* A malloc'd copy of len bytes, or an empty buffer when len is 0 or malloc fails. */
static plugbay_buf_t copy_buf(const void *bytes, size_t len) {
    plugbay_buf_t buf = {NULL, 0};
    if (len == 0) {
        return buf;
    }
    buf.ptr = malloc(len);
    if (buf.ptr != NULL) {
        memcpy(buf.ptr, bytes, len);
        buf.len = len;
    }
    return buf;
}

/* Writes a message to out->error and returns status. */
static plugbay_status_t fail(plugbay_output_t *out, plugbay_status_t status, const char *message) {
    if (out != NULL) {
        out->error = copy_buf(message, strlen(message));
    }
    return status;
}

/* Whether the borrowed bytes s equal the NUL-terminated text. */
static int str_is(plugbay_str_t s, const char *text) {
    size_t len = strlen(text);
    return s.len == len && (len == 0 || memcmp(s.ptr, text, len) == 0);
}

/* ---- the checksums ---------------------------------------------------------------- */

/* CRC-32, reflected, polynomial 0xEDB88320, initial value and final xor 0xFFFFFFFF.
 * Bitwise: no table, so nothing to initialise and nothing shared between threads. */
static uint32_t crc32(const uint8_t *bytes, size_t len) {
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < len; i++) {
        crc ^= bytes[i];
        for (int bit = 0; bit < 8; bit++) {
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
        }
    }
    return crc ^ 0xFFFFFFFFu;
}

/* Adler-32 (RFC 1950). 5552 is the most bytes that can be summed before b overflows
 * 32 bits, so the modulo runs once per block instead of once per byte. */
static uint32_t adler32(const uint8_t *bytes, size_t len) {
    const uint32_t mod = 65521u;
    uint32_t a = 1, b = 0;
    while (len > 0) {
        size_t block = len < 5552 ? len : 5552;
        len -= block;
        while (block-- > 0) {
            a += *bytes++;
            b += a;
        }
        a %= mod;
        b %= mod;
    }
    return (b << 16) | a;
}

/* ---- the table -------------------------------------------------------------------- */

static plugbay_status_t checksum_describe(void *instance, plugbay_output_t *out) {
    (void)instance;
    out->payload = copy_buf(DESCRIPTION, sizeof DESCRIPTION - 1);
    if (out->payload.ptr == NULL) {
        return fail(out, PLUGBAY_RESOURCE_EXHAUSTED, "c-checksum: out of memory");
    }
    out->content_type = copy_buf(JSON, sizeof JSON - 1);
    return PLUGBAY_OK;
}

static plugbay_status_t checksum_init(const plugbay_host_api_v1_t *host, plugbay_str_t config,
                                      void **instance, plugbay_output_t *out) {
    (void)config; /* c-checksum takes no configuration */
    if (instance == NULL) {
        return fail(out, PLUGBAY_INVALID_ARGUMENT, "c-checksum: init was given no place for the instance");
    }
    instance_t *self = malloc(sizeof *self);
    if (self == NULL) {
        return fail(out, PLUGBAY_RESOURCE_EXHAUSTED, "c-checksum: out of memory");
    }
    /* Only use the host table if it is at least as large as the fields we touch. */
    self->host = (host != NULL && host->struct_size >= offsetof(plugbay_host_api_v1_t, log) + sizeof host->log
                  && host->log != NULL)
                     ? host
                     : NULL;
    if (self->host != NULL) {
        static const char ready[] = "c-checksum 0.1.0 ready: checksum@1";
        plugbay_str_t message = {(const uint8_t *)ready, sizeof ready - 1};
        self->host->log(self->host->host_ctx, PLUGBAY_LOG_DEBUG, message);
    }
    *instance = self;
    return PLUGBAY_OK;
}

static plugbay_status_t checksum_call(void *instance, const plugbay_call_t *call, plugbay_output_t *out) {
    (void)instance;
    /* The host may be older or newer than this plugin: read only fields it built. */
    if (call == NULL || call->struct_size < offsetof(plugbay_call_t, payload) + sizeof call->payload) {
        return fail(out, PLUGBAY_INVALID_ARGUMENT, "c-checksum: the call struct is too small");
    }
    const char *name;
    uint32_t sum;
    if (str_is(call->method, "crc32")) {
        name = "crc32";
        sum = crc32(call->payload.ptr, call->payload.len);
    } else if (str_is(call->method, "adler32")) {
        name = "adler32";
        sum = adler32(call->payload.ptr, call->payload.len);
    } else {
        /* Quote the method in the message, cut to a sane length. */
        char message[160];
        int shown = call->method.len > 64 ? 64 : (int)call->method.len;
        snprintf(message, sizeof message, "c-checksum has no method \"%.*s\"%s (it has crc32, adler32)", shown,
                 shown > 0 ? (const char *)call->method.ptr : "", call->method.len > 64 ? "..." : "");
        return fail(out, PLUGBAY_NOT_FOUND, message);
    }

    /* {"adler32":"091e01de"} is the longest answer: 22 bytes plus the NUL snprintf adds. */
    char json[32];
    int len = snprintf(json, sizeof json, "{\"%s\":\"%08lx\"}", name, (unsigned long)sum);
    if (len < 0 || (size_t)len >= sizeof json) {
        return fail(out, PLUGBAY_INTERNAL, "c-checksum: cannot format the answer");
    }
    out->payload = copy_buf(json, (size_t)len);
    if (out->payload.ptr == NULL) {
        return fail(out, PLUGBAY_RESOURCE_EXHAUSTED, "c-checksum: out of memory");
    }
    out->content_type = copy_buf(JSON, sizeof JSON - 1);
    return PLUGBAY_OK;
}

static plugbay_status_t checksum_on_event(void *instance, const plugbay_event_t *event, plugbay_output_t *out) {
    /* The manifest subscribes to no topic, so the host delivers none; accept and ignore. */
    (void)instance;
    (void)event;
    (void)out;
    return PLUGBAY_OK;
}

static void checksum_shutdown(void *instance) {
    free(instance);
}

static void checksum_free_buf(void *instance, plugbay_buf_t buf) {
    (void)instance; /* every buffer is plain malloc'd memory, whoever it came from */
    free(buf.ptr);
}

static const plugbay_plugin_v1_t TABLE = {
    .abi_version = PLUGBAY_ABI_VERSION,
    .struct_size = sizeof(plugbay_plugin_v1_t),
    .flags = PLUGBAY_FLAG_THREAD_SAFE | PLUGBAY_FLAG_UNLOADABLE,
    .reserved = 0,
    .describe = checksum_describe,
    .init = checksum_init,
    .call = checksum_call,
    .on_event = checksum_on_event,
    .shutdown = checksum_shutdown,
    .free_buf = checksum_free_buf,
};

PLUGBAY_EXPORT const plugbay_plugin_v1_t *plugbay_plugin_v1(void) {
    return &TABLE;
}
