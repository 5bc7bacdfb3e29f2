/* Runs of a node's own spans in the OTLP wire format: lean_fields, part of fabric._span_wire
 * (_span_wire.c says what the module does and why). A LeanSpan's fields are read from the C
 * struct it has (SpanCore, _span_fields.h), checked by configure_lean to be that struct. */
#include "_span_wire.h"

/* Handed over by configure_lean(): fabric.lean_span.LeanSpan (whose fields are SpanCore's, from
 * _span_fields.h), lean_span.UNSET_STATUS, trace.DEFAULT_TRACE_STATE and SpanKind's members in order. */
static PyObject *LeanType, *UnsetStatus, *DefaultTraceState, *Kinds;

PyObject *configure_lean(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    /* the span type must be _span_core's SpanCore or a subclass of it: lean_fields reads its struct */
    if (nargs != 5 || !PyType_Check(args[0]) || !PyType_Check(args[1]) || !PyTuple_CheckExact(args[4]) ||
        PyTuple_GET_SIZE(args[4]) != 5 || strcmp(((PyTypeObject *)args[1])->tp_name, "fabric._span_core.SpanCore") ||
        ((PyTypeObject *)args[1])->tp_basicsize != (Py_ssize_t)sizeof(SpanCore) ||
        !PyType_IsSubtype((PyTypeObject *)args[0], (PyTypeObject *)args[1])) {
        PyErr_SetString(PyExc_TypeError,
                        "configure_lean(LeanSpan, SpanCore, UNSET_STATUS, DEFAULT_TRACE_STATE, SpanKinds)");
        return NULL;
    }
    Py_XSETREF(LeanType, Py_NewRef(args[0]));
    Py_XSETREF(UnsetStatus, Py_NewRef(args[2]));
    Py_XSETREF(DefaultTraceState, Py_NewRef(args[3]));
    Py_XSETREF(Kinds, Py_NewRef(args[4]));
    Py_RETURN_NONE;
}

/* Whether `sequence` (a span's events or links) is an empty tuple or list. */
static int is_empty(PyObject *sequence) {
    return (PyTuple_CheckExact(sequence) && PyTuple_GET_SIZE(sequence) == 0) ||
           (PyList_CheckExact(sequence) && PyList_GET_SIZE(sequence) == 0);
}

/* A time field: an int, or None for none (0). */
static int time_of(PyObject *value, unsigned long long *out) {
    *out = value == Py_None ? 0 : PyLong_AsUnsignedLongLong(value);
    return *out == (unsigned long long)-1 && PyErr_Occurred() ? -1 : 0;
}

/* `span` as a `ScopeSpans.spans` field appended to `out` (`body`: scratch) if it is a node's span
 * of `resource` and `scope` in the common case: 1; 0 if it is not (the Python encoder's); -1 on
 * an error (set). */
static int lean_field(Buffer *out, Buffer *body, PyObject *object, PyObject *resource, PyObject *scope) {
    if ((PyObject *)Py_TYPE(object) != LeanType)
        return 0;
    SpanCore *span = (SpanCore *)object;
    if (span->resource != resource || span->scope != scope || span->status != UnsetStatus ||
        span->events == NULL || !is_empty(span->events) || span->links == NULL || !is_empty(span->links) ||
        span->attributes == NULL || span->name == NULL || span->parent == NULL || !PyTuple_Check(span->context) ||
        PyTuple_GET_SIZE(span->context) < 5 || PyTuple_GET_ITEM(span->context, 4) != DefaultTraceState)
        return 0;
    long kind = 0;
    while (kind < 5 && PyTuple_GET_ITEM(Kinds, kind) != span->kind)
        kind++;
    unsigned long long start, end;
    if (kind == 5 || time_of(span->start_time, &start) < 0 || time_of(span->end_time, &end) < 0) {
        PyErr_Clear();
        return 0;
    }
    body->len = 0;
    int written = span_body(body, span->context, span->parent, span->name, kind, start, end, span->attributes);
    if (written == -2)
        return -1;
    if (written == -1) {
        PyErr_Clear();
        return 0;
    }
    if (buffer_reserve(out, 1 + 10 + body->len) < 0)
        return -1;
    put_byte(out, 0x12); /* ScopeSpans.spans */
    put_varint(out, (uint64_t)body->len);
    put_bytes(out, body->data, body->len);
    return 1;
}

PyObject *lean_fields(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyList_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "lean_fields(spans: list, start, resource, scope)");
        return NULL;
    }
    if (LeanType == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "lean_fields: configure_lean() first");
        return NULL;
    }
    PyObject *spans = args[0], *resource = args[2], *scope = args[3];
    Py_ssize_t first = PyLong_AsSsize_t(args[1]);
    if (first == -1 && PyErr_Occurred())
        return NULL;
    first = first < 0 ? 0 : first;
    Buffer out, body;
    buffer_init(&out);
    buffer_init(&body);
    PyObject *result = NULL;
    Py_ssize_t at = first;
    for (; at < PyList_GET_SIZE(spans); at++) {
        PyObject *span = Py_NewRef(PyList_GET_ITEM(spans, at)); /* held: a value's __bool__ may run Python */
        int written = lean_field(&out, &body, span, resource, scope);
        Py_DECREF(span);
        if (written < 0)
            goto done;
        if (written == 0)
            break; /* the Python encoder's, from this span on */
    }
    result = Py_BuildValue("(y#n)", (const char *)out.data, out.len, at - first);
done:
    buffer_free(&out);
    buffer_free(&body);
    return result;
}
