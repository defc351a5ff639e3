"Tests for latent_comm.models: shapes on every device, relative invariance, seeded determinism, early stopping, the zoo cache (shared by processes)"
import subprocess, sys, textwrap
import pytest, torch
from hypothesis import given, settings, strategies as st
from torch import nn
import latent_comm.models as M
from latent_comm.models import (ARCHITECTURES, LatentModel, MeanEncoder, RelativeBottleneck, VAE, autoencoder, build,
                                classifier, adjacency, evaluate, fit, gcn_classifier, normalized_adjacency, train_zoo)

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
    h = fit(m, (x, y), (x, y), epochs=2, batch_size=32, progress=False)
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
        fit(m, (x, y), epochs=2, batch_size=16, seed=train_seed, max_steps=8, progress=False)
        return m
    assert _same(run(0, 0), run(0, 0))
    assert not _same(run(0, 0), run(0, 1))  # batch order differs
    assert not _same(run(0, 0), run(1, 0))  # initial weights differ

def test_vae_training_is_deterministic_and_leaves_global_rng_alone():
    x, _ = _data(64)
    def run():
        m = build(dict(arch='autoencoder', in_shape=IN, latent=3, variational=True), 0)
        fit(m, x, epochs=1, batch_size=16, seed=5, max_steps=3, progress=False)
        return m
    torch.manual_seed(123); before = torch.rand(1)
    torch.manual_seed(123); m1 = run(); after = torch.rand(1)
    assert torch.equal(before, after)
    assert _same(m1, run())

@pytest.mark.parametrize('patience', [1, 2, 4])
def test_patience_is_the_number_of_epochs_without_improvement(patience):
    "With lr=0 no epoch improves on the first: `patience=p` stops after exactly p more epochs"
    x, y = _data(64)
    m = classifier(IN, 2, latent=8)
    h = fit(m, (x, y), (x, y), epochs=10, lr=0., patience=patience, monitor='valid_acc', progress=False)
    assert len(h) == 1 + patience
    assert list(h.columns) == ['epoch', 'train_loss', 'valid_loss', 'valid_acc', 'seconds']
    assert not torch.are_deterministic_algorithms_enabled()

def test_fit_restores_best_weights_with_patience():
    x, y = _data(96)
    torch.manual_seed(0)
    m = classifier(IN, 2, latent=8)
    h = fit(m, (x[:64], y[:64]), (x[64:], y[64:]), epochs=6, lr=1e-2, patience=6, monitor='valid_loss', progress=False)
    assert evaluate(m, (x[64:], y[64:]))['loss'] == pytest.approx(h.valid_loss.min(), rel=1e-6)

def test_fit_keeps_last_weights_without_patience():
    "Validation data alone is recorded, never acted on: the weights are those of a run without it"
    x, y = _data(96)
    def run(valid, **kw):
        torch.manual_seed(0); m = classifier(IN, 2, latent=8)
        return m, fit(m, (x, y), valid, epochs=5, lr=1e-2, progress=False, **kw)
    wrong = (x, 1 - y)  # the validation loss grows while the model learns the rule: the best epoch is an early one
    (last, _), (m, h), (best, hb) = run(None), run(wrong), run(wrong, patience=5)
    assert _same(m, last) and h.valid_loss.idxmin() < len(h) - 1
    assert not _same(best, last) and evaluate(best, wrong)['loss'] == hb.valid_loss.min()

def test_learns_something():
    x, y = _data(512)
    m = build(dict(arch='classifier', in_shape=IN, n_classes=2, latent=8, relative=True), 0, anchors=x[:16])
    fit(m, (x[:400], y[:400]), epochs=15, batch_size=32, lr=3e-3, progress=False)
    assert evaluate(m, (x[400:], y[400:]))['acc'] > 0.8

def test_gcn_karate_club():
    nx = pytest.importorskip('networkx')
    G = nx.karate_club_graph()
    adj = torch.tensor(nx.to_numpy_array(G), dtype=torch.float32)
    y = torch.tensor([G.nodes[i]['club'] == 'Officer' for i in G]).long()
    lab = torch.tensor([0, 1, 33, 32]); rest = torch.tensor([i for i in range(34) if i not in (0, 1, 32, 33)])
    torch.manual_seed(0)
    m = gcn_classifier(torch.eye(34), adj, 2, relative=True, anchors=lab)
    fit(m, (lab, y[lab]), epochs=100, batch_size=34, lr=1e-2, progress=False)
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
              epochs=100, batch_size=34, lr=1e-2, progress=False)
    archs = dict(rel=dict(arch='gcn', n_classes=2, relative=True))
    z1 = train_zoo(archs, [0], (lab, y[lab]), cache_dir=tmp_path, **kw)
    z2 = train_zoo(archs, [0], (lab, y[lab]), cache_dir=tmp_path, **kw)
    assert _same(z1['rel', 0], z2['rel', 0]) and len(list(tmp_path.glob('*.safetensors'))) == 1
    assert evaluate(z1['rel', 0], (rest, y[rest]))['acc'] > 0.8
    other = dict(kw, builder_args=dict(features=torch.eye(34), adj=adjacency(ei[:, 1:], 34)))
    train_zoo(archs, [0], (lab, y[lab]), cache_dir=tmp_path, **other)  # another graph: another checkpoint
    assert len(list(tmp_path.glob('*.safetensors'))) == 2

def test_gcn_depth_and_width_are_configuration():
    "A deeper, wider GCN is a configuration of 'gcn': built, trained and learning like the two-layer one"
    ei, y = _karate()
    lab = torch.tensor([0, 1, 33, 32]); rest = torch.tensor([i for i in range(34) if i not in (0, 1, 32, 33)])
    torch.manual_seed(0)
    m = build(dict(arch='gcn', n_classes=2, relative=True, hidden=32, depth=3), 0, features=torch.eye(34),
              adj=adjacency(ei, 34), anchors=lab)
    assert len(m.encoder.mid) == 1 and m.encoder.w1.out_features == 32
    fit(m, (lab, y[lab]), epochs=100, batch_size=34, lr=1e-2, progress=False)
    assert evaluate(m, (rest, y[rest]))['acc'] > 0.8
    with pytest.raises(ValueError, match='`depth` must be an integer >= 2'):
        build(dict(arch='gcn', n_classes=2, depth=1), 0, features=torch.eye(34), adj=adjacency(ei, 34))

def test_adjacency_raises_no_warning():
    import warnings
    ei, _ = _karate()
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # torch's 'Sparse invariant checks are implicitly disabled' was printed here
        normalized_adjacency(adjacency(ei, 34))

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
    for p in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match='`patience` must be a positive number'): fit(m, (x, y), (x, y), patience=p)
    for b in (0, 2.0, None):
        with pytest.raises(ValueError, match='`batch_size` must be a positive integer'): fit(m, (x, y), batch_size=b)
        with pytest.raises(ValueError, match='`batch_size` must be a positive integer'): evaluate(m, (x, y), batch_size=b)

def test_zoo_caches_and_reloads(tmp_path, monkeypatch):
    x, y = _data(64)
    archs = dict(a=dict(arch='classifier', in_shape=list(IN), n_classes=2, latent=4),
                 r=dict(arch='classifier', in_shape=list(IN), n_classes=2, latent=4, relative=True))
    kw = dict(anchors=x[:5], epochs=2, batch_size=32, progress=False)
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

def test_vae_embedder_is_the_mean_and_eval_is_deterministic():
    x = _data(32)[0]
    torch.manual_seed(0)
    vae = autoencoder(IN, latent=4, variational=True, relative=True, anchors=x[:6])
    assert isinstance(vae.embedder, MeanEncoder)
    with torch.no_grad():
        assert torch.equal(vae.embedder(x), vae.encoder(x)[:, :4]) and torch.equal(vae.embed(x), vae.embedder(x))
    assert evaluate(vae, x) == evaluate(vae, x)  # no sampling in eval mode
    vae.eval()
    with torch.no_grad(): assert torch.equal(vae.represent(x), vae.represent(x))
    vae.train()
    assert vae.loss(x)[0].item() != vae.loss(x)[0].item()  # training samples z

def test_builders_take_sim_and_fit_takes_batch_size():
    x, y = _data(16)
    for make in (lambda **k: classifier(IN, 2, latent=4, relative=True, anchors=x[:4], **k),
                 lambda **k: autoencoder(IN, latent=4, relative=True, anchors=x[:4], **k),
                 lambda **k: gcn_classifier(torch.eye(5), torch.eye(5), 2, relative=True, anchors=torch.tensor([0, 1]), **k)):
        assert make(sim='euclidean').bottleneck.projection.sims == ['euclidean']
        with pytest.raises(TypeError, match='similarity'): make(similarity='cosine')
    m = classifier(IN, 2, latent=4)
    with pytest.raises(TypeError, match="'bs'"): fit(m, (x, y), bs=8)
    with pytest.raises(TypeError, match="'bs'"): evaluate(m, (x, y), bs=8)

def test_zoo_reads_seeds_once():
    "An iterator of seeds serves every architecture (it used to be used up by the first one)"
    x, y = _data(32)
    archs = {n: dict(arch='classifier', in_shape=IN, n_classes=2, latent=4) for n in 'ab'}
    z = train_zoo(archs, iter([0, 1]), (x, y), epochs=1, progress=False)
    assert sorted(z) == [('a', 0), ('a', 1), ('b', 0), ('b', 1)]
    assert sorted(train_zoo(archs, (s for s in range(2)), (x, y), epochs=1, progress=False)) == sorted(z)

@pytest.mark.parametrize('kw, err, msg', [
    (dict(seeds=3), TypeError, '`seeds` must be an iterable of integers'),
    (dict(seeds=[0, 0.5]), TypeError, '`seeds` must hold integers'),
    (dict(bs=8), TypeError, "cannot pass 'bs' to `fit`"),
    (dict(seed=1), TypeError, "cannot pass 'seed' to `fit`"),
    (dict(archs=[dict(arch='classifier')]), TypeError, '`archs` must be a dict'),
])
def test_zoo_argument_errors_before_training(kw, err, msg, monkeypatch):
    def no_training(*a, **k): raise AssertionError('trained before checking its arguments')
    monkeypatch.setattr(M, 'fit', no_training)
    x, y = _data(8)
    args = dict(archs={'a': dict(arch='classifier', in_shape=IN, n_classes=2, latent=4)}, seeds=[0], train=(x, y)) | kw
    with pytest.raises(err, match=msg): train_zoo(**args)

def test_zoo_crash_while_saving_leaves_no_checkpoint(tmp_path, monkeypatch):
    import safetensors.torch as st
    def broken(tensors, filename, metadata=None):
        open(filename, 'wb').write(b'half a checkpoint'); raise OSError('disk full')
    monkeypatch.setattr(st, 'save_file', broken)
    x, y = _data(32); archs = {'a': dict(arch='classifier', in_shape=IN, n_classes=2, latent=4)}
    with pytest.raises(OSError, match='disk full'): train_zoo(archs, [0], (x, y), cache_dir=tmp_path, epochs=1, progress=False)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith('.lock')] == []  # not even a temporary file

def test_zoo_retrains_an_unreadable_checkpoint(tmp_path):
    x, y = _data(32); archs = {'a': dict(arch='classifier', in_shape=IN, n_classes=2, latent=4)}
    z1 = train_zoo(archs, [0], (x, y), cache_dir=tmp_path, epochs=1, progress=False)
    [f] = tmp_path.glob('*.safetensors'); f.write_bytes(f.read_bytes()[:100])  # a truncated file
    with pytest.warns(UserWarning, match='unreadable'): z2 = train_zoo(archs, [0], (x, y), cache_dir=tmp_path, epochs=1, progress=False)
    assert _same(z1['a', 0], z2['a', 0])  # retrained to the same weights
    assert z1['a', 0].history.drop(columns='seconds').equals(z2['a', 0].history.drop(columns='seconds'))

def test_zoo_checkpoint_key_depends_on_fit_arguments(tmp_path):
    x, y = _data(32); archs = {'a': dict(arch='classifier', in_shape=IN, n_classes=2, latent=4)}
    for b in (16, 32): train_zoo(archs, [0], (x, y), cache_dir=tmp_path, epochs=1, batch_size=b, progress=False)
    assert len(list(tmp_path.glob('a-seed0-*.safetensors'))) == 2

_TWO_PROCESSES = textwrap.dedent('''
    import sys, time, torch, latent_comm.models as M
    cache, log = sys.argv[1], sys.argv[2]
    _fit = M.fit
    def fit(*a, **k):
        with open(log, 'a') as f: f.write('trained\\n')
        time.sleep(2)  # a slow trainer: the other process arrives while it works
        return _fit(*a, **k)
    M.fit = fit
    x = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(0)); y = (x.flatten(1).sum(1) > 32).long()
    z = M.train_zoo({'a': dict(arch='classifier', in_shape=(1, 8, 8), n_classes=2, latent=4)}, [0], (x, y),
                    cache_dir=cache, epochs=1, progress=False)
    print(repr([p.sum().item() for p in z['a', 0].parameters()]))
''')

def test_zoo_shared_by_two_processes_trains_once(tmp_path):
    "Two processes ask for one checkpoint at once: one trains it, the other waits and loads the same weights"
    log, cache = tmp_path / 'trainings.log', tmp_path / 'zoo'
    ps = [subprocess.Popen([sys.executable, '-c', _TWO_PROCESSES, str(cache), str(log)], stdout=subprocess.PIPE, text=True)
          for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in ps]
    assert [p.returncode for p in ps] == [0, 0]
    assert log.read_text().count('trained') == 1
    assert outs[0] == outs[1] and outs[0].strip()
    assert len(list(cache.glob('*.safetensors'))) == 1
