/*
 * plugbay.h — the native plugin contract, ABI version 1.
 *
 * A native plugin is a dynamic library (.so / .dll / .dylib) that exports exactly one
 * symbol the host looks up:
 *
 *     const plugbay_plugin_v1_t *plugbay_plugin_v1(void);
 *
 * It returns a pointer to a table that lives as long as the library stays loaded. The
 * host resolves no other symbol (the export whitelist).
 *
 * Rules that keep this ABI stable:
 *  - Every table and argument struct starts with (or is described by) its ABI version and
 *    its own size, so fields can be appended in a minor version without breaking old plugins.
 *  - Strings and buffers cross as (pointer, length) pairs. Strings are UTF-8 and never
 *    NUL-terminated by contract.
 *  - A buffer is freed by the side that allocated it: buffers a plugin returns in a
 *    plugbay_output_t are released by the host calling the table's free_buf; buffers the host
 *    returns to a plugin (plugbay_host_api_v1_t.invoke) are released by the plugin calling
 *    the host's free_buf.
 *  - Every fallible function returns a plugbay_status_t and, on failure, a message in
 *    out->error; never a sentinel value.
 *  - Functions that act on an instance take the opaque instance pointer first.
 *  - No C++ exception, Rust panic or longjmp may cross this boundary.
 *  - The plugin declares in `flags` whether `call` may run on several threads at once
 *    (otherwise the host serialises calls per instance) and whether the library may be
 *    unloaded (dlclose) once no call is in flight.
 */
#ifndef PLUGBAY_H
#define PLUGBAY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI version this header describes. */
#define PLUGBAY_ABI_VERSION 1u

/* Bits of plugbay_plugin_v1_t.flags. */
/* `call` and `on_event` may run concurrently on one instance. */
#define PLUGBAY_FLAG_THREAD_SAFE 0x1u
/* The library may be dlclose()d once no call is in flight. */
#define PLUGBAY_FLAG_UNLOADABLE 0x2u

/* Status codes: the numbers are gRPC's, so every API maps them one to one (in Rust:
   plugbay_abi::Code, whose status() and from_status() are the one mapping to these). */
typedef int32_t plugbay_status_t;
#define PLUGBAY_OK 0
#define PLUGBAY_INVALID_ARGUMENT 3
#define PLUGBAY_DEADLINE_EXCEEDED 4
#define PLUGBAY_NOT_FOUND 5
#define PLUGBAY_PERMISSION_DENIED 7
#define PLUGBAY_RESOURCE_EXHAUSTED 8
#define PLUGBAY_FAILED_PRECONDITION 9
#define PLUGBAY_INTERNAL 13
#define PLUGBAY_UNAVAILABLE 14

/* Log levels for plugbay_host_api_v1_t.log (in Rust: plugbay_abi::LogLevel). */
#define PLUGBAY_LOG_ERROR 1
#define PLUGBAY_LOG_WARN 2
#define PLUGBAY_LOG_INFO 3
#define PLUGBAY_LOG_DEBUG 4
#define PLUGBAY_LOG_TRACE 5

/* Borrowed bytes: valid only for the duration of the function call that receives them. */
typedef struct plugbay_str {
    const uint8_t *ptr;
    size_t len;
} plugbay_str_t;

/* Owned bytes: released with the free_buf of the side that allocated them. An empty
 * buffer may have ptr == NULL; free_buf is not called for it. */
typedef struct plugbay_buf {
    uint8_t *ptr;
    size_t len;
} plugbay_buf_t;

/* What a fallible plugin function writes back. The host zeroes it before every call.
 * On PLUGBAY_OK: `payload` is the result (for describe: the description JSON) and
 * `content_type` may name its media type (empty: the request's content type).
 * On any other status: `error` holds a UTF-8 message. */
typedef struct plugbay_output {
    plugbay_buf_t payload;
    plugbay_buf_t content_type;
    plugbay_buf_t error;
} plugbay_output_t;

/* One call. */
typedef struct plugbay_call {
    /* sizeof(plugbay_call_t) as the host built it; fields past it are absent. */
    uint32_t struct_size;
    uint32_t reserved;
    plugbay_str_t method;
    plugbay_str_t payload;
    plugbay_str_t content_type;
} plugbay_call_t;

/* One event from the host's bus. */
typedef struct plugbay_event {
    uint32_t struct_size;
    uint32_t reserved;
    plugbay_str_t topic;
    plugbay_str_t action;
    plugbay_str_t payload;
    plugbay_str_t content_type;
    plugbay_str_t source;
    /* Milliseconds since the Unix epoch. */
    int64_t timestamp_ms;
} plugbay_event_t;

/* The host API, handed to the plugin at init. It stays valid until the instance's
 * shutdown returns, and every function may be called from any thread. `host_ctx` is
 * opaque: pass it back as the first argument. */
typedef struct plugbay_host_api_v1 {
    uint32_t abi_version;
    uint32_t struct_size;
    void *host_ctx;
    /* Write a log line tagged with the plugin id. */
    void (*log)(void *host_ctx, int32_t level, plugbay_str_t message);
    /* Publish an event on the host's bus: topic ([a-z0-9._-], 1-128 bytes), action (what
     * happened, e.g. "created"; may be empty), payload and its content type. */
    plugbay_status_t (*publish)(void *host_ctx, plugbay_str_t topic, plugbay_str_t action,
                                plugbay_str_t payload, plugbay_str_t content_type,
                                plugbay_output_t *out);
    /* Call a capability ("kv@1") or a plugin ("plugin:kv-store") through the host. The
     * result lands in out; release its buffers with free_buf below. */
    plugbay_status_t (*invoke)(void *host_ctx, plugbay_str_t target, plugbay_str_t method,
                               plugbay_str_t payload, plugbay_str_t content_type,
                               plugbay_output_t *out);
    /* Release a buffer the host allocated. */
    void (*free_buf)(void *host_ctx, plugbay_buf_t buf);
} plugbay_host_api_v1_t;

/* The plugin's table. */
typedef struct plugbay_plugin_v1 {
    /* PLUGBAY_ABI_VERSION the plugin was built against. */
    uint32_t abi_version;
    /* sizeof(plugbay_plugin_v1_t) as the plugin built it. */
    uint32_t struct_size;
    /* PLUGBAY_FLAG_* bits. */
    uint32_t flags;
    uint32_t reserved;
    /* Write the description as UTF-8 JSON into out->payload:
     *   {"id": "...", "version": "...", "provides": {"cap@1": ["method", ...]}}
     * `instance` is NULL: the host calls this before init to check the manifest. */
    plugbay_status_t (*describe)(void *instance, plugbay_output_t *out);
    /* Create an instance from the config bytes. On success write it to *instance. The
     * host API pointer stays valid until shutdown returns. */
    plugbay_status_t (*init)(const plugbay_host_api_v1_t *host, plugbay_str_t config,
                             void **instance, plugbay_output_t *out);
    /* Serve one call. */
    plugbay_status_t (*call)(void *instance, const plugbay_call_t *call, plugbay_output_t *out);
    /* Receive an event for a topic the manifest subscribes to. */
    plugbay_status_t (*on_event)(void *instance, const plugbay_event_t *event,
                                 plugbay_output_t *out);
    /* Release the instance. No call runs during or after it. */
    void (*shutdown)(void *instance);
    /* Release a buffer the plugin allocated (any of plugbay_output_t's). `instance` is the
     * instance the buffer came from, or NULL for buffers from describe and failed inits. */
    void (*free_buf)(void *instance, plugbay_buf_t buf);

    /* ---- Optional, appended in ABI 1 as a compatible extension. The host uses these
     * only when struct_size covers them and they are not NULL; a plugin built against an
     * older header simply has no snapshots. ---- */

    /* Write the instance's state, in any format the plugin likes, into out->payload. The
     * host keeps the last snapshot (taken on a graceful stop and every
     * [restart] snapshot_interval_ms) and hands it to restore on the next instance. */
    plugbay_status_t (*snapshot)(void *instance, plugbay_output_t *out);
    /* Load a state written by snapshot into a fresh instance (called after init, before
     * any call). */
    plugbay_status_t (*restore)(void *instance, plugbay_str_t state, plugbay_output_t *out);
} plugbay_plugin_v1_t;

/* The one symbol a native plugin exports. */
#if defined(_WIN32)
#define PLUGBAY_EXPORT __declspec(dllexport)
#else
#define PLUGBAY_EXPORT __attribute__((visibility("default")))
#endif

PLUGBAY_EXPORT const plugbay_plugin_v1_t *plugbay_plugin_v1(void);

#ifdef __cplusplus
}
#endif

#endif /* PLUGBAY_H */
