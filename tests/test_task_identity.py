"""Task identity: lambdas, partials, bound methods, callable objects, stale code, pickling, __main__."""

from __future__ import annotations

import functools
import importlib
import os
import pickle
import subprocess
import sys
import textwrap
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import pytest

import terra
from terra import Task

CALLS: list = []


@pytest.fixture(autouse=True)
def _store(store):
    CALLS.clear()
    yield store


@pytest.fixture
def module_dir(tmp_path, monkeypatch):
    """A directory on sys.path where a test writes modules; they are forgotten afterwards."""
    d = tmp_path / "mods"
    d.mkdir()
    monkeypatch.syspath_prepend(str(d))
    before = set(sys.modules)
    yield d
    for name in set(sys.modules) - before:
        sys.modules.pop(name, None)


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    importlib.invalidate_caches()


def add(a, b):
    CALLS.append(("add", a, b))
    return a + b


def mul(a, b):
    CALLS.append(("mul", a, b))
    return a * b


class Model:
    def __init__(self, k):
        self.k = k

    def predict(self, x):
        CALLS.append(("predict", self.k, x))
        return self.k * x


class Scaler:
    def __init__(self, k):
        self.k = k

    def __call__(self, x):
        CALLS.append(("scale", self.k, x))
        return self.k + x


# -- 15.1 lambdas on one line ----------------------------------------------------------


def test_lambdas_on_one_line_do_not_share_an_entry():
    inc, dbl = Task(lambda x: x + 1), Task(lambda x: x * 2)
    assert inc(5) == 6
    assert dbl(5) == 10
    assert inc(5) == 6 and dbl(5) == 10  # each hits its own entry
    assert terra.get_run(2)["cache_key"] != terra.get_run(1)["cache_key"]
    assert len(terra.get_runs()) == 2


def test_lambda_defaults_and_closures_enter_the_key():
    fs = [Task(lambda x, k=k: x + k) for k in (1, 2)]  # same source line, different defaults
    assert [f(10) for f in fs] == [11, 12]

    def make(k):
        return Task(lambda x: x * k)

    assert [make(3)(10), make(4)(10), make(3)(10)] == [30, 40, 30]
    assert len(terra.get_runs()) == 4  # the last call was a hit


# -- 15.2 partials -------------------------------------------------------------------------------


def test_partials_key_on_function_and_bound_arguments():
    assert Task(functools.partial(add, 1))(10) == 11
    assert Task(functools.partial(add, 2))(10) == 12
    assert Task(functools.partial(mul, 3))(10) == 30
    assert Task(functools.partial(add, b=5))(a=10) == 15
    assert Task(functools.partial(add, 1))(10) == 11  # the same partial again: a hit
    assert CALLS == [("add", 1, 10), ("add", 2, 10), ("mul", 3, 10), ("add", 10, 5)]
    t = Task(functools.partial(add, 1))
    assert t.identity == f"{__name__}:partial(add)" and t.name == "add"


# -- 15.3 bound methods and callable objects -----------------------------------------------------------


def test_bound_method_keys_on_its_instance():
    assert Task(Model(2).predict)(10) == 20
    assert Task(Model(3).predict)(10) == 30
    assert Task(Model(2).predict)(10) == 20  # an equal instance: a hit
    assert CALLS == [("predict", 2, 10), ("predict", 3, 10)]
    m = Model(4)
    t = Task(m.predict)
    assert t(1) == 4
    m.k = 5  # the instance changed after the task was made
    assert t(1) == 5
    assert t.identity == f"{__name__}:Model.predict"


def test_callable_object_keys_on_its_state():
    assert Task(Scaler(1))(10) == 11
    assert Task(Scaler(2))(10) == 12
    s = Scaler(7)
    t = Task(s)
    assert t(0) == 7
    s.k = 8
    assert t(0) == 8
    assert CALLS == [("scale", 1, 10), ("scale", 2, 10), ("scale", 7, 0), ("scale", 8, 0)]
    assert t.identity == f"{__name__}:Scaler.__call__"


def test_why_names_a_changed_bound_value():
    m = Model(2)
    t = Task(m.predict)
    t(1)
    m.k = 3
    t(1)
    w = terra.why(2)
    assert "bound values self changed" in w.reason
    assert "~ bound value self" in str(w)


# -- 15.4 a module edited on disk after import ------------------------------------------------------


def test_stale_module_keys_on_the_loaded_code(module_dir, tmp_path, python, subprocess_env):
    _write(module_dir / "stage.py", """
        from terra import Task

        @Task
        def f(x):
            return x
    """)
    import stage

    _write(module_dir / "stage.py", """
        from terra import Task

        @Task
        def f(x):
            return x + 1000
    """)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert stage.f(1) == 1  # the loaded code runs; its result is keyed by that code
    env = {**subprocess_env, "PYTHONPATH": f"{module_dir}{os.pathsep}{subprocess_env['PYTHONPATH']}",
           "TERRA_STORAGE_DIR": terra.get_config().storage_dir, "PYTHONDONTWRITEBYTECODE": "1"}
    out = subprocess.run([python, "-c", "import terra, stage; terra.configure(quiet=True); print(stage.f(1))"],
                         env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1001"  # a fresh process with the new code does not get the stale result
    assert any("stage.f was changed in" in str(w.message) and "since it was imported" in str(w.message)
               for w in caught)


# -- 15.5 a replaced __code__ ----------------------------------------------------------------------


def test_replaced_code_object_is_detected():
    def f():
        return 5

    def g():
        return 6

    t = Task(f)
    assert t() == 5
    f.__code__ = g.__code__
    assert f() == 6 and t() == 6
    f.__defaults__ = ()  # defaults replaced too: still consistent
    assert t() == 6


# -- 15.6 pickling -------------------------------------------------------------------------------------


SQ_MODULE = """
    from terra import Task

    @Task
    def sq(x):
        return x * x
"""


def test_module_level_task_pickles_by_reference(module_dir):
    _write(module_dir / "sqmod.py", SQ_MODULE)
    import sqmod

    assert pickle.loads(pickle.dumps(sqmod.sq)) is sqmod.sq


def test_closure_task_pickles_by_value():
    k = 3
    t = Task(lambda x: x * k)
    t2 = pickle.loads(pickle.dumps(t))
    assert t2 is not t and t2.identity == t.identity
    assert t(2) == 6 and t2(2) == 6
    assert len(terra.get_runs()) == 1  # the copy hits the original's entry
    bound = pickle.loads(pickle.dumps(Task(functools.partial(add, 4), cache_ignored_args=["b"], notify=False)))
    assert bound(1) == 5 and bound.cache_ignored == {"b"} and bound.notify is False


def test_tasks_map_over_a_process_pool(module_dir):
    _write(module_dir / "sqmod.py", SQ_MODULE)
    import sqmod

    k = 10
    shifted = Task(lambda x: x + k)
    with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as ex:
        assert list(ex.map(sqmod.sq, range(4))) == [0, 1, 4, 9]
        assert list(ex.map(shifted, range(3))) == [10, 11, 12]
    runs = terra.get_runs()
    assert len(runs) == 7
    assert os.getpid() not in {terra.get_meta(int(r))["pid"] for r in runs["run_id"]}  # ran in the workers
    assert [sqmod.sq(3), shifted(2)] == [9, 12]
    assert len(terra.get_runs()) == 7  # the workers' results are hits here


def test_main_script_tasks_run_in_spawned_workers(tmp_path, python, subprocess_env):
    """A task defined in a script pickles by value; workers (``__mp_main__``) share its identity."""
    script = tmp_path / "pipeline.py"
    script.write_text(textwrap.dedent("""
        import sys
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context
        import terra
        from terra import Task

        @Task
        def sq(x):
            return x * x

        if __name__ == "__main__":
            terra.configure(storage_dir=sys.argv[1], quiet=True)
            with ProcessPoolExecutor(2, mp_context=get_context("spawn")) as ex:
                print(list(ex.map(sq, range(4))))
            print(sq.identity, sq(3, return_run_id=True)[0] <= 4, len(terra.get_runs()))
    """))
    store = str(tmp_path / "s")
    out = subprocess.run([python, str(script), store], env=subprocess_env, capture_output=True, text=True,
                         cwd=str(tmp_path), check=True)
    assert out.stdout.split("\n")[:2] == ["[0, 1, 4, 9]", "__main__:sq True 4"]
    identities = subprocess.run(
        [python, "-c", f"import terra; terra.configure(storage_dir={store!r}); "
                       "r = terra.get_runs(); print(sorted(set(r['module'] + ':' + r['fn'])))"],
        env=subprocess_env, capture_output=True, text=True, check=True).stdout.strip()
    assert identities == "['__main__:sq']"  # not __mp_main__ in the workers


# -- 9.3 identity does not depend on how the module was started ----------------------------------------------


def test_identity_same_for_python_m_and_import(tmp_path, python, subprocess_env):
    pkg = tmp_path / "proj" / "stagepkg"
    _write(pkg / "__init__.py", "")
    _write(pkg / "stage.py", """
        import sys
        from concurrent.futures import ProcessPoolExecutor
        from multiprocessing import get_context
        import terra
        from terra import Task

        @Task
        def f(x):
            return x + 1

        def identity_in_worker():
            return f.identity  # this module re-run as __mp_main__ in a spawned worker

        if __name__ == "__main__":
            terra.configure(storage_dir=sys.argv[1])
            print(f.identity)
            f(2)
            with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as ex:
                print(ex.submit(identity_in_worker).result())
    """)
    store = str(tmp_path / "s")
    env = {**subprocess_env, "PYTHONPATH": f"{tmp_path / 'proj'}{os.pathsep}{subprocess_env['PYTHONPATH']}"}
    first = subprocess.run([python, "-m", "stagepkg.stage", store], env=env, capture_output=True, text=True,
                           check=True, cwd=str(tmp_path))
    assert first.stdout.split("\n")[:3] == ["stagepkg.stage:f", "task: f, run_id=1", "stagepkg.stage:f"]
    second = subprocess.run(
        [python, "-c", f"import terra, stagepkg.stage as s; terra.configure(storage_dir={store!r}); s.f(2)"],
        env=env, capture_output=True, text=True, check=True)
    assert second.stdout.strip() == "task: f, run_id=1 (cached)"


def test_why_names_an_identity_change(module_dir):
    body = """
        from terra import Task

        @Task
        def f(x):
            return x + {}
    """
    _write(module_dir / "oldname.py", body.format(1))
    _write(module_dir / "newname.py", body.format(2))
    import newname
    import oldname

    oldname.f(1)
    newname.f(1)
    w = terra.why(2)
    assert w.baseline == 1 and w.identity == ("oldname:f", "newname:f")
    assert "identity changed (oldname:f -> newname:f)" in w.reason
    assert "~ code of newname.f" not in str(w) and "+ code of newname.f" in str(w)
