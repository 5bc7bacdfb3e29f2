/* Starting a span (start, start_current) and reading and writing its traceparent: parts of
 * fabric._span_core (_span_core.c says what and why). */
#include "_span_core.h"
#include <string.h>

/* ---------------------------------------------------------------- start */

/* The tracer's state, a tuple LeanTracer builds once (spans.LeanTracer._core_state). */
enum { S_LABELS, S_SPAN_ID, S_TRACE_ID, S_FOLLOW_PARENT, S_SAMPLE_ROOTS, S_RANDOM_IDS, S_RESOURCE, S_SCOPE,
       S_SPAN_TYPE, S_ROOT_BOUND, S_SIZE };

/* An id from `source` (the tracer's S_SPAN_ID or S_TRACE_ID): a generator's method, or its
 * random bits themselves (see LeanTracer), which may be 0, an invalid id: drawn again then, as
 * the generator's methods do. A source that gives 0 again and again is broken: an error. */
static PyObject *draw_id(PyObject *source) {
    for (int tries = 0; tries < 8; tries++) {
        PyObject *id = PyObject_CallNoArgs(source);
        if (id == NULL)
            return NULL;
        int valid = PyObject_IsTrue(id);
        if (valid != 0) {
            if (valid > 0)
                return id;
            Py_DECREF(id);
            return NULL;
        }
        Py_DECREF(id);
    }
    PyErr_SetString(PyExc_RuntimeError, "the tracer's id generator gave 0 (an invalid id) 8 times running");
    return NULL;
}

/* The node's labels and `attributes` as a span keeps them, or NotImplemented when one of them
 * needs the SDK's handling (as LeanTracer._attributes returns None). */
static PyObject *span_attributes(PyObject *labels, PyObject *attributes) {
    if (attributes == Py_None || (PyDict_CheckExact(attributes) && PyDict_GET_SIZE(attributes) == 0))
        return PyDict_Copy(labels);
    if (!PyDict_CheckExact(attributes))
        Py_RETURN_NOTIMPLEMENTED;
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(attributes, &pos, &key, &value)) {
        if (!PyUnicode_CheckExact(key))
            Py_RETURN_NOTIMPLEMENTED;
        PyTypeObject *kind = Py_TYPE(value);
        if (kind != &PyUnicode_Type && kind != &PyBool_Type && kind != &PyLong_Type && kind != &PyFloat_Type)
            Py_RETURN_NOTIMPLEMENTED;
    }
    PyObject *all = PyDict_Copy(labels);
    if (all != NULL && PyDict_Merge(all, attributes, 1) < 0)
        Py_CLEAR(all);
    return all;
}

PyObject *start(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8) {
        PyErr_Format(PyExc_TypeError, "start takes 8 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *state = args[0], *tracer = args[1], *name = args[2], *kind = args[3], *attributes = args[4];
    PyObject *start_time = args[5], *record_exception = args[6], *set_status = args[7];
    if (!configured || !PyTuple_CheckExact(state) || PyTuple_GET_SIZE(state) != S_SIZE) {
        PyErr_SetString(PyExc_RuntimeError, "fabric._span_core: not configured, or a tracer state of another shape");
        return NULL;
    }
    PyTypeObject *span_type = (PyTypeObject *)PyTuple_GET_ITEM(state, S_SPAN_TYPE);

    /* the parent: the current context's span's context, as LeanTracer.start_span finds it */
    PyObject *current, *parent = NULL;
    if (PyContextVar_Get(RuntimeVar, NULL, &current) < 0)
        return NULL;
    int found = current != NULL ? span_context_in(current, &parent) : SPAN_NONE;
    Py_XDECREF(current);
    if (found < 0)
        return NULL;
    if (found == SPAN_OTHER)
        Py_RETURN_NOTIMPLEMENTED;
    PyObject *held = parent; /* released at the end, whatever parent becomes */
    PyObject *result = NULL, *trace_id = NULL, *span_id = NULL, *attrs = NULL, *context = NULL;
    PyObject *trace_state;
    long sampled, random_flag;
    if (parent != NULL && PyTuple_GET_ITEM(parent, 5) == Py_True) {
        if (PyTuple_GET_ITEM(state, S_FOLLOW_PARENT) != Py_True)
            goto python;
        long parent_flags = PyLong_AsLong(PyTuple_GET_ITEM(parent, 3));
        if (parent_flags == -1 && PyErr_Occurred())
            goto done;
        sampled = parent_flags & 1;
        random_flag = parent_flags & 2;
        trace_state = PyTuple_GET_ITEM(parent, 4);
        trace_id = Py_NewRef(PyTuple_GET_ITEM(parent, 0));
    } else {
        PyObject *bound = PyTuple_GET_ITEM(state, S_ROOT_BOUND);
        parent = NULL;
        if (PyTuple_GET_ITEM(state, S_SAMPLE_ROOTS) == Py_True) {
            sampled = 1;
        } else if (bound != Py_None) {
            /* TraceIdRatioBased's decision: the trace id's low 64 bits under its bound (a
             * sampled root this path cannot record goes to Python, which draws a new trace id) */
            if ((trace_id = draw_id(PyTuple_GET_ITEM(state, S_TRACE_ID))) == NULL)
                goto done;
            unsigned long long low_bits = PyLong_AsUnsignedLongLongMask(trace_id);
            if (low_bits == (unsigned long long)-1 && PyErr_Occurred())
                goto done; /* an id generator that gave no int */
            PyObject *low = PyLong_FromUnsignedLongLong(low_bits);
            if (low == NULL)
                goto done;
            int under = PyObject_RichCompareBool(low, bound, Py_LT);
            Py_DECREF(low);
            if (under < 0)
                goto done;
            sampled = under;
        } else {
            goto python;
        }
        random_flag = PyLong_AsLong(PyTuple_GET_ITEM(state, S_RANDOM_IDS));
        if (random_flag == -1 && PyErr_Occurred())
            goto done;
        random_flag &= 2;
        trace_state = DefaultTraceState;
    }
    if (sampled) {
        attrs = span_attributes(PyTuple_GET_ITEM(state, S_LABELS), attributes);
        if (attrs == NULL)
            goto done;
        if (attrs == Py_NotImplemented)
            goto python;
    }
    if (trace_id == NULL && (trace_id = draw_id(PyTuple_GET_ITEM(state, S_TRACE_ID))) == NULL)
        goto done;
    if ((span_id = draw_id(PyTuple_GET_ITEM(state, S_SPAN_ID))) == NULL)
        goto done;
    context = new_span_context(trace_id, span_id, Flags[(sampled ? 1 : 0) | random_flag], trace_state, Py_False);
    if (context == NULL)
        goto done;
    if (!sampled) {
        result = PyObject_CallOneArg(NonRecordingSpanType, context);
        goto done;
    }
    int record = PyObject_IsTrue(record_exception), status = PyObject_IsTrue(set_status);
    if (record < 0 || status < 0)
        goto done;
    PyObject *begun = start_time != Py_None ? Py_NewRef(start_time) : now_ns();
    if (begun == NULL)
        goto done;
    SpanCore *span = (SpanCore *)span_type->tp_alloc(span_type, 0);
    if (span == NULL) {
        Py_DECREF(begun);
        goto done;
    }
    span->tracer = Py_NewRef(tracer);
    span->name = Py_NewRef(name);
    span->context = Py_NewRef(context);
    span->parent = Py_NewRef(parent != NULL ? parent : Py_None);
    span->kind = Py_NewRef(kind);
    span->attributes = Py_NewRef(attrs);
    span->events = PyTuple_New(0);
    span->links = PyTuple_New(0);
    span->status = Py_NewRef(UnsetStatus);
    span->start_time = begun;
    span->end_time = NULL;
    span->record_exception = Py_NewRef(record ? Py_True : Py_False);
    span->set_status_on_exception = Py_NewRef(status ? Py_True : Py_False);
    span->resource = Py_NewRef(PyTuple_GET_ITEM(state, S_RESOURCE));
    span->scope = Py_NewRef(PyTuple_GET_ITEM(state, S_SCOPE));
    span->info = Py_NewRef(Py_None);
    result = (PyObject *)span;
    goto done;
python:
    result = Py_NewRef(Py_NotImplemented);
done:
    Py_XDECREF(context);
    Py_XDECREF(attrs);
    Py_XDECREF(span_id);
    Py_XDECREF(trace_id);
    Py_XDECREF(held);
    return result;
}

PyObject *start_current(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 9) {
        PyErr_Format(PyExc_TypeError, "start_current takes 9 arguments (%zd given)", nargs);
        return NULL;
    }
    int end = PyObject_IsTrue(args[8]), record = PyObject_IsTrue(args[6]), set_status = PyObject_IsTrue(args[7]);
    if (end < 0 || record < 0 || set_status < 0)
        return NULL;
    PyObject *span = start(module, args, 8);
    if (span == NULL || span == Py_NotImplemented)
        return span;
    PyObject *current = make_current(span, end, record, set_status);
    Py_DECREF(span);
    return current;
}

/* ---------------------------------------------------------------- propagation */

#define TRACEPARENT_LEN 55 /* "00-" 32 hex "-" 16 hex "-" 2 hex */

static int hex_value(unsigned char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1; /* the W3C propagator takes lowercase hex only */
}

/* The digits text[0..n) as an int, or NULL with *zero set when they are all zeros. */
static PyObject *hex_id(const char *text, int n, int *zero) {
    char digits[33];
    *zero = 1;
    for (int i = 0; i < n; i++) {
        digits[i] = text[i];
        if (text[i] != '0')
            *zero = 0;
    }
    digits[n] = '\0';
    return *zero ? NULL : PyLong_FromString(digits, NULL, 16);
}

PyObject *remote_context(PyObject *Py_UNUSED(module), PyObject *header) {
    if (!configured || !PyUnicode_Check(header) || !PyUnicode_IS_ASCII(header) ||
        PyUnicode_GET_LENGTH(header) != TRACEPARENT_LEN)
        Py_RETURN_NOTIMPLEMENTED;
    const char *text = (const char *)PyUnicode_1BYTE_DATA(header);
    if (text[2] != '-' || text[35] != '-' || text[52] != '-')
        Py_RETURN_NOTIMPLEMENTED;
    for (int i = 0; i < TRACEPARENT_LEN; i++)
        if (i != 2 && i != 35 && i != 52 && hex_value((unsigned char)text[i]) < 0)
            Py_RETURN_NOTIMPLEMENTED;
    /* what propagation.extract rejects: version ff, an all-zero id ("00" with more fields has none here) */
    if (text[0] == 'f' && text[1] == 'f')
        return empty_context();
    int zero;
    PyObject *trace_id = hex_id(text + 3, 32, &zero);
    if (trace_id == NULL)
        return zero ? empty_context() : NULL;
    PyObject *span_id = hex_id(text + 36, 16, &zero);
    if (span_id == NULL) {
        Py_DECREF(trace_id);
        return zero ? empty_context() : NULL;
    }
    int flags = hex_value((unsigned char)text[53]) * 16 + hex_value((unsigned char)text[54]);
    PyObject *context = new_span_context(trace_id, span_id, Flags[flags], DefaultTraceState, Py_True);
    Py_DECREF(trace_id);
    Py_DECREF(span_id);
    if (context == NULL)
        return NULL;
    PyObject *span = PyObject_CallOneArg(NonRecordingSpanType, context);
    Py_DECREF(context);
    if (span == NULL)
        return NULL;
    PyObject *result = context_holding(NULL, span);
    Py_DECREF(span);
    return result;
}

static const char HEX[] = "0123456789abcdef";

static void put_hex(char *out, unsigned long long value, int digits) {
    for (int i = digits - 1; i >= 0; i--, value >>= 4)
        out[i] = HEX[value & 0xf];
}

PyObject *current_traceparent(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored)) {
    if (!configured)
        Py_RETURN_NOTIMPLEMENTED;
    PyObject *current, *result = NULL, *context = NULL;
    if (PyContextVar_Get(RuntimeVar, NULL, &current) < 0)
        return NULL;
    if (current == NULL || !PyDict_Check(current)) {
        Py_XDECREF(current);
        Py_RETURN_NOTIMPLEMENTED;
    }
    PyObject *baggage = PyDict_GetItemWithError(current, BaggageKey);
    if (baggage != NULL)
        goto python;
    int found = PyErr_Occurred() ? -1 : span_context_in(current, &context);
    if (found < 0)
        goto done;
    if (found == SPAN_NONE) { /* outside any span: nothing to write */
        result = Py_NewRef(Py_None);
        goto done;
    }
    if (found == SPAN_OTHER || PyTuple_GET_ITEM(context, 5) != Py_True ||
        PyTuple_GET_ITEM(context, 4) != DefaultTraceState)
        goto python;
    PyObject *trace_id = PyTuple_GET_ITEM(context, 0), *span_id = PyTuple_GET_ITEM(context, 1);
    unsigned long long low = PyLong_AsUnsignedLongLongMask(trace_id);
    unsigned long long sid = PyLong_AsUnsignedLongLong(span_id);
    long flags = PyLong_AsLong(PyTuple_GET_ITEM(context, 3));
    PyObject *shift = PyLong_FromLong(64);
    PyObject *high_int = shift != NULL ? PyNumber_Rshift(trace_id, shift) : NULL;
    Py_XDECREF(shift);
    unsigned long long high = high_int != NULL ? PyLong_AsUnsignedLongLong(high_int) : 0;
    Py_XDECREF(high_int);
    if (PyErr_Occurred()) { /* an id out of range: the propagator's business */
        PyErr_Clear();
        goto python;
    }
    result = PyUnicode_New(TRACEPARENT_LEN, 127);
    if (result == NULL)
        goto done;
    char *out = (char *)PyUnicode_1BYTE_DATA(result);
    memcpy(out, "00-", 3);
    put_hex(out + 3, high, 16);
    put_hex(out + 19, low, 16);
    out[35] = '-';
    put_hex(out + 36, sid, 16);
    out[52] = '-';
    put_hex(out + 53, (unsigned long long)flags & 0xff, 2);
    goto done;
python:
    result = Py_NewRef(Py_NotImplemented);
done:
    Py_XDECREF(context);
    Py_DECREF(current);
    return result;
}
