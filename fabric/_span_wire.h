/* What the parts of fabric._span_wire share: an output buffer and its writers, and one span's
 * `Span` message (span_body, _span_wire.c), which the runs of a node's spans (_span_runs.c) write
 * too. */
#ifndef FABRIC_SPAN_WIRE_H
#define FABRIC_SPAN_WIRE_H
#include "_span_fields.h" /* SpanCore: a LeanSpan's fields, which the runs read */
#include <stdint.h>
#include <string.h>

/* A growing output buffer: on the stack for a span of ordinary size, on the heap past that. */
typedef struct {
    unsigned char *data;
    Py_ssize_t len, cap;
    unsigned char local[1024];
} Buffer;

static inline void buffer_init(Buffer *b) {
    b->data = b->local;
    b->len = 0;
    b->cap = (Py_ssize_t)sizeof b->local;
}

static inline void buffer_free(Buffer *b) {
    if (b->data != b->local)
        PyMem_Free(b->data);
}

static inline int buffer_reserve(Buffer *b, Py_ssize_t more) {
    if (b->len + more <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap;
    while (cap < b->len + more)
        cap *= 2;
    unsigned char *grown = PyMem_Malloc((size_t)cap);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(grown, b->data, (size_t)b->len);
    buffer_free(b);
    b->data = grown;
    b->cap = cap;
    return 0;
}

/* The writers below assume room was reserved: a varint takes at most 10 bytes. */
static inline void put_byte(Buffer *b, unsigned char byte) { b->data[b->len++] = byte; }

static inline void put_bytes(Buffer *b, const void *bytes, Py_ssize_t n) {
    memcpy(b->data + b->len, bytes, (size_t)n);
    b->len += n;
}

/* `n` as a varint at `out` (room for 10 bytes); returns how many bytes it took. */
static inline Py_ssize_t write_varint(unsigned char *out, uint64_t n) {
    Py_ssize_t len = 0;
    while (n >= 0x80) {
        out[len++] = (unsigned char)((n & 0x7F) | 0x80);
        n >>= 7;
    }
    out[len++] = (unsigned char)n;
    return len;
}

static inline void put_varint(Buffer *b, uint64_t n) { b->len += write_varint(b->data + b->len, n); }


/* A span's `Span` message (without the field's tag and length), appended to `b`: 0; -1 for a
 * span left to the Python encoder (an exception may be set: the caller clears it); -2 with an
 * exception set for a span that fails the batch, as in Python (a name that is not UTF-8). */
int span_body(Buffer *b, PyObject *context, PyObject *parent, PyObject *name, long kind,
              unsigned long long start, unsigned long long end, PyObject *attributes);

/* _span_runs.c */
PyObject *configure_lean(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *lean_fields(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

#endif
