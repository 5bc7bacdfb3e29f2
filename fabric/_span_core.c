/* The hot path of fabric/spans.py in C: starting a span, making it current, ending it.
 *
 *   SpanCore       the fields of a LeanSpan (`_name`, `_context`, ...) and its `end`,
 *                  `is_recording` and `get_span_context`; fabric.lean_span.LeanSpan subclasses it
 *   Current        the context manager `start_as_current_span` returns (spans._PyCurrent in C)
 *   start(state, tracer, name, kind, attributes, start_time, record_exception, set_status)
 *                  LeanTracer.start_span's common case: a span whose parent is the current
 *                  span (or none), under the default sampler or a parent-based ratio sampler;
 *                  NotImplemented for anything else, which the caller then starts in Python
 *   configure(...) the OTel objects the above use, handed over once by fabric.spans
 *
 * In three files: this one (the module, what configure() hands over, the helpers the others
 * share: _span_core.h), _span_objects.c (SpanCore, Current) and _span_start.c (start,
 * start_current, the traceparent functions).
 *
 * Same spans as the Python path, field for field (tests/fabric/test_span_core.py compares them).
 * Why: a node's spans cost ~2-5x their warm micro-benchmarks in place, where the interpreter's
 * code and data for each Python-level call are cold; tracing cost a fifth of a produce's
 * throughput, half of it inside these calls (docs/performance-rounds.md, fourteenth round).
 */
#include "_span_core.h"
#include <time.h>

/* Handed over by configure() (see _span_core.h). */
PyObject *SpanContextType;      /* opentelemetry.trace.SpanContext: a tuple subclass */
PyObject *NonRecordingSpanType; /* opentelemetry.trace.NonRecordingSpan */
PyTypeObject *ContextType;      /* opentelemetry.context.Context: a dict subclass */
PyObject *RuntimeVar;           /* the ContextVar behind OTel's runtime context */
PyObject *SpanKey;              /* the key a context keeps its current span under */
PyObject *Flags[256];           /* TraceFlags(0..255), by a traceparent's flags byte */
PyObject *DefaultTraceState;    /* trace.DEFAULT_TRACE_STATE */
PyObject *UnsetStatus;          /* lean_span.UNSET_STATUS */
PyObject *ExitFailed;           /* spans._exit_failed(span, exc, record, set_status) */
PyObject *Detach;               /* opentelemetry.context.detach */
PyObject *BaggageKey;           /* the key a context keeps its baggage under */
PyObject *EmptyArgs;            /* () */
int configured;

PyObject *str_processor, *str_span_processors, *str_on_end, *str_end, *str_get_span_context;

PyObject *now_ns(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLongLong((long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
}

/* A new, empty Context: dict's new (Context is a dict that forbids item assignment, not a dict
 * being filled by dict's own functions, as below). */
PyObject *empty_context(void) { return ContextType->tp_new(ContextType, EmptyArgs, NULL); }

/* A new Context with `base`'s entries (none for NULL) and `span` as its span, as
 * trace.set_span_in_context makes it. */
PyObject *context_holding(PyObject *base, PyObject *span) {
    PyObject *context = empty_context();
    if (context != NULL &&
        ((base != NULL && PyDict_Merge(context, base, 1) < 0) || PyDict_SetItem(context, SpanKey, span) < 0))
        Py_CLEAR(context);
    return context;
}

/* The SpanContext (a 6-tuple) of the span the Context `context` holds, as a new reference in
 * *span_context: SPAN_OURS for a SpanCore or a NonRecordingSpan, SPAN_NONE (NULL) when it holds
 * no span, SPAN_OTHER (NULL) for any other span or span context (the Python path's to read),
 * -1 on an error. */
int span_context_in(PyObject *context, PyObject **span_context) {
    *span_context = NULL;
    PyObject *span = PyDict_Check(context) ? PyDict_GetItemWithError(context, SpanKey) : NULL;
    if (span == NULL)
        return PyErr_Occurred() ? -1 : SPAN_NONE;
    PyObject *found;
    if (PyObject_TypeCheck(span, &SpanCoreType))
        found = Py_XNewRef(((SpanCore *)span)->context);
    else if ((PyObject *)Py_TYPE(span) == NonRecordingSpanType) {
        if ((found = PyObject_CallMethodNoArgs(span, str_get_span_context)) == NULL)
            return -1;
    } else
        return SPAN_OTHER;
    if (found == NULL || !PyTuple_Check(found) || PyTuple_GET_SIZE(found) != 6) {
        Py_XDECREF(found);
        return SPAN_OTHER;
    }
    *span_context = found;
    return SPAN_OURS;
}

PyObject *new_span_context(PyObject *trace_id, PyObject *span_id, PyObject *flags, PyObject *state,
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
     "The context a W3C traceparent header gives, as propagation.extract makes it (an empty one for an invalid\n"
     "header); NotImplemented for any header but the canonical 55 characters, which Python then parses."},
    {"current_traceparent", (PyCFunction)current_traceparent, METH_NOARGS,
     "current_traceparent()\n--\n\n"
     "The current span's W3C traceparent header, as propagation.inject writes it; None when there is no span;\n"
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
