/*
 * c-rot13: a plugbay process plugin written in C, with nothing but libc.
 *
 * It speaks the framed transport of the process-plugin protocol, version 1
 * (docs/process-protocol.md, sections 1, 2 and 10): it listens on PLUGBAY_SOCKET, prints
 * the handshake line, and answers the host's frames on the one connection the host makes.
 * The few protobuf messages it reads and writes are encoded by hand below; a real plugin
 * would more likely use a protobuf library such as nanopb or protobuf-c.
 *
 * It provides the capability rot13@1:
 *   encode         a JSON string -> the same string with its ASCII letters rotated by 13
 *                  (escapes such as \n and \u00e9 are left alone, so the answer stays JSON)
 *   count-letters  a JSON string -> {"letters": N}, N being its ASCII letters
 *
 * It serves one request at a time, so its manifest says max_concurrency = 1.
 *
 * Build: cc -std=c11 -O2 -Wall -Werror -o c-rot13 rot13.c (`cargo xtask plugins` does).
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define PLUGIN_ID "c-rot13"
#define PLUGIN_VERSION "0.1.0"
#define CAPABILITY "rot13@1"
/* The value the host puts in PLUGBAY_PLUGIN_COOKIE: it says "plugbay started me". */
#define COOKIE "d6f2c0a4-plugbay-process-plugin"

/* Frame kinds (section 10). */
enum {
    KIND_DESCRIBE = 1,
    KIND_INIT = 2,
    KIND_CALL = 3,
    KIND_ON_EVENT = 4,
    KIND_SHUTDOWN = 5,
    KIND_SNAPSHOT = 6,
    KIND_RESTORE = 7,
    KIND_OK = 0x80,
    KIND_ERROR = 0x81,
    KIND_LOG = 0x10,
};

/* Status codes of an error reply (section 3). */
enum { CODE_INVALID_ARGUMENT = 3, CODE_NOT_FOUND = 5 };

#define HEADER_BYTES 17
#define MAX_BODY_BYTES (64u * 1024 * 1024)

/* ---- small helpers ---------------------------------------------------------------- */

/* Explains on stderr (the host logs it) and exits with status 1. */
static void fail(const char *format, ...) {
    va_list args;
    va_start(args, format);
    fprintf(stderr, PLUGIN_ID ": ");
    vfprintf(stderr, format, args);
    fprintf(stderr, "\n");
    va_end(args);
    exit(1);
}

/* Whether the comma-separated `list` holds `item`. */
static int list_has(const char *list, const char *item) {
    size_t length = strlen(item);
    for (const char *at = list; at && *at;) {
        const char *end = strchr(at, ',');
        size_t field = end ? (size_t)(end - at) : strlen(at);
        if (field == length && strncmp(at, item, length) == 0) return 1;
        at = end ? end + 1 : NULL;
    }
    return 0;
}

/* An environment variable the host always sets. */
static const char *required_env(const char *name) {
    const char *value = getenv(name);
    if (!value) fail("%s is not set; the host sets it (docs/process-protocol.md, section 1)", name);
    return value;
}

static int read_exact(int fd, uint8_t *buffer, size_t length) {
    while (length > 0) {
        ssize_t got = read(fd, buffer, length);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) return -1;
        buffer += got;
        length -= (size_t)got;
    }
    return 0;
}

static int write_all(int fd, const uint8_t *buffer, size_t length) {
    while (length > 0) {
        ssize_t put = write(fd, buffer, length);
        if (put < 0 && errno == EINTR) continue;
        if (put <= 0) return -1;
        buffer += put;
        length -= (size_t)put;
    }
    return 0;
}

static uint32_t get_u32(const uint8_t *at) {
    return (uint32_t)at[0] | (uint32_t)at[1] << 8 | (uint32_t)at[2] << 16 | (uint32_t)at[3] << 24;
}

static void put_u32(uint8_t *at, uint32_t value) {
    for (int i = 0; i < 4; i++) at[i] = (uint8_t)(value >> (8 * i));
}

/* ---- a growable byte buffer and the protobuf encoding ------------------------------ */

typedef struct {
    uint8_t *bytes;
    size_t length, capacity;
} Buffer;

static void buffer_put(Buffer *buffer, const void *bytes, size_t length) {
    if (buffer->length + length > buffer->capacity) {
        size_t capacity = buffer->capacity ? buffer->capacity : 64;
        while (capacity < buffer->length + length) capacity *= 2;
        buffer->bytes = realloc(buffer->bytes, capacity);
        if (!buffer->bytes) fail("out of memory");
        buffer->capacity = capacity;
    }
    memcpy(buffer->bytes + buffer->length, bytes, length);
    buffer->length += length;
}

static void put_varint(Buffer *buffer, uint64_t value) {
    do {
        uint8_t byte = value & 0x7f;
        value >>= 7;
        if (value) byte |= 0x80;
        buffer_put(buffer, &byte, 1);
    } while (value);
}

/* A length-delimited field (wire type 2): a string, bytes or an embedded message. */
static void put_field(Buffer *buffer, uint32_t field, const void *bytes, size_t length) {
    put_varint(buffer, (uint64_t)field << 3 | 2);
    put_varint(buffer, length);
    buffer_put(buffer, bytes, length);
}

static void put_string(Buffer *buffer, uint32_t field, const char *text) {
    put_field(buffer, field, text, strlen(text));
}

/* One field read from a message: its number, and its bytes when length-delimited. */
typedef struct {
    uint32_t number;
    const uint8_t *bytes;
    size_t length;
} Field;

static int get_varint(const uint8_t **at, const uint8_t *end, uint64_t *value) {
    *value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*at >= end) return -1;
        uint8_t byte = *(*at)++;
        *value |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) return 0;
    }
    return -1;
}

/* Reads the next field at *at, skipping over its value; 0 on success, -1 at the end or
 * on a malformed message. */
static int next_field(const uint8_t **at, const uint8_t *end, Field *field) {
    uint64_t key, length;
    if (*at >= end || get_varint(at, end, &key) < 0) return -1;
    field->number = (uint32_t)(key >> 3);
    field->bytes = NULL;
    field->length = 0;
    switch (key & 7) {
    case 0: return get_varint(at, end, &length);
    case 1: if (end - *at < 8) return -1; *at += 8; return 0;
    case 5: if (end - *at < 4) return -1; *at += 4; return 0;
    case 2:
        if (get_varint(at, end, &length) < 0 || length > (uint64_t)(end - *at)) return -1;
        field->bytes = *at;
        field->length = (size_t)length;
        *at += length;
        return 0;
    default: return -1;
    }
}

/* ---- the methods ------------------------------------------------------------------- */

static const char *const METHODS[] = {"encode", "count-letters"};
#define METHOD_COUNT (sizeof METHODS / sizeof METHODS[0])

static int is_letter(uint8_t c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

static uint8_t rotated(uint8_t c) {
    if (c >= 'a' && c <= 'z') return (uint8_t)('a' + (c - 'a' + 13) % 26);
    if (c >= 'A' && c <= 'Z') return (uint8_t)('A' + (c - 'A' + 13) % 26);
    return c;
}

/* Runs `method` on the JSON string `payload`: fills `answer` and returns 0, or writes a
 * message to `error` and returns a status code. */
static uint32_t run_method(const char *method, size_t method_length, const uint8_t *payload,
                           size_t length, Buffer *answer, char *error, size_t error_size) {
    if (length < 2 || payload[0] != '"' || payload[length - 1] != '"') {
        snprintf(error, error_size, "the request must be a JSON string, such as \"hello\"");
        return CODE_INVALID_ARGUMENT;
    }
    int encode = method_length == 6 && memcmp(method, "encode", 6) == 0;
    int count = method_length == 13 && memcmp(method, "count-letters", 13) == 0;
    if (!encode && !count) {
        snprintf(error, error_size, CAPABILITY " has no method %.*s", (int)method_length, method);
        return CODE_NOT_FOUND;
    }
    uint64_t letters = 0;
    /* Inside the quotes: a backslash's escape letter and \u's four hex digits are kept. */
    for (size_t i = 0; i < length; i++) {
        uint8_t c = payload[i];
        size_t kept = 0;
        if (c == '\\' && i + 1 < length - 1) kept = payload[i + 1] == 'u' ? 5 : 1;
        if (encode) buffer_put(answer, &(uint8_t){rotated(c)}, 1);
        if (is_letter(c)) letters++;
        for (; kept > 0 && i + 1 < length - 1; kept--) {
            i++;
            if (encode) buffer_put(answer, &payload[i], 1);
        }
    }
    if (count) {
        char json[48];
        int written = snprintf(json, sizeof json, "{\"letters\":%llu}", (unsigned long long)letters);
        buffer_put(answer, json, (size_t)written);
    }
    return 0;
}

/* ---- the frames -------------------------------------------------------------------- */

static void send_frame(int fd, uint8_t kind, uint64_t id, const Buffer *body) {
    uint8_t header[HEADER_BYTES] = {0};
    put_u32(header, (uint32_t)body->length);
    header[4] = kind;
    for (int i = 0; i < 8; i++) header[5 + i] = (uint8_t)(id >> (8 * i));
    if (write_all(fd, header, sizeof header) < 0 || write_all(fd, body->bytes, body->length) < 0)
        fail("cannot write to the host's connection: %s", strerror(errno));
}

static void send_error(int fd, uint64_t id, uint32_t code, const char *message) {
    Buffer body = {0};
    uint8_t code_bytes[4];
    put_u32(code_bytes, code);
    buffer_put(&body, code_bytes, 4);
    buffer_put(&body, message, strlen(message));
    send_frame(fd, KIND_ERROR, id, &body);
    free(body.bytes);
}

/* A log line through the host (kind 0x10, a LogRequest at level INFO). */
static void send_log(int fd, const char *message) {
    Buffer body = {0};
    put_varint(&body, 1 << 3 | 0);
    put_varint(&body, 3);
    put_string(&body, 2, message);
    send_frame(fd, KIND_LOG, 0, &body);
    free(body.bytes);
}

/* DescribeResponse: id, version, and provides {CAPABILITY: MethodList}. */
static void describe(Buffer *reply) {
    Buffer methods = {0}, entry = {0};
    for (size_t i = 0; i < METHOD_COUNT; i++) put_string(&methods, 1, METHODS[i]);
    put_string(&entry, 1, CAPABILITY);
    put_field(&entry, 2, methods.bytes, methods.length);
    put_string(reply, 1, PLUGIN_ID);
    put_string(reply, 2, PLUGIN_VERSION);
    put_field(reply, 3, entry.bytes, entry.length);
    free(methods.bytes);
    free(entry.bytes);
}

/* Answers a CallRequest with a CallResponse or an error reply. */
static void call(int fd, uint64_t id, const uint8_t *body, size_t length) {
    const uint8_t *at = body, *end = body + length;
    const char *method = "";
    size_t method_length = 0;
    const uint8_t *payload = (const uint8_t *)"";
    size_t payload_length = 0;
    Field field;
    while (at < end) {
        if (next_field(&at, end, &field) < 0) {
            send_error(fd, id, CODE_INVALID_ARGUMENT, "malformed CallRequest");
            return;
        }
        if (field.number == 1 && field.bytes) method = (const char *)field.bytes, method_length = field.length;
        if (field.number == 2 && field.bytes) payload = field.bytes, payload_length = field.length;
    }
    Buffer answer = {0}, reply = {0};
    char error[160];
    uint32_t code = run_method(method, method_length, payload, payload_length, &answer, error, sizeof error);
    if (code) {
        send_error(fd, id, code, error);
    } else {
        put_field(&reply, 1, answer.bytes ? answer.bytes : (const uint8_t *)"", answer.length);
        put_string(&reply, 2, "application/json");
        send_frame(fd, KIND_OK, id, &reply);
    }
    free(answer.bytes);
    free(reply.bytes);
}

/* Serves the host's connection until Shutdown or until the host closes it. */
static void serve(int fd, int host_calls) {
    for (;;) {
        uint8_t header[HEADER_BYTES];
        if (read_exact(fd, header, sizeof header) < 0) return; /* the host went away */
        uint32_t length = get_u32(header);
        uint8_t kind = header[4];
        uint64_t id = 0;
        for (int i = 7; i >= 0; i--) id = id << 8 | header[5 + i];
        if (length > MAX_BODY_BYTES) fail("a frame of %u bytes is over the 64 MiB limit", length);
        uint8_t *body = malloc(length ? length : 1);
        if (!body) fail("out of memory for a frame of %u bytes", length);
        if (read_exact(fd, body, length) < 0) fail("the host closed the connection inside a frame");
        Buffer reply = {0};
        switch (kind) {
        case KIND_DESCRIBE: describe(&reply); send_frame(fd, KIND_OK, id, &reply); break;
        case KIND_INIT:
            if (host_calls) send_log(fd, PLUGIN_ID " " PLUGIN_VERSION " ready: written in C, serving " CAPABILITY);
            send_frame(fd, KIND_OK, id, &reply);
            break;
        case KIND_CALL: call(fd, id, body, length); break;
        case KIND_ON_EVENT: /* no [subscribes]: no event arrives */
        case KIND_SNAPSHOT: /* an empty SnapshotResponse: supported = false */
        case KIND_RESTORE: send_frame(fd, KIND_OK, id, &reply); break;
        case KIND_SHUTDOWN: send_frame(fd, KIND_OK, id, &reply); exit(0);
        default: fail("the host sent a frame of unknown kind %u", kind);
        }
        free(body);
        free(reply.bytes);
    }
}

int main(void) {
    const char *cookie = getenv("PLUGBAY_PLUGIN_COOKIE");
    if (!cookie || strcmp(cookie, COOKIE) != 0)
        fail("this is a plugbay plugin (a process plugin): it is not meant to be run by hand. Put its "
             "folder (plugin.toml, " PLUGIN_ID ") in a plugins folder and let the host start it, e.g. "
             "`plugbay call " CAPABILITY " encode '\"hello\"' --plugins target/plugins`");
    const char *versions = required_env("PLUGBAY_PROTOCOL_VERSIONS");
    if (!list_has(versions, "1")) fail("the host speaks protocol versions %s; this plugin speaks 1", versions);
    const char *transports = required_env("PLUGBAY_TRANSPORTS");
    if (!list_has(transports, "framed"))
        fail("the host offers the transports %s; this plugin speaks only framed", transports);
    const char *features = getenv("PLUGBAY_FRAMED_FEATURES");
    int host_calls = features && list_has(features, "host-calls");
    const char *path = required_env("PLUGBAY_SOCKET");

    struct sockaddr_un address = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof address.sun_path) fail("the socket path %s is too long", path);
    strcpy(address.sun_path, path);
    int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listener < 0) fail("cannot create a socket: %s", strerror(errno));
    if (bind(listener, (struct sockaddr *)&address, sizeof address) < 0 || listen(listener, 1) < 0)
        fail("cannot listen on %s: %s", path, strerror(errno));

    printf("plugbay|1|unix|%s|framed\n", path);
    fflush(stdout);

    int connection;
    while ((connection = accept(listener, NULL, NULL)) < 0 && errno == EINTR) {}
    if (connection < 0) fail("cannot accept the host's connection: %s", strerror(errno));
    close(listener);
    serve(connection, host_calls);
    return 0;
}
