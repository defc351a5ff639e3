"""Sweeps on a real two-node Ray cluster (two raylets on this machine): the same numbers as the serial loop, units spread
over both nodes, a worker killed mid-sweep, an interrupted sweep resumed from its cached units, sharded embedding resumed
by shard.

Bitwise: similarity_table (cka, jaccard_knn, procrustes_distance), stitching_matrix (accuracy through a Procrustes
bridge), bootstrap_many, train_zoo (weights and losses) and embed are all compared with `equals`/`torch.equal` against
the serial result on the CPU: a unit computes the same float operations in a worker as in the driver. One caveat: the
training of relative models depends, in the last bits, on the number of torch threads (a reduction splits
differently), and Ray gives a 1-CPU task one thread; so the serial zoo is trained with one thread too. The metrics,
stitching, bootstrap and embedding results here do not depend on the number of threads and are compared with the
driver's default.
"""
import os, sys, time
import pytest, torch
ray = pytest.importorskip('ray', reason="Ray is not installed (the `ray` extra: pip install 'latent_comm[ray]')")
from ray.cluster_utils import Cluster
from latent_comm.anchors import bootstrap_many
from latent_comm.core import SerialRunner
from latent_comm.distributed import RayRunner
from latent_comm.metrics import cka, similarity_table
from latent_comm.models import build, evaluate, train_zoo
from latent_comm.stitching import TranslationBridge, stitching_matrix

MB = 2**20

@pytest.fixture(scope='module')
def cluster():
    "Two Ray nodes of one CPU each on this machine, and this process connected to them as the driver"
    os.environ.setdefault('RAY_USAGE_STATS_ENABLED', '0')
    c = Cluster(initialize_head=True, head_node_args=dict(num_cpus=1, object_store_memory=100 * MB, include_dashboard=False))
    c.add_node(num_cpus=1, object_store_memory=100 * MB)
    ray.init(address=c.address, log_to_driver=False, logging_level='warning')
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    yield c
    ray.shutdown(); c.shutdown()

def _spaces(k=5, n=300, d=16, seed=0):
    "k related spaces: one base, rotated and perturbed differently in each"
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, d, generator=g)
    out = {}
    for i in range(k):
        q = torch.linalg.qr(torch.randn(d, d, generator=g))[0]
        out[f's{i}'] = base @ q + 0.3 * i * torch.randn(n, d, generator=g)
    return out

def _where(shared, unit):
    time.sleep(0.5)
    return ray.get_runtime_context().get_node_id()

def test_units_spread_over_both_nodes(cluster):
    "Both nodes are alive and run units; results come back as values"
    assert sum(n['Alive'] for n in ray.nodes()) == 2
    nodes = RayRunner(cache=False, progress=False).map(_where, list(range(8)))
    assert len(set(nodes)) == 2, nodes

METRICS = ['cka', 'jaccard_knn', 'procrustes_distance']

def test_similarity_table_is_the_serial_one(cluster, tmp_path):
    spaces = _spaces()
    r = RayRunner(cache=tmp_path, progress=False)
    tab = similarity_table(spaces, METRICS, runner=r)
    assert tab.equals(similarity_table(spaces, METRICS))
    assert r.last == dict(units=3 * 15, skipped=0, ran=3 * 15)  # 3 symmetric metrics x 15 unordered pairs
    again = similarity_table(spaces, METRICS, runner=r)  # every unit is cached now: nothing runs
    assert again.equals(tab) and r.last == dict(units=45, skipped=45, ran=0)

def _models(k=3, seed=0):
    cfg = dict(arch='classifier', in_shape=(1, 6, 6), n_classes=3, latent=8)
    return {i: build(cfg, seed + i).eval() for i in range(k)}

def test_stitching_matrix_and_bootstrap_are_the_serial_ones(cluster, tmp_path):
    g = torch.Generator().manual_seed(1)
    x, y, anchors = torch.rand(200, 1, 6, 6, generator=g), torch.randint(0, 3, (200,), generator=g), torch.rand(20, 1, 6, 6, generator=g)
    acc = lambda m: evaluate(m, (x, y))['acc']
    ms, r = _models(), RayRunner(cache=tmp_path, progress=False)
    for bridge in (None, TranslationBridge(anchors)):
        got = stitching_matrix(ms, ms, bridge, acc, names=('acc',), runner=r).table
        assert got.equals(stitching_matrix(ms, ms, bridge, acc, names=('acc',)).table) and r.last['ran'] == 9
    spaces, seeds = _spaces(k=3, n=400), torch.stack([torch.arange(10)] * 2, 1)
    many = bootstrap_many(spaces, seeds, 100, runner=r)
    for k, p in bootstrap_many(spaces, seeds, 100).items(): assert torch.equal(many[k], p)

def test_train_zoo_on_ray(cluster, tmp_path):
    "Members trained on the cluster equal members trained here; the driver writes their checkpoints; a rerun trains nothing"
    g = torch.Generator().manual_seed(2)
    x = torch.rand(256, 1, 6, 6, generator=g); y = (x.flatten(1)[:, :18].sum(1) > x.flatten(1)[:, 18:].sum(1)).long()
    archs = dict(abs=dict(arch='classifier', in_shape=(1, 6, 6), n_classes=2, latent=8),
                 rel=dict(arch='classifier', in_shape=(1, 6, 6), n_classes=2, latent=8, relative=True))
    kw = dict(anchors=x[:10], epochs=2, batch_size=64, progress=False)
    r = RayRunner(progress=False)
    zoo = train_zoo(archs, [0, 1], (x, y), cache_dir=tmp_path, runner=r, **kw)
    assert r.last == dict(units=4, skipped=0, ran=4) and len(list(tmp_path.glob('*.safetensors'))) == 4
    threads = torch.get_num_threads()
    try:  # trained here, from scratch, with one thread like the workers (Ray gives a 1-CPU task one thread)
        torch.set_num_threads(1); serial = train_zoo(archs, [0, 1], (x, y), **kw)
    finally: torch.set_num_threads(threads)
    for k, m in zoo.items():
        assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), serial[k].state_dict().values()))
        assert m.history.train_loss.tolist() == serial[k].history.train_loss.tolist()
    train_zoo(archs, [0, 1], (x, y), cache_dir=tmp_path, runner=r, **kw)
    assert r.last == dict(units=4, skipped=4, ran=0)

@ray.remote
class _Once:
    "A flag shared by every worker: `first()` is True for the first caller only"
    def __init__(self): self.calls = 0
    def first(self)->bool: self.calls += 1; return self.calls == 1
    def count(self)->int: return self.calls

def _crashing_cka(x, y):
    "cka, but the first worker to compute it dies on the spot (as a killed or out-of-memory process would)"
    if ray.get(ray.get_actor('latent-comm-test-once').first.remote()): os._exit(1)
    return cka(x, y)
_crashing_cka.symmetric = True

def test_killed_worker_is_retried(cluster):
    "A worker process dies mid-sweep; Ray re-runs its unit elsewhere and the table is the serial one"
    once = _Once.options(name='latent-comm-test-once').remote()
    try:
        spaces = _spaces(k=4)
        tab = similarity_table(spaces, {'cka': _crashing_cka}, runner=RayRunner(cache=False, progress=False, max_retries=2))
        assert ray.get(once.count.remote()) >= 1 + 10  # the fatal call, then each of the 10 units
        assert tab.equals(similarity_table(spaces, {'cka': 'cka'}))
    finally: ray.kill(once)

@ray.remote
class _Budget:
    "How many units may still succeed before the sweep is interrupted"
    def __init__(self, n:int): self.n = n
    def take(self)->bool: self.n -= 1; return self.n >= 0
    def refill(self): self.n = 10**9

def _budgeted_cka(x, y):
    "cka, until the budget runs out: then the sweep is interrupted"
    if not ray.get(ray.get_actor('latent-comm-test-budget').take.remote()): raise RuntimeError('sweep interrupted')
    return cka(x, y)
_budgeted_cka.symmetric = True

def test_interrupted_sweep_resumes(cluster, tmp_path):
    "A sweep interrupted after a few units resumes from the cached ones, says how many it skipped, and ends with the serial table"
    budget = _Budget.options(name='latent-comm-test-budget').remote(4)
    try:
        spaces, r = _spaces(k=5), RayRunner(cache=tmp_path, progress=False)
        with pytest.raises(RuntimeError, match='sweep interrupted'): similarity_table(spaces, {'cka': _budgeted_cka}, runner=r)
        cached = len(list(tmp_path.rglob('*.pt')))
        assert 1 <= cached <= 4
        ray.get(budget.refill.remote())
        tab = similarity_table(spaces, {'cka': _budgeted_cka}, runner=r)
        assert r.last == dict(units=15, skipped=cached, ran=15 - cached)
        assert tab.equals(similarity_table(spaces, {'cka': 'cka'}))
    finally: ray.kill(budget)

class _PoisonedPixels:
    "Raw pixels, except that encoding the batch that starts with `poison` (an image) fails: a crash on one shard"
    def __init__(self, poison=None): self.poison, self.id, self.dim = poison, 'test-pixels-28', 28 * 28
    def encode(self, batch):
        import numpy as np
        x = np.stack([np.asarray(im, dtype=np.uint8) for im in batch])
        if self.poison is not None and np.array_equal(x[0], self.poison):
            time.sleep(2)  # the shards before it come back meanwhile
            raise RuntimeError('encoder crashed')
        return torch.from_numpy(x.reshape(len(x), -1).astype(np.float32) / 255)

def test_embed_on_a_pool_resumes_by_shard(cluster, tmp_path, monkeypatch):
    "Ray Data streams the shards through encoder actors; a run that fails on one shard keeps the others, the rerun encodes only what is missing"
    import numpy as np
    from latent_comm.data import get_dataset
    from latent_comm.embeddings import embed, embedding_key
    rows = get_dataset('fashion_mnist')['test'].select(range(600))
    monkeypatch.setenv('LATENT_COMM_CACHE', str(tmp_path))  # after the data set is loaded from the shared cache
    expected = embed(rows, _PoisonedPixels(), 'image', batch_size=100, cache=False, progress=False)
    bad = _PoisonedPixels(poison=np.asarray(rows[400]['image'], dtype=np.uint8))  # the last of three shards of 200 rows
    r = RayRunner(progress=False)
    with pytest.raises(Exception, match='encoder crashed'):
        embed(rows, bad, 'image', batch_size=100, runner=r, shard_size=200, progress=False)
    shards = tmp_path/'embeddings'/f"{embedding_key(rows, bad, 'image')}.shards"
    kept = len(list(shards.glob('*.safetensors')))
    assert 1 <= kept <= 2
    x = embed(rows, _PoisonedPixels(), 'image', batch_size=100, runner=r, shard_size=200, progress=False)
    assert r.last == dict(units=3, skipped=kept, ran=3 - kept)
    assert torch.equal(x, expected) and not shards.exists()
