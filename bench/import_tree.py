"""Child script: import one module and print who imported what, and what each load cost.

    python -I -S bench/import_tree.py MODULE [SYS_PATH_ENTRY...]

`-X importtime` nests by the C import stack, so modules loaded through importlib.import_module
(pydantic's and Powertools' lazy imports) appear under the wrong parent or not at all. Here a
meta-path finder wraps each found spec's exec_module, so the parent of a module is whichever
module's body was executing when it was loaded, however the import was spelled.

Garbage collections are timed through gc.callbacks and taken out of the self time of the module
that happened to be running (the collector fires on allocation counts, so a 25 ms gen-2 pass lands
on the same innocent module every run); their total is the "(gc)" row.

One JSON object per line on stdout: name, parent, cumulative µs (find + exec, children and any
collections included), self µs (without children and collections).
"""

import gc
import sys
import time

_stack: list[int] = []  # indices into _records of the modules whose bodies are executing
# [name, parent, cumulative s, children's cumulative s, collections while it was on top]
_records: list[list] = []
_gc = {"started": 0.0, "total": 0.0, "count": 0}


def _on_gc(phase, info):  # type: ignore[no-untyped-def]
    now = time.perf_counter()
    if phase == "start":
        _gc["started"] = now
        return
    spent = now - _gc["started"]
    _gc["total"] += spent
    _gc["count"] += 1
    if _stack:
        _records[_stack[-1]][4] += spent


class _TimingFinder:
    def find_spec(self, name, path, target=None):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        # Built-in and frozen importers are shared classes: leave them alone (they are cheap).
        if loader is None or isinstance(loader, type) or not hasattr(loader, "exec_module"):
            return spec
        find_time = time.perf_counter() - started
        exec_module = loader.exec_module

        def timed_exec(module):  # type: ignore[no-untyped-def]
            parent = _stack[-1] if _stack else None
            record = [name, _records[parent][0] if parent is not None else "", 0.0, 0.0, 0.0]
            _stack.append(len(_records))
            _records.append(record)
            t0 = time.perf_counter()
            try:
                exec_module(module)
            finally:
                _stack.pop()
                record[2] = time.perf_counter() - t0 + find_time
                if parent is not None:
                    _records[parent][3] += record[2]

        loader.exec_module = timed_exec  # type: ignore[method-assign]
        return spec


def main() -> None:
    module = sys.argv[1]
    sys.path[0:0] = sys.argv[2:]
    sys.meta_path.insert(0, _TimingFinder())
    gc.callbacks.append(_on_gc)
    t0 = time.perf_counter()
    __import__(module)
    total = time.perf_counter() - t0
    gc.callbacks.remove(_on_gc)
    import json  # after the measurement, so it is not charged to the module

    out = sys.stdout
    out.write(json.dumps({"name": "(total)", "parent": "", "cum_us": total * 1e6, "self_us": 0.0}) + "\n")
    collections = {"name": "(gc)", "parent": "", "cum_us": _gc["total"] * 1e6, "self_us": _gc["total"] * 1e6}
    out.write(json.dumps({**collections, "count": _gc["count"]}) + "\n")
    for name, parent, cumulative, children, collected in _records:
        own = cumulative - children - collected
        out.write(
            json.dumps({"name": name, "parent": parent, "cum_us": cumulative * 1e6, "self_us": own * 1e6})
        )
        out.write("\n")


if __name__ == "__main__":
    main()
