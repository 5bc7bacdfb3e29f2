/* One OTLP span in the protobuf wire format, in C: the common case of fabric/otlp_encoder.py.
 *
 * span_field(context, parent, name, kind, start, end, attributes) -> bytes | None
 *
 * writes a span as the `ScopeSpans.spans` field holding its `Span` message, exactly as
 * `otlp_encoder._Encoder.span_field` does in Python for a span with no trace state, events,
 * links or dropped counts and an unset status (what almost every span a node makes is; the
 * caller checks that). `context` and `parent` (or None, for a root) are `SpanContext`s, read as
 * the tuples they are (trace_id, span_id, is_remote, ...; the caller checks the layout);
 * `kind` is `SpanKind`'s value; `start` and `end` are ns, 0 for none. Attribute values of the
 * types a node's spans carry (str, bool, int within int64, float) are written here; for
 * anything else (a sequence, bytes, an int out of range, text that is not valid UTF-8) it
 * returns None and the caller encodes the span in Python, which knows every case the SDK's
 * encoder does (and logs what it drops).
 *
 * lean_fields(spans, start, resource, scope) -> (fields, count)
 *
 * writes the run of spans from `start` that are a node's own spans of that resource and scope
 * in the common case, reading their fields from the C struct LeanSpan has (SpanCore,
 * _span_fields.h; configure_lean hands over the type and what it compares with): the same bytes
 * as span_field, span after span, without a Python call or attribute lookup a span.
 *
 * (_span_runs.c; _span_wire.h holds what the two files share.)
 *
 * Why: with every span exported, encoding was the largest part of what exporting costs a node:
 * ~3.8 µs a span in Python against ~0.7 µs with span_field (docs/performance-rounds.md, eleventh
 * round), ~0.23 µs with lean_fields (fifteenth round).
 */
#include "_span_wire.h"

static Py_ssize_t varint_size(uint64_t n) {
    Py_ssize_t size = 1;
    while (n >= 0x80) {
        n >>= 7;
        size++;
    }
    return size;
}

static void put_fixed64(Buffer *b, uint64_t n) {
    for (int i = 0; i < 8; i++)
        b->data[b->len++] = (unsigned char)(n >> (8 * i));
}

/* `value` (a non-negative int below 2**(8*size)) as `size` big-endian bytes; -1 if it is not. */
static int put_id(Buffer *b, PyObject *value, Py_ssize_t size) {
    if (!PyLong_CheckExact(value))
        return -1;
#if PY_VERSION_HEX >= 0x030D0000
    Py_ssize_t needed = PyLong_AsNativeBytes(value, b->data + b->len, size,
                                             Py_ASNATIVEBYTES_BIG_ENDIAN | Py_ASNATIVEBYTES_UNSIGNED_BUFFER |
                                             Py_ASNATIVEBYTES_REJECT_NEGATIVE);
    if (needed < 0 || needed > size)
        return -1;
#else
    if (_PyLong_AsByteArray((PyLongObject *)value, b->data + b->len, (size_t)size, 0, 0) < 0)
        return -1;
#endif
    b->len += size;
    return 0;
}

/* An `AnyValue` for one attribute value: its bytes go to `scratch` (at most 10 of them) or, for
 * text, are `text`/`text_len`; returns the message's length, or -1 for a value left to Python. */
typedef struct {
    unsigned char scratch[11]; /* a tag and a varint */
    Py_ssize_t scratch_len;
    const char *text;
    Py_ssize_t text_len;
} AnyValue;

static Py_ssize_t any_value(PyObject *value, AnyValue *out) {
    out->scratch_len = 0;
    out->text = NULL;
    out->text_len = 0;
    if (PyUnicode_CheckExact(value)) {
        out->text = PyUnicode_AsUTF8AndSize(value, &out->text_len);
        if (out->text == NULL)
            return -1;
        out->scratch[0] = 0x0a; /* string_value */
        out->scratch_len = 1 + write_varint(out->scratch + 1, (uint64_t)out->text_len);
        return out->scratch_len + out->text_len;
    }
    if (PyBool_Check(value)) {
        out->scratch[0] = 0x10; /* bool_value */
        out->scratch[1] = value == Py_True;
        out->scratch_len = 2;
        return 2;
    }
    if (PyLong_CheckExact(value)) {
        int overflow = 0;
        long long n = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow || (n == -1 && PyErr_Occurred()))
            return -1;
        out->scratch[0] = 0x18; /* int_value: a negative int64 as its two's complement */
        out->scratch_len = 1 + write_varint(out->scratch + 1, (uint64_t)n);
        return out->scratch_len;
    }
    if (PyFloat_CheckExact(value)) {
        double d = PyFloat_AS_DOUBLE(value);
        uint64_t bits;
        memcpy(&bits, &d, sizeof bits);
        out->scratch[0] = 0x21; /* double_value, fixed64 */
        for (int i = 0; i < 8; i++)
            out->scratch[1 + i] = (unsigned char)(bits >> (8 * i));
        out->scratch_len = 9;
        return 9;
    }
    return -1;
}

/* Every attribute as a span's `attributes` field (a `KeyValue`); -1 if one is left to Python. */
static int put_attributes(Buffer *b, PyObject *attributes) {
    PyObject *key, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(attributes, &pos, &key, &value)) {
        if (!PyUnicode_CheckExact(key))
            return -1;
        Py_ssize_t key_len;
        const char *key_text = PyUnicode_AsUTF8AndSize(key, &key_len);
        if (key_text == NULL)
            return -1;
        AnyValue any;
        Py_ssize_t any_len = any_value(value, &any);
        if (any_len < 0)
            return -1;
        /* KeyValue: key (omitted when empty, as the Python encoder does), value */
        Py_ssize_t key_field = key_len ? 1 + varint_size((uint64_t)key_len) + key_len : 0;
        Py_ssize_t kv_len = key_field + 1 + varint_size((uint64_t)any_len) + any_len;
        if (buffer_reserve(b, 1 + 10 + kv_len) < 0)
            return -2;
        put_byte(b, 0x4a); /* Span.attributes */
        put_varint(b, (uint64_t)kv_len);
        if (key_len) {
            put_byte(b, 0x0a);
            put_varint(b, (uint64_t)key_len);
            put_bytes(b, key_text, key_len);
        }
        put_byte(b, 0x12);
        put_varint(b, (uint64_t)any_len);
        put_bytes(b, any.scratch, any.scratch_len);
        if (any.text_len)
            put_bytes(b, any.text, any.text_len);
    }
    return 0;
}

/* The span id at `index` of a `SpanContext` (a tuple: trace_id, span_id, is_remote, ...). */
static PyObject *context_item(PyObject *context, Py_ssize_t index) {
    if (!PyTuple_Check(context) || PyTuple_GET_SIZE(context) < 3) {
        PyErr_SetString(PyExc_TypeError, "span_field: a span context must be the tuple SpanContext is");
        return NULL;
    }
    return PyTuple_GET_ITEM(context, index);
}

#define HEADER_ROOM 11 /* the field's tag and its length: a varint of up to 10 bytes */

int span_body(Buffer *b, PyObject *context, PyObject *parent, PyObject *name, long kind,
              unsigned long long start, unsigned long long end, PyObject *attributes) {
    PyObject *trace_id = context_item(context, 0);
    if (trace_id == NULL)
        return -2;
    PyObject *span_id = PyTuple_GET_ITEM(context, 1), *parent_id = NULL;
    int parent_is_remote = 0;
    if (parent != Py_None) {
        if ((parent_id = context_item(parent, 1)) == NULL)
            return -2;
        if ((parent_is_remote = PyObject_IsTrue(PyTuple_GET_ITEM(parent, 2))) < 0)
            return -2;
    }
    if (kind < 0 || kind > 4) {
        PyErr_Format(PyExc_ValueError, "span kind %ld is not one of SpanKind's values", kind);
        return -2;
    }
    if (!PyUnicode_Check(name) || !PyDict_CheckExact(attributes)) {
        PyErr_SetString(PyExc_TypeError, "span_field: name must be a str and attributes a dict");
        return -2;
    }
    Py_ssize_t name_len;
    const char *name_text = PyUnicode_AsUTF8AndSize(name, &name_len);
    if (name_text == NULL)
        return -2; /* the Python encoder fails the batch on such a name too */
    if (buffer_reserve(b, 2 + 16 + 2 + 8 + 2 + 8 + 1 + 10 + name_len + 2 + 9 + 9) < 0)
        return -2;
    put_byte(b, 0x0a); /* trace_id */
    put_byte(b, 16);
    if (put_id(b, trace_id, 16) < 0)
        return -1;
    put_byte(b, 0x12); /* span_id */
    put_byte(b, 8);
    if (put_id(b, span_id, 8) < 0)
        return -1;
    if (parent_id != NULL) {
        put_byte(b, 0x22); /* parent_span_id */
        put_byte(b, 8);
        if (put_id(b, parent_id, 8) < 0)
            return -1;
    }
    if (name_len) {
        put_byte(b, 0x2a);
        put_varint(b, (uint64_t)name_len);
        put_bytes(b, name_text, name_len);
    }
    put_byte(b, 0x30); /* kind: OTLP's value is one more than SpanKind's */
    put_byte(b, (unsigned char)(kind + 1));
    if (start) {
        put_byte(b, 0x39);
        put_fixed64(b, start);
    }
    if (end) {
        put_byte(b, 0x41);
        put_fixed64(b, end);
    }
    int written = put_attributes(b, attributes);
    if (written < 0)
        return written;
    if (buffer_reserve(b, 2 + 6) < 0)
        return -2;
    put_byte(b, 0x7a); /* status: unset, an empty message */
    put_byte(b, 0);
    put_byte(b, 0x85); /* flags, fixed32: HAS_IS_REMOTE, and IS_REMOTE for a remote parent */
    put_byte(b, 0x01);
    uint32_t flags = 0x100 | (parent_is_remote ? 0x200 : 0);
    for (int i = 0; i < 4; i++)
        put_byte(b, (unsigned char)(flags >> (8 * i)));
    return 0;
}

static PyObject *span_field(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 7) {
        PyErr_Format(PyExc_TypeError, "span_field takes 7 arguments (%zd given)", nargs);
        return NULL;
    }
    long kind = PyLong_AsLong(args[3]);
    unsigned long long start = PyLong_AsUnsignedLongLong(args[4]);
    unsigned long long end = PyLong_AsUnsignedLongLong(args[5]);
    if (PyErr_Occurred())
        return NULL;
    Buffer b;
    buffer_init(&b);
    b.len = HEADER_ROOM; /* the local buffer has room for it */
    PyObject *result = NULL;
    int written = span_body(&b, args[0], args[1], args[2], kind, start, end, args[6]);
    if (written == -1) {
        PyErr_Clear();
        result = Py_NewRef(Py_None);
    } else if (written == 0) {
        /* the ScopeSpans.spans field's tag and the span's length, just before the span */
        unsigned char header[HEADER_ROOM];
        header[0] = 0x12;
        Py_ssize_t header_len = 1 + write_varint(header + 1, (uint64_t)(b.len - HEADER_ROOM));
        unsigned char *field = b.data + HEADER_ROOM - header_len;
        memcpy(field, header, (size_t)header_len);
        result = PyBytes_FromStringAndSize((const char *)field, b.len - HEADER_ROOM + header_len);
    }
    buffer_free(&b);
    return result;
}

static PyMethodDef methods[] = {
    {"span_field", (PyCFunction)(void (*)(void))span_field, METH_FASTCALL,
     "span_field(context, parent, name, kind, start, end, attributes)\n"
     "--\n\n"
     "A span as a `ScopeSpans.spans` field (no trace state, events or links; status unset), or None when\n"
     "an attribute is left to the Python encoder."},
    {"configure_lean", (PyCFunction)(void (*)(void))configure_lean, METH_FASTCALL,
     "configure_lean(LeanSpan, SpanCore, UNSET_STATUS, DEFAULT_TRACE_STATE, SpanKinds)\n"
     "--\n\n"
     "What lean_fields reads: a node's span type (a subclass of _span_core's SpanCore, whose\n"
     "struct it reads), the unset status, the default trace state, SpanKind's five members in order."},
    {"lean_fields", (PyCFunction)(void (*)(void))lean_fields, METH_FASTCALL,
     "lean_fields(spans, start, resource, scope)\n"
     "--\n\n"
     "(fields, count): spans[start:start + count] as `ScopeSpans.spans` fields, each a LeanSpan of\n"
     "`resource` and `scope` that span_field would write; count stops at the first that is not."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "fabric._span_wire",
    "The common case of fabric/otlp_encoder.py's span encoding, in C.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__span_wire(void) { return PyModule_Create(&module_def); }
