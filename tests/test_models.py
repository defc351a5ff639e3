"Tests for latent_comm.models: shapes on every device, relative invariance, seeded determinism, early stopping, the zoo cache"
import math
import pytest, torch
from hypothesis import given, settings, strategies as st
from torch import nn
import latent_comm.models as M
from latent_comm.models import (ARCHITECTURES, LatentModel, RelativeBottleneck, VAE, autoencoder, build, classifier,
                                adjacency, evaluate, fingerprint, fit, gcn_classifier, normalized_adjacency, train_zoo)

IN = (1, 8, 8)

def _data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *IN, generator=g)
    y = (x.flatten(1)[:, :32].sum(1) > x.flatten(1)[:, 32:].sum(1)).long()  # a learnable rule
    return x, y

def _same(a, b): return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))

def _orthogonal(d, seed):
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q.float()

@pytest.mark.parametrize('kind', ['mlp', 'cnn'])
@pytest.mark.parametrize('relative', [False, True])
def test_classifier_shapes_on_device(device, kind, relative):
    x, _ = _data(8)
    m = classifier(IN, 10, encoder=kind, latent=12, relative=relative, anchors=x[:5]).to(device)
    out = m(x.to(device))
    assert out.shape == (8, 10) and out.device.type == device.type
    assert m.represent(x.to(device)).shape == (8, 5 if relative else 12)

@pytest.mark.parametrize('variational', [False, True])
def test_autoencoders_on_device(device, variational):
    x, _ = _data(8)
    m = autoencoder(IN, latent=4, relative=True, anchors=x[:6], variational=variational).to(device)
    assert isinstance(m, VAE) == variational
    m.eval()
    assert m(x.to(device)).shape == (8, *IN) and m.embed(x.to(device)).shape == (8, 4)
    m.train()
    loss, correct = m.loss(x.to(device))
    assert correct is None and torch.isfinite(loss) and loss > 0

def test_fit_on_device_moves_batches(device):
    x, y = _data(64)
    m = classifier(IN, 2, latent=8, relative=True, anchors=x[:4]).to(device)
    h = fit(m, (x, y), (x, y), epochs=2, bs=32, progress=False)
    assert len(h) == 2 and m.encoder[1].weight.device.type == device.type

def test_relative_bottleneck_invariant_to_angle_preserving_maps():
    "A relative model's representation does not change when its encoder is followed by s * Q (orthogonal Q, s > 0)"
    x, _ = _data(20)
    torch.manual_seed(0)
    m = classifier(IN, 3, latent=16, relative=True, anchors=x[:7])
    for seed, s in ((0, 1.), (1, 3.5), (2, 0.2)):
        lin = nn.Linear(16, 16, bias=False); lin.weight.data = s * _orthogonal(16, seed)
        rotated = LatentModel(nn.Sequential(m.encoder, lin), m.decoder, m.bottleneck)
        with torch.no_grad(): torch.testing.assert_close(rotated.represent(x), m.represent(x), atol=1e-5, rtol=1e-5)

@settings(max_examples=25, deadline=None)
@given(st.integers(2, 12), st.floats(0., 1.), st.integers(0, 10_000))
def test_normalized_adjacency_properties(n, p, seed):
    g = torch.Generator().manual_seed(seed)
    a = (torch.rand(n, n, generator=g) < p).float().triu(1); a = a + a.T
    ah = normalized_adjacency(a)
    torch.testing.assert_close(ah, ah.T)
    ev = torch.linalg.eigvalsh(ah.double())
    assert ev.max() <= 1 + 1e-6 and ev.min() >= -1 - 1e-6  # spectrum of D^-1/2 (A+I) D^-1/2 lies in [-1, 1]
    d = (a + torch.eye(n)).sum(1)
    torch.testing.assert_close(ah @ d.sqrt(), d.sqrt())  # D^1/2 1 is its eigenvector of eigenvalue 1

@pytest.mark.parametrize('kind', ['mlp', 'cnn'])
def test_fit_is_bitwise_deterministic_on_cpu(kind):
    x, y = _data(96)
    def run(seed, train_seed):
        m = build(dict(arch='classifier', in_shape=IN, n_classes=2, encoder=kind, latent=8, relative=True), seed, anchors=x[:6])
        fit(m, (x, y), epochs=2, bs=16, seed=train_seed, max_steps=8, progress=False)
        return m
    assert _same(run(0, 0), run(0, 0))
    assert not _same(run(0, 0), run(0, 1))  # batch order differs
    assert not _same(run(0, 0), run(1, 0))  # initial weights differ

def test_vae_training_is_deterministic_and_leaves_global_rng_alone():
    x, _ = _data(64)
    def run():
        m = build(dict(arch='autoencoder', in_shape=IN, latent=3, variational=True), 0)
        fit(m, x, epochs=1, bs=16, seed=5, max_steps=3, progress=False)
        return m
    torch.manual_seed(123); before = torch.rand(1)
    torch.manual_seed(123); m1 = run(); after = torch.rand(1)
    assert torch.equal(before, after)
    assert _same(m1, run())

def test_early_stopping_and_history():
    x, y = _data(64)
    m = classifier(IN, 2, latent=8)
    h = fit(m, (x, y), (x, y), epochs=10, lr=0., patience=1, monitor='valid_acc', progress=False)
    assert len(h) == 3  # no improvement with lr=0: epochs 1 and 2 are worse than epoch 0 -> stop
    assert list(h.columns) == ['epoch', 'train_loss', 'valid_loss', 'valid_acc', 'seconds']
    assert not torch.are_deterministic_algorithms_enabled()

def test_fit_restores_best_weights():
    x, y = _data(96)
    torch.manual_seed(0)
    m = classifier(IN, 2, latent=8)
    h = fit(m, (x[:64], y[:64]), (x[64:], y[64:]), epochs=6, lr=1e-2, monitor='valid_loss', progress=False)
    assert evaluate(m, (x[64:], y[64:]))['loss'] == pytest.approx(h.valid_loss.min(), rel=1e-6)

def test_learns_something():
    x, y = _data(512)
    m = build(dict(arch='classifier', in_shape=IN, n_classes=2, latent=8, relative=True), 0, anchors=x[:16])
    fit(m, (x[:400], y[:400]), epochs=15, bs=32, lr=3e-3, progress=False)
    assert evaluate(m, (x[400:], y[400:]))['acc'] > 0.8

def test_gcn_karate_club():
    nx = pytest.importorskip('networkx')
    G = nx.karate_club_graph()
    adj = torch.tensor(nx.to_numpy_array(G), dtype=torch.float32)
    y = torch.tensor([G.nodes[i]['club'] == 'Officer' for i in G]).long()
    lab = torch.tensor([0, 1, 33, 32]); rest = torch.tensor([i for i in range(34) if i not in (0, 1, 32, 33)])
    torch.manual_seed(0)
    m = gcn_classifier(torch.eye(34), adj, 2, relative=True, anchors=lab)
    fit(m, (lab, y[lab]), epochs=100, bs=34, lr=1e-2, progress=False)
    assert evaluate(m, (rest, y[rest]))['acc'] > 0.8

def _karate():
    nx = pytest.importorskip('networkx')
    G = nx.karate_club_graph()
    y = torch.tensor([G.nodes[i]['club'] == 'Officer' for i in G]).long()
    return torch.tensor(list(G.edges)).T, y

def test_gcn_sparse_matches_dense(device):
    ei, _ = _karate()
    sp = adjacency(ei, 34).to(device)
    x = torch.randn(34, 5, generator=torch.Generator().manual_seed(0)).to(device)
    torch.testing.assert_close(normalized_adjacency(sp).to_dense(), normalized_adjacency(sp.to_dense()))
    ms, md = (build(dict(arch='gcn', n_classes=2), 3, features=x, adj=a).to(device) for a in (sp, sp.to_dense()))
    idx = torch.arange(34, device=device)
    with torch.no_grad(): torch.testing.assert_close(ms(idx), md(idx))
    assert 'encoder.a_hat' not in ms.state_dict()  # the graph is a builder argument, not saved with the weights

def test_gcn_zoo_caches_and_learns(tmp_path):
    ei, y = _karate()
    lab = torch.tensor([0, 1, 33, 32]); rest = torch.tensor([i for i in range(34) if i not in (0, 1, 32, 33)])
    kw = dict(anchors=lab, builder_args=dict(features=torch.eye(34), adj=adjacency(ei, 34)),
              epochs=100, bs=34, lr=1e-2, progress=False)
    archs = dict(rel=dict(arch='gcn', n_classes=2, relative=True))
    z1 = train_zoo(archs, [0], (lab, y[lab]), cache_dir=tmp_path, **kw)
    z2 = train_zoo(archs, [0], (lab, y[lab]), cache_dir=tmp_path, **kw)
    assert _same(z1['rel', 0], z2['rel', 0]) and len(list(tmp_path.glob('*.safetensors'))) == 1
    assert evaluate(z1['rel', 0], (rest, y[rest]))['acc'] > 0.8
    other = dict(kw, builder_args=dict(features=torch.eye(34), adj=adjacency(ei[:, 1:], 34)))
    train_zoo(archs, [0], (lab, y[lab]), cache_dir=tmp_path, **other)  # another graph: another checkpoint
    assert len(list(tmp_path.glob('*.safetensors'))) == 2

def test_normalized_adjacency_wordnet_nouns():
    "The real noun hypernym graph (82k nodes) stays sparse; D^1/2 1 is still the eigenvector of eigenvalue 1"
    from latent_comm.data import edge_index, get_dataset
    try: g = get_dataset('wordnet_nouns')
    except FileNotFoundError as e: pytest.skip(str(e))
    n = len(g['nodes'])
    a = adjacency(edge_index(g), n)
    ah = normalized_adjacency(a)
    assert ah.is_sparse and ah._nnz() == a._nnz() + n
    d = (torch.sparse.sum(a, 1).to_dense() + 1).sqrt()
    torch.testing.assert_close(torch.sparse.mm(ah, d[:, None]).squeeze(1), d, rtol=1e-5, atol=1e-5)  # hubs of degree > 400

@pytest.mark.parametrize('call, msg', [
    (lambda: classifier(IN, 3, relative=True), '`anchors` are required'),
    (lambda: classifier(IN, 3, encoder='vit'), 'known: mlp, cnn'),
    (lambda: build(dict(arch='resnet')), 'known: autoencoder, classifier'),
    (lambda: build({'latent': 3}), "with an 'arch' key"),
    (lambda: LatentModel(nn.Identity(), nn.Identity(), task='seg'), 'known: classification, reconstruction'),
    (lambda: RelativeBottleneck(torch.empty(0)), 'non-empty'),
    (lambda: normalized_adjacency(torch.ones(3, 2)), 'square'),
    (lambda: normalized_adjacency(torch.ones(3, 3).to_sparse().float() * float('nan')), 'NaN or Inf'),
    (lambda: adjacency(torch.tensor([[0], [5]]), 3), 'node rows outside'),
    (lambda: M.cnn_encoder((784,)), '(channels, height, width)'),
])
def test_errors_name_the_problem(call, msg):
    with pytest.raises((ValueError, TypeError), match=msg.replace('(', r'\(').replace(')', r'\)')): call()

def test_fit_argument_errors():
    x, y = _data(16); m = classifier(IN, 2, latent=4)
    with pytest.raises(ValueError, match='needs `valid`'): fit(m, (x, y), patience=1)
    with pytest.raises(ValueError, match='same length'): fit(m, (x, y[:3]))
    with pytest.raises(TypeError, match='tuple of tensors'): fit(m, 'data')
    with pytest.raises(ValueError, match='known: train_loss, valid_loss, valid_acc'): fit(m, (x, y), (x, y), monitor='f1')

def test_fingerprint():
    a = torch.arange(6.)
    assert fingerprint(a, {'k': 1}) == fingerprint(a.clone(), {'k': 1})
    assert fingerprint(a) != fingerprint(a.view(2, 3))
    assert fingerprint(a) != fingerprint(a.double())
    assert fingerprint({'a': 1, 'b': 2}) == fingerprint({'b': 2, 'a': 1})

def test_zoo_caches_and_reloads(tmp_path, monkeypatch):
    x, y = _data(64)
    archs = dict(a=dict(arch='classifier', in_shape=list(IN), n_classes=2, latent=4),
                 r=dict(arch='classifier', in_shape=list(IN), n_classes=2, latent=4, relative=True))
    kw = dict(anchors=x[:5], epochs=2, bs=32, progress=False)
    z1 = train_zoo(archs, [0, 1], (x, y), (x, y), tmp_path, **kw)
    files = sorted(tmp_path.glob('*.safetensors'))
    assert len(files) == 4 and all(f.name.split('-')[0] in 'ar' for f in files)
    def no_training(*a, **k): raise AssertionError('the zoo trained a model that was cached')
    monkeypatch.setattr(M, 'fit', no_training)
    z2 = train_zoo(archs, [0, 1], (x, y), (x, y), tmp_path, **kw)
    for k in z1:
        assert _same(z1[k], z2[k]) and not z2[k].training
        assert z1[k].history.equals(z2[k].history)
    with pytest.raises(AssertionError, match='trained a model'):  # other data -> another key -> training
        train_zoo(archs, [0], (x + 1, y), (x, y), tmp_path, **kw)
    with pytest.raises(AssertionError, match='trained a model'):  # other training arguments
        train_zoo(archs, [0], (x, y), (x, y), tmp_path, **(kw | dict(epochs=3)))

def test_zoo_without_cache():
    x, y = _data(32)
    z = train_zoo({'m': dict(arch='autoencoder', in_shape=IN, latent=2)}, [3], x, None, None, epochs=1, progress=False)
    assert list(z) == [('m', 3)] and len(z['m', 3].history) == 1

def test_architectures_registry_is_extensible():
    assert {'classifier', 'autoencoder'} <= set(ARCHITECTURES)
    assert ARCHITECTURES.resolve('classifier') is classifier

def test_zoo_trains_on_device(device, tmp_path):
    x, y = _data(32)
    z = train_zoo({'r': dict(arch='classifier', in_shape=IN, n_classes=2, latent=4, relative=True)}, [0], (x, y), None,
                  tmp_path, anchors=x[:4], epochs=1, progress=False, device=device)
    m = z['r', 0]
    assert m.bottleneck.anchors.device.type == device.type
    z2 = train_zoo({'r': dict(arch='classifier', in_shape=IN, n_classes=2, latent=4, relative=True)}, [0], (x, y), None,
                   tmp_path, anchors=x[:4], epochs=1, progress=False, device=device)
    assert _same(m, z2['r', 0])
