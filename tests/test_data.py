"Tests for latent_comm.data: offline data sets, the WordNet parser and the official-source downloads"
import gzip, io, tarfile, warnings
from pathlib import Path
import numpy as np
import pooch
import pytest, torch
from conftest import needs_file, _files  # tmp_cache is a fixture there too
from latent_comm import data
from latent_comm.data import edge_index, fetch_official, get_dataset

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

def _raise(e): raise e

def test_fashion_mnist_missing_names_package(monkeypatch, tmp_path):
    monkeypatch.setattr(data, '_FASHION_DIR', tmp_path/'none')
    monkeypatch.setattr(data.datasets, 'load_dataset', lambda *a, **k: _raise(ConnectionError('offline')))
    with pytest.raises(FileNotFoundError, match='dataset-fashion-mnist'): get_dataset('fashion_mnist')

def test_fashion_mnist_other_errors_propagate(monkeypatch, tmp_path):
    "Only a network failure is reported as 'Hub unreachable'; any other error keeps its own type and message"
    monkeypatch.setattr(data, '_FASHION_DIR', tmp_path/'none')
    monkeypatch.setattr(data.datasets, 'load_dataset', lambda *a, **k: _raise(ValueError('bad builder config')))
    with pytest.raises(ValueError, match='bad builder config'): get_dataset('fashion_mnist')
    monkeypatch.setattr(data.datasets, 'load_dataset', lambda *a, **k: _raise(PermissionError('read-only cache')))
    with pytest.raises(PermissionError, match='read-only cache'): get_dataset('fashion_mnist')

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

def test_wordnet_corpus():
    needs_file('/usr/share/wordnet/data.noun', 'wordnet-base')
    corpus = data.wordnet_corpus()
    assert len(corpus) == 117659 and all(isinstance(w, str) for w in corpus[0])

def test_wordnet_missing_names_package(tmp_cache, monkeypatch, tmp_path):
    monkeypatch.setattr(data, '_WORDNET_DIR', tmp_path)
    monkeypatch.delenv('WNHOME', raising=False)
    monkeypatch.setitem(data.OFFICIAL_SOURCES, 'wordnet-3.0', ('https://unreachable.invalid/WordNet-3.0.tar.gz', None))
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

# ---- official sources: each fallback runs on a file:// copy of the official archive layout, built from the installed
# ---- package or made by the test, so the download, unpacking and parsing code runs on real files without a network

def _serve(monkeypatch, name, archive, known_hash=None):
    "Point `OFFICIAL_SOURCES[name]` at the local `archive`"
    monkeypatch.setitem(data.OFFICIAL_SOURCES, name, (archive.as_uri(), known_hash))

def _tar(path, members:dict):
    "Write a tar archive (compression from the suffix) holding `members` (name -> bytes)"
    with tarfile.open(path, 'w:xz' if path.suffix == '.xz' else 'w:gz') as t:
        for name, b in members.items():
            info = tarfile.TarInfo(name); info.size = len(b); t.addfile(info, io.BytesIO(b))
    return path

def test_wordnet_official_fallback(tmp_cache, tmp_path, monkeypatch):
    needs_file('/usr/share/wordnet/data.noun', 'wordnet-base')
    wn = Path('/usr/share/wordnet')
    arc = tmp_path/'WordNet-3.0.tar.gz'
    with tarfile.open(arc, 'w:gz') as t:  # Princeton's layout: WordNet-3.0/dict/{data,index}.* and more
        for f in [*wn.glob('data.*'), *wn.glob('index.*')]: t.add(f, f'WordNet-3.0/dict/{f.name}')
        info = tarfile.TarInfo('WordNet-3.0/dict/verb.Framestext'); info.size = 5
        t.addfile(info, io.BytesIO(b'1 x\n\n'))  # made here (Debian's wordnet-base lacks it): not needed, not unpacked
    _serve(monkeypatch, 'wordnet-3.0', arc)
    monkeypatch.setattr(data, '_WORDNET_DIR', tmp_path/'none'); monkeypatch.delenv('WNHOME', raising=False)
    root = data._wordnet_root()
    assert root.parent.parent.parent == tmp_cache/'downloads'/'wordnet-3.0' and root.name == 'dict'
    assert (root/'data.noun').read_bytes() == (wn/'data.noun').read_bytes()
    assert not (root/'verb.Framestext').exists()
    assert data._sense_numbers(root) == data._sense_numbers(wn)
    arc.unlink(); assert data._wordnet_root() == root  # unpacked once, the archive is no longer needed

def test_fetch_official_folder_depends_on_members(tmp_cache, tmp_path, monkeypatch):
    "A second call with another member filter gets those members, not the folder unpacked for the first filter"
    arc = _tar(tmp_path/'freedict-eng-fra-0.1.6.dictd.tar.xz', {'eng-fra/eng-fra.index': b'i', 'eng-fra/eng-fra.dict.dz': b'd'})
    _serve(monkeypatch, 'freedict-eng-fra', arc)
    a = fetch_official('freedict-eng-fra', members=('*.index',))
    b = fetch_official('freedict-eng-fra', members=('*.dict.dz',))
    assert _files(a) == ['eng-fra/eng-fra.index'] and _files(b) == ['eng-fra/eng-fra.dict.dz']
    assert fetch_official('freedict-eng-fra', members=['*.index']) == a
    assert _files(fetch_official('freedict-eng-fra')) == ['eng-fra/eng-fra.dict.dz', 'eng-fra/eng-fra.index']

def test_fetch_official_checks_the_hash(tmp_cache, tmp_path, monkeypatch):
    arc = _tar(tmp_path/'freedict-eng-fra-0.1.6.dictd.tar.xz', {'eng-fra/eng-fra.index': b'i'})
    _serve(monkeypatch, 'freedict-eng-fra', arc, 'sha256:' + '0'*64)
    with pytest.raises(ValueError, match=r'freedict-eng-fra-0\.1\.6\.dictd\.tar\.xz from file://.*does not match'):
        fetch_official('freedict-eng-fra')
    assert _files(tmp_cache/'downloads') == []  # a mismatching download is not kept
    _serve(monkeypatch, 'freedict-eng-fra', arc, 'sha256:' + pooch.file_hash(str(arc)))
    assert _files(fetch_official('freedict-eng-fra')) == ['eng-fra/eng-fra.index']
    _serve(monkeypatch, 'freedict-eng-fra', arc, 'sha256:' + 'f'*64)  # a new known hash: the kept archive is checked again
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        with pytest.raises(ValueError, match='does not match'): fetch_official('freedict-eng-fra')
    assert any('unreadable' in str(x.message) for x in w)

def test_unpacking_refuses_unsafe_members(tmp_cache, tmp_path, monkeypatch):
    import zipfile
    arc = tmp_path/'glove.6B.zip'
    with zipfile.ZipFile(arc, 'w') as z: z.writestr('../evil.txt', 'x')
    _serve(monkeypatch, 'glove-6b', arc)
    with pytest.raises(ValueError, match='unsafe member names'): fetch_official('glove-6b')
    assert not (tmp_cache/'downloads'/'evil.txt').exists() and not (tmp_cache/'evil.txt').exists()

def test_wordnet_offline_names_package_and_source(tmp_cache, tmp_path, monkeypatch):
    monkeypatch.setitem(data.OFFICIAL_SOURCES, 'wordnet-3.0', ('https://unreachable.invalid/archive.tar.gz', None))
    monkeypatch.setattr(data, '_WORDNET_DIR', tmp_path/'none'); monkeypatch.delenv('WNHOME', raising=False)
    with pytest.raises(FileNotFoundError, match=r'wordnet-base.*unreachable\.invalid'): data._wordnet_root()
    assert _files(tmp_cache/'downloads') == []  # nothing half-written is left behind

def test_corrupt_archive_is_fetched_again(tmp_cache, tmp_path, monkeypatch):
    arc = tmp_path/'glove.6B.zip'; arc.write_bytes(b'not an archive')
    _serve(monkeypatch, 'glove-6b', arc)
    with pytest.raises(ValueError, match='glove.6B.zip .*could not be unpacked'): fetch_official('glove-6b')
    assert _files(tmp_cache/'downloads') == []
    import zipfile
    with zipfile.ZipFile(arc, 'w') as z: z.writestr('glove.6B.50d.txt', 'the 1.0\n')
    assert _files(fetch_official('glove-6b')) == ['glove.6B.50d.txt']

def test_unknown_official_source():
    with pytest.raises(ValueError, match='known: wordnet-3.0, glove-6b'): fetch_official('imagenet')
