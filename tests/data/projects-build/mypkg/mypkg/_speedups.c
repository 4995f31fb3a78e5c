/* mypkg._speedups: dot(a, b) over two sequences of floats, in C. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *dot(PyObject *self, PyObject *args) {
    PyObject *a, *b;
    if (!PyArg_ParseTuple(args, "OO", &a, &b)) {
        return NULL;
    }
    PyObject *fa = PySequence_Fast(a, "a must be a sequence");
    if (fa == NULL) {
        return NULL;
    }
    PyObject *fb = PySequence_Fast(b, "b must be a sequence");
    if (fb == NULL) {
        Py_DECREF(fa);
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fa);
    if (n != PySequence_Fast_GET_SIZE(fb)) {
        Py_DECREF(fa);
        Py_DECREF(fb);
        PyErr_SetString(PyExc_ValueError, "a and b differ in length");
        return NULL;
    }
    double total = 0.0;
    for (Py_ssize_t i = 0; i < n; i++) {
        double x = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(fa, i));
        double y = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(fb, i));
        if (PyErr_Occurred()) {
            Py_DECREF(fa);
            Py_DECREF(fb);
            return NULL;
        }
        total += x * y;
    }
    Py_DECREF(fa);
    Py_DECREF(fb);
    return PyFloat_FromDouble(total);
}

static PyMethodDef methods[] = {
    {"dot", dot, METH_VARARGS, "dot(a, b): the sum of a[i] * b[i]."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_speedups", NULL, -1, methods};

PyMODINIT_FUNC PyInit__speedups(void) { return PyModule_Create(&module); }
