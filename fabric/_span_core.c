/* The hot path of fabric/spans.py in C: starting a span, making it current, ending it.
 *
 *   SpanCore       the fields of a LeanSpan (`_name`, `_context`, ...) and its `end`,
 *                  `is_recording` and `get_span_context`; fabric.spans.LeanSpan subclasses it
 *   Current        the context manager `start_as_current_span` returns (spans._PyCurrent in C)
 *   start(state, tracer, name, kind, attributes, start_time, record_exception, set_status)
 *                  LeanTracer.start_span's common case: a span whose parent is the current
 *                  span (or none), under the default sampler or a parent-based ratio sampler;
 *                  NotImplemented for anything else, which the caller then starts in Python
 *   configure(...) the OTel objects the above use, handed over once by fabric.spans
 *
 * Same spans as the Python path, field for field (tests/fabric/test_span_core.py compares them).
 * Why: a node's spans cost ~2-5x their warm micro-benchmarks in place, where the interpreter's
 * code and data for each Python-level call are cold; tracing cost a fifth of a produce's
 * throughput, half of it inside these calls (docs/performance-rounds.md, fourteenth round).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>
#include <time.h>

/* Handed over by configure(); owned references, for the life of the process. */
static PyObject *SpanContextType;      /* opentelemetry.trace.SpanContext: a tuple subclass */
static PyObject *NonRecordingSpanType; /* opentelemetry.trace.NonRecordingSpan */
static PyTypeObject *ContextType;      /* opentelemetry.context.Context: a dict subclass */
static PyObject *RuntimeVar;           /* the ContextVar behind OTel's runtime context */
static PyObject *SpanKey;              /* the key a context keeps its current span under */
static PyObject *Flags[256];           /* TraceFlags(0..255), by a traceparent's flags byte */
static PyObject *DefaultTraceState;    /* trace.DEFAULT_TRACE_STATE */
static PyObject *UnsetStatus;          /* spans.UNSET_STATUS */
static PyObject *ExitFailed;           /* spans._exit_failed(span, exc, record, set_status) */
static PyObject *Detach;               /* opentelemetry.context.detach */
static PyObject *BaggageKey;           /* the key a context keeps its baggage under */
static PyObject *EmptyArgs;           /* () */
static int configured;

static PyObject *str_processor, *str_span_processors, *str_on_end, *str_end, *str_get_span_context;

static PyObject *now_ns(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLongLong((long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
}

/* ---------------------------------------------------------------- SpanCore */

typedef struct {
    PyObject_HEAD
    PyObject *tracer, *name, *context, *parent, *kind, *attributes, *events, *links, *status;
    PyObject *start_time, *end_time, *record_exception, *set_status_on_exception;
    PyObject *resource, *scope, *info;
} SpanCore;

#define SPAN_FIELDS(X)                                                                            \
    X(tracer) X(name) X(context) X(parent) X(kind) X(attributes) X(events) X(links) X(status)    \
    X(start_time) X(end_time) X(record_exception) X(set_status_on_exception) X(resource) X(scope) \
    X(info)

static int core_traverse(SpanCore *self, visitproc visit, void *arg) {
#define VISIT(f) Py_VISIT(self->f);
    SPAN_FIELDS(VISIT)
#undef VISIT
    return 0;
}

static int core_clear(SpanCore *self) {
#define CLEAR(f) Py_CLEAR(self->f);
    SPAN_FIELDS(CLEAR)
#undef CLEAR
    return 0;
}

static void core_dealloc(SpanCore *self) {
    PyObject_GC_UnTrack(self);
    core_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A list of events or links becomes the tuple a finished span keeps. */
static int freeze(PyObject **field) {
    if (*field != NULL && PyList_CheckExact(*field)) {
        PyObject *frozen = PyList_AsTuple(*field);
        if (frozen == NULL)
            return -1;
        Py_SETREF(*field, frozen);
    }
    return 0;
}

/* Hands a finished span to its tracer's processors, as LeanSpan.end does in Python: the
 * provider's multi-processor's own tuple of processors, read at every end (a processor added
 * later replaces that tuple), or the one processor. */
static int hand_over(SpanCore *self) {
    PyObject *processor = PyObject_GetAttr(self->tracer, str_processor);
    if (processor == NULL)
        return -1;
    PyObject *many = PyObject_GetAttr(processor, str_span_processors);
    if (many == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            Py_DECREF(processor);
            return -1;
        }
        PyErr_Clear();
    }
    int truthy = many == NULL ? 0 : PyObject_IsTrue(many);
    if (truthy < 0)
        goto fail;
    if (truthy) {
        PyObject *seq = PySequence_Fast(many, "a tracer's span processors must be a sequence");
        if (seq == NULL)
            goto fail;
        for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
            PyObject *done = PyObject_CallMethodOneArg(PySequence_Fast_GET_ITEM(seq, i), str_on_end, (PyObject *)self);
            if (done == NULL) {
                Py_DECREF(seq);
                goto fail;
            }
            Py_DECREF(done);
        }
        Py_DECREF(seq);
    } else {
        PyObject *done = PyObject_CallMethodOneArg(processor, str_on_end, (PyObject *)self);
        if (done == NULL)
            goto fail;
        Py_DECREF(done);
    }
    Py_XDECREF(many);
    Py_DECREF(processor);
    return 0;
fail:
    Py_XDECREF(many);
    Py_DECREF(processor);
    return -1;
}

static PyObject *core_end_at(SpanCore *self, PyObject *end_time) {
    if (self->end_time != NULL && self->end_time != Py_None)
        Py_RETURN_NONE;
    PyObject *at = end_time != NULL && end_time != Py_None ? Py_NewRef(end_time) : now_ns();
    if (at == NULL)
        return NULL;
    Py_XSETREF(self->end_time, at);
    if (freeze(&self->events) < 0 || freeze(&self->links) < 0 || hand_over(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *core_end(SpanCore *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    static const char *const names[] = {"end_time", NULL};
    PyObject *end_time = NULL;
    if (kwnames == NULL && nargs <= 1) {
        end_time = nargs ? args[0] : NULL;
    } else {
        Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
        if (nargs + nkw > 1 || (nkw == 1 && PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, 0), names[0]) != 0)) {
            PyErr_SetString(PyExc_TypeError, "end() takes one optional argument, end_time");
            return NULL;
        }
        end_time = nargs + nkw ? args[0] : NULL;
    }
    return core_end_at(self, end_time);
}

static PyObject *core_is_recording(SpanCore *self, PyObject *Py_UNUSED(ignored)) {
    return PyBool_FromLong(self->end_time == NULL || self->end_time == Py_None);
}

static PyObject *core_get_span_context(SpanCore *self, PyObject *Py_UNUSED(ignored)) {
    return Py_NewRef(self->context != NULL ? self->context : Py_None);
}

static PyMethodDef core_methods[] = {
    {"end", (PyCFunction)(void (*)(void))core_end, METH_FASTCALL | METH_KEYWORDS,
     "end(end_time=None)\n--\n\nEnd the span (once) and hand it to the tracer's span processors."},
    {"is_recording", (PyCFunction)core_is_recording, METH_NOARGS, "Whether the span has not ended yet."},
    {"get_span_context", (PyCFunction)core_get_span_context, METH_NOARGS, "The span's SpanContext."},
    {NULL, NULL, 0, NULL},
};

#define MEMBER(f, attr) {attr, T_OBJECT, offsetof(SpanCore, f), 0, NULL},
static PyMemberDef core_members[] = {
    MEMBER(tracer, "_tracer") MEMBER(name, "_name") MEMBER(context, "_context") MEMBER(parent, "_parent")
    MEMBER(kind, "_kind") MEMBER(attributes, "_attributes") MEMBER(events, "_events") MEMBER(links, "_links")
    MEMBER(status, "_status") MEMBER(start_time, "_start_time") MEMBER(end_time, "_end_time")
    MEMBER(record_exception, "_record_exception") MEMBER(set_status_on_exception, "_set_status_on_exception")
    MEMBER(resource, "_resource") MEMBER(scope, "_instrumentation_scope") MEMBER(info, "_instrumentation_info")
    {NULL, 0, 0, 0, NULL},
};
#undef MEMBER

static PyTypeObject SpanCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "fabric._span_core.SpanCore",
    .tp_basicsize = sizeof(SpanCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The fields of a LeanSpan and its end, in C.",
    .tp_traverse = (traverseproc)core_traverse,
    .tp_clear = (inquiry)core_clear,
    .tp_dealloc = (destructor)core_dealloc,
    .tp_methods = core_methods,
    .tp_members = core_members,
    .tp_new = PyType_GenericNew,
};

/* ---------------------------------------------------------------- Current */

typedef struct {
    PyObject_HEAD
    PyObject *span, *token;
    char end, record, set_status;
} Current;

static int current_traverse(Current *self, visitproc visit, void *arg) {
    Py_VISIT(self->span);
    Py_VISIT(self->token);
    return 0;
}

static int current_clear(Current *self) {
    Py_CLEAR(self->span);
    Py_CLEAR(self->token);
    return 0;
}

static void current_dealloc(Current *self) {
    PyObject_GC_UnTrack(self);
    current_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject CurrentType;

static PyObject *make_current(PyObject *span, int end, int record, int set_status) {
    Current *self = PyObject_GC_New(Current, &CurrentType);
    if (self == NULL)
        return NULL;
    self->span = Py_NewRef(span);
    self->token = NULL;
    self->end = (char)end;
    self->record = (char)record;
    self->set_status = (char)set_status;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static PyObject *current_new(PyTypeObject *Py_UNUSED(type), PyObject *args, PyObject *kwargs) {
    static char *names[] = {"span", "end_on_exit", "record_exception", "set_status_on_exception", NULL};
    PyObject *span;
    int end, record, set_status;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Oppp:Current", names, &span, &end, &record, &set_status))
        return NULL;
    return make_current(span, end, record, set_status);
}

/* A new, empty Context: dict's new (Context is a dict that forbids item assignment, not a dict
 * being filled by dict's own functions, as below). */
static PyObject *empty_context(void) { return ContextType->tp_new(ContextType, EmptyArgs, NULL); }

/* The current context with `span` in it, as trace.set_span_in_context makes it. */
static PyObject *context_with(PyObject *span) {
    PyObject *current;
    if (PyContextVar_Get(RuntimeVar, NULL, &current) < 0)
        return NULL;
    PyObject *context = empty_context();
    if (context == NULL) {
        Py_XDECREF(current);
        return NULL;
    }
    if ((current != NULL && PyDict_Merge(context, current, 1) < 0) || PyDict_SetItem(context, SpanKey, span) < 0) {
        Py_XDECREF(current);
        Py_DECREF(context);
        return NULL;
    }
    Py_XDECREF(current);
    return context;
}

static PyObject *current_enter(Current *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *context = context_with(self->span);
    if (context == NULL)
        return NULL;
    PyObject *token = PyContextVar_Set(RuntimeVar, context);
    Py_DECREF(context);
    if (token == NULL)
        return NULL;
    Py_XSETREF(self->token, token);
    return Py_NewRef(self->span);
}

static PyObject *end_span(PyObject *span) {
    if (PyObject_TypeCheck(span, &SpanCoreType))
        return core_end_at((SpanCore *)span, NULL);
    return PyObject_CallMethodNoArgs(span, str_end);
}

static PyObject *current_exit(Current *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "__exit__ takes 3 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *exc = args[1];
    if (self->token != NULL && PyContextVar_Reset(RuntimeVar, self->token) < 0) {
        /* another task's token, or one used twice: the API's detach logs what it cannot undo */
        if (!PyErr_ExceptionMatches(PyExc_ValueError) && !PyErr_ExceptionMatches(PyExc_RuntimeError))
            return NULL;
        PyErr_Clear();
        PyObject *done = PyObject_CallOneArg(Detach, self->token);
        if (done == NULL)
            return NULL;
        Py_DECREF(done);
    }
    if (exc != Py_None && PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_Exception) &&
        (self->record || self->set_status)) {
        PyObject *done = PyObject_CallFunction(ExitFailed, "OOii", self->span, exc, self->record, self->set_status);
        if (done == NULL)
            return NULL;
        Py_DECREF(done);
    }
    if (self->end) {
        PyObject *done = end_span(self->span);
        if (done == NULL)
            return NULL;
        Py_DECREF(done);
    }
    Py_RETURN_FALSE;
}

static PyMethodDef current_methods[] = {
    {"__enter__", (PyCFunction)current_enter, METH_NOARGS, "Make the span current; return it."},
    {"__exit__", (PyCFunction)(void (*)(void))current_exit, METH_FASTCALL,
     "Restore the previous context; record an exception; end the span if asked to."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef current_members[] = {
    {"_span", T_OBJECT, offsetof(Current, span), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject CurrentType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "fabric._span_core.Current",
    .tp_basicsize = sizeof(Current),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Current(span, end_on_exit, record_exception, set_status_on_exception): makes span current "
              "while in a with block, as trace.use_span does.",
    .tp_traverse = (traverseproc)current_traverse,
    .tp_clear = (inquiry)current_clear,
    .tp_dealloc = (destructor)current_dealloc,
    .tp_methods = current_methods,
    .tp_members = current_members,
    .tp_new = current_new,
};

/* ---------------------------------------------------------------- start */

/* The tracer's state, a tuple LeanTracer builds once (spans.LeanTracer._core_state). */
enum { S_LABELS, S_SPAN_ID, S_TRACE_ID, S_FOLLOW_PARENT, S_SAMPLE_ROOTS, S_RANDOM_IDS, S_RESOURCE, S_SCOPE,
       S_SPAN_TYPE, S_ROOT_BOUND, S_SIZE };

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

static PyObject *new_span_context(PyObject *trace_id, PyObject *span_id, PyObject *flags, PyObject *state,
                                  PyObject *is_remote) {
    /* tuple.__new__(SpanContext, (trace_id, span_id, is_remote, flags, state, True)), as tuple does it */
    PyTypeObject *type = (PyTypeObject *)SpanContextType;
    PyObject *context = type->tp_alloc(type, 6);
    if (context == NULL)
        return NULL;
    PyObject *items[6] = {trace_id, span_id, is_remote, flags, state, Py_True};
    for (int i = 0; i < 6; i++)
        PyTuple_SET_ITEM(context, i, Py_NewRef(items[i]));
    return context;
}

static PyObject *start(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
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

    /* the parent: the current context's span, as LeanTracer.start_span finds it */
    PyObject *current;
    if (PyContextVar_Get(RuntimeVar, NULL, &current) < 0)
        return NULL;
    PyObject *parent = NULL, *held = NULL; /* held: a reference parent needs */
    if (current != NULL) {
        PyObject *span = PyDict_Check(current) ? PyDict_GetItemWithError(current, SpanKey) : NULL;
        if (span == NULL && PyErr_Occurred()) {
            Py_DECREF(current);
            return NULL;
        }
        if (span == NULL) {
            parent = NULL;
        } else if (Py_IS_TYPE(span, span_type)) {
            parent = ((SpanCore *)span)->context;
        } else if ((PyObject *)Py_TYPE(span) == NonRecordingSpanType) {
            held = parent = PyObject_CallMethodNoArgs(span, str_get_span_context);
            if (parent == NULL) {
                Py_DECREF(current);
                return NULL;
            }
        } else {
            Py_DECREF(current);
            Py_RETURN_NOTIMPLEMENTED;
        }
    }
    if (parent != NULL && (!PyTuple_Check(parent) || PyTuple_GET_SIZE(parent) != 6)) {
        Py_XDECREF(held);
        Py_XDECREF(current);
        Py_RETURN_NOTIMPLEMENTED;
    }
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
            /* TraceIdRatioBased's decision: the trace id's low 64 bits under its bound */
            if ((trace_id = PyObject_CallNoArgs(PyTuple_GET_ITEM(state, S_TRACE_ID))) == NULL)
                goto done;
            PyObject *low = PyLong_FromUnsignedLongLong(PyLong_AsUnsignedLongLongMask(trace_id));
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
    if (trace_id == NULL && (trace_id = PyObject_CallNoArgs(PyTuple_GET_ITEM(state, S_TRACE_ID))) == NULL)
        goto done;
    if ((span_id = PyObject_CallNoArgs(PyTuple_GET_ITEM(state, S_SPAN_ID))) == NULL)
        goto done;
    context = new_span_context(trace_id, span_id, Flags[(sampled ? 1 : 0) | random_flag], trace_state, Py_False);
    if (context == NULL)
        goto done;
    if (!sampled) {
        result = PyObject_CallOneArg(NonRecordingSpanType, context);
        goto done;
    }
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
    span->record_exception = Py_NewRef(PyObject_IsTrue(record_exception) ? Py_True : Py_False);
    span->set_status_on_exception = Py_NewRef(PyObject_IsTrue(set_status) ? Py_True : Py_False);
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
    Py_XDECREF(current);
    return result;
}

static PyObject *start_current(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
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

static PyObject *remote_context(PyObject *Py_UNUSED(module), PyObject *header) {
    if (!configured || !PyUnicode_Check(header) || !PyUnicode_IS_ASCII(header) ||
        PyUnicode_GET_LENGTH(header) != TRACEPARENT_LEN)
        Py_RETURN_NOTIMPLEMENTED;
    const char *text = (const char *)PyUnicode_1BYTE_DATA(header);
    if (text[2] != '-' || text[35] != '-' || text[52] != '-')
        Py_RETURN_NOTIMPLEMENTED;
    for (int i = 0; i < TRACEPARENT_LEN; i++)
        if (i != 2 && i != 35 && i != 52 && hex_value((unsigned char)text[i]) < 0)
            Py_RETURN_NOTIMPLEMENTED;
    /* what telemetry.extract rejects: version ff, an all-zero id ("00" with more fields has none here) */
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
    PyObject *result = empty_context();
    if (result != NULL && PyDict_SetItem(result, SpanKey, span) < 0)
        Py_CLEAR(result);
    Py_DECREF(span);
    return result;
}

static const char HEX[] = "0123456789abcdef";

static void put_hex(char *out, unsigned long long value, int digits) {
    for (int i = digits - 1; i >= 0; i--, value >>= 4)
        out[i] = HEX[value & 0xf];
}

static PyObject *current_traceparent(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored)) {
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
    PyObject *span = baggage == NULL ? PyDict_GetItemWithError(current, SpanKey) : NULL;
    if (PyErr_Occurred())
        goto done;
    if (baggage != NULL)
        goto python;
    if (span == NULL) { /* outside any span: nothing to write */
        result = Py_NewRef(Py_None);
        goto done;
    }
    if (PyObject_TypeCheck(span, &SpanCoreType))
        context = Py_XNewRef(((SpanCore *)span)->context);
    else if ((PyObject *)Py_TYPE(span) == NonRecordingSpanType) {
        if ((context = PyObject_CallMethodNoArgs(span, str_get_span_context)) == NULL)
            goto done;
    }
    if (context == NULL || !PyTuple_Check(context) || PyTuple_GET_SIZE(context) != 6 ||
        PyTuple_GET_ITEM(context, 5) != Py_True || PyTuple_GET_ITEM(context, 4) != DefaultTraceState)
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

/* ---------------------------------------------------------------- configure */

static PyObject *configure(PyObject *Py_UNUSED(module), PyObject *args) {
    PyObject *flags;
    PyObject *span_context, *non_recording, *context_type, *runtime_var, *span_key, *trace_state, *unset, *exit_failed,
        *detach, *baggage_key;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOO:configure", &span_context, &non_recording, &context_type, &runtime_var,
                          &span_key, &flags, &trace_state, &unset, &exit_failed, &detach, &baggage_key))
        return NULL;
    if (!PyType_Check(span_context) || !PyType_IsSubtype((PyTypeObject *)span_context, &PyTuple_Type) ||
        !PyType_Check(context_type) || !PyType_IsSubtype((PyTypeObject *)context_type, &PyDict_Type) ||
        !PyType_Check(non_recording) || !PyTuple_CheckExact(flags) || PyTuple_GET_SIZE(flags) != 256) {
        PyErr_SetString(PyExc_TypeError, "configure: SpanContext must subclass tuple, Context dict, flags be 256");
        return NULL;
    }
    Py_XSETREF(SpanContextType, Py_NewRef(span_context));
    Py_XSETREF(NonRecordingSpanType, Py_NewRef(non_recording));
    Py_XSETREF(ContextType, (PyTypeObject *)Py_NewRef(context_type));
    Py_XSETREF(RuntimeVar, Py_NewRef(runtime_var));
    Py_XSETREF(SpanKey, Py_NewRef(span_key));
    for (int i = 0; i < 256; i++)
        Py_XSETREF(Flags[i], Py_NewRef(PyTuple_GET_ITEM(flags, i)));
    Py_XSETREF(DefaultTraceState, Py_NewRef(trace_state));
    Py_XSETREF(UnsetStatus, Py_NewRef(unset));
    Py_XSETREF(ExitFailed, Py_NewRef(exit_failed));
    Py_XSETREF(Detach, Py_NewRef(detach));
    Py_XSETREF(BaggageKey, Py_NewRef(baggage_key));
    configured = 1;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"start", (PyCFunction)(void (*)(void))start, METH_FASTCALL,
     "start(state, tracer, name, kind, attributes, start_time, record_exception, set_status_on_exception)\n--\n\n"
     "A span started as LeanTracer.start_span does, in the current context; NotImplemented where the\n"
     "Python path must start it (another sampler, another parent span type, attributes to clean)."},
    {"start_current", (PyCFunction)(void (*)(void))start_current, METH_FASTCALL,
     "start_current(state, tracer, name, kind, attributes, start_time, record_exception,\n"
     "              set_status_on_exception, end_on_exit)\n--\n\n"
     "start(), and the Current that makes the span current; NotImplemented as start()."},
    {"configure", configure, METH_VARARGS,
     "configure(SpanContext, NonRecordingSpan, Context, runtime_var, span_key, flags, default_trace_state,\n"
     "          unset_status, exit_failed, detach, baggage_key)\n--\n\nThe OTel objects this module uses."},
    {"remote_context", (PyCFunction)remote_context, METH_O,
     "remote_context(traceparent)\n--\n\n"
     "The context a W3C traceparent header gives, as telemetry.extract makes it (an empty one for an invalid\n"
     "header); NotImplemented for any header but the canonical 55 characters, which Python then parses."},
    {"current_traceparent", (PyCFunction)current_traceparent, METH_NOARGS,
     "current_traceparent()\n--\n\n"
     "The current span's W3C traceparent header, as telemetry.inject writes it; None when there is no span;\n"
     "NotImplemented where Python must write it (baggage, a trace state, another span type, an invalid one)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "fabric._span_core", "The hot path of fabric/spans.py in C.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__span_core(void) {
    if (PyType_Ready(&SpanCoreType) < 0 || PyType_Ready(&CurrentType) < 0)
        return NULL;
    if ((str_processor = PyUnicode_InternFromString("processor")) == NULL ||
        (str_span_processors = PyUnicode_InternFromString("_span_processors")) == NULL ||
        (str_on_end = PyUnicode_InternFromString("on_end")) == NULL ||
        (str_end = PyUnicode_InternFromString("end")) == NULL ||
        (str_get_span_context = PyUnicode_InternFromString("get_span_context")) == NULL)
        return NULL;
    if ((EmptyArgs = PyTuple_New(0)) == NULL)
        return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    if (PyModule_AddObjectRef(module, "SpanCore", (PyObject *)&SpanCoreType) < 0 ||
        PyModule_AddObjectRef(module, "Current", (PyObject *)&CurrentType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
