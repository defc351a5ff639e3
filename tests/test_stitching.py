"Tests for latent_comm.stitching: exact stitching through known angle-preserving maps, bridges (on the embedding, a VAE's mean), the matrix, errors"
import matplotlib
matplotlib.use('Agg')
import pytest, torch
from torch import nn
from latent_comm.models import LatentModel, MeanEncoder, RelativeBottleneck, autoencoder, classifier, evaluate, fit
from latent_comm.stitching import StitchingResult, TranslationBridge, stitch, stitching_matrix
from latent_comm.translation import Translator

IN = (1, 8, 8)

def _x(n=40, seed=0): return torch.rand(n, *IN, generator=torch.Generator().manual_seed(seed))

def _orthogonal(d, seed):
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q.float()

def _twin(model:LatentModel, s:float, seed:int, shift:bool=False)->LatentModel:
    "A model whose encoder is `model`'s followed by z -> s z Q (+ b), and whose decoder undoes it"
    d = model.encoder(_x(2)).shape[-1]
    q = _orthogonal(d, seed); b = torch.randn(d, generator=torch.Generator().manual_seed(seed)) if shift else torch.zeros(d)
    fwd = nn.Linear(d, d); fwd.weight.data, fwd.bias.data = s * q.T, b
    if model.relative: return LatentModel(nn.Sequential(model.encoder, fwd), model.decoder, model.bottleneck)
    back = nn.Linear(d, d); back.weight.data, back.bias.data = q / s, -(b @ q.T) / s
    return LatentModel(nn.Sequential(model.encoder, fwd), nn.Sequential(back, model.decoder))

@pytest.fixture
def pair():
    torch.manual_seed(0); x = _x(30)
    return classifier(IN, 4, latent=6, relative=True, anchors=x[:10]).eval(), classifier(IN, 4, latent=6).eval(), x

def test_relative_bridge_is_exact_under_rotation_and_scale(pair, device):
    rel, _, x = pair
    twin = _twin(rel, 2.5, 1).to(device); rel = rel.to(device); x = x.to(device)
    with torch.no_grad():
        torch.testing.assert_close(stitch(twin, 'relative', rel)(x), rel(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(stitch(rel, 'relative', twin)(x), twin(x), atol=1e-5, rtol=1e-5)

def test_translation_bridge_recovers_a_known_isometry(pair, device):
    _, ab, x = pair
    twin = _twin(ab, 1.0, 2, shift=True)
    with torch.no_grad(): torch.testing.assert_close(twin(x), ab(x), atol=1e-4, rtol=1e-4)  # same function, other space
    twin, ab, x = twin.to(device), ab.to(device), x.to(device)
    bridge = TranslationBridge(_x(20, 1), x_transform=('center',), y_transform=('center',))  # anchors follow the encoders' device
    with torch.no_grad():
        out = stitch(ab, bridge, twin)(x)
        torch.testing.assert_close(out, twin(x), atol=1e-4, rtol=1e-4)
        assert not torch.allclose(stitch(ab, None, twin)(x), twin(x), atol=1e-2)  # absolute stitching is wrong

def test_default_translation_bridge_close_on_isometry(pair):
    _, ab, x = pair
    twin = _twin(ab, 3.0, 3)
    with torch.no_grad():
        out = stitch(ab, TranslationBridge(_x(200, 1)), twin)(x)
        assert (out.argmax(-1) == twin(x).argmax(-1)).float().mean() > 0.9

def test_fitted_translator_and_bare_modules(pair):
    _, ab, x = pair
    twin = _twin(ab, 1.0, 4)
    t = TranslationBridge(_x(50, 1)).fit(ab.encoder, twin.encoder)
    assert isinstance(t, Translator) and t.is_fitted
    s1 = stitch(ab.encoder, t, twin.decoder)
    s2 = stitch(ab, TranslationBridge(_x(50, 1)), twin.decoder, target_encoder=twin.encoder)
    with torch.no_grad(): torch.testing.assert_close(s1(x), s2(x))
    assert s1.task == 'classification'

def test_stitch_shares_modules_and_is_identity_on_self(pair):
    rel, ab, x = pair
    s = stitch(rel, 'relative', rel)
    assert s.encoder is rel.encoder and s.decoder is rel.decoder and s.bottleneck is rel.bottleneck
    with torch.no_grad(): assert torch.equal(stitch(ab, 'absolute', ab)(x), ab(x))

def test_relative_bridge_object_with_other_anchors(pair):
    rel, _, x = pair
    other = RelativeBottleneck(x[10:20])
    with torch.no_grad(): out = stitch(rel, other, rel)(x)
    assert out.shape == (30, 4) and not torch.allclose(out, rel(x).detach())

@pytest.mark.parametrize('make, err, msg', [
    (lambda r, a: stitch(a, None, r), ValueError, 'needs relative bridge'),
    (lambda r, a: stitch(r, 'relative', a), ValueError, 'reads absolute'),
    (lambda r, a: stitch(a.encoder, 'relative', r.decoder), ValueError, "needs a relative LatentModel"),
    (lambda r, a: stitch(a.encoder, TranslationBridge(_x(10)), a.decoder), ValueError, 'needs the target encoder'),
    (lambda r, a: stitch(a, Translator(), a), ValueError, 'not fitted'),
    (lambda r, a: stitch(a, 'procrustes', a), TypeError, "`bridge` must be None or 'absolute'"),
    (lambda r, a: stitch('a', None, a), TypeError, '`encoder` must be a LatentModel'),
    (lambda r, a: stitch(a, TranslationBridge(_x(10)), a.decoder, target_encoder=3), TypeError, '`target_encoder` must be a LatentModel'),
    (lambda r, a: TranslationBridge(_x(10)).fit(a, 'b'), TypeError, '`target` must be a LatentModel'),
    (lambda r, a: stitching_matrix(a, [a], None, len), TypeError, '`encoders` must be a dict'),
])
def test_errors(pair, make, err, msg):
    rel, ab, _ = pair
    with pytest.raises(err, match=msg): make(rel, ab)

def test_stitching_matrix_table_summary_plot(pair):
    rel, _, x = pair
    y = torch.randint(0, 4, (30,), generator=torch.Generator().manual_seed(0))
    models = {'a': rel, 'b': _twin(rel, 2.0, 5), 'c': _twin(rel, 0.5, 6)}
    res = stitching_matrix(models, models, 'relative', lambda m: evaluate(m, (x, y))['acc'], names=('acc',))
    assert isinstance(res, StitchingResult) and res.scores == ['acc']
    t = res.table
    assert list(t.columns) == ['encoder', 'decoder', 'bridge', 'stitched', 'acc'] and len(t) == 9
    assert t.stitched.sum() == 6 and set(t.bridge) == {'relative'}
    assert t.acc.nunique() == 1  # exact twins: every pair behaves as the original
    m = res.matrix()
    assert m.shape == (3, 3) and list(m.index) == ['a', 'b', 'c']
    s = res.summary()
    assert s.loc[('relative', 'stitched'), ('acc', 'count')] == 6
    assert s.loc[('relative', 'original'), ('acc', 'count')] == 3
    ax = res.plot()
    assert ax.get_xlabel() == 'decoder' and len(ax.texts) == 9

def test_stitching_matrix_several_scores_and_lists(pair):
    _, ab, x = pair
    res = stitching_matrix([ab, _twin(ab, 1.0, 7)], [ab], None, lambda m: {'mean': m(x).mean().item(), 'n': 1})
    assert res.scores == ['mean', 'n'] and list(res.table.encoder) == ['0', '1']
    assert list(res.table.stitched) == [False, True]

def test_trained_models_stitch_relatively_not_absolutely():
    "Two real trainings from different seeds: relative stitching keeps accuracy, absolute stitching does not"
    from sklearn.datasets import load_digits
    d = load_digits()
    X = torch.tensor(d.images / 16., dtype=torch.float32).unsqueeze(1); Y = torch.tensor(d.target)
    tr, te = slice(0, 1200), slice(1200, None)
    anchors = X[:48]
    zoo = {}
    for rel in (False, True):
        for seed in (0, 1):
            torch.manual_seed(seed)
            m = classifier(IN, 10, latent=24, relative=rel, anchors=anchors)
            fit(m, (X[tr], Y[tr]), epochs=12, batch_size=64, lr=3e-3, seed=seed, progress=False)
            zoo[rel, seed] = m
    acc = lambda m: evaluate(m, (X[te], Y[te]))['acc']
    orig = min(acc(zoo[True, 0]), acc(zoo[True, 1]))
    assert orig > 0.85
    assert acc(stitch(zoo[True, 0], 'relative', zoo[True, 1])) > orig - 0.1
    assert acc(stitch(zoo[False, 0], None, zoo[False, 1])) < 0.5
    assert acc(stitch(zoo[False, 0], TranslationBridge(X[:200]), zoo[False, 1])) > 0.8

@pytest.fixture
def vaes():
    "A relative and an absolute VAE (untrained), in eval mode, where they decode their mean"
    torch.manual_seed(0); x = _x(30)
    return (autoencoder(IN, latent=4, variational=True, relative=True, anchors=x[:8]).eval(),
            autoencoder(IN, latent=4, variational=True).eval(), x)

def test_vae_stitched_to_itself_is_the_vae(vaes, device):
    "Every bridge reads the VAE's mean, never its log-variance: stitching a VAE to itself changes nothing"
    rel, ab, x = vaes
    rel, ab, x = rel.to(device), ab.to(device), x.to(device)
    with torch.no_grad():
        s = stitch(rel, 'relative', rel)
        assert torch.equal(s.represent(x), rel.represent(x)) and torch.equal(s(x), rel(x))
        assert torch.equal(stitch(rel, RelativeBottleneck(x[:8]), rel).represent(x), rel.represent(x))
        assert torch.equal(stitch(ab, None, ab)(x), ab(x))
        torch.testing.assert_close(stitch(ab, TranslationBridge(x[:20]), ab)(x), ab(x), atol=1e-4, rtol=1e-4)
        t = TranslationBridge(x[:20]).fit(ab, ab)
        assert t.matrix_.shape == (4, 4)
        torch.testing.assert_close(stitch(ab, t, ab)(x), ab(x), atol=1e-4, rtol=1e-4)

def test_vae_stitching_uses_the_mean_encoder(vaes):
    rel, ab, x = vaes
    s = stitch(rel, 'relative', rel)
    assert isinstance(s.encoder, MeanEncoder) and s.encoder.encoder is rel.encoder
    assert s.decoder is rel.decoder and s.bottleneck is rel.bottleneck
    with torch.no_grad(): assert s.embed(x).shape == (30, 4)

def test_vae_twin_stitches_exactly(vaes):
    "Two VAEs whose means differ by a rotation and scale: the relative bridge carries one's encoder to the other's decoder"
    rel, _, x = vaes
    q = _orthogonal(4, 9); lin = nn.Linear(8, 8, bias=False)
    lin.weight.data = torch.block_diag(2.0 * q.T, torch.eye(4))  # rotate and scale the mean, keep the log-variance
    twin = type(rel)(nn.Sequential(rel.encoder, lin), rel.decoder, rel.bottleneck).eval()
    with torch.no_grad():
        torch.testing.assert_close(twin.represent(x), rel.represent(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(stitch(twin, 'relative', rel)(x), rel(x), atol=1e-5, rtol=1e-5)

def test_fitting_a_bridge_leaves_modes_alone(vaes):
    rel, ab, x = vaes
    ab.encoder.train()
    TranslationBridge(x[:20]).fit(ab, rel)
    assert ab.encoder.training and all(m.training for m in ab.encoder.modules())
    assert not rel.encoder.training

def test_target_encoder_may_be_a_model(pair):
    _, ab, x = pair
    twin = _twin(ab, 1.5, 8)
    s1 = stitch(ab, TranslationBridge(_x(50, 1)), twin.decoder, target_encoder=twin)
    s2 = stitch(ab, TranslationBridge(_x(50, 1)), twin)
    with torch.no_grad(): torch.testing.assert_close(s1(x), s2(x))
