"Tests for latent_comm.embeddings: the embedding cache, its key, and the pixel helpers"
import functools, json, os, subprocess, sys, warnings
from pathlib import Path
import numpy as np
import pytest, torch
from datasets import Dataset
from safetensors.torch import save_file
from latent_comm.core import cache_dir
from latent_comm.embeddings import embed, embedding_key, pixel_tensors, preprocess_key
from latent_comm.encoders import Pixels

ROOT = Path(__file__).resolve().parent.parent


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
    with pytest.warns(UserWarning, match='unreadable'):
        y = embed(words_ds, enc, 'text', progress=False)
    assert enc.calls == 1 and torch.equal(x, y)
    enc.calls = 0
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert torch.equal(embed(words_ds, enc, 'text', progress=False), x) and enc.calls == 0

def test_embed_result_is_not_a_view_of_the_cache_file(tmp_cache, words_ds):
    enc = Counting()
    embed(words_ds, enc, 'text', progress=False)
    x = embed(words_ds, enc, 'text', progress=False)  # read from the cache
    ref = x.clone()
    p = _entry(words_ds, enc); p.write_bytes(p.read_bytes()[:-40])
    assert torch.equal(x, ref)

def test_embed_no_cache(tmp_cache, words_ds):
    enc = Counting()
    embed(words_ds, enc, 'text', cache=False, progress=False)
    assert not (tmp_cache/'embeddings').exists() or not list((tmp_cache/'embeddings').iterdir())

def test_embed_errors(tmp_cache, words_ds):
    with pytest.raises(ValueError, match='columns: text'): embed(words_ds, Counting(), 'image')
    with pytest.raises(ValueError, match='batch_size'): embed(words_ds, Counting(), 'text', batch_size=0)
    with pytest.raises(TypeError, match='needs a string `id`'): embed(words_ds, object(), 'text')

def test_embedding_key_follows_fingerprint(words_ds):
    enc = Counting()
    keys = {embedding_key(words_ds.select(range(a, a + 10)), enc, 'text') for a in range(5)}
    assert len(keys) == 5
    assert embedding_key(words_ds, enc, 'text') == embedding_key(words_ds, enc, 'text')
    assert embedding_key(words_ds.map(lambda r: {'text': r['text'] + '!'}), enc, 'text') != embedding_key(words_ds, enc, 'text')

# ---- the key must never be shared by two computations that can differ

def test_key_follows_encoder_settings(words_ds):
    img = Dataset.from_dict({'image': [np.zeros((8, 8), np.uint8)] * 3})
    assert embedding_key(img, Pixels((8, 8)), 'image') != embedding_key(img, Pixels((8, 8, 1)), 'image')

def _truncate_to(k): return lambda b: [s[:k] for s in b]
def _cut(b, k=3): return [s[:k] for s in b]
SUFFIX = '!'
def _exclaim(b): return [s + SUFFIX for s in b]

def test_key_follows_captured_values(words_ds, monkeypatch):
    enc = Counting()
    key = lambda pre: embedding_key(words_ds, enc, 'text', pre)
    assert key(_truncate_to(3)) != key(_truncate_to(5))                                  # a closure's captured value
    assert key(_truncate_to(3)) == key(_truncate_to(3))
    assert key(functools.partial(_cut, k=3)) != key(functools.partial(_cut, k=5))        # functools.partial arguments
    f = lambda b, k=1: b[:k]
    before = key(f); f.__defaults__ = (2,)
    assert key(f) != before                                                              # a default argument
    before = key(_exclaim); monkeypatch.setattr(sys.modules[__name__], 'SUFFIX', '?')
    assert key(_exclaim) != before                                                       # a global the function reads

def test_embed_recomputes_for_another_captured_value(tmp_cache, words_ds):
    enc = Counting()
    a = embed(words_ds, enc, 'text', preprocess=_truncate_to(3), progress=False)
    b = embed(words_ds, enc, 'text', preprocess=_truncate_to(5), progress=False)
    assert enc.calls == 2 and not torch.equal(a, b)  # not the stale vectors of the first preprocessing

def test_unhashable_captured_value_is_an_error(words_ds):
    class Tokenizer: pass
    tok = Tokenizer()
    with pytest.raises(TypeError, match='`tok`, which .* captures'): preprocess_key(lambda b: [tok for _ in b])
    with pytest.raises(TypeError, match='functools.partial'): preprocess_key(functools.partial(_cut, k=object()))
    with pytest.raises(TypeError, match='cache=False'): embed(words_ds, Counting(), 'text', preprocess=lambda b: [tok for _ in b])

def test_key_of_library_functions_and_encoders():
    assert preprocess_key(np.asarray) == preprocess_key(np.asarray) != preprocess_key(np.array)
    assert preprocess_key(Pixels((8, 8)).encode) != preprocess_key(Pixels((9, 9)).encode)  # bound to objects with an id

def test_key_is_the_same_in_another_process(tmp_path):
    "A function's key depends on its content only, not on the process (hash seed, memory addresses)"
    (tmp_path/'prep.py').write_text("def make(k):\n    return lambda b: [s[:k] for s in b if s not in {'a', 'b', 'c'}]\n")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import prep;"
            "from latent_comm.embeddings import preprocess_key; print(preprocess_key(prep.make(3)))")
    procs = [subprocess.Popen([sys.executable, '-c', code, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              env=os.environ | {'PYTHONHASHSEED': seed, 'PYTHONPATH': str(ROOT)}) for seed in ('1', '2')]
    keys = {p.communicate(timeout=300)[0] for p in procs}
    assert all(p.returncode == 0 for p in procs) and len(keys) == 1 and len(keys.pop().strip()) == 64

def test_pixel_tensors(tmp_cache):
    ds = Dataset.from_dict({'image': [np.full((8, 8), 255 * (i % 2), np.uint8) for i in range(6)], 'label': list(range(6))})
    x, y = pixel_tensors(ds, shape=(8, 8))
    assert x.shape == (6, 1, 8, 8) and torch.equal(y, torch.arange(6))
    assert torch.equal(x[1], torch.ones(1, 8, 8)) and torch.equal(x[0], torch.zeros(1, 8, 8))
