/* asynclens._core: the compiled hot paths of spans and of the scheduler and lag probes.
 *
 * Every task step and every wake-up of a watched loop runs through here:
 *
 * - TaskFields / LoopFields: the per-task and per-loop counters the step timing
 *   touches, as C fields. The Python classes TaskState and LoopState
 *   (asynclens/probes/scheduler/steps.py) subclass them and keep every other
 *   attribute and method; Python code reads and writes these fields as plain
 *   attributes.
 * - StepCall: a tracked task's wake-up callback, timed (stepcall.py's StepCall,
 *   the same accounting line by line).
 * - CallSoonHook: a watched loop's call_soon (or the stdlib loops' private
 *   _call_soon), stamping a task's wake-up ready and scheduling its StepCall
 *   (hooks.py's _make_call_soon / _make_private_call_soon).
 * - BookFields / SelectHook: the lag monitor's heartbeat around every selector
 *   wait (asynclens/probes/lag/monitor.py's LoopBook and its select wrapper).
 * - SpanFields: a live span's fields, its start, end and ids (LiveSpan's base,
 *   asynclens/tracing/spans.py), and the scheduler probe's breakdown of it.
 * - TaskMaker: the scheduler probe's create_task patch (a new task's state and
 *   lineage) and the counting of finished tasks that get no record (probe.py).
 * - The critical path across tasks and DoneCall (critical.py).
 * - fold_values: a batch of values into a histogram (stats.py).
 * - group_spans: a flushed batch of live spans by name, for the summary (aggregates.py).
 *
 * The rare paths (a loop not yet watched, an eager first step, a task that gets a
 * record, window snapshots, long steps, CPU-time steps) call back into the Python
 * code, so both implementations share them. Nothing here raises into the program: an
 * error in the bookkeeping goes to the probe's internal_error(), and the task's
 * own callback, its result and its exception pass through untouched.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#if PY_VERSION_HEX < 0x030B0000
#include <frameobject.h> /* PyFrame_GetBack, before it moved into Python.h */
#endif

/* An int as a long long: through PyLong_AsLong where that is as wide (before 3.12,
 * PyLong_AsLongLong goes through _PyLong_AsByteArray for any int past 2**30, as every
 * nanosecond timestamp is). */
#if SIZEOF_LONG >= 8
#define AS_LL(o) ((long long)PyLong_AsLong(o))
#else
#define AS_LL(o) PyLong_AsLongLong(o)
#endif

/* A tuple of n new references (stolen; NULL if making one failed): Py_BuildValue without
 * parsing its format on every span. */
static PyObject *
tuple_stealing(Py_ssize_t n, PyObject **items)
{
    PyObject *tuple = NULL;
    for (Py_ssize_t i = 0; i < n; i++)
        if (items[i] == NULL)
            goto fail;
    if ((tuple = PyTuple_New(n)) == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++)
        PyTuple_SET_ITEM(tuple, i, items[i]);
    return tuple;
fail:
    for (Py_ssize_t i = 0; i < n; i++)
        Py_XDECREF(items[i]);
    return NULL;
}
#define LL_OBJ(v) PyLong_FromLongLong(v)

#if PY_VERSION_HEX >= 0x030C0000
#define AL_LL Py_T_LONGLONG
#define AL_OBJ Py_T_OBJECT_EX
#define AL_BOOL Py_T_BOOL
#define AL_READONLY Py_READONLY
#else
#include <structmember.h>
#define AL_LL T_LONGLONG
#define AL_OBJ T_OBJECT_EX
#define AL_BOOL T_BOOL
#define AL_READONLY READONLY
#endif

/* ------------------------------------------------------------ configuration */

/* Set once by configure() from the Python side. */
static PyObject *task_type;        /* asyncio.Task */
static PyObject *task_state_type;  /* steps.TaskState (exact type, as the Python hooks check) */
static PyObject *attr_name;        /* "_asynclens_sched" */
static PyObject *finish_fn;        /* stepcall.finish_task(st, task, t) */
static Py_ssize_t fold_every = 512;
static PyObject *no_held;          /* steps.NO_HELD */
static PyObject *get_running_loop_fn, *current_task_fn; /* asyncio's, set by configure_spans() */
static PyObject *current_task_of(PyObject *loop);

static PyObject *s_busy_seen, *s_busy_finished;
static PyObject *s_describe, *s_explaining_wait, *s_cancelled, *s_exception, *s_emit_task, *s_done_state, *s_finishing_task;
static PyObject *s_self, *s_get_coro, *s_task_factory, *s_eager_start, *s_coro, *s_source_traceback, *s_tracking_task,
    *s_recording_lineage, *s_fold, *s_snapshot, *s_end, *s_long_step_ended,
    *s_done, *s_internal_error, *s_timing_step, *s_marking_ready, *s_on_error, *s_lag_selector, *s_gap_safe,
    *s_resume, *s_wake;

static int
get_optional_attr(PyObject *obj, PyObject *name, PyObject **result)
{
#if PY_VERSION_HEX >= 0x030D0000
    return PyObject_GetOptionalAttr(obj, name, result);
#else
    return _PyObject_LookupAttr(obj, name, result);
#endif
}

/* Each type's object fields, as an X-macro list, give its GC methods: traverse, clear
 * and dealloc (the fields start as None, see the tp_new functions). */
#define INIT_NONE(f) self->f = Py_NewRef(Py_None);
#define VISIT(f) Py_VISIT(self->f);
#define CLEAR(f) Py_CLEAR(self->f);
#define GC_METHODS(prefix, Type, OBJECTS)                        \
    static int prefix##_traverse(Type *self, visitproc visit, void *arg) \
    {                                                            \
        OBJECTS(VISIT)                                           \
        return 0;                                                \
    }                                                            \
    static int prefix##_clear(Type *self)                        \
    {                                                            \
        OBJECTS(CLEAR)                                           \
        return 0;                                                \
    }                                                            \
    static void prefix##_dealloc(Type *self)                     \
    {                                                            \
        PyObject_GC_UnTrack(self);                               \
        prefix##_clear(self);                                    \
        Py_TYPE(self)->tp_free((PyObject *)self);                \
    }

/* ------------------------------------------------------------ TaskFields */

/* The lints' constants: the same as probes/scheduler/lints.py's (a test compares them). */
#define HIST_BUCKETS 24
#define HIST_SHIFT 10
#define SLOW_STEP_NS 10000000LL
#define BUSY_MIN_STEPS 100

typedef struct {
    PyObject_HEAD
    PyObject *ls;
    PyObject *outer;
    PyObject *jobs;
    PyObject *call;
    PyObject *held;
    PyObject *offcpu;
    PyObject *x;
    PyObject *span;
    PyObject *task_ref;
    PyObject *parent;
    PyObject *parent_task_id;
    PyObject *site;
    PyObject *name;
    long long created_ns;
    long long ready_ns;
    long long start_ns;
    long long last_end_ns;
    long long run_ns;
    long long sched_ns;
    long long io_ns;
    long long exec_ns;
    long long steps;
    long long cpu_start;
    long long max_sched_ns;
    long long nested_ns;
    long long step_ready;
    long long first_ns;
    long long max_sched_earlier;
    long long blocked_ns;
    long long cpu_ns;
    /* lints (docs/lints.md): wake-ups, those the task scheduled itself, steps over
     * SLOW_STEP_NS, and log2 histograms of step time and ready->run wait */
    long long wakes;
    long long self_wakes;
    long long slow_steps;
    unsigned int step_hist[HIST_BUCKETS];
    unsigned int wait_hist[HIST_BUCKETS];
    char done;
} TaskFields;

/* ------------------------------------------------------------ LoopFields */

typedef struct {
    PyObject_HEAD
    PyObject *now;
    PyObject *cpu;
    PyObject *delays;
    PyObject *probe;
    PyObject *running;
    PyObject *waker;
    PyObject *creating;
    PyObject *creating_coro;
    PyObject *book;
    PyObject *timer_owner;
    long long origin;
    long long window_due;
    long long step_budget;
    long long part_ns;
    long long tasks;
    long long window_tasks;
    long long unexplained;
    char active;
} LoopFields;

static PyTypeObject TaskFieldsType, LoopFieldsType, StepCallType, CallSoonHookType;

#define TASK_OBJECTS(X) \
    X(ls) X(outer) X(jobs) X(call) X(held) X(offcpu) X(x) X(span) X(task_ref) X(parent) X(parent_task_id) X(site) X(name)
#define LOOP_OBJECTS(X) X(now) X(cpu) X(delays) X(probe) X(running) X(waker) X(creating) X(creating_coro) X(book) X(timer_owner)

static PyObject *
task_fields_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    TaskFields *self = (TaskFields *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    TASK_OBJECTS(INIT_NONE)
    return (PyObject *)self;
}

GC_METHODS(task_fields, TaskFields, TASK_OBJECTS)

#define LL_MEMBER(type, f) {#f, AL_LL, offsetof(type, f), 0, NULL},
#define OBJ_MEMBER(type, f) {#f, AL_OBJ, offsetof(type, f), 0, NULL},
#define TASK_OBJ_MEMBER(f) OBJ_MEMBER(TaskFields, f)
#define LOOP_OBJ_MEMBER(f) OBJ_MEMBER(LoopFields, f)

static PyMemberDef task_fields_members[] = {
    TASK_OBJECTS(TASK_OBJ_MEMBER)
    LL_MEMBER(TaskFields, created_ns)
    LL_MEMBER(TaskFields, ready_ns)
    LL_MEMBER(TaskFields, start_ns)
    LL_MEMBER(TaskFields, last_end_ns)
    LL_MEMBER(TaskFields, run_ns)
    LL_MEMBER(TaskFields, sched_ns)
    LL_MEMBER(TaskFields, io_ns)
    LL_MEMBER(TaskFields, exec_ns)
    LL_MEMBER(TaskFields, steps)
    LL_MEMBER(TaskFields, cpu_start)
    LL_MEMBER(TaskFields, max_sched_ns)
    LL_MEMBER(TaskFields, nested_ns)
    LL_MEMBER(TaskFields, step_ready)
    LL_MEMBER(TaskFields, first_ns)
    LL_MEMBER(TaskFields, max_sched_earlier)
    LL_MEMBER(TaskFields, blocked_ns)
    LL_MEMBER(TaskFields, cpu_ns)
    LL_MEMBER(TaskFields, wakes)
    LL_MEMBER(TaskFields, self_wakes)
    LL_MEMBER(TaskFields, slow_steps)
    {"done", AL_BOOL, offsetof(TaskFields, done), 0, NULL},
    {NULL},
};

/* A step of ``elapsed`` ns that waited ``delay`` ns for the loop: the lints' counters. */
static inline int
hist_bucket(long long ns)
{
    unsigned long long v = ns > 0 ? (unsigned long long)ns >> HIST_SHIFT : 0;
    int b = 0;
    while (v && b < HIST_BUCKETS - 1) {
        v >>= 1;
        b++;
    }
    return b;
}

static inline void
count_step(TaskFields *st, long long elapsed, long long delay)
{
    if (elapsed >= SLOW_STEP_NS)
        st->slow_steps++;
    st->step_hist[hist_bucket(elapsed)]++;
    st->wait_hist[hist_bucket(delay)]++;
}

static PyObject *
task_fields_count_step(TaskFields *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "count_step(elapsed, delay)");
        return NULL;
    }
    long long elapsed = PyLong_AsLongLong(args[0]), delay = PyLong_AsLongLong(args[1]);
    if (PyErr_Occurred())
        return NULL;
    count_step(self, elapsed, delay);
    Py_RETURN_NONE;
}

static PyObject *
hist_tuple(const unsigned int *hist)
{
    PyObject *out = PyTuple_New(HIST_BUCKETS);
    if (out == NULL)
        return NULL;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        PyObject *n = PyLong_FromUnsignedLong(hist[i]);
        if (n == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, i, n);
    }
    return out;
}

static PyObject *
task_fields_step_histogram(TaskFields *self, PyObject *unused)
{
    return hist_tuple(self->step_hist);
}

static PyObject *
task_fields_wait_histogram(TaskFields *self, PyObject *unused)
{
    return hist_tuple(self->wait_hist);
}

static PyMethodDef task_fields_methods[] = {
    {"count_step", (PyCFunction)(void (*)(void))task_fields_count_step, METH_FASTCALL,
     "count_step(elapsed, delay): a step's time and its ready->run wait, into the lints' counters"},
    {"step_histogram", (PyCFunction)task_fields_step_histogram, METH_NOARGS,
     "step times as log2 buckets (bucket 0: under 1024 ns; bucket i: [512 << i, 1024 << i) ns)"},
    {"wait_histogram", (PyCFunction)task_fields_wait_histogram, METH_NOARGS, "ready->run waits, the same buckets"},
    {NULL},
};

static PyObject *
loop_fields_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    LoopFields *self = (LoopFields *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    LOOP_OBJECTS(INIT_NONE)
    return (PyObject *)self;
}

GC_METHODS(loop_fields, LoopFields, LOOP_OBJECTS)

static PyMemberDef loop_fields_members[] = {
    LOOP_OBJECTS(LOOP_OBJ_MEMBER)
    LL_MEMBER(LoopFields, origin)
    LL_MEMBER(LoopFields, window_due)
    LL_MEMBER(LoopFields, step_budget)
    LL_MEMBER(LoopFields, part_ns)
    LL_MEMBER(LoopFields, tasks)
    LL_MEMBER(LoopFields, window_tasks)
    LL_MEMBER(LoopFields, unexplained)
    {"active", AL_BOOL, offsetof(LoopFields, active), 0, NULL},
    {NULL},
};

/* ------------------------------------------------------------ helpers */

/* The pending exception, as an object (normalised), and cleared. */
static PyObject *
take_error(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL)
        return NULL;
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

/* Raise ``raised`` again (taken by take_error), stealing the reference. */
static void
restore_error(PyObject *raised)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(raised);
#else
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(raised)), raised, PyException_GetTraceback(raised));
#endif
}

/* Report the pending error to ls.probe.internal_error(where, exc); never raises. */
static void
report_error(LoopFields *ls, PyObject *where)
{
    PyObject *exc = take_error();
    if (exc == NULL)
        return;
    if (ls != NULL && ls->probe != Py_None) {
        PyObject *r = PyObject_CallMethodObjArgs(ls->probe, s_internal_error, where, exc, NULL);
        if (r == NULL)
            PyErr_Clear();
        Py_XDECREF(r);
    }
    Py_DECREF(exc);
}

/* ls.now() as ns; -1 with an error set on failure. */
static int
call_clock(PyObject *clock, long long *out)
{
    PyObject *r = PyObject_CallNoArgs(clock);
    if (r == NULL)
        return -1;
    long long v = AS_LL(r);
    Py_DECREF(r);
    if (v == -1 && PyErr_Occurred())
        return -1;
    *out = v;
    return 0;
}

static int
call_method_discard(PyObject *obj, PyObject *name, PyObject *a, PyObject *b)
{
    PyObject *r = PyObject_CallMethodObjArgs(obj, name, a, b, NULL);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

static int
call_method_ll2(PyObject *obj, PyObject *name, long long a, long long b)
{
    PyObject *pa = PyLong_FromLongLong(a), *pb = PyLong_FromLongLong(b);
    int rc = -1;
    if (pa != NULL && pb != NULL)
        rc = call_method_discard(obj, name, pa, pb);
    Py_XDECREF(pa);
    Py_XDECREF(pb);
    return rc;
}

/* ------------------------------------------------------------ StepCall */

typedef struct {
    PyObject_HEAD
    PyObject *callback;
    PyObject *st;
    PyObject *task;
    vectorcallfunc vectorcall;
} StepCall;

static int step_begin(TaskFields *st, LoopFields *ls);
static int step_end(TaskFields *st, LoopFields *ls, PyObject *task);
static int finished_unrecorded(LoopFields *ls, TaskFields *st, PyObject *task, long long t);

static PyObject *
stepcall_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    StepCall *self = (StepCall *)op;
    /* Let go of what it was scheduled with first, so the task can reuse it. */
    PyObject *callback = self->callback, *st_obj = self->st, *task = self->task;
    self->callback = Py_NewRef(Py_None);
    self->st = Py_NewRef(Py_None);
    self->task = Py_NewRef(Py_None);
    PyObject *result;
    if (!PyObject_TypeCheck(st_obj, &TaskFieldsType) ||
        !PyObject_TypeCheck(((TaskFields *)st_obj)->ls, &LoopFieldsType)) {
        result = PyObject_Vectorcall(callback, args, nargsf, kwnames);
        goto done;
    }
    TaskFields *st = (TaskFields *)st_obj;
    LoopFields *ls = (LoopFields *)Py_NewRef(st->ls);
    if (!ls->active) {
        Py_DECREF(ls);
        result = PyObject_Vectorcall(callback, args, nargsf, kwnames);
        goto done;
    }
    if (step_begin(st, ls) < 0)
        report_error(ls, s_timing_step);
    result = PyObject_Vectorcall(callback, args, nargsf, kwnames);
    {
        PyObject *raised = result == NULL ? take_error() : NULL;
        if (step_end(st, ls, task) < 0)
            report_error(ls, s_timing_step);
        if (raised != NULL)
            restore_error(raised);
    }
    Py_DECREF(ls);
done:
    Py_DECREF(callback);
    Py_DECREF(st_obj);
    Py_DECREF(task);
    return result;
}

/* TaskState.begin inlined (the same accounting). */
static int
step_begin(TaskFields *st, LoopFields *ls)
{
    long long t;
    if (call_clock(ls->now, &t) < 0)
        return -1;
    long long ready = st->ready_ns, last = st->last_end_ns;
    if (!ready || ready > t) {
        ready = t; /* woken by nothing we saw: the whole gap was waiting */
    }
    else {
        st->ready_ns = 0;
        if (last)
            ready = ready > last ? ready : last;
        else if (ready < st->created_ns)
            ready = st->created_ns;
    }
    long long delay = t - ready;
    if (last) {
        int has_jobs = PyObject_IsTrue(st->jobs);
        if (has_jobs < 0)
            return -1;
        if (has_jobs) {
            PyObject *r = PyObject_CallMethod((PyObject *)st, "_executor_overlap", "LL", last, ready);
            if (r == NULL)
                return -1;
            long long in_pool = AS_LL(r);
            Py_DECREF(r);
            if (in_pool == -1 && PyErr_Occurred())
                return -1;
            st->exec_ns += in_pool;
            st->io_ns += ready - last - in_pool;
        }
        else {
            st->io_ns += ready - last;
        }
    }
    else {
        st->first_ns = t;
    }
    st->step_ready = ready;
    st->sched_ns += delay;
    if (delay > st->max_sched_ns)
        st->max_sched_ns = delay;
    if (PyList_Check(ls->delays)) {
        PyObject *d = PyLong_FromLongLong(delay);
        if (d == NULL)
            return -1;
        int rc = PyList_Append(ls->delays, d);
        Py_DECREF(d);
        if (rc < 0)
            return -1;
        if (PyList_GET_SIZE(ls->delays) >= fold_every && call_method_discard((PyObject *)ls, s_fold, NULL, NULL) < 0)
            return -1;
    }
    if (t >= ls->window_due) {
        PyObject *pt = PyLong_FromLongLong(t);
        if (pt == NULL)
            return -1;
        int rc = call_method_discard(ls->probe, s_snapshot, (PyObject *)ls, pt);
        Py_DECREF(pt);
        if (rc < 0)
            return -1;
    }
    /* st.outer = ls.running; ls.running = st */
    PyObject *old_outer = st->outer;
    st->outer = ls->running; /* the loop's reference moves to st.outer */
    ls->running = Py_NewRef((PyObject *)st);
    Py_DECREF(old_outer);
    st->start_ns = t;
    if (ls->cpu != Py_None && call_clock(ls->cpu, &st->cpu_start) < 0)
        return -1;
    return 0;
}

/* TaskState.end inlined when it records neither CPU time nor TaskStep records;
 * then whether the task finished. */
static int
step_end(TaskFields *st, LoopFields *ls, PyObject *task)
{
    long long t;
    if (ls->cpu != Py_None || ls->step_budget > 0) {
        if (call_clock(ls->now, &t) < 0)
            return -1;
        PyObject *pt = PyLong_FromLongLong(t);
        if (pt == NULL)
            return -1;
        int rc = call_method_discard((PyObject *)st, s_end, pt, NULL);
        Py_DECREF(pt);
        if (rc < 0)
            return -1;
    }
    else {
        if (call_clock(ls->now, &t) < 0)
            return -1;
        long long elapsed = t - st->start_ns;
        if (elapsed >= ls->part_ns && call_method_ll2((PyObject *)st, s_long_step_ended, st->start_ns, t) < 0)
            return -1;
        count_step(st, elapsed, st->start_ns - st->step_ready);
        long long nested = st->nested_ns;
        if (nested) {
            st->run_ns += elapsed - nested;
            st->sched_ns += nested;
            st->nested_ns = 0;
        }
        else {
            st->run_ns += elapsed;
        }
        st->steps += 1;
        st->start_ns = 0;
        st->last_end_ns = t;
        PyObject *outer = st->outer, *old_running = ls->running;
        ls->running = Py_NewRef(outer);
        Py_DECREF(old_running);
        if (outer != Py_None) { /* an eager first step ran inside the outer task's step */
            if (PyObject_TypeCheck(outer, &TaskFieldsType))
                ((TaskFields *)outer)->nested_ns += elapsed;
            st->outer = Py_NewRef(Py_None);
            Py_DECREF(outer);
        }
    }
    PyObject *done = PyObject_CallMethodNoArgs(task, s_done);
    if (done == NULL)
        return -1;
    int is_done = PyObject_IsTrue(done);
    Py_DECREF(done);
    if (is_done < 0)
        return -1;
    if (!is_done)
        return 0;
    int counted = finished_unrecorded(ls, st, task, st->last_end_ns);
    if (counted < 0)
        return -1;
    if (!counted && finish_fn != NULL) {
        PyObject *pt = PyLong_FromLongLong(st->last_end_ns);
        if (pt == NULL)
            return -1;
        PyObject *r = PyObject_CallFunctionObjArgs(finish_fn, (PyObject *)st, task, pt, NULL);
        Py_DECREF(pt);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    return 0;
}

static PyObject *
stepcall_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *callback = Py_None, *st = Py_None, *task = Py_None;
    static char *kwlist[] = {"callback", "st", "task", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OOO:StepCall", kwlist, &callback, &st, &task))
        return NULL;
    StepCall *self = (StepCall *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->callback = Py_NewRef(callback);
    self->st = Py_NewRef(st);
    self->task = Py_NewRef(task);
    self->vectorcall = stepcall_vectorcall;
    return (PyObject *)self;
}

#define STEPCALL_OBJECTS(X) X(callback) X(st) X(task)
GC_METHODS(stepcall, StepCall, STEPCALL_OBJECTS)

/* StepCall and DoneCall stand in for a callback (their first field): attributes they do
 * not have (__self__, __qualname__, ...) and their repr are the callback's, so asyncio's
 * handle reprs and slow-callback warnings name the task. */
typedef struct {
    PyObject_HEAD
    PyObject *callback;
} CallbackProxy;

static PyObject *
proxy_getattro(PyObject *op, PyObject *name)
{
    PyObject *r = PyObject_GenericGetAttr(op, name);
    if (r != NULL || !PyErr_ExceptionMatches(PyExc_AttributeError))
        return r;
    PyErr_Clear();
    return PyObject_GetAttr(((CallbackProxy *)op)->callback, name);
}

static PyObject *
proxy_repr(PyObject *op)
{
    return PyObject_Repr(((CallbackProxy *)op)->callback);
}

static PyMemberDef stepcall_members[] = {
    {"callback", AL_OBJ, offsetof(StepCall, callback), 0, NULL},
    {"st", AL_OBJ, offsetof(StepCall, st), 0, NULL},
    {"task", AL_OBJ, offsetof(StepCall, task), 0, NULL},
    {NULL},
};

/* ------------------------------------------------------------ CallSoonHook */

/* ------------------------------------------------------------ critical path */

/* A task's wait that another task's work ended is explained by that task's own
 * critical-path time over the wait (critical.py's explain_wait and _explain, steps.py's
 * critical_at, totals_at and blocked_at, the same arithmetic; DoneCall and done_call). */

/* The five ints of a critical-path tuple (st.x); -1 with an error set if it is not one. */
static int
read_five(PyObject *tuple, long long out[5])
{
    if (!PyTuple_Check(tuple) || PyTuple_GET_SIZE(tuple) != 5) {
        PyErr_SetString(PyExc_TypeError, "a critical-path adjustment must be a 5-tuple");
        return -1;
    }
    for (int i = 0; i < 5; i++) {
        out[i] = AS_LL(PyTuple_GET_ITEM(tuple, i));
        if (out[i] == -1 && PyErr_Occurred())
            return -1;
    }
    return 0;
}

/* TaskState.blocked_at: off-CPU time inside steps up to t; -1 with an error set. */
static int
blocked_at(TaskFields *st, long long t, long long *out)
{
    PyObject *off = st->offcpu;
    long long start = st->start_ns;
    *out = st->blocked_ns;
    if (off == Py_None || !start || t <= start)
        return 0;
    if (!PyTuple_Check(off) || PyTuple_GET_SIZE(off) != 2) {
        PyErr_SetString(PyExc_TypeError, "TaskState.offcpu must be a 2-tuple or None");
        return -1;
    }
    PyObject *share = PyTuple_GET_ITEM(off, 1);
    long long since = AS_LL(PyTuple_GET_ITEM(off, 0));
    if (since == -1 && PyErr_Occurred())
        return -1;
    if (since != start || share == Py_None)
        return 0;
    double fraction = PyFloat_AsDouble(share);
    if (fraction == -1.0 && PyErr_Occurred())
        return -1;
    if (fraction != 0.0)
        *out += (long long)((double)(t - start) * fraction);
    return 0;
}

/* TaskState.critical_at: (cpu, blocked, sched, io, executor) along the task's critical path up to t. */
static int
critical_at(TaskFields *st, long long t, long long out[5])
{
    long long run = st->run_ns, sched = st->sched_ns, blocked, x[5];
    if (st->start_ns) {
        run += t - st->start_ns - st->nested_ns;
        sched += st->nested_ns;
    }
    if (st->done && !st->start_ns && t > st->last_end_ns)
        sched += t - st->last_end_ns;
    if (blocked_at(st, t, &blocked) < 0 || read_five(st->x, x) < 0)
        return -1;
    out[0] = run - blocked + x[0];
    out[1] = blocked + x[1];
    out[2] = sched + x[2];
    out[3] = st->io_ns + x[3];
    out[4] = st->exec_ns + x[4];
    return 0;
}

/* critical._explain: st's wait, from its last step (or the waker's creation) to ready. */
static int
explain(TaskFields *st, TaskFields *waker, LoopFields *ls, long long ready)
{
    long long begin = st->last_end_ns > waker->created_ns ? st->last_end_ns : waker->created_ns;
    if (ready <= begin)
        return 0;
    if (waker->first_ns && waker->first_ns < begin) { /* the waker ran before the wait began */
        ls->unexplained++;
        return 0;
    }
    long long c[5], x[5];
    if (critical_at(waker, ready, c) < 0 || read_five(st->x, x) < 0)
        return -1;
    c[2] -= begin - waker->created_ns; /* before begin the waker was only waiting to start */
    long long sum[5] = {x[0] + c[0], x[1] + c[1], x[2] + c[2], x[3] + c[3] - (ready - begin), x[4] + c[4]};
    PyObject *nx = PyTuple_New(5);
    if (nx == NULL)
        return -1;
    for (int i = 0; i < 5; i++) {
        PyObject *v = PyLong_FromLongLong(sum[i]);
        if (v == NULL) {
            Py_DECREF(nx);
            return -1;
        }
        PyTuple_SET_ITEM(nx, i, v);
    }
    Py_SETREF(st->x, nx);
    long long longest = 0;
    if (PyTuple_Check(st->held) && PyTuple_GET_SIZE(st->held) == 2) {
        longest = AS_LL(PyTuple_GET_ITEM(st->held, 0));
        if (longest == -1 && PyErr_Occurred())
            return -1;
    }
    if (ready - begin <= longest)
        return 0;
    PyObject *who = PyObject_CallMethodNoArgs((PyObject *)waker, s_describe);
    if (who == NULL)
        return -1;
    PyObject *items[2] = {LL_OBJ(ready - begin), who};
    PyObject *held = tuple_stealing(2, items);
    if (held == NULL)
        return -1;
    Py_SETREF(st->held, held);
    return 0;
}

/* critical.explain_wait: st was just marked ready; explain its wait by its waker's time. */
static void
explain_wait(TaskFields *st, PyObject *arg, LoopFields *ls)
{
    PyObject *waker = NULL;
    if (arg != Py_None && PyObject_TypeCheck(arg, (PyTypeObject *)task_type)) {
        if (get_optional_attr(arg, attr_name, &waker) < 0)
            goto error;
        if (waker != NULL && (PyObject *)Py_TYPE(waker) != task_state_type)
            Py_CLEAR(waker);
    }
    if (waker == NULL)
        waker = Py_NewRef(ls->waker != Py_None ? ls->waker : ls->running);
    int jobs = PyObject_IsTrue(st->jobs);
    if (jobs < 0) {
        Py_DECREF(waker);
        goto error;
    }
    if (waker != (PyObject *)st && !jobs && PyObject_TypeCheck(waker, &TaskFieldsType)
        && explain(st, (TaskFields *)waker, ls, st->ready_ns) < 0) {
        Py_DECREF(waker);
        goto error;
    }
    Py_DECREF(waker);
    return;
error:
    report_error(ls, s_explaining_wait);
}

typedef struct {
    PyObject_HEAD
    PyObject *callback;
    PyObject *st;
    PyObject *ls;
    vectorcallfunc vectorcall;
} DoneCall;

static PyTypeObject DoneCallType;

/* A finished task's done callback: while it runs, wake-ups are explained by the task's time. */
static PyObject *
donecall_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    DoneCall *self = (DoneCall *)op;
    LoopFields *ls = (LoopFields *)self->ls;
    PyObject *outer = ls->waker; /* its reference moves here */
    ls->waker = Py_NewRef(self->st);
    PyObject *r = PyObject_Vectorcall(self->callback, args, nargsf, kwnames);
    Py_SETREF(ls->waker, outer);
    return r;
}

#define DONECALL_OBJECTS(X) X(callback) X(st) X(ls)
GC_METHODS(donecall, DoneCall, DONECALL_OBJECTS)

static PyMemberDef donecall_members[] = {
    {"callback", AL_OBJ, offsetof(DoneCall, callback), AL_READONLY, NULL},
    {"st", AL_OBJ, offsetof(DoneCall, st), AL_READONLY, NULL},
    {"ls", AL_OBJ, offsetof(DoneCall, ls), AL_READONLY, NULL},
    {NULL},
};

/* critical.done_call: ``callback`` as a DoneCall when ``task`` is a tracked task that finished. */
static PyObject *
done_call(PyObject *callback, PyObject *task, LoopFields *ls)
{
    if (Py_IS_TYPE(callback, &DoneCallType))
        return Py_NewRef(callback);
    PyObject *st = NULL;
    if (get_optional_attr(task, attr_name, &st) < 0)
        return NULL;
    if (st == NULL || (PyObject *)Py_TYPE(st) != task_state_type) {
        Py_XDECREF(st);
        return Py_NewRef(callback);
    }
    PyObject *done = PyObject_CallMethodNoArgs(task, s_done);
    int is_done = done != NULL ? PyObject_IsTrue(done) : -1;
    Py_XDECREF(done);
    if (is_done <= 0) {
        Py_DECREF(st);
        return is_done < 0 ? NULL : Py_NewRef(callback);
    }
    DoneCall *call = (DoneCall *)DoneCallType.tp_alloc(&DoneCallType, 0);
    if (call == NULL) {
        Py_DECREF(st);
        return NULL;
    }
    call->callback = Py_NewRef(callback);
    call->st = st;
    call->ls = Py_NewRef((PyObject *)ls);
    call->vectorcall = donecall_vectorcall;
    return (PyObject *)call;
}


typedef struct {
    PyObject_HEAD
    PyObject *ls;
    PyObject *original;
    int private_form; /* _call_soon(callback, args, context) rather than call_soon(callback, *args, context=) */
    vectorcallfunc vectorcall;
} CallSoonHook;

/* The task a wake-up callback belongs to (its __self__), borrowed-or-new in *owner; 0 if none. */
static int
owner_of(PyObject *callback, PyObject **owner)
{
    *owner = NULL;
    if (PyMethod_Check(callback)) {
        *owner = Py_NewRef(PyMethod_GET_SELF(callback));
        return 0;
    }
    if (PyCFunction_Check(callback)) {
        PyObject *self = PyCFunction_GET_SELF(callback);
        *owner = self != NULL ? Py_NewRef(self) : NULL;
        return 0;
    }
    if (PyFunction_Check(callback))
        return 0;
    return get_optional_attr(callback, s_self, owner) < 0 ? -1 : 0;
}

/* Bind ``st`` to ``task`` (steps.TaskState.bind): a weak reference to the task, and the
 * state under attr_name on it. */
static int
bind_task(TaskFields *st, PyObject *task)
{
    PyObject *ref = PyWeakref_NewRef(task, NULL);
    if (ref == NULL)
        return -1;
    Py_SETREF(st->task_ref, ref);
    return PyObject_SetAttr(task, attr_name, (PyObject *)st);
}

/* LoopState.adopt: the state of ``task`` (new reference) if create_task() is making it now
 * (its first step is being scheduled from Task.__init__), bound to it; else None. */
static PyObject *
adopt_task(LoopFields *ls, PyObject *task)
{
    PyObject *creating = ls->creating;
    if ((PyObject *)Py_TYPE(creating) != task_state_type || ((TaskFields *)creating)->task_ref != Py_None)
        Py_RETURN_NONE;
    PyObject *coro = PyObject_CallMethodNoArgs(task, s_get_coro);
    if (coro == NULL)
        return NULL;
    int same = coro == ls->creating_coro;
    Py_DECREF(coro);
    if (!same)
        Py_RETURN_NONE;
    Py_INCREF(creating); /* bind_task may run Python code (a task's __setattr__) that replaces ls->creating */
    if (bind_task((TaskFields *)creating, task) < 0) {
        Py_DECREF(creating);
        return NULL;
    }
    return creating;
}

/* Mark st ready and return the callback to schedule (new reference), or NULL with an error. */
static PyObject *
wake_task(CallSoonHook *hook, LoopFields *ls, PyObject *callback, PyObject *owner, PyObject *arg, int one_arg)
{
    PyObject *st_obj = NULL;
    if (get_optional_attr(owner, attr_name, &st_obj) < 0)
        return NULL;
    if (st_obj == NULL || st_obj == Py_None) { /* a task inside create_task(): its first step is being scheduled */
        Py_XDECREF(st_obj);
        st_obj = adopt_task(ls, owner);
        if (st_obj == NULL)
            return NULL;
    }
    if ((PyObject *)Py_TYPE(st_obj) != task_state_type) {
        Py_DECREF(st_obj);
        return Py_NewRef(callback);
    }
    TaskFields *st = (TaskFields *)st_obj;
    if (!st->ready_ns) {
        long long t;
        if (call_clock(ls->now, &t) < 0)
            goto error;
        long long origin = ls->origin;
        st->ready_ns = (0 < origin && origin < t) ? origin : t;
        st->wakes++;
        if (ls->running == st_obj || ls->timer_owner == st_obj) { /* woken by itself (docs/lints.md) */
            if (++st->self_wakes == BUSY_MIN_STEPS && call_method_discard(ls->probe, s_busy_seen, st_obj, NULL) < 0)
                report_error(ls, s_marking_ready);
        }
        if (st->last_end_ns && (ls->running != Py_None || ls->waker != Py_None || one_arg))
            explain_wait(st, one_arg ? arg : Py_None, ls);
    }
    PyObject *scheduled;
    if (Py_IS_TYPE(callback, &StepCallType)) {
        scheduled = Py_NewRef(callback);
    }
    else {
        StepCall *call = (StepCall *)st->call;
        if (Py_IS_TYPE(st->call, &StepCallType) && call->st == Py_None) {
            Py_INCREF(call);
        }
        else { /* first wake-up, or the last one has not run yet */
            call = (StepCall *)StepCallType.tp_alloc(&StepCallType, 0);
            if (call == NULL)
                goto error;
            call->callback = Py_NewRef(Py_None);
            call->st = Py_NewRef(Py_None);
            call->task = Py_NewRef(Py_None);
            call->vectorcall = stepcall_vectorcall;
            if (st->call == Py_None)
                Py_SETREF(st->call, Py_NewRef((PyObject *)call));
        }
        Py_SETREF(call->callback, Py_NewRef(callback));
        Py_SETREF(call->st, Py_NewRef(st_obj));
        Py_SETREF(call->task, Py_NewRef(owner));
        scheduled = (PyObject *)call;
    }
    Py_DECREF(st_obj);
    return scheduled;
error:
    Py_DECREF(st_obj);
    return NULL;
}

/* The callback to schedule in place of ``callback`` (new reference); never NULL
 * unless memory runs out: a bookkeeping error is reported and the callback kept. */
static PyObject *
hooked_callback(CallSoonHook *hook, PyObject *callback, PyObject *arg, int one_arg)
{
    LoopFields *ls = (LoopFields *)hook->ls;
    if (!ls->active)
        return Py_NewRef(callback);
    PyObject *owner = NULL, *result = NULL;
    if (owner_of(callback, &owner) < 0)
        goto error;
    if (owner != NULL && PyObject_TypeCheck(owner, (PyTypeObject *)task_type)) {
        /* a task's wake-up (others: no attribute lookup) */
        result = wake_task(hook, ls, callback, owner, arg, one_arg);
    }
    else if (one_arg && PyObject_TypeCheck(arg, (PyTypeObject *)task_type)) {
        result = done_call(callback, arg, ls);
    }
    else {
        result = Py_NewRef(callback);
    }
    Py_XDECREF(owner);
    if (result != NULL)
        return result;
error:
    report_error(ls, s_marking_ready);
    return Py_NewRef(callback);
}

static PyObject *
hook_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    CallSoonHook *hook = (CallSoonHook *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 1 || !PyObject_TypeCheck(hook->ls, &LoopFieldsType))
        return PyObject_Vectorcall(hook->original, args, nargs, kwnames);
    PyObject *callback;
    if (hook->private_form) { /* _call_soon(callback, args, context) */
        if (nargs != 3 || kwnames != NULL || !PyTuple_Check(args[1]))
            return PyObject_Vectorcall(hook->original, args, nargs, kwnames);
        PyObject *cargs = args[1];
        int one = PyTuple_GET_SIZE(cargs) == 1;
        callback = hooked_callback(hook, args[0], one ? PyTuple_GET_ITEM(cargs, 0) : Py_None, one);
    }
    else { /* call_soon(callback, *args, context=None) */
        int one = nargs == 2;
        callback = hooked_callback(hook, args[0], one ? args[1] : Py_None, one);
    }
    if (callback == NULL)
        return NULL;
    Py_ssize_t total = nargs + (kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0);
    PyObject *small[8];
    PyObject **copy = total <= 8 ? small : PyMem_Malloc(total * sizeof(PyObject *));
    if (copy == NULL) {
        Py_DECREF(callback);
        return PyErr_NoMemory();
    }
    copy[0] = callback;
    for (Py_ssize_t i = 1; i < total; i++)
        copy[i] = args[i];
    PyObject *r = PyObject_Vectorcall(hook->original, copy, nargs, kwnames);
    if (copy != small)
        PyMem_Free(copy);
    Py_DECREF(callback);
    return r;
}

static PyObject *
hook_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *ls, *original;
    int private_form = 0;
    static char *kwlist[] = {"ls", "original", "private", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|p:CallSoonHook", kwlist, &ls, &original, &private_form))
        return NULL;
    CallSoonHook *self = (CallSoonHook *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->ls = Py_NewRef(ls);
    self->original = Py_NewRef(original);
    self->private_form = private_form;
    self->vectorcall = hook_vectorcall;
    return (PyObject *)self;
}

#define HOOK_OBJECTS(X) X(ls) X(original)
GC_METHODS(hook, CallSoonHook, HOOK_OBJECTS)

static PyMemberDef hook_members[] = {
    {"ls", AL_OBJ, offsetof(CallSoonHook, ls), AL_READONLY, NULL},
    {"original", AL_OBJ, offsetof(CallSoonHook, original), AL_READONLY, NULL},
    {NULL},
};

/* ------------------------------------------------------------ TaskMaker */

/* The scheduler probe's create_task patch (probe.py's SchedulerProbe._create_task, the
 * common case): a new task gets its TaskState, its lineage (the span current at its
 * creation, its parent task, the line that created it: a code object and a line number,
 * nothing formatted) and is bound to it. Everything else (a loop not yet watched, an
 * eager first step, the probe stopped) goes to the Python method, ``slow``. */

static PyObject *span_var;       /* _state.context.current_span */
static PyObject *handle_run;     /* asyncio.events.Handle._run.__code__ */
static PyObject *hidden_dirs;    /* (asyncio's directory, asynclens's), prefixes of hidden files */
static PyObject *drop_own_frames_fn; /* probe._drop_own_frames(source_traceback) */
static PyObject *no_x;           /* steps.NO_X */
static int eager_tasks;          /* 3.12+: eager_start and eager task factories */
#define SITE_DEPTH 8

typedef struct {
    PyObject_HEAD
    PyObject *probe;
    PyObject *slow;
    PyObject *now;
    long long tracked;
    /* finished tasks (probe.task_finished with task_records="notable", the common case) */
    int notable_mode;
    long long notable_ns, per_second;
    long long finished, unrecorded, over_budget;
    long long budget_until, budget_left, budget_life, budget_wait; /* this second's budget, as probe._budget */
    vectorcallfunc vectorcall;
} TaskMaker;

static PyTypeObject TaskMakerType;

/* A new TaskState of ``ls`` created at ``t``, as TaskState.__init__ makes it. */
static PyObject *
new_task_state(PyObject *ls, long long t)
{
    TaskFields *st = (TaskFields *)task_fields_new((PyTypeObject *)task_state_type, NULL, NULL);
    if (st == NULL)
        return NULL;
    Py_SETREF(st->ls, Py_NewRef(ls));
    Py_SETREF(st->x, Py_NewRef(no_x));
    Py_SETREF(st->held, Py_NewRef(no_held));
    st->created_ns = st->ready_ns = t;
    return (PyObject *)st;
}

/* Whether a code object is hidden (asyncio's or ours) is kept in its co_extra slot, the
 * per-code scratch space CPython offers tools (a dict keyed by code objects would hash
 * each one, which CPython does not cache, on every lookup). */
#if PY_VERSION_HEX >= 0x030C0000
#define REQUEST_CODE_EXTRA PyUnstable_Eval_RequestCodeExtraIndex
#define GET_CODE_EXTRA PyUnstable_Code_GetExtra
#define SET_CODE_EXTRA PyUnstable_Code_SetExtra
#else
#define REQUEST_CODE_EXTRA _PyEval_RequestCodeExtraIndex
#define GET_CODE_EXTRA _PyCode_GetExtra
#define SET_CODE_EXTRA _PyCode_SetExtra
#endif
static Py_ssize_t code_extra = -1; /* our co_extra index, or -1 when none could be had */
#define CODE_HIDDEN ((void *)1)
#define CODE_SHOWN ((void *)2)

/* Whether code object ``code`` is asyncio's or asynclens's; -1 on error. */
static int
is_hidden(PyObject *code)
{
    void *known = NULL;
    if (code_extra >= 0) {
        if (GET_CODE_EXTRA(code, code_extra, &known) < 0)
            PyErr_Clear();
        if (known == CODE_HIDDEN || known == CODE_SHOWN)
            return known == CODE_HIDDEN;
    }
    PyObject *filename = PyObject_GetAttrString(code, "co_filename");
    if (filename == NULL)
        return -1;
    int hidden = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(hidden_dirs) && !hidden; i++) {
        Py_ssize_t at = PyUnicode_Tailmatch(filename, PyTuple_GET_ITEM(hidden_dirs, i), 0, PY_SSIZE_T_MAX, -1);
        if (at < 0) {
            Py_DECREF(filename);
            return -1;
        }
        hidden = (int)at;
    }
    Py_DECREF(filename);
    if (code_extra >= 0 && SET_CODE_EXTRA(code, code_extra, hidden ? CODE_HIDDEN : CODE_SHOWN) < 0)
        PyErr_Clear();
    return hidden;
}

/* st.site: (code, line) of the innermost frame that is neither asyncio's nor ours,
 * within SITE_DEPTH frames, unless a loop callback (Handle._run) comes first. */
static int
find_site(TaskFields *st)
{
    PyFrameObject *frame = PyEval_GetFrame();
    Py_XINCREF(frame);
    int rc = 0;
    for (int depth = 0; frame != NULL && depth < SITE_DEPTH; depth++) {
        PyCodeObject *code = PyFrame_GetCode(frame);
        if ((PyObject *)code == handle_run) {
            Py_DECREF(code);
            break;
        }
        int hidden = is_hidden((PyObject *)code);
        if (hidden < 0) {
            Py_DECREF(code);
            rc = -1;
            break;
        }
        if (!hidden) {
            PyObject *line = PyLong_FromLong(PyFrame_GetLineNumber(frame));
            PyObject *site = line != NULL ? PyTuple_Pack(2, (PyObject *)code, line) : NULL;
            Py_DECREF(code);
            Py_XDECREF(line);
            if (site == NULL) {
                rc = -1;
                break;
            }
            Py_SETREF(st->site, site);
            break;
        }
        Py_DECREF(code);
        PyFrameObject *back = PyFrame_GetBack(frame);
        Py_DECREF(frame);
        frame = back;
    }
    Py_XDECREF(frame);
    return rc;
}

/* probe._lineage: the span current at creation, the parent task, the creating line. */
static int
record_lineage(TaskFields *st, PyObject *loop)
{
    PyObject *span;
    if (PyContextVar_Get(span_var, Py_None, &span) < 0)
        return -1;
    Py_SETREF(st->span, span);
    PyObject *running = PyObject_CallNoArgs(get_running_loop_fn);
    if (running == NULL)
        return -1;
    int here = running == loop;
    Py_DECREF(running);
    if (here) {
        PyObject *parent = current_task_of(loop);
        if (parent == NULL)
            return -1;
        if (parent != Py_None) {
            PyObject *id = PyLong_FromVoidPtr(parent), *parent_state = NULL;
            if (id == NULL || get_optional_attr(parent, attr_name, &parent_state) < 0) {
                Py_XDECREF(id);
                Py_DECREF(parent);
                return -1;
            }
            Py_SETREF(st->parent_task_id, id);
            if (parent_state != NULL && (PyObject *)Py_TYPE(parent_state) == task_state_type) {
                PyObject *ref = PyWeakref_NewRef(parent_state, NULL);
                if (ref == NULL) {
                    Py_DECREF(parent_state);
                    Py_DECREF(parent);
                    return -1;
                }
                Py_SETREF(st->parent, ref);
            }
            Py_XDECREF(parent_state);
        }
        Py_DECREF(parent);
    }
    return find_site(st);
}

/* Whether this create_task() call may run the task's first step eagerly (3.12+), which
 * only the Python method times; -1 on error. */
static int
may_start_eagerly(PyObject *loop, PyObject *kwargs)
{
    if (!eager_tasks)
        return 0;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs)) {
        PyObject *eager = PyDict_GetItemWithError(kwargs, s_eager_start); /* borrowed */
        if (eager == NULL && PyErr_Occurred())
            return -1;
        int truthy = eager != NULL ? PyObject_IsTrue(eager) : 0;
        if (truthy != 0)
            return truthy;
    }
    PyObject *factory = NULL;
    if (get_optional_attr(loop, s_task_factory, &factory) < 0)
        return -1;
    int set = factory != NULL && factory != Py_None;
    Py_XDECREF(factory);
    return set;
}

/* After create_task() returned ``task``: bind it (when the call_soon hook did not), trim
 * asynclens's frames from a debug-mode creation traceback, count it. */
static void
task_made(TaskMaker *self, LoopFields *ls, TaskFields *st, PyObject *task)
{
    if (st->task_ref == Py_None && bind_task(st, task) < 0) { /* a task type without __dict__/weakrefs */
        PyErr_Clear();
        return;
    }
    PyObject *tb = NULL;
    if (get_optional_attr(task, s_source_traceback, &tb) < 0) {
        PyErr_Clear();
        return;
    }
    if (tb != NULL) {
        int debug = PyObject_IsTrue(tb);
        PyObject *r = debug > 0 ? PyObject_CallOneArg(drop_own_frames_fn, tb) : NULL;
        Py_XDECREF(r);
        Py_DECREF(tb);
        if (debug < 0 || (debug > 0 && r == NULL)) {
            PyErr_Clear();
            return;
        }
    }
    self->tracked++;
    ls->tasks++;
    ls->window_tasks++;
}

/* maker(wrapped, instance, args, kwargs): the patch's wrapper (wrapt's convention). */
static PyObject *
maker_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    TaskMaker *self = (TaskMaker *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 4 || kwnames != NULL || !PyTuple_Check(args[2]) || !PyDict_Check(args[3]) || args[1] == Py_None)
        return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
    PyObject *wrapped = args[0], *loop = args[1], *cargs = args[2], *kwargs = args[3];
    PyObject *ls_obj = NULL;
    if (get_optional_attr(loop, attr_name, &ls_obj) < 0)
        PyErr_Clear();
    if (ls_obj == NULL || !PyObject_TypeCheck(ls_obj, &LoopFieldsType) || ((LoopFields *)ls_obj)->probe != self->probe
        || !((LoopFields *)ls_obj)->active) {
        Py_XDECREF(ls_obj);
        return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
    }
    LoopFields *ls = (LoopFields *)ls_obj;
    int eager = may_start_eagerly(loop, kwargs);
    if (eager != 0) {
        if (eager < 0)
            PyErr_Clear();
        Py_DECREF(ls_obj);
        return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
    }
    long long t;
    PyObject *st_obj = call_clock(self->now, &t) < 0 ? NULL : new_task_state(ls_obj, t);
    if (st_obj == NULL) {
        report_error(ls, s_tracking_task);
        Py_DECREF(ls_obj);
        return PyObject_Call(wrapped, cargs, kwargs);
    }
    TaskFields *st = (TaskFields *)st_obj;
    if (record_lineage(st, loop) < 0)
        report_error(ls, s_recording_lineage);
    PyObject *coro = PyTuple_GET_SIZE(cargs) ? PyTuple_GET_ITEM(cargs, 0) : PyDict_GetItemWithError(kwargs, s_coro);
    if (coro == NULL) {
        PyErr_Clear(); /* create_task() itself says what is missing */
        coro = Py_None;
    }
    /* Task.__init__ schedules the first step through call_soon, where the hook adopts the task */
    PyObject *outer = ls->creating, *outer_coro = ls->creating_coro; /* their references move here */
    ls->creating = Py_NewRef(st_obj);
    ls->creating_coro = Py_NewRef(coro);
    PyObject *task = PyObject_Call(wrapped, cargs, kwargs);
    Py_SETREF(ls->creating, outer);
    Py_SETREF(ls->creating_coro, outer_coro);
    if (task != NULL)
        task_made(self, ls, st, task);
    Py_DECREF(st_obj);
    Py_DECREF(ls_obj);
    return task;
}

static PyObject *
maker_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *probe, *slow, *now;
    int notable_mode = 0;
    long long notable_ns = 0, per_second = 0;
    static char *kwlist[] = {"probe", "slow", "now", "notable_mode", "notable_ns", "per_second", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO|pLL:TaskMaker", kwlist, &probe, &slow, &now, &notable_mode,
                                     &notable_ns, &per_second))
        return NULL;
    if (span_var == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "asynclens._core: task creation is not configured");
        return NULL;
    }
    TaskMaker *self = (TaskMaker *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->probe = Py_NewRef(probe);
    self->slow = Py_NewRef(slow);
    self->now = Py_NewRef(now);
    self->notable_mode = notable_mode;
    self->notable_ns = notable_ns;
    self->per_second = per_second;
    self->vectorcall = maker_vectorcall;
    return (PyObject *)self;
}

#define MAKER_OBJECTS(X) X(probe) X(slow) X(now)
GC_METHODS(maker, TaskMaker, MAKER_OBJECTS)

static PyMemberDef maker_members[] = {
    {"probe", AL_OBJ, offsetof(TaskMaker, probe), AL_READONLY, NULL},
    {"slow", AL_OBJ, offsetof(TaskMaker, slow), AL_READONLY, NULL},
    LL_MEMBER(TaskMaker, tracked)
    LL_MEMBER(TaskMaker, finished)
    LL_MEMBER(TaskMaker, unrecorded)
    LL_MEMBER(TaskMaker, over_budget)
    {NULL},
};

static PyObject *
configure_tasks(PyObject *module, PyObject *args, PyObject *kwds)
{
    PyObject *var, *run, *dirs, *drop, *x, *held;
    int eager = 0;
    static char *kwlist[] = {"span_var", "handle_run", "hidden_dirs", "drop_own_frames", "no_x", "no_held", "eager",
                             NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OO!OOOp:configure_tasks", kwlist, &PyContextVar_Type, &var, &run,
                                     &PyTuple_Type, &dirs, &drop, &x, &held, &eager))
        return NULL;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(dirs); i++) {
        if (!PyUnicode_Check(PyTuple_GET_ITEM(dirs, i))) {
            PyErr_SetString(PyExc_TypeError, "hidden_dirs must be a tuple of str");
            return NULL;
        }
    }
    if (get_running_loop_fn == NULL || task_state_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "asynclens._core: configure spans and steps before task creation");
        return NULL;
    }
    Py_XSETREF(span_var, Py_NewRef(var));
    if (code_extra < 0)
        code_extra = REQUEST_CODE_EXTRA(NULL);
    Py_XSETREF(handle_run, Py_NewRef(run));
    Py_XSETREF(hidden_dirs, Py_NewRef(dirs));
    Py_XSETREF(drop_own_frames_fn, Py_NewRef(drop));
    Py_XSETREF(no_x, Py_NewRef(x));
    Py_XSETREF(no_held, Py_NewRef(held));
    eager_tasks = eager;
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------ types */

static PyTypeObject TaskFieldsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "asynclens._core.TaskFields",
    .tp_doc = "The per-task counters a step's timing touches (TaskState's base).",
    .tp_basicsize = sizeof(TaskFields),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = task_fields_new,
    .tp_dealloc = (destructor)task_fields_dealloc,
    .tp_traverse = (traverseproc)task_fields_traverse,
    .tp_clear = (inquiry)task_fields_clear,
    .tp_members = task_fields_members,
    .tp_methods = task_fields_methods,
};

static PyTypeObject LoopFieldsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "asynclens._core.LoopFields",
    .tp_doc = "The per-loop state a step's timing touches (LoopState's base).",
    .tp_basicsize = sizeof(LoopFields),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = loop_fields_new,
    .tp_dealloc = (destructor)loop_fields_dealloc,
    .tp_traverse = (traverseproc)loop_fields_traverse,
    .tp_clear = (inquiry)loop_fields_clear,
    .tp_members = loop_fields_members,
};

static PyTypeObject StepCallType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "asynclens._core.StepCall",
    .tp_doc = "A tracked task's wake-up as the loop runs it, timed.",
    .tp_basicsize = sizeof(StepCall),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = stepcall_new,
    .tp_dealloc = (destructor)stepcall_dealloc,
    .tp_traverse = (traverseproc)stepcall_traverse,
    .tp_clear = (inquiry)stepcall_clear,
    .tp_members = stepcall_members,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(StepCall, vectorcall),
    .tp_getattro = proxy_getattro,
    .tp_repr = proxy_repr,
};

static PyTypeObject TaskMakerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "asynclens._core.TaskMaker",
    .tp_doc = "TaskMaker(probe, slow, now): the scheduler probe's create_task wrapper, wrapper(wrapped, instance, args, kwargs).",
    .tp_basicsize = sizeof(TaskMaker),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = maker_new,
    .tp_dealloc = (destructor)maker_dealloc,
    .tp_traverse = (traverseproc)maker_traverse,
    .tp_clear = (inquiry)maker_clear,
    .tp_members = maker_members,
    .tp_vectorcall_offset = offsetof(TaskMaker, vectorcall),
    .tp_call = PyVectorcall_Call,
};

static PyTypeObject DoneCallType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "asynclens._core.DoneCall",
    .tp_doc = "A finished task's done callback: while it runs, wake-ups are explained by the task's time.",
    .tp_basicsize = sizeof(DoneCall),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_dealloc = (destructor)donecall_dealloc,
    .tp_traverse = (traverseproc)donecall_traverse,
    .tp_clear = (inquiry)donecall_clear,
    .tp_members = donecall_members,
    .tp_getattro = proxy_getattro,
    .tp_repr = proxy_repr,
    .tp_vectorcall_offset = offsetof(DoneCall, vectorcall),
    .tp_call = PyVectorcall_Call,
};

static PyTypeObject CallSoonHookType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "asynclens._core.CallSoonHook",
    .tp_doc = "A watched loop's call_soon: stamps a task's wake-up ready and schedules its StepCall.",
    .tp_basicsize = sizeof(CallSoonHook),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = hook_new,
    .tp_dealloc = (destructor)hook_dealloc,
    .tp_traverse = (traverseproc)hook_traverse,
    .tp_clear = (inquiry)hook_clear,
    .tp_members = hook_members,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(CallSoonHook, vectorcall),
};


/* ------------------------------------------------------------ BookFields, SelectHook */

/* The lag monitor's heartbeat fields the selector wrapper touches every loop
 * iteration (LoopBook's base, asynclens/probes/lag/monitor.py). */
typedef struct {
    PyObject_HEAD
    PyObject *parked_at;
    long long beat;
    long long threshold_ns;
    long long select_enter_ns;
    long long idle_ns;
    char in_select;
    char stopped;
} BookFields;

static PyTypeObject BookFieldsType, SelectHookType;

static PyObject *
book_fields_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    BookFields *self = (BookFields *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->parked_at = Py_NewRef(Py_None);
    return (PyObject *)self;
}

#define BOOK_OBJECTS(X) X(parked_at)
GC_METHODS(book_fields, BookFields, BOOK_OBJECTS)

static PyMemberDef book_fields_members[] = {
    OBJ_MEMBER(BookFields, parked_at)
    LL_MEMBER(BookFields, beat)
    LL_MEMBER(BookFields, threshold_ns)
    LL_MEMBER(BookFields, select_enter_ns)
    LL_MEMBER(BookFields, idle_ns)
    {"in_select", AL_BOOL, offsetof(BookFields, in_select), 0, NULL},
    {"stopped", AL_BOOL, offsetof(BookFields, stopped), 0, NULL},
    {NULL},
};

/* A watched loop's selector.select, timed: the heartbeat before and after the
 * wait (LoopMonitor._wrap_selector's wrapper, the same bookkeeping). */
typedef struct {
    PyObject_HEAD
    PyObject *book;
    PyObject *original;
    PyObject *now;
    vectorcallfunc vectorcall;
} SelectHook;

/* The book's own error report (LoopMonitor._on_error); never raises. */
static void
book_error(PyObject *book)
{
    PyObject *exc = take_error();
    if (exc == NULL)
        return;
    PyObject *on_error = NULL;
    if (get_optional_attr(book, s_on_error, &on_error) > 0 && on_error != Py_None) {
        PyObject *r = PyObject_CallFunctionObjArgs(on_error, s_lag_selector, exc, NULL);
        Py_XDECREF(r);
    }
    PyErr_Clear();
    Py_XDECREF(on_error);
    Py_DECREF(exc);
}

static int
book_call(PyObject *book, PyObject *name, long long a, int with_b, long long b)
{
    if (with_b)
        return call_method_ll2(book, name, a, b);
    PyObject *pa = PyLong_FromLongLong(a);
    if (pa == NULL)
        return -1;
    int rc = call_method_discard(book, name, pa, NULL);
    Py_DECREF(pa);
    return rc;
}

static PyObject *
select_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    SelectHook *self = (SelectHook *)op;
    if (!PyObject_TypeCheck(self->book, &BookFieldsType))
        return PyObject_Vectorcall(self->original, args, nargsf, kwnames);
    PyObject *book_obj = Py_NewRef(self->book);
    BookFields *book = (BookFields *)book_obj;
    long long t;
    if (call_clock(self->now, &t) < 0) {
        book_error(book_obj);
        t = book->beat;
    }
    else if (t - book->beat > book->threshold_ns && book_call(book_obj, s_gap_safe, t, 0, 0) < 0) {
        book_error(book_obj);
    }
    book->select_enter_ns = t;
    book->in_select = 1;
    PyObject *result = PyObject_Vectorcall(self->original, args, nargsf, kwnames);
    PyObject *raised = result == NULL ? take_error() : NULL;
    if (call_clock(self->now, &t) < 0) {
        book_error(book_obj);
        t = book->select_enter_ns;
    }
    book->idle_ns += t - book->select_enter_ns;
    if (book->stopped && book_call(book_obj, s_resume, t, 1, book->select_enter_ns) < 0)
        book_error(book_obj);
    book->beat = t;
    book->in_select = 0;
    if (book->parked_at != Py_None && book_call(book_obj, s_wake, t, 0, 0) < 0)
        book_error(book_obj);
    Py_DECREF(book_obj);
    if (raised != NULL)
        restore_error(raised);
    return result;
}

static PyObject *
select_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *book, *original, *now;
    static char *kwlist[] = {"book", "original", "now", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO:SelectHook", kwlist, &book, &original, &now))
        return NULL;
    SelectHook *self = (SelectHook *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->book = Py_NewRef(book);
    self->original = Py_NewRef(original);
    self->now = Py_NewRef(now);
    self->vectorcall = select_vectorcall;
    return (PyObject *)self;
}

#define SELECT_OBJECTS(X) X(book) X(original) X(now)
GC_METHODS(select, SelectHook, SELECT_OBJECTS)

static PyMemberDef select_members[] = {
    {"book", AL_OBJ, offsetof(SelectHook, book), AL_READONLY, NULL},
    {"__wrapped__", AL_OBJ, offsetof(SelectHook, original), AL_READONLY, NULL},
    {NULL},
};

static PyTypeObject BookFieldsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "asynclens._core.BookFields",
    .tp_doc = "The lag monitor's heartbeat fields (LoopBook's base).",
    .tp_basicsize = sizeof(BookFields),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = book_fields_new,
    .tp_dealloc = (destructor)book_fields_dealloc,
    .tp_traverse = (traverseproc)book_fields_traverse,
    .tp_clear = (inquiry)book_fields_clear,
    .tp_members = book_fields_members,
};

static PyTypeObject SelectHookType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "asynclens._core.SelectHook",
    .tp_doc = "A watched loop's selector.select, with the lag monitor's heartbeat around the wait.",
    .tp_basicsize = sizeof(SelectHook),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = select_new,
    .tp_dealloc = (destructor)select_dealloc,
    .tp_traverse = (traverseproc)select_traverse,
    .tp_clear = (inquiry)select_clear,
    .tp_members = select_members,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(SelectHook, vectorcall),
};


/* ------------------------------------------------------------ SpanFields */

/* A live span's fields, its start (tp_init), its end (_end) and its lazily drawn
 * ids (LiveSpan's base, asynclens/tracing/spans.py; PySpanFields is the twin).
 * Drawing an id here needs no lock: no other thread runs while this C code holds
 * the GIL, and no collection can start (it allocates no container). */
/* The task's running totals when a span began in it (the scheduler probe's breakdown; the
 * twin keeps them as a tuple in LiveSpan.breakdown): the span's end subtracts them. */
typedef struct {
    PyObject *st; /* the task's TaskFields */
    long long run, sched, io, exec, steps, longest, blocked;
    PyObject *x, *held;
} SpanStart;

typedef struct {
    PyObject_HEAD
    PyObject *name;
    PyObject *trace_id;
    PyObject *span_id;
    PyObject *parent_id;
    PyObject *attrs;
    PyObject *events;
    PyObject *error;
    PyObject *task;
    PyObject *thread_id;
    PyObject *session;
    PyObject *extra;
    PyObject *breakdown;
    PyObject *token; /* the current span's token while enter_span() made this span current */
    SpanStart *at_start; /* while it runs under the scheduler probe, or NULL */
    long long start_ns;
    long long end_ns;
} SpanFields;

/* probe.task_finished for a task that finished "done" with task_records="notable": counted
 * when it is neither long-lived nor long-waiting, or past this second's budget of such
 * records (probe._within_budget), else handed to probe._emit_task. 1 when handled here,
 * 0 for the Python code (another mode or state, a span that ended), -1 on error. */
static PyTypeObject SpanFieldsType;
static int
finished_unrecorded(LoopFields *ls, TaskFields *st, PyObject *task, long long t)
{
    TaskMaker *book = (TaskMaker *)ls->book;
    if (!Py_IS_TYPE(ls->book, &TaskMakerType) || !book->notable_mode)
        return 0;
    PyObject *span = st->span;
    if (span != Py_None && (!PyObject_TypeCheck(span, &SpanFieldsType) || ((SpanFields *)span)->end_ns))
        return 0;
    PyObject *cancelled = PyObject_CallMethodNoArgs(task, s_cancelled);
    if (cancelled == NULL)
        return -1;
    int is_cancelled = PyObject_IsTrue(cancelled);
    Py_DECREF(cancelled);
    if (is_cancelled)
        return is_cancelled < 0 ? -1 : 0;
    PyObject *error = NULL;
    if (get_optional_attr(task, s_exception, &error) < 0)
        return -1;
    int failed = error != NULL && error != Py_None;
    Py_XDECREF(error);
    if (failed)
        return 0;
    if (st->self_wakes >= BUSY_MIN_STEPS) {
        PyObject *pt = PyLong_FromLongLong(t);
        if (pt == NULL)
            return -1;
        int rc = call_method_discard(book->probe, s_busy_finished, (PyObject *)st, pt);
        Py_DECREF(pt);
        if (rc < 0)
            report_error(ls, s_finishing_task);
    }
    st->done = 1;
    book->finished++;
    long long life = t - st->created_ns;
    long long wait = st->max_sched_ns > st->max_sched_earlier ? st->max_sched_ns : st->max_sched_earlier;
    if (life < book->notable_ns && wait < book->notable_ns) {
        book->unrecorded++;
        return 1;
    }
    if (t >= book->budget_until) {
        book->budget_until = t + 1000000000LL;
        book->budget_left = book->per_second;
        book->budget_life = book->budget_wait = 0;
    }
    if (book->budget_left <= 0 && life <= book->budget_life && wait <= book->budget_wait) {
        book->unrecorded++;
        book->over_budget++;
        return 1;
    }
    book->budget_left--;
    if (life > book->budget_life)
        book->budget_life = life;
    if (wait > book->budget_wait)
        book->budget_wait = wait;
    PyObject *pt = PyLong_FromLongLong(t);
    if (pt == NULL)
        return -1;
    PyObject *r = PyObject_CallMethodObjArgs(book->probe, s_emit_task, (PyObject *)st, s_done_state, pt, NULL);
    Py_DECREF(pt);
    if (r == NULL)
        report_error(ls, s_finishing_task);
    Py_XDECREF(r);
    return 1;
}

#define SPAN_OBJECTS(X) \
    X(name) X(trace_id) X(span_id) X(parent_id) X(attrs) X(events) X(error) X(task) X(thread_id) X(session) X(extra) X(breakdown) X(token)

static int native_breakdown;
static PyObject *task_state_of_fn; /* steps.task_state_of */
static void breakdown_started(PyObject *probe, SpanFields *live);
static void breakdown_ended(PyObject *probe, SpanFields *live);

/* Set once by configure_spans() from asynclens/tracing/spans.py. */
static PyObject *live_span_type;   /* LiveSpan (exact type, as the Python code checks) */
static PyObject *getrandbits_fn;   /* random.getrandbits */
static PyObject *thread_ids;       /* spans._thread_ids: one int object per thread */
static PyObject *loop_of_thread;   /* spans._loop_of_thread, or None when not caching loops */
static PyObject *current_tasks;    /* asyncio.tasks._current_tasks when caching loops */
static PyObject *span_observer = NULL; /* the scheduler probe's span observer, or NULL */
static PyObject *s_now, *s_span_started, *s_span_ended, *s_buffer, *s_limit, *s_wake_at, *s_set,
    *s_note_drop, *s_thread_id_attr, *s_trace_id, *s_span_id, *s_wake_event, *s_append, *s_get_name;

static PyObject *
span_fields_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    SpanFields *self = (SpanFields *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    SPAN_OBJECTS(INIT_NONE)
    return (PyObject *)self;
}

static void
span_start_free(SpanStart *at)
{
    Py_XDECREF(at->st);
    Py_XDECREF(at->x);
    Py_XDECREF(at->held);
    PyMem_Free(at);
}

static int
span_fields_traverse(SpanFields *self, visitproc visit, void *arg)
{
    SPAN_OBJECTS(VISIT)
    if (self->at_start != NULL) {
        Py_VISIT(self->at_start->st);
        Py_VISIT(self->at_start->x);
        Py_VISIT(self->at_start->held);
    }
    return 0;
}

static int
span_fields_clear(SpanFields *self)
{
    SPAN_OBJECTS(CLEAR)
    SpanStart *at = self->at_start;
    self->at_start = NULL;
    if (at != NULL)
        span_start_free(at);
    return 0;
}

static void
span_fields_dealloc(SpanFields *self)
{
    PyObject_GC_UnTrack(self);
    span_fields_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* *slot's id, drawn once (``bits`` random bits, never 0); a new reference. */
static PyObject *
draw_id(PyObject **slot, int bits)
{
    if (*slot != Py_None)
        return Py_NewRef(*slot);
    if (getrandbits_fn == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "asynclens._core: spans not configured");
        return NULL;
    }
    PyObject *drawn = PyObject_CallFunction(getrandbits_fn, "i", bits);
    if (drawn == NULL)
        return NULL;
    int zero = PyObject_Not(drawn);
    if (zero < 0) {
        Py_DECREF(drawn);
        return NULL;
    }
    if (zero)
        Py_SETREF(drawn, PyLong_FromLong(1));
    if (drawn == NULL)
        return NULL;
    if (*slot == Py_None) /* the call may have run Python code (a patched getrandbits) */
        Py_SETREF(*slot, Py_NewRef(drawn));
    Py_DECREF(drawn);
    return Py_NewRef(*slot);
}

static PyObject *
span_get_trace_id(SpanFields *self, void *closure)
{
    return draw_id(&self->trace_id, 128);
}

static int
span_set_trace_id(SpanFields *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete trace_id");
        return -1;
    }
    Py_SETREF(self->trace_id, Py_NewRef(value));
    return 0;
}

static PyObject *
span_get_span_id(SpanFields *self, void *closure)
{
    return draw_id(&self->span_id, 64);
}

/* asyncio.current_task(loop): from the registry itself when spans cache loops (before 3.12,
 * where asyncio.current_task is Python code). */
static PyObject *
current_task_of(PyObject *loop)
{
    if (loop_of_thread == NULL || loop_of_thread == Py_None)
        return PyObject_CallOneArg(current_task_fn, loop);
    PyObject *task = PyDict_GetItemWithError(current_tasks, loop); /* borrowed */
    if (task != NULL)
        return Py_NewRef(task);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

/* spans._running_task past its cache: the running loop's current task, and the loop
 * remembered for thread ``ident`` when it keeps a _thread_id (uvloop's does not). */
static PyObject *
remember_running_loop(PyObject *ident)
{
    PyObject *loop = PyObject_CallNoArgs(get_running_loop_fn), *tid = NULL;
    if (loop == NULL || loop == Py_None)
        return loop;
    if (get_optional_attr(loop, s_thread_id_attr, &tid) < 0)
        goto error;
    int same = tid != NULL ? PyObject_RichCompareBool(tid, ident, Py_EQ) : 0;
    Py_XDECREF(tid);
    if (same < 0)
        goto error;
    if (same) {
        if (PyDict_GET_SIZE(loop_of_thread) >= 4096) /* bounded, whatever the threads come and go */
            PyDict_Clear(loop_of_thread);
        PyObject *ref = PyWeakref_NewRef(loop, NULL);
        if (ref == NULL || PyDict_SetItem(loop_of_thread, ident, ref) < 0) {
            Py_XDECREF(ref);
            goto error;
        }
        Py_DECREF(ref);
    }
    PyObject *task = current_task_of(loop);
    Py_DECREF(loop);
    return task;
error:
    Py_DECREF(loop);
    return NULL;
}

/* The task running in this thread, or None (spans._running_task in C). */
static PyObject *
running_task(void)
{
#if PY_VERSION_HEX < 0x030C0000 /* before 3.12 (spans._CACHE_LOOPS): the loop this thread last ran */
    unsigned long ident = PyThread_get_thread_ident();
    if (loop_of_thread != NULL && loop_of_thread != Py_None) {
        PyObject *key = PyLong_FromUnsignedLong(ident);
        if (key == NULL)
            return NULL;
        PyObject *ref = PyDict_GetItemWithError(loop_of_thread, key); /* borrowed */
        if (ref == NULL && PyErr_Occurred()) {
            Py_DECREF(key);
            return NULL;
        }
        if (ref != NULL && PyWeakref_Check(ref)) {
            PyObject *loop = PyWeakref_GetObject(ref); /* borrowed */
            if (loop != NULL && loop != Py_None) {
                Py_INCREF(loop);
                PyObject *tid = PyObject_GetAttr(loop, s_thread_id_attr);
                int same = tid != NULL ? PyObject_RichCompareBool(tid, key, Py_EQ) : -1;
                Py_XDECREF(tid);
                if (same < 0) {
                    Py_DECREF(loop);
                    Py_DECREF(key);
                    return NULL;
                }
                if (same) {
                    PyObject *task = PyDict_GetItemWithError(current_tasks, loop); /* borrowed */
                    Py_DECREF(loop);
                    if (task != NULL) {
                        Py_DECREF(key);
                        return Py_NewRef(task);
                    }
                    if (PyErr_Occurred()) {
                        Py_DECREF(key);
                        return NULL;
                    }
                }
                else {
                    Py_DECREF(loop);
                }
            }
        }
        PyObject *task = remember_running_loop(key);
        Py_DECREF(key);
        return task;
    }
#endif
    PyObject *loop = PyObject_CallNoArgs(get_running_loop_fn);
    if (loop == NULL || loop == Py_None)
        return loop;
    PyObject *task = current_task_of(loop);
    Py_DECREF(loop);
    return task;
}

static int span_setup(SpanFields *self, PyObject *session, PyObject *name, PyObject *parent, PyObject *attrs);

/* LiveSpan(session, name, parent, attrs) */
static int
span_init(SpanFields *self, PyObject *args, PyObject *kwds)
{
    PyObject *session, *name, *parent, *attrs;
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "LiveSpan() takes positional arguments only");
        return -1;
    }
    if (!PyArg_UnpackTuple(args, "LiveSpan", 4, 4, &session, &name, &parent, &attrs))
        return -1;
    if (live_span_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "asynclens._core: spans not configured");
        return -1;
    }
    return span_setup(self, session, name, parent, attrs);
}

/* enter_span(session, name, attrs): a new LiveSpan under the current span, with a copy of
 * attrs (a dict, or None), made the current span; live._leave() undoes both. One call for
 * what @trace's wrapper did in four (the current span, LiveSpan(), set, and the copy). */
static PyObject *
enter_span(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "enter_span(session, name, attrs) takes 3 arguments");
        return NULL;
    }
    if (live_span_type == NULL || span_var == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "asynclens._core: spans not configured");
        return NULL;
    }
    PyObject *parent, *attrs = args[2];
    if (attrs == Py_None || (PyDict_Check(attrs) && PyDict_GET_SIZE(attrs) == 0))
        attrs = Py_NewRef(Py_None);
    else if ((attrs = PyDict_Copy(attrs)) == NULL)
        return NULL;
    if (PyContextVar_Get(span_var, Py_None, &parent) < 0) {
        Py_DECREF(attrs);
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)live_span_type;
    SpanFields *self = (SpanFields *)type->tp_alloc(type, 0);
    if (self != NULL) {
        SPAN_OBJECTS(INIT_NONE)
        PyObject *token = NULL;
        if (span_setup(self, args[0], args[1], parent, attrs) < 0 ||
            (token = PyContextVar_Set(span_var, (PyObject *)self)) == NULL)
            Py_CLEAR(self);
        else
            Py_SETREF(self->token, token);
    }
    Py_DECREF(parent);
    Py_DECREF(attrs);
    return (PyObject *)self;
}

static int
span_setup(SpanFields *self, PyObject *session, PyObject *name, PyObject *parent, PyObject *attrs)
{
    Py_SETREF(self->session, Py_NewRef(session));
    Py_SETREF(self->name, Py_NewRef(name));
    Py_SETREF(self->span_id, Py_NewRef(Py_None));
    if (parent == Py_None) {
        Py_SETREF(self->trace_id, Py_NewRef(Py_None));
        Py_SETREF(self->parent_id, Py_NewRef(Py_None));
    }
    else if ((PyObject *)Py_TYPE(parent) == live_span_type) { /* the parent's ids, made once by its first child */
        SpanFields *p = (SpanFields *)parent;
        PyObject *trace = draw_id(&p->trace_id, 128);
        if (trace == NULL)
            return -1;
        Py_SETREF(self->trace_id, trace);
        PyObject *pid = draw_id(&p->span_id, 64);
        if (pid == NULL)
            return -1;
        Py_SETREF(self->parent_id, pid);
    }
    else { /* a remote parent (propagation.SpanContext) */
        PyObject *trace = PyObject_GetAttr(parent, s_trace_id);
        if (trace == NULL)
            return -1;
        Py_SETREF(self->trace_id, trace);
        PyObject *pid = PyObject_GetAttr(parent, s_span_id);
        if (pid == NULL)
            return -1;
        Py_SETREF(self->parent_id, pid);
    }
    Py_SETREF(self->attrs, Py_NewRef(attrs));
    Py_SETREF(self->events, Py_NewRef(Py_None));
    Py_SETREF(self->error, Py_NewRef(Py_None));
    self->end_ns = 0;
    Py_SETREF(self->extra, Py_NewRef(Py_None));
    Py_SETREF(self->breakdown, Py_NewRef(Py_None));
    PyObject *task = running_task();
    if (task == NULL)
        return -1;
    Py_SETREF(self->task, task);
    PyObject *ident = PyLong_FromUnsignedLong(PyThread_get_thread_ident());
    if (ident == NULL)
        return -1;
    PyObject *tid = PyDict_SetDefault(thread_ids, ident, ident); /* borrowed: one int object per thread */
    Py_DECREF(ident);
    if (tid == NULL)
        return -1;
    Py_SETREF(self->thread_id, Py_NewRef(tid));
    PyObject *now = PyObject_CallMethodNoArgs(session, s_now);
    if (now == NULL)
        return -1;
    self->start_ns = AS_LL(now);
    Py_DECREF(now);
    if (self->start_ns == -1 && PyErr_Occurred())
        return -1;
    if (span_observer != NULL) {
        if (native_breakdown) {
            breakdown_started(span_observer, self);
            return 0;
        }
        PyObject *r = PyObject_CallMethodOneArg(span_observer, s_span_started, (PyObject *)self);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    return 0;
}

/* Whether an ended span's fields hold no container the collector tracks. Such a span can be
 * in no reference cycle but the one through its session's buffer, which the flush breaks, so
 * it need not be tracked: then the young collections of a busy service never walk the spans
 * waiting in the buffer (they were a third of a span's cost under the scheduler probe). */
static int
span_untrackable(SpanFields *self)
{
#define TRACKED(f) (self->f != self->session && PyObject_IS_GC(self->f) && PyObject_GC_IsTracked(self->f)) ||
    return !(SPAN_OBJECTS(TRACKED) 0);
#undef TRACKED
}

/* live._end(): the end time, the observer, and the session's buffer (Session.emit inlined). */
static PyObject *
span_end(SpanFields *self, PyObject *unused)
{
    PyObject *session = Py_NewRef(self->session);
    PyObject *result = NULL, *buffer = NULL, *limit = NULL, *wake_at = NULL;
    PyObject *now = PyObject_CallMethodNoArgs(session, s_now);
    if (now == NULL)
        goto done;
    self->end_ns = AS_LL(now);
    Py_DECREF(now);
    if (self->end_ns == -1 && PyErr_Occurred())
        goto done;
    if (span_observer != NULL && native_breakdown) {
        breakdown_ended(span_observer, self);
    }
    else if (span_observer != NULL) {
        PyObject *r = PyObject_CallMethodOneArg(span_observer, s_span_ended, (PyObject *)self);
        if (r == NULL)
            goto done;
        Py_DECREF(r);
    }
    /* An ended span keeps its task's name, not the task: a buffered span would otherwise keep
       the finished task, its coroutine and its context alive until the flusher's next turn. */
    if (self->task != Py_None) {
        PyObject *name = PyObject_CallMethodNoArgs(self->task, s_get_name);
        if (name == NULL) {
            PyErr_Clear();
            name = Py_NewRef(Py_None);
        }
        Py_SETREF(self->task, name);
    }
    if (span_untrackable(self))
        PyObject_GC_UnTrack(self);
    if ((buffer = PyObject_GetAttr(session, s_buffer)) == NULL || (limit = PyObject_GetAttr(session, s_limit)) == NULL)
        goto done;
    Py_ssize_t size = PyObject_Length(buffer);
    if (size < 0)
        goto done;
    Py_ssize_t cap = PyLong_AsSsize_t(limit);
    if (cap == -1 && PyErr_Occurred())
        goto done;
    if (size < cap) {
        PyObject *r = PyObject_CallMethodOneArg(buffer, s_append, (PyObject *)self);
        if (r == NULL)
            goto done;
        Py_DECREF(r);
        if ((wake_at = PyObject_GetAttr(session, s_wake_at)) == NULL)
            goto done;
        Py_ssize_t at = PyLong_AsSsize_t(wake_at);
        if (at == -1 && PyErr_Occurred())
            goto done;
        if (size == at) {
            PyObject *event = PyObject_GetAttr(session, s_wake_event);
            if (event == NULL)
                goto done;
            r = PyObject_CallMethodNoArgs(event, s_set);
            Py_DECREF(event);
            if (r == NULL)
                goto done;
            Py_DECREF(r);
        }
    }
    else {
        PyObject *r = PyObject_CallMethodNoArgs(session, s_note_drop);
        if (r == NULL)
            goto done;
        Py_DECREF(r);
    }
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(buffer);
    Py_XDECREF(limit);
    Py_XDECREF(wake_at);
    Py_DECREF(session);
    return result;
}

/* live._leave(): the current span back to what it was before enter_span(), then _end(). */
static PyObject *
span_leave(SpanFields *self, PyObject *unused)
{
    PyObject *token = self->token;
    if (token != Py_None) {
        self->token = Py_NewRef(Py_None); /* the token holds the enclosing span: not in the buffer */
        int rc = PyContextVar_Reset(span_var, token);
        Py_DECREF(token);
        if (rc < 0)
            return NULL;
    }
    return span_end(self, NULL);
}

static PyMemberDef span_fields_members[] = {
    OBJ_MEMBER(SpanFields, name)
    {"_trace_id", AL_OBJ, offsetof(SpanFields, trace_id), 0, NULL},
    {"_span_id", AL_OBJ, offsetof(SpanFields, span_id), 0, NULL},
    OBJ_MEMBER(SpanFields, parent_id)
    OBJ_MEMBER(SpanFields, attrs)
    OBJ_MEMBER(SpanFields, events)
    OBJ_MEMBER(SpanFields, error)
    OBJ_MEMBER(SpanFields, task)
    OBJ_MEMBER(SpanFields, thread_id)
    OBJ_MEMBER(SpanFields, session)
    OBJ_MEMBER(SpanFields, extra)
    OBJ_MEMBER(SpanFields, breakdown)
    {"_token", AL_OBJ, offsetof(SpanFields, token), 0, NULL},
    LL_MEMBER(SpanFields, start_ns)
    LL_MEMBER(SpanFields, end_ns)
    {NULL},
};

static PyGetSetDef span_fields_getset[] = {
    {"trace_id", (getter)span_get_trace_id, (setter)span_set_trace_id,
     "The 128-bit trace id. A root span makes it when first asked (by a child, by\n"
     "``inject()``, or when the session freezes the span).", NULL},
    {"span_id", (getter)span_get_span_id, NULL,
     "The 64-bit span id, made when first asked (by a child, ``inject()``, a probe\n"
     "attributing something to the span, or when the session freezes it).", NULL},
    {NULL},
};

static PyMethodDef span_fields_methods[] = {
    {"_end", (PyCFunction)span_end, METH_NOARGS, "End the span now and hand it to its session."},
    {"_leave", (PyCFunction)span_leave, METH_NOARGS,
     "Restore the current span enter_span() replaced, then end this span (_end)."},
    {NULL},
};

static PyTypeObject SpanFieldsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "asynclens._core.SpanFields",
    .tp_doc = "A live span's fields, start, end and ids (LiveSpan's base).",
    .tp_basicsize = sizeof(SpanFields),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = span_fields_new,
    .tp_init = (initproc)span_init,
    .tp_dealloc = (destructor)span_fields_dealloc,
    .tp_traverse = (traverseproc)span_fields_traverse,
    .tp_clear = (inquiry)span_fields_clear,
    .tp_members = span_fields_members,
    .tp_getset = span_fields_getset,
    .tp_methods = span_fields_methods,
};

static PyObject *
configure_spans(PyObject *module, PyObject *args, PyObject *kwds)
{
    PyObject *live, *bits, *ids, *loops, *tasks, *get_loop, *current, *var;
    static char *kwlist[] = {"live_span_type", "getrandbits", "thread_ids", "loop_of_thread", "current_tasks",
                             "get_running_loop", "current_task", "span_var", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OO!OOOOO!:configure_spans", kwlist, &PyType_Type, &live, &bits,
                                     &PyDict_Type, &ids, &loops, &tasks, &get_loop, &current, &PyContextVar_Type,
                                     &var))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)live, &SpanFieldsType)) {
        PyErr_SetString(PyExc_TypeError, "live_span_type must subclass SpanFields");
        return NULL;
    }
    if (loops != Py_None && (!PyDict_Check(loops) || !PyDict_Check(tasks))) {
        PyErr_SetString(PyExc_TypeError, "loop_of_thread and current_tasks must be dicts (or loop_of_thread None)");
        return NULL;
    }
    Py_XSETREF(live_span_type, Py_NewRef(live));
    Py_XSETREF(getrandbits_fn, Py_NewRef(bits));
    Py_XSETREF(thread_ids, Py_NewRef(ids));
    Py_XSETREF(loop_of_thread, Py_NewRef(loops));
    Py_XSETREF(current_tasks, Py_NewRef(tasks));
    Py_XSETREF(get_running_loop_fn, Py_NewRef(get_loop));
    Py_XSETREF(current_task_fn, Py_NewRef(current));
    Py_XSETREF(span_var, Py_NewRef(var));
    Py_RETURN_NONE;
}

static PyObject *
set_span_observer(PyObject *module, PyObject *args)
{
    PyObject *observer;
    int native = 0;
    if (!PyArg_ParseTuple(args, "O|p:set_span_observer", &observer, &native))
        return NULL;
    if (native && (no_held == NULL || task_state_type == NULL)) {
        PyErr_SetString(PyExc_RuntimeError, "asynclens._core: the span breakdown is not configured");
        return NULL;
    }
    Py_XSETREF(span_observer, observer == Py_None ? NULL : Py_NewRef(observer));
    native_breakdown = span_observer != NULL && native;
    Py_RETURN_NONE;
}


/* ------------------------------------------------------------ span breakdown */

/* The scheduler probe's span observer (asynclens/probes/scheduler/breakdown.py's
 * SpanBreakdown.span_started/span_ended, the same arithmetic): a span holds its
 * task's running totals at its start, and the difference at its end. */

/* native_breakdown (declared above): the observer is a SpanBreakdown, so run the C twin */
static Py_ssize_t tally_fold_every = 256;
static PyObject *s_link_outliving, *s_add_error_stack, *s_by_name, *s_name_tally, *s_recent,
    *s_starting_breakdown, *s_ending_breakdown, *s_error_status;

static void
breakdown_error(PyObject *probe, SpanFields *live, PyObject *where)
{
    Py_SETREF(live->breakdown, Py_NewRef(Py_None));
    PyObject *exc = take_error();
    if (exc == NULL)
        return;
    PyObject *r = PyObject_CallMethodObjArgs(probe, s_internal_error, where, exc, NULL);
    if (r == NULL)
        PyErr_Clear();
    Py_XDECREF(r);
    Py_DECREF(exc);
}

static void
breakdown_started(PyObject *probe, SpanFields *live)
{
    PyObject *task = live->task;
    if (task == Py_None)
        return;
    PyObject *st_obj = NULL;
    if (get_optional_attr(task, attr_name, &st_obj) < 0)
        goto error;
    if (st_obj == NULL || (PyObject *)Py_TYPE(st_obj) != task_state_type) {
        Py_XDECREF(st_obj);
        st_obj = PyObject_CallOneArg(task_state_of_fn, task);
        if (st_obj == NULL)
            goto error;
        if ((PyObject *)Py_TYPE(st_obj) != task_state_type) {
            Py_DECREF(st_obj);
            return;
        }
    }
    TaskFields *st = (TaskFields *)st_obj;
    if (!st->start_ns || !PyObject_TypeCheck(st->ls, &LoopFieldsType) || ((LoopFields *)st->ls)->running != st_obj) {
        Py_DECREF(st_obj);
        return;
    }
    /* the task's running totals at the span's start (inside the running step), and its longest
     * ready->run wait so far, which restarts from 0 for the span */
    long long nested = st->nested_ns, longest = st->max_sched_ns, blocked;
    if (longest) {
        if (longest > st->max_sched_earlier)
            st->max_sched_earlier = longest;
        st->max_sched_ns = 0;
    }
    PyObject *held = Py_NewRef(st->held); /* likewise the longest wait another task explained */
    if (held != no_held)
        Py_SETREF(st->held, Py_NewRef(no_held));
    if (blocked_at(st, live->start_ns, &blocked) < 0) {
        Py_DECREF(held);
        Py_DECREF(st_obj);
        goto error;
    }
    SpanStart *at = PyMem_Malloc(sizeof(SpanStart));
    if (at == NULL) {
        PyErr_NoMemory();
        Py_DECREF(held);
        Py_DECREF(st_obj);
        goto error;
    }
    *at = (SpanStart){Py_NewRef(st_obj), st->run_ns + live->start_ns - st->start_ns - nested, st->sched_ns + nested,
                      st->io_ns, st->exec_ns, st->steps, longest, blocked, Py_NewRef(st->x), held};
    if (live->at_start != NULL)
        span_start_free(live->at_start);
    live->at_start = at;
    PyObject *creator = st->span;
    if (creator != Py_None && PyObject_TypeCheck(creator, &SpanFieldsType) && ((SpanFields *)creator)->end_ns) {
        PyObject *r = PyObject_CallMethodObjArgs(probe, s_link_outliving, (PyObject *)live, creator, NULL);
        if (r == NULL) {
            Py_DECREF(st_obj);
            goto error;
        }
        Py_DECREF(r);
    }
    Py_DECREF(st_obj);
    return;
error:
    breakdown_error(probe, live, s_starting_breakdown);
}

static int
tuple_ll(PyObject *tuple, Py_ssize_t i, long long *out)
{
    *out = AS_LL(PyTuple_GET_ITEM(tuple, i));
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int
tally(PyObject *probe, PyObject *name, PyObject *breakdown)
{
    PyObject *by_name = PyObject_GetAttr(probe, s_by_name);
    if (by_name == NULL)
        return -1;
    PyObject *found = PyDict_Check(by_name) ? PyDict_GetItemWithError(by_name, name) : NULL; /* borrowed */
    Py_XINCREF(found);
    Py_DECREF(by_name);
    if (found == NULL) {
        if (PyErr_Occurred())
            return -1;
        found = PyObject_CallMethodOneArg(probe, s_name_tally, name);
        if (found == NULL)
            return -1;
    }
    int rc = 0;
    if (found != Py_None) {
        PyObject *recent = PyObject_GetAttr(found, s_recent);
        rc = recent == NULL ? -1 : PyList_Append(recent, breakdown);
        if (rc == 0 && PyList_GET_SIZE(recent) >= tally_fold_every)
            rc = call_method_discard(found, s_fold, NULL, NULL);
        Py_XDECREF(recent);
    }
    Py_DECREF(found);
    return rc;
}

static void
breakdown_ended(PyObject *probe, SpanFields *live)
{
    SpanStart *at = live->at_start;
    if (at == NULL)
        return;
    live->at_start = NULL;
    PyObject *st_obj = Py_NewRef(at->st);
    TaskFields *st = (TaskFields *)st_obj;
    if (PyObject_TypeCheck(st->ls, &LoopFieldsType) && ((LoopFields *)st->ls)->running == st_obj && st->start_ns) {
        long long run0 = at->run, sched0 = at->sched, io0 = at->io, ex0 = at->exec, steps0 = at->steps,
                  longest0 = at->longest, blocked0 = at->blocked, blocked;
        PyObject *x0 = at->x, *held0 = at->held;
        long long nested = st->nested_ns, end = live->end_ns;
        long long run = st->run_ns + end - st->start_ns - nested - run0;
        long long own[5], cp[5];
        own[2] = st->sched_ns + nested - sched0;
        own[3] = st->io_ns - io0;
        own[4] = st->exec_ns - ex0;
        if (blocked_at(st, end, &blocked) < 0)
            goto error;
        blocked -= blocked0;
        long long longest = st->max_sched_ns;
        if (longest0 > longest) /* what an enclosing span had seen before this one */
            st->max_sched_ns = longest0;
        if (blocked < 0) /* a span begun inside a sampled step: at most its run */
            blocked = 0;
        if (blocked > run)
            blocked = run;
        own[0] = run - blocked;
        own[1] = blocked;
        for (int i = 0; i < 5; i++)
            cp[i] = own[i];
        PyObject *held_by = Py_None, *x = st->x;
        int explained = x != x0; /* some waits were explained by other tasks: the critical path differs */
        if (explained) {
            if (!PyTuple_Check(x) || !PyTuple_Check(x0) || PyTuple_GET_SIZE(x) != 5 || PyTuple_GET_SIZE(x0) != 5) {
                PyErr_SetString(PyExc_TypeError, "a task's critical-path adjustment is not a 5-tuple");
                goto error;
            }
            for (int i = 0; i < 5; i++) {
                long long later, earlier;
                if (tuple_ll(x, i, &later) < 0 || tuple_ll(x0, i, &earlier) < 0)
                    goto error;
                cp[i] = own[i] + later - earlier;
            }
            if (PyTuple_Check(st->held) && PyTuple_GET_SIZE(st->held) == 2)
                held_by = PyTuple_GET_ITEM(st->held, 1);
        }
        Py_INCREF(held_by);
        if (PyTuple_Check(held0) && PyTuple_GET_SIZE(held0) == 2 && PyTuple_Check(st->held) &&
            PyTuple_GET_SIZE(st->held) == 2) {
            int longer = PyObject_RichCompareBool(PyTuple_GET_ITEM(held0, 0), PyTuple_GET_ITEM(st->held, 0), Py_GT);
            if (longer < 0) {
                Py_DECREF(held_by);
                goto error;
            }
            if (longer)
                Py_SETREF(st->held, Py_NewRef(held0));
        }
        PyObject *own_tuple = Py_NewRef(Py_None);
        if (explained) {
            PyObject *own_items[5] = {LL_OBJ(own[0]), LL_OBJ(own[1]), LL_OBJ(own[2]), LL_OBJ(own[3]), LL_OBJ(own[4])};
            Py_SETREF(own_tuple, tuple_stealing(5, own_items));
        }
        PyObject *items[9] = {LL_OBJ(cp[0]), LL_OBJ(cp[2]), LL_OBJ(cp[3]), LL_OBJ(cp[4]), LL_OBJ(st->steps - steps0 + 1),
                              LL_OBJ(longest), LL_OBJ(cp[1]), own_tuple, held_by};
        int atomic = own_tuple == Py_None && held_by == Py_None;
        PyObject *breakdown = tuple_stealing(9, items);
        if (breakdown == NULL)
            goto error;
        if (atomic) /* ints and None only, as the collector would find at its next pass */
            PyObject_GC_UnTrack(breakdown);
        Py_SETREF(live->breakdown, breakdown);
        if (tally(probe, live->name, breakdown) < 0)
            goto error;
    }
    else { /* ended in another task or thread than it started in: no breakdown */
        Py_SETREF(live->breakdown, Py_NewRef(Py_None));
    }
    PyObject *error = live->error;
    if (PyTuple_Check(error) && PyTuple_GET_SIZE(error) > 0) {
        int failed = PyObject_RichCompareBool(PyTuple_GET_ITEM(error, 0), s_error_status, Py_EQ);
        if (failed < 0)
            goto error;
        if (failed) {
            PyObject *r = PyObject_CallMethodObjArgs(probe, s_add_error_stack, (PyObject *)live, st_obj, NULL);
            if (r == NULL)
                goto error;
            Py_DECREF(r);
        }
    }
    Py_DECREF(st_obj);
    span_start_free(at);
    return;
error:
    Py_XDECREF(st_obj);
    span_start_free(at);
    breakdown_error(probe, live, s_ending_breakdown);
}

static PyObject *
configure_breakdown(PyObject *module, PyObject *args, PyObject *kwds)
{
    PyObject *state, *attr, *held, *state_of;
    Py_ssize_t fold = 256;
    static char *kwlist[] = {"task_state_type", "attr", "no_held", "task_state_of", "fold_every", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!UOO|n:configure_breakdown", kwlist, &PyType_Type, &state, &attr,
                                     &held, &state_of, &fold))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)state, &TaskFieldsType)) {
        PyErr_SetString(PyExc_TypeError, "task_state_type must subclass TaskFields");
        return NULL;
    }
    Py_XSETREF(task_state_type, Py_NewRef(state));
    Py_XSETREF(attr_name, Py_NewRef(attr));
    PyUnicode_InternInPlace(&attr_name);
    Py_XSETREF(no_held, Py_NewRef(held));
    Py_XSETREF(task_state_of_fn, Py_NewRef(state_of));
    tally_fold_every = fold > 0 ? fold : 1;
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------ histograms */

/* stats.Histogram.record_many's loop: count each value of ``values`` (a list of ints,
 * negative ones as 0) into ``counts`` (bucket index -> count). Returns (low, high, total,
 * total_sq), or None, having counted nothing, when a value is not an int below FOLD_LIMIT. */
#define FOLD_LIMIT (1LL << 40) /* larger values (over 18 minutes in ns) take the Python loop */
static PyObject *
fold_values(PyObject *module, PyObject *args)
{
    PyObject *counts, *values;
    long long exact;
    int sub;
    if (!PyArg_ParseTuple(args, "O!O!Li:fold_values", &PyDict_Type, &counts, &PyList_Type, &values, &exact, &sub))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(values);
    long long *vals = PyMem_Malloc((n ? n : 1) * sizeof(long long));
    if (vals == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(values, i);
        int overflow = 0;
        long long v = PyLong_Check(item) ? PyLong_AsLongLongAndOverflow(item, &overflow) : -1;
        if (!PyLong_Check(item) || overflow || (v == -1 && PyErr_Occurred()) || v >= FOLD_LIMIT) {
            PyErr_Clear();
            PyMem_Free(vals);
            Py_RETURN_NONE;
        }
        vals[i] = v < 0 ? 0 : v;
    }
    long long low = n ? vals[0] : 0, high = low, total = 0;
    unsigned __int128 total_sq = 0;
    PyObject *result = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        long long v = vals[i], index = v;
        if (v >= exact) {
            int shift = 64 - __builtin_clzll((unsigned long long)v) - sub - 1;
            index = ((long long)shift << sub) + (v >> shift);
        }
        PyObject *key = PyLong_FromLongLong(index);
        if (key == NULL)
            goto done;
        PyObject *old = PyDict_GetItemWithError(counts, key); /* borrowed */
        long long count = old != NULL ? AS_LL(old) : 0;
        PyObject *updated = (old != NULL || !PyErr_Occurred()) && !(count == -1 && PyErr_Occurred())
                                ? PyLong_FromLongLong(count + 1)
                                : NULL;
        int rc = updated != NULL ? PyDict_SetItem(counts, key, updated) : -1;
        Py_DECREF(key);
        Py_XDECREF(updated);
        if (rc < 0)
            goto done;
        total += v;
        total_sq += (unsigned __int128)v * (unsigned __int128)v;
        if (v < low)
            low = v;
        if (v > high)
            high = v;
    }
    {
        PyObject *sq_high = PyLong_FromUnsignedLongLong((unsigned long long)(total_sq >> 64));
        PyObject *sq_low = PyLong_FromUnsignedLongLong((unsigned long long)total_sq);
        PyObject *sixty_four = PyLong_FromLong(64);
        PyObject *shifted = sq_high && sixty_four ? PyNumber_Lshift(sq_high, sixty_four) : NULL;
        PyObject *sq = shifted && sq_low ? PyNumber_Or(shifted, sq_low) : NULL;
        if (sq != NULL)
            result = Py_BuildValue("(LLLN)", low, high, total, sq);
        Py_XDECREF(sq_high);
        Py_XDECREF(sq_low);
        Py_XDECREF(sixty_four);
        Py_XDECREF(shifted);
    }
done:
    PyMem_Free(vals);
    return result;
}

/* ------------------------------------------------------------ module */

static PyObject *
configure(PyObject *module, PyObject *args, PyObject *kwds)
{
    PyObject *task, *state, *attr, *finish;
    Py_ssize_t fold = 512;
    static char *kwlist[] = {"task_type", "task_state_type", "attr", "finish", "fold_every", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!UO|n:configure", kwlist, &PyType_Type, &task, &PyType_Type,
                                     &state, &attr, &finish, &fold))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)state, &TaskFieldsType)) {
        PyErr_SetString(PyExc_TypeError, "task_state_type must subclass TaskFields");
        return NULL;
    }
    Py_XSETREF(task_type, Py_NewRef(task));
    Py_XSETREF(task_state_type, Py_NewRef(state));
    Py_XSETREF(attr_name, Py_NewRef(attr));
    PyUnicode_InternInPlace(&attr_name);
    Py_XSETREF(finish_fn, Py_NewRef(finish));
    fold_every = fold > 0 ? fold : 1;
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------ group_spans */

static PyObject *s_gs_name, *s_gs_error, *s_gs_start_ns, *s_gs_end_ns;

typedef struct {
    long long count, total, longest;
    int overflow;    /* total passed 2**63: the rest is summed in Python ints (extra) */
    PyObject *extra;
} NameSum;

/* A live span's end_ns - start_ns (a compiled span's directly, the twin's by attribute). */
static int
span_duration(PyObject *live, long long *out)
{
    if (PyObject_TypeCheck(live, &SpanFieldsType)) {
        *out = ((SpanFields *)live)->end_ns - ((SpanFields *)live)->start_ns;
        return 0;
    }
    PyObject *end = PyObject_GetAttr(live, s_gs_end_ns), *start = end ? PyObject_GetAttr(live, s_gs_start_ns) : NULL;
    long long e = end ? AS_LL(end) : -1, b = start ? AS_LL(start) : -1;
    Py_XDECREF(end);
    Py_XDECREF(start);
    if (PyErr_Occurred())
        return -1;
    *out = e - b;
    return 0;
}

/* The index of name's sum (a new one at its first appearance), or -1 with an error set. */
static Py_ssize_t
name_sum(PyObject *index, PyObject *name, NameSum **sums, Py_ssize_t *names, Py_ssize_t *cap)
{
    PyObject *found = PyDict_GetItemWithError(index, name); /* borrowed */
    if (found != NULL)
        return PyLong_AsSsize_t(found);
    if (PyErr_Occurred())
        return -1;
    if (*names == *cap) {
        Py_ssize_t grown = *cap ? *cap * 2 : 8;
        NameSum *more = PyMem_Realloc(*sums, grown * sizeof(NameSum));
        if (more == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        *sums = more;
        *cap = grown;
    }
    PyObject *n = PyLong_FromSsize_t(*names);
    if (n == NULL || PyDict_SetItem(index, name, n) < 0) {
        Py_XDECREF(n);
        return -1;
    }
    Py_DECREF(n);
    (*sums)[*names] = (NameSum){0, 0, 0, 0, NULL};
    return (*names)++;
}

static int
add_duration(NameSum *sum, long long duration)
{
    sum->count++;
    if (sum->count == 1 || duration > sum->longest)
        sum->longest = duration;
    long long total;
    if (!sum->overflow) {
        if (!__builtin_add_overflow(sum->total, duration, &total)) {
            sum->total = total;
            return 0;
        }
        sum->overflow = 1; /* the total stays as it was: this duration and the later ones go to extra */
    }
    PyObject *d = PyLong_FromLongLong(duration);
    PyObject *t = d == NULL ? NULL : sum->extra == NULL ? Py_NewRef(d) : PyNumber_Add(sum->extra, d);
    Py_XDECREF(d);
    Py_XSETREF(sum->extra, t);
    return t == NULL ? -1 : 0;
}

/* One span of group_spans' batch. */
static int
group_span(PyObject *live, Py_ssize_t i, double floor, PyObject *index, NameSum **sums, Py_ssize_t *names,
           Py_ssize_t *cap, PyObject *ended, PyObject *over)
{
    long long duration;
    if (span_duration(live, &duration) < 0)
        return -1;
    int compiled = PyObject_TypeCheck(live, &SpanFieldsType);
    PyObject *name = compiled ? Py_NewRef(((SpanFields *)live)->name) : PyObject_GetAttr(live, s_gs_name);
    if (name == NULL)
        return -1;
    Py_ssize_t at = name_sum(index, name, sums, names, cap);
    Py_DECREF(name);
    if (at < 0 || add_duration(&(*sums)[at], duration) < 0)
        return -1;
    PyObject *error = compiled ? Py_NewRef(((SpanFields *)live)->error) : PyObject_GetAttr(live, s_gs_error);
    if (error == NULL)
        return -1;
    int rc = error != Py_None ? PyList_Append(ended, live) : 0;
    Py_DECREF(error);
    if (rc == 0 && (double)duration > floor) {
        PyObject *n = PyLong_FromSsize_t(i);
        rc = n == NULL ? -1 : PyList_Append(over, n);
        Py_XDECREF(n);
    }
    return rc;
}

/* group_spans(spans, floor) -> (groups, ended, over): aggregates.py's _py_group_spans, in C. */
static PyObject *
group_spans(PyObject *module, PyObject *args)
{
    PyObject *spans, *floor_obj;
    if (!PyArg_ParseTuple(args, "O!O:group_spans", &PyList_Type, &spans, &floor_obj))
        return NULL;
    double floor = PyFloat_AsDouble(floor_obj);
    if (floor == -1.0 && PyErr_Occurred())
        return NULL;
    PyObject *index = PyDict_New(), *ended = PyList_New(0), *over = PyList_New(0), *groups = NULL, *result = NULL;
    NameSum *sums = NULL;
    Py_ssize_t names = 0, cap = 0;
    if (index == NULL || ended == NULL || over == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(spans); i++) {
        PyObject *live = Py_NewRef(PyList_GET_ITEM(spans, i));
        int rc = group_span(live, i, floor, index, &sums, &names, &cap, ended, over);
        Py_DECREF(live);
        if (rc < 0)
            goto done;
    }
    if ((groups = PyDict_New()) == NULL)
        goto done;
    PyObject *name, *value;
    Py_ssize_t pos = 0;
    while (PyDict_Next(index, &pos, &name, &value)) { /* in order of first appearance */
        NameSum *sum = &sums[PyLong_AsSsize_t(value)];
        PyObject *total = PyLong_FromLongLong(sum->total);
        if (total != NULL && sum->extra != NULL)
            Py_SETREF(total, PyNumber_Add(total, sum->extra));
        PyObject *items[3] = {PyLong_FromLongLong(sum->count), total, PyLong_FromLongLong(sum->longest)};
        PyObject *entry = tuple_stealing(3, items);
        int rc = entry == NULL ? -1 : PyDict_SetItem(groups, name, entry);
        Py_XDECREF(entry);
        if (rc < 0)
            goto done;
    }
    result = PyTuple_Pack(3, groups, ended, over);
done:
    for (Py_ssize_t i = 0; i < names; i++)
        Py_XDECREF(sums[i].extra);
    PyMem_Free(sums);
    Py_XDECREF(index);
    Py_XDECREF(ended);
    Py_XDECREF(over);
    Py_XDECREF(groups);
    return result;
}

static PyMethodDef core_methods[] = {
    {"group_spans", (PyCFunction)group_spans, METH_VARARGS,
     "group_spans(spans, floor) -> (groups, ended, over)\n\nA flushed batch of live spans: per name (count, total, max\n"
     "duration), in order of first appearance; the failed or cancelled ones; the indices of those\n"
     "longer than floor."},
    {"enter_span", (PyCFunction)(void (*)(void))enter_span, METH_FASTCALL,
     "enter_span(session, name, attrs)\n\nA new LiveSpan under the current span (attrs copied), made the current\n"
     "span until its _leave()."},
    {"configure_spans", (PyCFunction)(void (*)(void))configure_spans, METH_VARARGS | METH_KEYWORDS,
     "configure_spans(live_span_type, getrandbits, thread_ids, loop_of_thread, current_tasks, get_running_loop,\n"
     "                current_task, span_var)\n\nName the pieces of asynclens/tracing/spans.py a span's start uses."},
    {"set_span_observer", (PyCFunction)set_span_observer, METH_VARARGS,
     "set_span_observer(observer, native=False)\n\nThe object told of every span start and end (None: nobody);\n"
     "native: it is the scheduler probe's SpanBreakdown, whose compiled twin runs instead."},
    {"configure_breakdown", (PyCFunction)(void (*)(void))configure_breakdown, METH_VARARGS | METH_KEYWORDS,
     "configure_breakdown(task_state_type, attr, no_held, task_state_of, fold_every=256)\n\nName the pieces the span breakdown uses."},
    {"fold_values", (PyCFunction)fold_values, METH_VARARGS,
     "fold_values(counts, values, exact_below, sub_bits) -> (low, high, total, total_sq) or None\n\n"
     "stats.Histogram.record_many's loop."},
    {"configure_tasks", (PyCFunction)(void (*)(void))configure_tasks, METH_VARARGS | METH_KEYWORDS,
     "configure_tasks(span_var, handle_run, hidden_dirs, drop_own_frames, no_x, no_held, eager)\n\n"
     "Name the pieces task creation (TaskMaker) uses."},
    {"configure", (PyCFunction)(void (*)(void))configure, METH_VARARGS | METH_KEYWORDS,
     "configure(task_type, task_state_type, attr, finish, fold_every=512)\n\n"
     "Name the Python pieces the compiled hot paths call into. Called once by the scheduler probe."},
    {NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "asynclens._core",
    .m_doc = "The compiled hot paths of asynclens's scheduler and lag probes (see asynclens/_native.py).",
    .m_size = -1,
    .m_methods = core_methods,
};

#define INTERN(var, text)                                \
    if ((var = PyUnicode_InternFromString(text)) == NULL) \
        return NULL;

PyMODINIT_FUNC
PyInit__core(void)
{
    INTERN(s_self, "__self__")
    INTERN(s_gs_name, "name")
    INTERN(s_gs_error, "error")
    INTERN(s_gs_start_ns, "start_ns")
    INTERN(s_gs_end_ns, "end_ns")
    INTERN(s_get_coro, "get_coro")
    INTERN(s_cancelled, "cancelled")
    INTERN(s_describe, "describe")
    INTERN(s_explaining_wait, "explaining a wait")
    INTERN(s_exception, "_exception")
    INTERN(s_emit_task, "_emit_task")
    INTERN(s_done_state, "done")
    INTERN(s_finishing_task, "finishing a task")
    INTERN(s_busy_seen, "busy_seen")
    INTERN(s_busy_finished, "busy_finished")
    INTERN(s_task_factory, "_task_factory")
    INTERN(s_eager_start, "eager_start")
    INTERN(s_coro, "coro")
    INTERN(s_source_traceback, "_source_traceback")
    INTERN(s_tracking_task, "tracking a task")
    INTERN(s_recording_lineage, "recording task lineage")
    INTERN(s_fold, "fold")
    INTERN(s_snapshot, "_snapshot")
    INTERN(s_end, "end")
    INTERN(s_long_step_ended, "long_step_ended")
    INTERN(s_done, "done")
    INTERN(s_internal_error, "internal_error")
    INTERN(s_timing_step, "timing a task step")
    INTERN(s_marking_ready, "marking a task ready")
    INTERN(s_on_error, "_on_error")
    INTERN(s_lag_selector, "timing the selector")
    INTERN(s_gap_safe, "gap_safe")
    INTERN(s_resume, "resume")
    INTERN(s_wake, "wake")
    INTERN(s_now, "now")
    INTERN(s_span_started, "span_started")
    INTERN(s_span_ended, "span_ended")
    INTERN(s_buffer, "_buffer")
    INTERN(s_limit, "_limit")
    INTERN(s_wake_at, "_wake_at")
    INTERN(s_wake_event, "_wake")
    INTERN(s_set, "set")
    INTERN(s_append, "append")
    INTERN(s_get_name, "get_name")
    INTERN(s_note_drop, "_note_drop")
    INTERN(s_thread_id_attr, "_thread_id")
    INTERN(s_trace_id, "trace_id")
    INTERN(s_span_id, "span_id")
    INTERN(s_link_outliving, "link_outliving")
    INTERN(s_add_error_stack, "add_error_stack")
    INTERN(s_by_name, "by_name")
    INTERN(s_name_tally, "_name_tally")
    INTERN(s_recent, "recent")
    INTERN(s_starting_breakdown, "starting a span breakdown")
    INTERN(s_ending_breakdown, "ending a span breakdown")
    INTERN(s_error_status, "error")
    PyTypeObject *types[] = {&TaskFieldsType, &LoopFieldsType, &StepCallType, &CallSoonHookType, &BookFieldsType, &SelectHookType, &SpanFieldsType, &TaskMakerType, &DoneCallType};
    PyObject *m = PyModule_Create(&core_module);
    if (m == NULL)
        return NULL;
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (PyType_Ready(types[i]) < 0) {
            Py_DECREF(m);
            return NULL;
        }
        const char *dot = strrchr(types[i]->tp_name, '.');
        if (PyModule_AddObject(m, dot + 1, Py_NewRef((PyObject *)types[i])) < 0) {
            Py_DECREF((PyObject *)types[i]);
            Py_DECREF(m);
            return NULL;
        }
    }
    if (PyModule_AddIntConstant(m, "HIST_BUCKETS", HIST_BUCKETS) < 0
        || PyModule_AddIntConstant(m, "HIST_SHIFT", HIST_SHIFT) < 0
        || PyModule_AddIntConstant(m, "SLOW_STEP_NS", (long)SLOW_STEP_NS) < 0
        || PyModule_AddIntConstant(m, "BUSY_MIN_STEPS", BUSY_MIN_STEPS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
