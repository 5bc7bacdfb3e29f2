/* A LeanSpan's fields in C: fabric._span_core defines the type (SpanCore, which
 * fabric.lean_span.LeanSpan subclasses); fabric._span_wire reads them to encode a node's spans. */
#ifndef FABRIC_SPAN_FIELDS_H
#define FABRIC_SPAN_FIELDS_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>

typedef struct {
    PyObject_HEAD
    PyObject *tracer, *name, *context, *parent, *kind, *attributes, *events, *links, *status;
    PyObject *start_time, *end_time, *record_exception, *set_status_on_exception;
    PyObject *resource, *scope, *info;
} SpanCore;

#endif
