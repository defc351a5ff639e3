"""The package's import graph and its declared requirements.

Three promises, read from the source with `ast` and checked in fresh processes:
1. the import graph of `latent_comm` is a tree (no cycle), and the math modules never reach the asset modules;
2. every module imports with exactly what its install declares: a module-level import needs a base requirement, and
   a package of an extra is only reached through `core.need`, which names the extra when it is missing;
3. the math modules stay light: importing one does not load pandas, datasets or transformers.
"""
import ast, json, os, re, shlex, subprocess, sys, textwrap
import importlib.metadata as md
from configparser import ConfigParser
from pathlib import Path
import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT/'latent_comm'
MODULES = sorted(p.stem for p in PKG.glob('*.py') if not p.stem.startswith('_'))
# The functional core: pure torch/numpy maths. Everything else (data, words, encoders, embeddings, models, stitching,
# distributed execution) is an asset or application module that may use the core, never the other way round.
MATH = {'core', 'similarity', 'anchors', 'relative', 'metrics', 'translation', 'discovery'}
HEAVY = ('pandas', 'datasets', 'transformers')

def _cfg():
    c = ConfigParser(delimiters=['=']); c.read(ROOT/'settings.ini'); return c['DEFAULT']

def _names(key:str)->set:
    return {Requirement(r).name.lower().replace('_', '-') for r in shlex.split(_cfg().get(key, ''))}

BASE = _names('requirements')
EXTRAS = {k[:-len('_requirements')]: _names(k) for k in _cfg() if k.endswith('_requirements') and k != 'requirements'}

_PROVIDERS = {top: {d.lower().replace('_', '-') for d in ds} for top, ds in md.packages_distributions().items()}

def _dist(top:str)->set:
    "Distributions (normalised names) that provide the top-level import name `top`"
    return _PROVIDERS.get(top, set())

class _Imports(ast.NodeVisitor):
    "Imports of one module, as (name, level, lazy, line), and the packages it asks for with need('x', ...)"
    def __init__(self): self.found, self.needs, self.depth = [], [], 0
    def _fn(self, node): self.depth += 1; self.generic_visit(node); self.depth -= 1
    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _fn
    def visit_Import(self, node):
        for a in node.names: self.found.append((a.name, 0, self.depth > 0, node.lineno))
    def visit_ImportFrom(self, node): self.found.append((node.module or '', node.level, self.depth > 0, node.lineno))
    def visit_Call(self, node):
        if getattr(node.func, 'id', getattr(node.func, 'attr', None)) == 'need' and node.args \
           and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            self.needs.append((node.args[0].value, node.lineno))
        self.generic_visit(node)

def _imports(mod:str)->_Imports:
    v = _Imports(); v.visit(ast.parse((PKG/f'{mod}.py').read_text())); return v

def _internal(mod:str)->set:
    "latent_comm modules that `mod` imports, at module level or inside functions"
    out = set()
    for name, level, *_ in _imports(mod).found:
        if level: out.add((name or '').split('.')[0])
        elif name.startswith('latent_comm.'): out.add(name.split('.')[1])
        elif name == 'latent_comm': out.add('__init__')
    return out - {'__init__', '_modidx', ''}

GRAPH = {m: _internal(m) for m in MODULES}

def test_modules_are_classified():
    "A new module must be declared math (functional core) or not, so the layering rule below covers it"
    assert set(MODULES) >= MATH - {'discovery'}, f"math modules missing: {MATH - set(MODULES)}"

def test_import_graph_has_no_cycle():
    state, stack = {}, []
    def visit(m):
        state[m] = 'open'; stack.append(m)
        for n in sorted(GRAPH.get(m, ())):
            if state.get(n) == 'open': pytest.fail(f"import cycle: {' -> '.join(stack[stack.index(n):] + [n])}")
            if n not in state: visit(n)
        state[m] = 'done'; stack.pop()
    for m in MODULES:
        if m not in state: visit(m)

def test_math_modules_do_not_reach_assets():
    "core, similarity, anchors, relative, translation, metrics (and discovery) depend on each other only"
    bad = {m: sorted(GRAPH[m] - MATH) for m in MODULES if m in MATH and GRAPH[m] - MATH}
    assert not bad, f"math modules import asset/application modules: {bad}"

def _stdlib(top:str)->bool: return top in sys.stdlib_module_names or top == '__future__'

@pytest.mark.parametrize('mod', MODULES)
def test_imports_are_declared(mod):
    """Module-level imports come from the base requirements; a package of an extra is imported inside a function,
    and the module asks for it through `need` (which names the extra when it is missing)"""
    problems, imp = [], _imports(mod)
    needs = {m.split('.')[0] for m, _ in imp.needs}
    for name, level, lazy, line in imp.found:
        if level or name.startswith('latent_comm'): continue
        top = name.split('.')[0]
        if _stdlib(top): continue
        dists = _dist(top)
        if not dists: problems.append(f"line {line}: `{name}` is not installed here at all"); continue
        if dists & BASE: continue
        if lazy and top in needs: continue
        where = [k for k, v in EXTRAS.items() if dists & v]
        problems.append(f"line {line}: `{name}` ({', '.join(sorted(dists))}) is not a base requirement"
                        + (f"; it comes with the extra(s) {where}: import it through core.need(...)" if where else
                           "; declare it in settings.ini"))
    for module, line in imp.needs:
        dists = _dist(module.split('.')[0])
        if dists and not dists & (BASE | set().union(*EXTRAS.values())):
            problems.append(f"line {line}: need({module!r}) but {sorted(dists)} is in no requirement list")
    assert not problems, f"latent_comm/{mod}.py:\n" + '\n'.join(problems)

def _closure(names:set)->set:
    "The distributions `names` install, with their dependencies (no extras), as normalised names"
    seen, todo = set(), list(names)
    while todo:
        n = todo.pop()
        if n in seen: continue
        seen.add(n)
        try: reqs = md.requires(n) or []
        except md.PackageNotFoundError: continue
        for r in map(Requirement, reqs):
            if r.marker is None or r.marker.evaluate({'extra': ''}): todo.append(r.name.lower().replace('_', '-'))
    return seen

def _run(code:str)->subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, 'PYTHONWARNINGS': 'ignore'})

_BLOCKER = '''
import sys
ALLOWED = set({allowed!r})
def _allowed(name):
    top = name.split('.')[0]
    return top in ALLOWED or top.startswith('_') or top in sys.stdlib_module_names or top in sys.builtin_module_names
class Gate:
    "Wrap a finder so that packages outside the base install look absent (find_spec None, import fails)"
    def __init__(self, inner): self.inner = inner
    def find_spec(self, name, path=None, target=None):
        return self.inner.find_spec(name, path, target) if _allowed(name) else None
    def invalidate_caches(self): getattr(self.inner, 'invalidate_caches', lambda: None)()
    def find_distributions(self, *a, **k): return getattr(self.inner, 'find_distributions', lambda *a, **k: [])(*a, **k)
sys.meta_path[:] = [Gate(f) for f in sys.meta_path]
'''

def test_base_install_imports_every_module():
    """In a process that can import only what `pip install latent_comm` (no extras) installs, every module imports;
    the asset modules defer their extras to `need`. This is the check that `fastcore` missing from the base
    requirements would have failed."""
    dists = _closure(BASE) | {'latent-comm'}
    allowed = {top for top, ds in _PROVIDERS.items() if ds & dists} | {'latent_comm'}
    code = _BLOCKER.format(allowed=sorted(allowed)) + textwrap.dedent(f'''
        import importlib
        for m in {MODULES!r}: importlib.import_module('latent_comm.' + m)
        from latent_comm.translation import Translator
        from latent_comm.relative import relative_projection
        print('ok')''')
    r = _run(code)
    assert r.returncode == 0 and r.stdout.strip().endswith('ok'), r.stderr[-3000:]

def test_blocked_extra_names_the_extra():
    "An asset needing a package of an extra, in an install without it, says which extra to install"
    dists = _closure(BASE) | {'latent-comm'}
    allowed = {top for top, ds in _PROVIDERS.items() if ds & dists} | {'latent_comm'}
    code = _BLOCKER.format(allowed=sorted(allowed)) + textwrap.dedent('''
        from latent_comm.core import need
        try: need('gensim', 'words')
        except ImportError as e: print(e)''')
    r = _run(code)
    assert "latent_comm[words]" in r.stdout, r.stdout + r.stderr[-2000:]

@pytest.mark.parametrize('mod', sorted(MATH & set(MODULES)))
def test_math_modules_are_light(mod):
    "Importing a math module loads none of pandas, datasets, transformers"
    r = _run(f"import sys, latent_comm.{mod}; print(json.dumps(sorted(m for m in {list(HEAVY)!r} if m in sys.modules)))"
             .replace('import sys,', 'import sys, json,'))
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == [], f"latent_comm.{mod} imports {r.stdout.strip()}"
