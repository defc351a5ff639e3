"""Cache safety across processes, on real entries: processes that need the same missing entry at once build it once and
all read the same bytes; a builder killed mid-way leaves no entry, and the next call builds it normally."""
import json, os, subprocess, sys, time
from pathlib import Path
import pytest
from latent_comm.core import cache_dir, entry_lock

ROOT = Path(__file__).resolve().parent.parent
FASHION = Path('/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz')
WORDNET = Path('/usr/share/wordnet/data.noun')
SMALL_SPACE = dict(seed=0, dim=16, epochs=1, min_count=500)  # the frequent words only: trains in seconds

# Each child wraps the `cached` that data, words and embeddings call, so that every build it runs appends the entry's
# name to a shared log (one line per build, across processes); then it loads the three entries and prints a digest of
# what it read.
CHILD = '''
import json, sys
from pathlib import Path
import numpy as np
from latent_comm import data, words, embeddings
from latent_comm.core import digest
log = Path(sys.argv[1])
def logging_cached(real):
    def cached(path, build, load, **kw):
        def build_and_log(tmp):
            with open(log, 'a') as f: f.write(Path(path).name + '\\n')
            build(tmp)
        return real(path, build_and_log, load, **kw)
    return cached
for m in (data, words, embeddings): m.cached = logging_cached(m.cached)
fm = data.fashion_mnist()
test = fm['test']
vocab, vecs = words.word_table('word2vec-wordnet', **json.loads(sys.argv[2]))
x = embeddings.embed(test.select(range(300)), 'pixels', 'image', batch_size=100, progress=False)
print(json.dumps(dict(
    fashion_mnist=digest(fm['train']._fingerprint, test._fingerprint, np.asarray(test.data.column('label')),
                         *[im['bytes'] for im in test.data.column('image').to_pylist()]),
    word_space=digest(list(vocab.items()), vecs), embedding=digest(x))))
'''

def _env(cache):
    return os.environ | {'LATENT_COMM_CACHE': str(cache), 'PYTHONPATH': str(ROOT), 'HF_DATASETS_OFFLINE': '1',
                         'HF_HUB_OFFLINE': '1', 'PYTHONWARNINGS': 'ignore'}

def _leftovers(cache):
    "Temporaries (`.<entry>.<pid>-<id>.tmp`) anywhere in the cache"
    return [p for p in Path(cache).rglob('*.tmp')]

def test_cache_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv('LATENT_COMM_CACHE', str(tmp_path/'cache'))
    p = cache_dir('a', 'b')
    assert p == tmp_path/'cache'/'a'/'b' and p.is_dir()

@pytest.mark.skipif(not (FASHION.exists() and WORDNET.exists()),
                    reason='needs the Debian packages `dataset-fashion-mnist` and `wordnet-base`')
def test_processes_build_each_entry_once(tmp_path):
    pytest.importorskip('gensim', reason='pip install gensim')
    cache, log, script = tmp_path/'cache', tmp_path/'builds.log', tmp_path/'child.py'
    script.write_text(CHILD)
    start = time.time()
    procs = [subprocess.Popen([sys.executable, str(script), str(log), json.dumps(SMALL_SPACE)], env=_env(cache),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs): assert p.returncode == 0, err[-3000:]
    read = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert all(r == read[0] for r in read), read          # every process read identical bytes
    builds = log.read_text().split()
    assert sorted(set(builds)) == sorted(builds), builds   # each entry was built exactly once ...
    assert len(builds) == 3 and 'fashion_mnist-v1' in builds and any(b.startswith('word2vec-wordnet-d16') for b in builds)
    assert _leftovers(cache) == []                         # ... and no temporary is left behind
    print(f'3 processes, 3 entries, {time.time() - start:.0f} s')

CRASH = '''
import os
from latent_comm import data, embeddings
from latent_comm.encoders import Pixels
real = embeddings.cached
def cached(path, build, load, **kw):
    def build_then_die(tmp):
        build(tmp)
        os._exit(3)   # killed after writing everything, before the entry is moved into place
    return real(path, build_then_die, load, **kw)
embeddings.cached = cached
embeddings.embed(data.digits()['train'], Pixels((8, 8)), 'image', batch_size=500, progress=False)
'''

def test_killed_builder_leaves_no_entry(tmp_path, monkeypatch):
    "The digits' pixels (a real embedding entry): the builder dies inside `build`, then a normal call builds the entry"
    cache, script = tmp_path/'cache', tmp_path/'crash.py'
    script.write_text(CRASH)
    r = subprocess.run([sys.executable, str(script)], env=_env(cache), capture_output=True, text=True)
    assert r.returncode == 3, r.stderr[-3000:]
    assert list((cache/'embeddings').glob('*.safetensors')) == [] and len(_leftovers(cache)) == 1  # no entry, a temporary
    monkeypatch.setenv('LATENT_COMM_CACHE', str(cache))
    from latent_comm.data import digits
    from latent_comm.embeddings import embed, embedding_key
    from latent_comm.encoders import Pixels
    ds, enc = digits()['train'], Pixels((8, 8))
    entry = cache/'embeddings'/f"{embedding_key(ds, enc, 'image')}.safetensors"
    with entry_lock(entry, timeout=0): pass                                    # no stale lock: it is free at once
    x = embed(ds, enc, 'image', batch_size=500, progress=False)                # the next call builds it normally
    assert entry.exists() and x.shape == (1797, 64) and _leftovers(cache) == []
