/*
 * text-tools-wasm: the `text.transform@1` capability of the text-tools example, written in
 * C and compiled to WebAssembly with Debian's clang, lld and wasi-libc, then turned into a
 * component of the plugbay:plugin world (wit/plugbay.wit) by `cargo xtask plugins`.
 *
 * It answers the same methods as the native text-tools plugin, with the same encodings: a
 * JSON string in, a JSON string out; raw text in (content type text/plain), raw text out.
 * `upper` and `lower` change ASCII letters only (the Rust plugin maps all of Unicode);
 * `reverse` reverses Unicode scalar values; `word-count` answers
 * {"words": N, "chars": N, "lines": N} like the Rust plugin.
 *
 * The component-model canonical ABI is written out by hand in include/plugbay_wasm.h (no
 * bindings generator): the host passes strings and lists in memory it allocates with
 * `cabi_realloc`; this module owns them and frees them; results are returned through a
 * static return area, and the memory they point to is freed in the `cabi_post_*` function
 * the host calls afterwards.
 */
#include <plugbay_wasm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


PLUGBAY_IMPORT("log") void host_log(int32_t level, const char *message, size_t len);

enum { LEVEL_DEBUG = 3 };
enum { CODE_INVALID_ARGUMENT = 0, CODE_NOT_FOUND = 2, CODE_RESOURCE_EXHAUSTED = 4 };

static const char DESCRIPTION[] =
    "{\"id\":\"text-tools-wasm\",\"version\":\"0.1.0\","
    "\"provides\":{\"text.transform@1\":[\"upper\",\"lower\",\"reverse\",\"word-count\"]}}";
static const char JSON[] = "application/json";
static const char TEXT[] = "text/plain; charset=utf-8";



static struct plugbay_ret RET;

static struct plugbay_ret *fail(uint8_t code, const char *message) {
    RET.is_err = 1;
    RET.u.err.code = code;
    RET.u.err.message = message;
    RET.u.err.len = strlen(message);
    return &RET;
}

static struct plugbay_ret *ok_empty(void) {
    RET.is_err = 0;
    return &RET;
}

PLUGBAY_DESCRIBE(DESCRIPTION)

PLUGBAY_EXPORT(PLUGBAY_GUEST "init") struct plugbay_ret *init(uint8_t *config, size_t len) {
    plugbay_release(config, len);
    static const char ready[] = "text-tools-wasm ready: text.transform@1";
    host_log(LEVEL_DEBUG, ready, sizeof ready - 1);
    return ok_empty();
}

PLUGBAY_EXPORT(PLUGBAY_GUEST "on-event")
struct plugbay_ret *on_event(char *topic, size_t topic_len, char *action, size_t action_len, char *source,
                     size_t source_len, char *ct, size_t ct_len, uint8_t *data, size_t data_len) {
    plugbay_release(topic, topic_len), plugbay_release(action, action_len), plugbay_release(source, source_len);
    plugbay_release(ct, ct_len), plugbay_release(data, data_len);
    return ok_empty();
}

PLUGBAY_EXPORT(PLUGBAY_GUEST "shutdown") void shutdown(void) {}

/* A growable byte buffer. */
struct buf { uint8_t *data; size_t len, cap; };

static int push(struct buf *b, const void *bytes, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        while (cap < b->len + n) cap *= 2;
        uint8_t *grown = realloc(b->data, cap);
        if (!grown) return 0;
        b->data = grown, b->cap = cap;
    }
    memcpy(b->data + b->len, bytes, n);
    b->len += n;
    return 1;
}

static int push_utf8(struct buf *b, uint32_t c) {
    uint8_t out[4];
    size_t n;
    if (c < 0x80) out[0] = c, n = 1;
    else if (c < 0x800) out[0] = 0xc0 | (c >> 6), out[1] = 0x80 | (c & 0x3f), n = 2;
    else if (c < 0x10000) out[0] = 0xe0 | (c >> 12), out[1] = 0x80 | ((c >> 6) & 0x3f), out[2] = 0x80 | (c & 0x3f), n = 3;
    else out[0] = 0xf0 | (c >> 18), out[1] = 0x80 | ((c >> 12) & 0x3f), out[2] = 0x80 | ((c >> 6) & 0x3f),
         out[3] = 0x80 | (c & 0x3f), n = 4;
    return push(b, out, n);
}

/* Decodes one UTF-8 scalar at s[*i] (input is valid UTF-8: JSON-decoded or checked). */
static uint32_t next_scalar(const uint8_t *s, size_t len, size_t *i) {
    uint8_t c = s[(*i)++];
    int extra = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc0 ? 1 : 0;
    uint32_t value = extra == 3 ? c & 0x07 : extra == 2 ? c & 0x0f : extra == 1 ? c & 0x1f : c;
    while (extra-- > 0 && *i < len) value = (value << 6) | (s[(*i)++] & 0x3f);
    return value;
}

static int valid_utf8(const uint8_t *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        int extra = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : -1;
        if (extra < 0 || i + extra >= len + (extra == 0)) return 0;
        for (int k = 1; k <= extra; k++)
            if ((s[i + k] & 0xc0) != 0x80) return 0;
        i += extra + 1;
    }
    return 1;
}

static int hex4(const uint8_t *s, size_t len, size_t i, uint32_t *out) {
    if (i + 4 > len) return 0;
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) {
        uint8_t c = s[i + k];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= c - '0';
        else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
        else return 0;
    }
    *out = v;
    return 1;
}

static int is_json_space(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Parses a JSON document that is one string into `out`; 0 when it is not. */
static int parse_json_string(const uint8_t *s, size_t len, struct buf *out) {
    size_t i = 0;
    while (i < len && is_json_space(s[i])) i++;
    if (i == len || s[i++] != '"') return 0;
    for (;;) {
        if (i >= len) return 0;
        uint8_t c = s[i++];
        if (c == '"') break;
        if (c < 0x20) return 0;
        if (c != '\\') { if (!push(out, &c, 1)) return 0; continue; }
        if (i >= len) return 0;
        uint8_t e = s[i++];
        uint32_t cp;
        switch (e) {
        case '"': case '\\': case '/': cp = e; break;
        case 'b': cp = '\b'; break;
        case 'f': cp = '\f'; break;
        case 'n': cp = '\n'; break;
        case 'r': cp = '\r'; break;
        case 't': cp = '\t'; break;
        case 'u':
            if (!hex4(s, len, i, &cp)) return 0;
            i += 4;
            if (cp >= 0xd800 && cp < 0xdc00) {
                uint32_t low;
                if (i + 6 > len || s[i] != '\\' || s[i + 1] != 'u' || !hex4(s, len, i + 2, &low) || low < 0xdc00 || low > 0xdfff) return 0;
                i += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
            } else if (cp >= 0xdc00 && cp < 0xe000) {
                return 0;
            }
            break;
        default: return 0;
        }
        if (!push_utf8(out, cp)) return 0;
    }
    while (i < len && is_json_space(s[i])) i++;
    return i == len && valid_utf8(out->data, out->len);
}

static int push_json_string(struct buf *out, const uint8_t *s, size_t len) {
    static const char hex[] = "0123456789abcdef";
    if (!push(out, "\"", 1)) return 0;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = s[i];
        int ok;
        if (c == '"') ok = push(out, "\\\"", 2);
        else if (c == '\\') ok = push(out, "\\\\", 2);
        else if (c == '\n') ok = push(out, "\\n", 2);
        else if (c == '\t') ok = push(out, "\\t", 2);
        else if (c == '\r') ok = push(out, "\\r", 2);
        else if (c < 0x20) {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            ok = push(out, esc, 6);
        } else ok = push(out, &c, 1);
        if (!ok) return 0;
    }
    return push(out, "\"", 1);
}

static int is_plain_text(const char *ct, size_t len) {
    size_t end = 0;
    while (end < len && ct[end] != ';') end++;
    size_t start = 0;
    while (start < end && (ct[start] == ' ' || ct[start] == '\t')) start++;
    while (end > start && (ct[end - 1] == ' ' || ct[end - 1] == '\t')) end--;
    static const char plain[] = "text/plain";
    if (end - start != sizeof plain - 1) return 0;
    for (size_t i = 0; i < end - start; i++) {
        char c = ct[start + i];
        if (c >= 'A' && c <= 'Z') c += 'a' - 'A';
        if (c != plain[i]) return 0;
    }
    return 1;
}

static int is_unicode_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0d) || c == 0x20 || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

static int method_is(const char *method, size_t len, const char *name) {
    return strlen(name) == len && memcmp(method, name, len) == 0;
}

static struct plugbay_ret *transform(const char *method, size_t method_len, int json, struct buf *text, struct buf *out) {
    int is_upper = method_is(method, method_len, "upper");
    if (is_upper || method_is(method, method_len, "lower")) {
        for (size_t i = 0; i < text->len; i++) {
            uint8_t c = text->data[i];
            if (is_upper && c >= 'a' && c <= 'z') text->data[i] = c - 32;
            if (!is_upper && c >= 'A' && c <= 'Z') text->data[i] = c + 32;
        }
    } else if (method_is(method, method_len, "reverse")) {
        struct buf reversed = {0};
        size_t end = text->len;
        while (end > 0) {
            size_t start = end - 1;
            while (start > 0 && (text->data[start] & 0xc0) == 0x80) start--;
            if (!push(&reversed, text->data + start, end - start)) return fail(CODE_RESOURCE_EXHAUSTED, "out of memory");
            end = start;
        }
        free(text->data);
        *text = reversed;
    } else if (method_is(method, method_len, "word-count")) {
        size_t words = 0, chars = 0, lines = 0, i = 0;
        int in_word = 0;
        while (i < text->len) {
            uint32_t c = next_scalar(text->data, text->len, &i);
            chars++;
            if (c == '\n') lines++;
            if (is_unicode_space(c)) in_word = 0;
            else if (!in_word) in_word = 1, words++;
        }
        if (text->len > 0 && text->data[text->len - 1] != '\n') lines++;
        char counts[96];
        int n = snprintf(counts, sizeof counts, "{\"words\":%zu,\"chars\":%zu,\"lines\":%zu}", words, chars, lines);
        if (!push(out, counts, (size_t)n)) return fail(CODE_RESOURCE_EXHAUSTED, "out of memory");
        RET.is_err = 0;
        RET.u.ok.ct = JSON, RET.u.ok.ct_len = sizeof JSON - 1;
        return &RET;
    } else {
        return fail(CODE_NOT_FOUND, "text.transform@1 has no such method");
    }
    int pushed = json ? push_json_string(out, text->data, text->len) : push(out, text->data, text->len);
    if (!pushed) return fail(CODE_RESOURCE_EXHAUSTED, "out of memory");
    RET.is_err = 0;
    RET.u.ok.ct = json ? JSON : TEXT;
    RET.u.ok.ct_len = json ? sizeof JSON - 1 : sizeof TEXT - 1;
    return &RET;
}

PLUGBAY_EXPORT(PLUGBAY_GUEST "call")
struct plugbay_ret *call(char *method, size_t method_len, char *ct, size_t ct_len, uint8_t *bytes, size_t len) {
    int json = !is_plain_text(ct, ct_len);
    struct buf text = {0}, out = {0};
    struct plugbay_ret *result;
    if (json && !parse_json_string(bytes, len, &text)) {
        result = fail(CODE_INVALID_ARGUMENT,
                      "text.transform@1 expects a JSON string such as \"hello\" (or raw text with content type text/plain)");
    } else if (!json && (!valid_utf8(bytes, len) || !push(&text, bytes, len))) {
        result = fail(CODE_INVALID_ARGUMENT, "the text is not valid UTF-8");
    } else {
        result = transform(method, method_len, json, &text, &out);
    }
    plugbay_release(method, method_len), plugbay_release(ct, ct_len), plugbay_release(bytes, len), free(text.data);
    if (result->is_err) {
        free(out.data);
    } else {
        RET.u.ok.bytes = out.data;
        RET.u.ok.len = out.len;
    }
    return result;
}

PLUGBAY_EXPORT("cabi_post_" PLUGBAY_GUEST "call") void call_post_return(struct plugbay_ret *ret) {
    if (!ret->is_err) free(ret->u.ok.bytes);
}
