/* SpanCore, a LeanSpan's fields and its end, and Current, the context manager that makes a
 * span current: parts of fabric._span_core (_span_core.c says what and why). */
#include "_span_core.h"

/* ---------------------------------------------------------------- SpanCore */

/* SpanCore's fields (the struct is in _span_core.h), for what is done to each of them alike. */
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

PyTypeObject SpanCoreType = {
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

PyObject *make_current(PyObject *span, int end, int record, int set_status) {
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

/* The current context with `span` in it. */
static PyObject *context_with(PyObject *span) {
    PyObject *current;
    if (PyContextVar_Get(RuntimeVar, NULL, &current) < 0)
        return NULL;
    PyObject *context = context_holding(current, span);
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

PyTypeObject CurrentType = {
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
