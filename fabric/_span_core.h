/* What the parts of fabric._span_core share (see _span_core.c for what the module does):
 * the OTel objects configure() hands over, a LeanSpan's C fields, and the helpers each part uses.
 * _span_objects.c: SpanCore (a span's fields and end) and Current (the current-span context
 * manager); _span_start.c: start, start_current and the traceparent functions. */
#ifndef FABRIC_SPAN_CORE_H
#define FABRIC_SPAN_CORE_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

/* Handed over by configure(); owned references, for the life of the process. */
extern PyObject *SpanContextType;      /* opentelemetry.trace.SpanContext: a tuple subclass */
extern PyObject *NonRecordingSpanType; /* opentelemetry.trace.NonRecordingSpan */
extern PyTypeObject *ContextType;      /* opentelemetry.context.Context: a dict subclass */
extern PyObject *RuntimeVar;           /* the ContextVar behind OTel's runtime context */
extern PyObject *SpanKey;              /* the key a context keeps its current span under */
extern PyObject *Flags[256];           /* TraceFlags(0..255), by a traceparent's flags byte */
extern PyObject *DefaultTraceState;    /* trace.DEFAULT_TRACE_STATE */
extern PyObject *UnsetStatus;          /* lean_span.UNSET_STATUS */
extern PyObject *ExitFailed;           /* spans._exit_failed(span, exc, record, set_status) */
extern PyObject *Detach;               /* opentelemetry.context.detach */
extern PyObject *BaggageKey;           /* the key a context keeps its baggage under */
extern PyObject *EmptyArgs;            /* () */
extern int configured;
extern PyObject *str_processor, *str_span_processors, *str_on_end, *str_end, *str_get_span_context;

#include "_span_fields.h" /* SpanCore: a LeanSpan's fields */

extern PyTypeObject SpanCoreType, CurrentType;

/* _span_core.c */
PyObject *now_ns(void);
PyObject *empty_context(void);
PyObject *context_holding(PyObject *base, PyObject *span);
enum { SPAN_NONE, SPAN_OURS, SPAN_OTHER };
int span_context_in(PyObject *context, PyObject **span_context);
PyObject *new_span_context(PyObject *trace_id, PyObject *span_id, PyObject *flags, PyObject *state,
                           PyObject *is_remote);
/* _span_objects.c */
PyObject *make_current(PyObject *span, int end, int record, int set_status);
/* _span_start.c */
PyObject *start(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *start_current(PyObject *module, PyObject *const *args, Py_ssize_t nargs);
PyObject *remote_context(PyObject *module, PyObject *header);
PyObject *current_traceparent(PyObject *module, PyObject *ignored);

#endif
