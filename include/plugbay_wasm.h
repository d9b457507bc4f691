/*
 * plugbay_wasm.h: the component-model glue a C plugin compiled to WebAssembly needs for the
 * plugbay:plugin world (wit/plugbay.wit), written out by hand, with no bindings generator.
 *
 * The host passes strings and lists in memory it allocates with `cabi_realloc` (defined
 * here); the plugin owns them and frees them (`plugbay_release`). Results go back through a
 * static return area (`struct plugbay_ret`, the layout of `result<payload, failure>` and of
 * `result<_, failure>`); memory they point to is freed in the `cabi_post_*` function the
 * host calls afterwards, which the plugin writes.
 *
 * Include it in exactly one source file of the plugin: it defines `cabi_realloc`. Build
 * with Debian's clang, lld and wasi-libc:
 *   clang --target=wasm32-wasi --sysroot=/usr -mexec-model=reactor -I include -o m.wasm p.c
 * and turn the module into a component with `wit-component` (as `cargo xtask plugins` does).
 */
#ifndef PLUGBAY_WASM_H
#define PLUGBAY_WASM_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

/* Exports a function under the component-model name `name`. */
#define PLUGBAY_EXPORT(name) __attribute__((export_name(name)))
/* Imports a function of the host API (`log`, `publish`, `invoke`). */
#define PLUGBAY_IMPORT(name) \
    __attribute__((import_module("plugbay:plugin/host@1.0.0"), import_name(name)))
/* The prefix of the guest interface's export names: PLUGBAY_GUEST "call". */
#define PLUGBAY_GUEST "plugbay:plugin/guest@1.0.0#"

/* The allocator the host calls to pass strings and lists (never with a zero size for data
 * it will write; a zero size gets an aligned dangling pointer). */
PLUGBAY_EXPORT("cabi_realloc")
void *cabi_realloc(void *old, size_t old_size, size_t align, size_t new_size) {
    (void)old_size;
    if (new_size == 0) return (void *)align;
    void *grown = realloc(old, new_size);
    if (!grown) abort();
    return grown;
}

/* Frees memory the host allocated for an argument; empty strings and lists were never
 * allocated (the host may pass any aligned pointer for them). */
static inline void plugbay_release(void *ptr, size_t len) {
    if (len) free(ptr);
}

/* The return area of `call` (result<payload, failure>) and of `init` and `on-event`
 * (result<_, failure>, which uses `is_err` and `err` only). */
struct plugbay_ret {
    uint8_t is_err;
    union {
        struct { const char *ct; size_t ct_len; uint8_t *bytes; size_t len; } ok;
        struct { uint8_t code; const char *message; size_t len; } err;
    } u;
};

/* Defines the `describe` export, answering the JSON text `description` (a string
 * literal or a char array whose size is known here). */
#define PLUGBAY_DESCRIBE(description)                                   \
    static struct { const char *ptr; size_t len; } plugbay_describe_ret; \
    PLUGBAY_EXPORT(PLUGBAY_GUEST "describe") void *describe(void) {     \
        plugbay_describe_ret.ptr = description;                         \
        plugbay_describe_ret.len = sizeof description - 1;              \
        return &plugbay_describe_ret;                                   \
    }

#endif /* PLUGBAY_WASM_H */
